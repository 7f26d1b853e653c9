"""gpux.pipeline.cv_resize (numpy) against cv2.resize (C++, SIMD, threads), in one run.

A 1280x960 RGB photo (chelsea.png, enlarged with Pillow's bicubic) is resized to 736x736
(linear, area: a detector's input) and to 48x320 (linear: a text recogniser's line), plus cubic
and nearest to 736x736 for reference. Both sides must agree first (exactly, or within 1 for
cubic), then they are timed alternately call by call and medians are printed: OpenCV with its
default threads, OpenCV on one thread, and ours (numpy, one thread).

    uv run python benchmarks/cv_resize.py [--runs 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import median_ms
from tools import zoo

CASES = [((736, 736), "linear"), ((736, 736), "area"), ((48, 320), "linear")]
REFERENCE_CASES = [((736, 736), "cubic"), ((736, 736), "nearest")]


def _photo() -> np.ndarray:
    from PIL import Image

    image = Image.open(zoo.fetch("chelsea.png")).convert("RGB")
    return np.asarray(image.resize((1280, 960), Image.Resampling.BICUBIC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    import cv2

    from gpux.pipeline.cv_resize import resize

    flags = {
        "nearest": cv2.INTER_NEAREST,
        "linear": cv2.INTER_LINEAR,
        "cubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
    }
    image = _photo()
    threads = cv2.getNumThreads()
    print(
        f"source: 1280x960x3 uint8 photo   OpenCV {cv2.__version__} ({threads} threads, "
        f"IPP {'on' if cv2.ipp.useIPP() else 'off'})   numpy {np.__version__}   "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    results: dict[str, Any] = {}
    for (height, width), mode in CASES + REFERENCE_CASES:
        ours, theirs = (
            resize(image, height, width, mode),
            cv2.resize(image, (width, height), interpolation=flags[mode]),
        )
        worst = int(np.abs(ours.astype(np.int16) - theirs).max())
        assert worst <= (1 if mode == "cubic" else 0), f"{mode}: differs from OpenCV by {worst}"

        def opencv(mode: str = mode, size: tuple[int, int] = (width, height)) -> object:
            return cv2.resize(image, size, interpolation=flags[mode])

        def opencv_one_thread(mode: str = mode, size: tuple[int, int] = (width, height)) -> object:
            cv2.setNumThreads(1)
            try:
                return cv2.resize(image, size, interpolation=flags[mode])
            finally:
                cv2.setNumThreads(threads)

        def numpy(mode: str = mode, height: int = height, width: int = width) -> object:
            return resize(image, height, width, mode)

        times = median_ms(
            {"opencv": opencv, "opencv_1_thread": opencv_one_thread, "numpy": numpy}, args.runs
        )
        label = f"{mode} -> {height}x{width}"
        ratio = times["numpy"] / times["opencv"]
        ratio_one = times["numpy"] / times["opencv_1_thread"]
        results[label] = {**times, "ratio": ratio, "ratio_1_thread": ratio_one, "max_diff": worst}
        print(
            f"  {label:22s} opencv {times['opencv']:6.2f} ms  (1 thread {times['opencv_1_thread']:6.2f})"
            f"   numpy {times['numpy']:6.2f} ms   ratio {ratio:5.1f}x  (1 thread {ratio_one:5.1f}x)"
            f"   max |diff| {worst}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
