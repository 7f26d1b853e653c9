"""A whole page through GPUX's OCR chain (examples/ocr) against rapidocr-onnxruntime's RapidOCR(),
in one run, on the same CPU threads.

Both sides run PP-OCRv4 det and rec from the same wheel on skimage's page.png (and on a page of
four copies of it, 768x382, for more lines). RapidOCR runs as its authors ship it, with its
angle classifier on (it turns upside-down lines); examples/ocr has no classifier. The lines read
are compared before timing (same count; the texts read alike are counted: PP-OCR's spaces
between words flip on a 1-pixel change of the box), and both sides use ``--threads`` intra-op threads.

    uv run python benchmarks/ocr_chain.py [--runs 10] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import median_ms
from tools import zoo

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ocr"


def pages() -> dict[str, np.ndarray]:
    from PIL import Image

    page = np.asarray(Image.open(zoo.fetch("page.png")).convert("RGB"))
    tiled = np.concatenate([np.concatenate([page, page], 1)] * 2, 0)
    return {
        f"page {page.shape[1]}x{page.shape[0]}": page,
        f"4 pages {tiled.shape[1]}x{tiled.shape[0]}": tiled,
    }


def chain(threads: int) -> Any:
    """examples/ocr built into a scratch store, with ``threads`` intra-op threads per model."""
    import shutil

    import gpux

    folder = Path(tempfile.mkdtemp(prefix="gpux-ocr-bench-"))
    os.environ["GPUX_HOME"] = str(folder / "home")
    project = folder / "ocr"
    shutil.copytree(EXAMPLE, project)
    for key in ("det", "rec"):
        gpuxfile = project / key / "GPUXfile"
        gpuxfile.write_text(gpuxfile.read_text() + f"\nruntime:\n  threads: {threads}\n")
    gpux.build(project, reporter=None)
    return gpux.load("ocr:4.0", backend="cpu")


def rapidocr(threads: int) -> Any:
    sys.path.insert(0, str(zoo.package("rapidocr_onnxruntime")))
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ours, theirs = chain(args.threads), rapidocr(args.threads)
    rows = []
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, median of {args.runs}"
    )
    for name, image in pages().items():
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        read = [line["text"] for line in ours.predict(image)["lines"]]
        found, _ = theirs(bgr)
        expected = [text for _, text, _ in found or []]
        same = sum((Counter(read) & Counter(expected)).values())
        if abs(len(read) - len(expected)) > 1:  # texts: tests/pipeline/test_chain.py
            raise SystemExit(f"{name}: GPUX read {read}, RapidOCR {expected}")
        times = median_ms(
            {"gpux": lambda i=image: ours.predict(i), "rapidocr": lambda b=bgr: theirs(b)},
            args.runs,
        )
        ratio = times["gpux"] / times["rapidocr"]
        rows.append(
            {"input": name, "lines": len(expected), "same_text": same, **times, "ratio": ratio}
        )
        print(
            f"{name}: {len(expected)} lines ({same} read alike); GPUX {times['gpux']:.1f} ms, "
            f"RapidOCR {times['rapidocr']:.1f} ms, ratio {ratio:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
