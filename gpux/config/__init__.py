"""GPUXfile: schema (``schema``), loading (``load``: parse -> validate -> complete), JSON Schema.

Import the submodules directly; this package stays empty so that code which only needs the
schema (running an image) does not pay for the YAML parser.
"""
