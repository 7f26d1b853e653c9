"""Command-line option values that several commands accept and check the same way.

What belongs here: an option's allowed values and the check that turns a typed value into
one GPUX accepts (or a ``UsageError`` naming the closest valid one), when more than one
command offers that option. A helper one command alone uses stays in that command's module.
Kept light: importing it costs no more than ``typer`` (every command imports it at start-up).
"""

from __future__ import annotations

BACKENDS = "auto|cpu|cuda|tensorrt|rocm|coreml|directml|openvino|webgpu|wgpu"
"""The ``--backend`` values, for help texts (``gpux build``, ``run``, ``serve``, ``bench``)."""

GPUS_HELP = (
    "Instances on several devices, one session each, calls to the least busy: 'all' GPUs, a "
    "count (2: the first two; on --backend cpu, two copies) or device ids (0,1 or device=1). "
    "Default: the GPUXfile's runtime.gpus, else one instance."
)
"""``--gpus`` (``gpux run``, ``serve``, ``bench``); gpux/runtime/instances.py has the rules."""


def check_gpus(gpus: str | None) -> str | None:
    """``--gpus`` as given, after the check that makes a typo a usage error before any load."""
    if gpus is not None:
        from gpux.runtime.instances import GpuRequest

        GpuRequest.parse(gpus)
    return gpus


def check_backend(backend: str | None) -> str | None:
    """``--backend`` as given (None when not given), or a usage error that names the closest
    known backend and lists them all."""
    if backend is None:
        return None
    from gpux.config.schema import Backend
    from gpux.errors import UsageError

    names = [b.value for b in Backend]
    if backend not in names:
        import difflib

        close = difflib.get_close_matches(backend, names, n=1)
        raise UsageError(
            f"unknown backend '{backend}'" + (f"; did you mean '{close[0]}'?" if close else ""),
            f"choose one of: {', '.join(names)}",
        )
    return backend


# Registry commands (push, pull, login, containerize): the plain-HTTP escape hatches.
INSECURE_HELP = (
    "Plain HTTP right away (a loopback registry without TLS gets it without this flag; "
    "another host also needs --allow-http)."
)
ALLOW_HTTP_HELP = "Allow --insecure for a registry that is not on loopback."
