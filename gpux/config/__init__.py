"""GPUXfile: schema, loading (parse -> validate -> complete) and JSON Schema export."""

from gpux.config.load import GPUXFILE_NAMES, Project, find_gpuxfile, load_project, parse_config
from gpux.config.schema import GPUXfile, ModelSource, Runtime, Serving, TensorSpec, json_schema

__all__ = [
    "GPUXFILE_NAMES",
    "GPUXfile",
    "ModelSource",
    "Project",
    "Runtime",
    "Serving",
    "TensorSpec",
    "find_gpuxfile",
    "json_schema",
    "load_project",
    "parse_config",
]
