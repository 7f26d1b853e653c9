"""GPUX's CTC greedy decoding (gpux/pipeline/ctc.py) against the authors' own, in one run.

The scores are real: PP-OCRv4 rec (the zoo's ppocr-rec) run on six text lines of page.png, cut
by rapidocr's own detector and cropping and normalised by its own ``resize_norm_img`` at the
default 48x320 (longer lines cut into pieces that fit), so the batch is ``[6, 40, 6625]``. Contestants:

* ``rapidocr``: rapidocr 1.4.4's ``CTCLabelDecode`` (PaddleOCR's, with a float64 mean), built
  once, called on the batch;
* ``gpux``: ``ctc_greedy(scores, dict, add_blank_and_space=True)`` (the class list is built on
  each call);
* ``gpux (class list)``: ``ctc_greedy(scores, classes)`` with the class list built once, as the
  reference does.

Both sides are timed alternately in rounds, so they see the same machine; medians are printed.
Goal: ratio <= 1.0.

    uv run python benchmarks/ctc_decode.py [--runs 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import median_ms
from gpux.pipeline.ctc import charset_from_metadata, ctc_greedy, paddle_character_list
from tools import zoo

BATCH = 6


def real_scores() -> np.ndarray[Any, Any]:
    """[6, 40, 6625]: the recogniser's output for six of page.png's lines, rapidocr-preprocessed."""
    sys.path.insert(0, str(zoo.package("rapidocr_onnxruntime")))
    import onnxruntime as ort
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(
        det_model_path=str(zoo.fetch("ppocr-det")), rec_model_path=str(zoo.fetch("ppocr-rec"))
    )
    image = engine.load_img(str(zoo.fetch("page.png")))
    image, _, _ = engine.preprocess(image)
    image, _ = engine.maybe_add_letterbox(image, {})
    boxes, _ = engine.auto_text_det(image)
    _, height, width = engine.text_rec.rec_image_shape
    # Lines wider than 320x48 are cut into pieces that fit, so none is squeezed into illegibility.
    pieces = []
    for line in engine.get_crop_img_list(image, boxes):
        step = int(line.shape[0] * width / height)
        pieces += [line[:, left : left + step] for left in range(0, line.shape[1], step)]
    crops = [pieces[i % len(pieces)] for i in range(BATCH)]
    batch = np.stack([engine.text_rec.resize_norm_img(crop, width / height) for crop in crops])
    session = ort.InferenceSession(str(zoo.fetch("ppocr-rec")), providers=["CPUExecutionProvider"])
    scores: np.ndarray[Any, Any] = session.run(None, {session.get_inputs()[0].name: batch})[0]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    scores = real_scores()  # puts rapidocr on sys.path
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

    charset = charset_from_metadata(zoo.fetch("ppocr-rec"))
    classes = paddle_character_list(charset)
    reference = CTCLabelDecode(character=list(charset))
    ours = ctc_greedy(scores, charset, add_blank_and_space=True)
    expected = reference(scores)
    assert [item["text"] for item in ours] == [text for text, _ in expected]
    assert np.allclose([item["confidence"] for item in ours], [c for _, c in expected], atol=1e-6)

    medians = median_ms(
        {
            "rapidocr": lambda: reference(scores),
            "gpux": lambda: ctc_greedy(scores, charset, add_blank_and_space=True),
            "gpux (class list)": lambda: ctc_greedy(scores, classes),
        },
        args.runs,
    )
    print(f"CTC greedy decoding of {list(scores.shape)} {scores.dtype}, median of {args.runs}:")
    print(f"  texts: {[item['text'] for item in ours]}")
    for name, ms in medians.items():
        ratio = ms / medians["rapidocr"]
        print(f"  {name:<18} {ms:7.3f} ms   {ratio:.2f}x rapidocr")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "shape": list(scores.shape),
                    "runs": args.runs,
                    "median_ms": medians,
                    "machine": platform.platform(),
                    "numpy": np.__version__,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
