"""Conversion of a Hugging Face transformers checkpoint or a GGUF file into an onnxruntime-genai
model folder, through onnxruntime-genai's own model builder (``onnxruntime_genai.models.builder``).

Used by ``gpux convert SRC OUT`` and by ``gpux build`` of a GPUXfile whose ``model.format`` is
``transformers`` or ``gguf``. The builder needs torch, transformers, onnx-ir, accelerate and
``gguf``: heavy dependencies (torch's CPU build alone is hundreds of MB; PyPI's default Linux build
is a CUDA one of several GB), kept out of GPUX's install. They may sit in GPUX's own Python, or in
a separate one that ``GPUX_CONVERT_PYTHON`` names (``make convert-tools`` makes ``.venv-convert``):
a conversion only runs that Python's ``onnxruntime_genai.models.builder`` and the GGUF reader
script, never GPUX itself.

Both steps run as child processes: torch's import costs seconds and memory that a build would
otherwise keep, and a crash in native code (the quantiser) reports an error instead of ending
GPUX. A GGUF file first becomes a transformers checkpoint (gpux/builder/gguf_checkpoint.py says
why); the builder then writes the folder into a temporary sibling of ``out``, renamed into place
once complete, so an interrupted conversion never leaves a folder that looks finished.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from gpux import env
from gpux.errors import BackendError, ModelError, UsageError

PRECISIONS = ("int4", "int8", "fp16", "fp32")
# GPUX backend -> the builder's execution provider (-e): the graph's operators and layouts differ.
TARGETS = {"cpu": "cpu", "cuda": "cuda", "directml": "dml", "webgpu": "webgpu"}
FORMATS = ("gguf", "transformers")
NEEDED = ("onnxruntime_genai", "torch", "transformers", "accelerate", "onnx_ir", "gguf")
INSTALL_HINT = (
    "install them beside GPUX: pip install torch transformers accelerate gguf onnx-ir "
    "--extra-index-url https://download.pytorch.org/whl/cpu (the CPU build of torch); or, in a "
    "checkout of GPUX, run make convert-tools and set "
    "GPUX_CONVERT_PYTHON=.venv-convert/bin/python"
)
_CHECKPOINT_SCRIPT = Path(__file__).with_name("gguf_checkpoint.py")


def source_format(source: Path) -> str:
    """``gguf`` for a GGUF file (by its magic bytes), ``transformers`` for a checkpoint folder
    (``config.json``); a UsageError naming what was found otherwise."""
    if source.is_file():
        with source.open("rb") as file:
            if file.read(4) == b"GGUF":
                return "gguf"
        raise UsageError(
            f"'{source}' is not a GGUF file (it does not start with the GGUF magic bytes)",
            "give a .gguf file or a Hugging Face checkpoint folder (with config.json)",
        )
    if (source / "genai_config.json").is_file():
        raise UsageError(
            f"'{source}' is already an onnxruntime-genai folder (it has genai_config.json)",
            "build it directly: model: {source: ..., format: genai}",
        )
    if (source / "config.json").is_file():
        return "transformers"
    if source.is_dir():
        raise UsageError(
            f"'{source}' has no config.json, so it is not a Hugging Face transformers checkpoint",
            "give the folder that save_pretrained wrote (config.json, *.safetensors, tokenizer)",
        )
    raise UsageError(f"'{source}' does not exist", "give a .gguf file or a checkpoint folder")


def converter_python() -> str:
    """The Python that runs conversions: ``GPUX_CONVERT_PYTHON``, else GPUX's own."""
    return env.convert_python() or sys.executable


def missing_modules(python: str) -> list[str]:
    """The modules a conversion needs that ``python`` cannot import (found, not imported)."""
    probe = (
        "import importlib.util as u, sys; "
        "print(' '.join(n for n in sys.argv[1:] if u.find_spec(n) is None))"
    )
    try:
        found = subprocess.run(
            [python, "-c", probe, *NEEDED], capture_output=True, text=True, timeout=60
        )
    except OSError as exc:
        raise BackendError(
            f"cannot run the converter Python '{python}': {exc.strerror}", INSTALL_HINT
        ) from exc
    if found.returncode != 0:
        raise BackendError(
            f"the converter Python '{python}' failed: {found.stderr.strip()[-300:]}", INSTALL_HINT
        )
    return found.stdout.split()


def require_converter() -> str:
    """The converter Python, checked; a BackendError naming the install command otherwise."""
    python = converter_python()
    missing = missing_modules(python)
    if missing:
        raise BackendError(
            f"converting a model needs {', '.join(missing)}, which {python} does not have",
            INSTALL_HINT,
        )
    return python


def check_options(precision: str, target: str) -> None:
    """A UsageError for a precision or a target the builder does not make."""
    if precision not in PRECISIONS:
        raise UsageError(
            f"precision '{precision}' is not one the builder makes",
            f"use one of: {', '.join(PRECISIONS)}",
        )
    if target not in TARGETS:
        raise UsageError(
            f"target '{target}' is not a backend the builder targets",
            f"use one of: {', '.join(TARGETS)}",
        )


def convert(
    source: Path,
    out: Path,
    *,
    precision: str = "int4",
    target: str = "cpu",
    kind: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the genai folder of ``source`` (a GGUF file or a transformers checkpoint folder) to
    ``out``, which must not exist yet; return ``out``. ``log`` receives the tools' output lines."""
    check_options(precision, target)
    kind = kind or source_format(source)
    if kind not in FORMATS:
        raise UsageError(f"cannot convert format '{kind}'", f"use one of: {', '.join(FORMATS)}")
    if out.exists():
        raise UsageError(f"'{out}' already exists", "give a new folder, or remove that one")
    python = require_converter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        checkpoint = source
        if kind == "gguf":
            checkpoint = Path(work) / "checkpoint"
            _child(
                python,
                [str(_CHECKPOINT_SCRIPT), str(source), str(checkpoint)],
                f"reading the GGUF file '{source}'",
                log,
            )
        written = Path(work) / "genai"
        _child(
            python,
            [
                *("-m", "onnxruntime_genai.models.builder"),
                *("-i", str(checkpoint), "-o", str(written)),
                *("-p", precision, "-e", TARGETS[target]),
                *("-c", str(Path(work) / "cache")),
            ],
            f"onnxruntime-genai's builder on '{source}'",
            log,
        )
        if not (written / "genai_config.json").is_file():
            raise ModelError(
                f"onnxruntime-genai's builder wrote no genai_config.json for '{source}'",
                "run python -m onnxruntime_genai.models.builder on it to see what it says",
            )
        written.rename(out)
    return out


def _child(python: str, arguments: list[str], what: str, log: Callable[[str], None] | None) -> None:
    """Run ``python`` with ``arguments``, offline (a conversion reads only local files), and
    raise a ModelError with the end of its output when it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    process = subprocess.Popen(
        [python, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        line = line.rstrip()
        tail = [*tail[-19:], line]
        if log is not None and line:
            log(line)
    if process.wait() != 0:
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        raise ModelError(
            f"{what} failed (exit {process.returncode}): {last.strip()}",
            "the builder supports the architectures its README lists (Llama, Mistral, Phi, "
            "Qwen, Gemma ...); run with --debug to see its output",
        )
