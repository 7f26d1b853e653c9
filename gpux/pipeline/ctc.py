"""CTC greedy decoding: a text recogniser's per-frame class scores -> text and confidence.

Text recognisers trained with CTC (PaddleOCR's PP-OCR rec, CRNN and their kin) output one score
per class for each time step, ``[batch, time, classes]``. Greedy decoding takes the best class at
each step, collapses runs of the same class, drops the blank, and maps the rest to characters.
This module does that the way PaddleOCR's and rapidocr's ``CTCLabelDecode`` do, so a GPUXfile can
declare a recogniser's post-processing instead of users copying that class into their code:

* The class list: PaddleOCR stores a dict of characters (one a line) and builds the classes as
  ``['blank'] + dict_character``, with ``" "`` appended to the dict when ``use_space_char``
  (rapidocr always appends it). :func:`paddle_character_list` builds that list;
  ``ctc_greedy(..., add_blank_and_space=True)`` applies it to a raw dict.
* Duplicates are collapsed before the blank is removed, by comparing each step with the previous
  one, so a character repeated across a blank ("l", blank, "l" in "hello") is kept twice.
* ``confidence`` is the mean of the kept steps' best probabilities, computed in float64 as
  rapidocr does (PaddleOCR averages in float32: the two differ by float32 rounding, ~1e-7). An empty text has
  confidence 0.0 (both use ``conf_list = [0]`` when nothing is kept).

Everything but joining each item's characters is numpy over the whole batch: one argmax over the
class axis, the best probability picked with that index (no second pass for the max), masks for
duplicates and blanks. Models that put time first (``[time, batch, classes]``) decode with
``time_axis=0``; models that output logits decode with ``softmax=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpux.errors import ConfigValidationError, ModelError, NotFoundError, UsageError

Array = np.ndarray[Any, Any]

PADDLE_BLANK = "blank"  # the token PaddleOCR puts at class 0 (never printed: it is the blank)
METADATA_KEY = "character"  # where rapidocr's and PaddleOCR's ONNX exports keep the dict


# ------------------------------------------------------------------------------------- charset
def charset_from_text(text: str) -> list[str]:
    """The characters of a PaddleOCR dict file's content, one per line.

    Read the way PaddleOCR reads its dict files (``fin.readlines()`` on bytes, then
    ``line.decode('utf-8').strip("\\n").strip("\\r\\n")``): lines end at ``\\n`` only, CR and LF are
    stripped from both ends of each line, a final newline does not start an empty entry, and
    every other character (a space line included) is kept as is.
    """
    lines = text.split("\n")
    if lines[-1] == "":  # readlines() yields no empty line after the final newline
        lines.pop()
    return [line.strip("\r\n") for line in lines]


def charset_from_file(path: str | os.PathLike[str]) -> list[str]:
    """The characters of a PaddleOCR dict file (UTF-8, one character per line)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"charset file '{file}' does not exist",
            "give the dict file the recogniser was trained with (e.g. ppocr_keys_v1.txt)",
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigValidationError(
            f"charset file '{file}' is not UTF-8 text (byte {exc.start} cannot be decoded)",
            "save the dict as UTF-8, one character per line",
        ) from exc
    return charset_from_text(text)


def charset_from_metadata(
    model: str | os.PathLike[str] | Mapping[str, str], key: str = METADATA_KEY
) -> list[str]:
    """The characters stored in an ONNX model's metadata property ``key``, one per line.

    ``model`` is the .onnx file or its metadata as a mapping (onnxruntime's
    ``session.get_modelmeta().custom_metadata_map``). The value is split with ``str.splitlines()``,
    exactly as rapidocr's ``OrtInferSession.get_character_list`` does. The list is the raw dict:
    decode with ``add_blank_and_space=True`` for PaddleOCR models.
    """
    metadata = model if isinstance(model, Mapping) else _model_metadata(Path(model))
    where = "the model's metadata" if isinstance(model, Mapping) else f"'{Path(model).name}'"
    try:
        value = metadata[key]
    except KeyError as exc:
        present = ", ".join(repr(name) for name in metadata) or "none"
        raise ModelError(
            f"{where} has no metadata property '{key}' (properties: {present})",
            "name the property that holds the charset, or give the charset as a file or a list",
        ) from exc
    characters = value.splitlines()
    if not characters:
        raise ModelError(
            f"metadata property '{key}' of {where} is empty",
            "give the charset as a file or a list",
        )
    return characters


def _model_metadata(path: Path) -> dict[str, str]:
    import onnx

    if not path.is_file():
        raise NotFoundError(
            f"model '{path}' does not exist", "give the path of the recogniser's .onnx file"
        )
    try:
        # Weights stored outside the file are not needed for the metadata.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for files it cannot parse
        raise ModelError(
            f"'{path.name}' is not an ONNX model onnx can read ({type(exc).__name__}: {exc})",
            "give the recogniser's .onnx file",
        ) from exc
    return {prop.key: prop.value for prop in model.metadata_props}


def load_charset(
    *,
    characters: Sequence[str] | None = None,
    file: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | Mapping[str, str] | None = None,
    metadata_key: str = METADATA_KEY,
) -> list[str]:
    """A charset from exactly one source: an inline list, a dict file, or the model's metadata."""
    given = [
        name
        for name, value in (("characters", characters), ("file", file), ("model", model))
        if value is not None
    ]
    if len(given) != 1:
        raise UsageError(
            f"a charset needs exactly one source, got {len(given)}"
            + (f" ({', '.join(given)})" if given else ""),
            "give characters=[...], file=DICT.txt or model=MODEL.onnx (its metadata)",
        )
    if characters is not None:
        if isinstance(characters, str) or not all(isinstance(c, str) for c in characters):
            raise UsageError(
                "characters must be a list of strings, one per class",
                "list them, e.g. ['0', '1', 'a'], or use charset_from_text for a dict's text",
            )
        return list(characters)
    if file is not None:
        return charset_from_file(file)
    assert model is not None  # one source was given, and it is neither of the others
    return charset_from_metadata(model, metadata_key)


def paddle_character_list(characters: Sequence[str], *, use_space_char: bool = True) -> list[str]:
    """PaddleOCR's class list for a dict: ``['blank', *characters]`` plus ``' '`` last when
    ``use_space_char`` (rapidocr always sets it; PaddleOCR's PP-OCR configs do too)."""
    return [PADDLE_BLANK, *characters, *([" "] if use_space_char else [])]


def full_class_list(charset: Sequence[str], class_count: int, blank: int = 0) -> list[str]:
    """One name per class from a charset as GPUXfiles give it: complete; a PaddleOCR dict
    (two short: the blank first and a space last are added); or one short (the blank is
    inserted at ``blank``). Other sizes are a :class:`ModelError` that says what fits."""
    if len(charset) == class_count:
        return list(charset)
    if len(charset) + 2 == class_count and blank == 0:
        return paddle_character_list(charset)
    if len(charset) + 1 == class_count:
        return [*charset[:blank], PADDLE_BLANK, *charset[blank:]]
    raise ModelError(
        f"the charset has {len(charset)} characters but the model has {class_count} classes",
        f"give {class_count} characters (blank included), {class_count - 1} (without the blank) "
        f"or {class_count - 2} (a PaddleOCR dict: without the blank and the final space)",
    )


# -------------------------------------------------------------------------------------- decode
def ctc_greedy(
    probabilities: Array,
    charset: Sequence[str],
    *,
    blank: int = 0,
    time_axis: int = 1,
    remove_duplicates: bool = True,
    add_blank_and_space: bool = False,
    softmax: bool = False,
) -> list[dict[str, Any]]:
    """Greedy CTC decoding of a batch: one ``{"text", "confidence", "characters"}`` per item.

    ``probabilities`` is ``[batch, time, classes]`` (``time_axis=1``) or ``[time, batch,
    classes]`` (``time_axis=0``); the classes are always the last axis. ``charset`` names each
    class (``charset[blank]`` is never printed), or, with ``add_blank_and_space``, is a PaddleOCR
    dict that :func:`paddle_character_list` turns into the classes (the blank at 0). ``softmax``
    turns logits into probabilities first. ``characters`` lists each kept character with the
    probability it was read with.
    """
    scores: Array = np.asarray(probabilities)
    if scores.ndim != 3:
        raise ModelError(
            f"CTC decoding needs [batch, time, classes] scores, got shape {list(scores.shape)}",
            "decode the recogniser's per-frame output (e.g. PP-OCR rec's softmax output)",
        )
    if time_axis not in (0, 1, -3, -2):
        raise ModelError(
            f"CTC decoding: time_axis must be 0 or 1, got {time_axis} (classes are the last axis)",
            "time_axis=1 for [batch, time, classes], time_axis=0 for [time, batch, classes]",
        )
    if add_blank_and_space and blank != 0:
        raise ModelError(
            f"CTC decoding: add_blank_and_space puts the blank at class 0, but blank={blank}",
            "leave blank at 0, or give the full class list without add_blank_and_space",
        )
    classes = paddle_character_list(charset) if add_blank_and_space else charset
    class_count = scores.shape[2]
    _check_classes(len(charset), len(classes), class_count, add_blank_and_space)
    if not -class_count <= blank < class_count:
        raise ModelError(
            f"CTC decoding: blank={blank} is not one of the {class_count} classes",
            "give the index of the blank class (0 for PaddleOCR models)",
        )
    blank %= class_count
    if time_axis in (0, -3):
        scores = scores.transpose(1, 0, 2)  # a view: argmax still runs along contiguous classes

    best = scores.argmax(axis=2)  # [batch, time]
    if softmax:
        best_probability = _softmax_of_best(scores, best)
    else:
        best_probability = np.take_along_axis(scores, best[:, :, None], axis=2)[:, :, 0]

    kept = best != blank
    if remove_duplicates:  # against the previous step, blank or not: "l", blank, "l" stays "ll"
        kept[:, 1:] &= best[:, 1:] != best[:, :-1]
    counts = kept.sum(axis=1)
    sums = np.where(kept, best_probability, 0).sum(axis=1, dtype=np.float64)
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)

    kept_ids = best[kept].tolist()  # row-major: item after item, steps in order
    kept_probabilities = best_probability[kept].tolist()  # Python floats, as rapidocr's
    decoded = []
    start = 0
    for end, confidence in zip(np.cumsum(counts).tolist(), means.tolist(), strict=True):
        characters = [classes[index] for index in kept_ids[start:end]]
        decoded.append(
            {
                "text": "".join(characters),
                "confidence": confidence,
                "characters": [
                    {"char": char, "confidence": probability}
                    for char, probability in zip(
                        characters, kept_probabilities[start:end], strict=True
                    )
                ],
            }
        )
        start = end
    return decoded


def _softmax_of_best(logits: Array, best: Array) -> Array:
    """The softmax probability of each step's best class, without normalising every class:
    ``exp(x_best - max) / sum(exp(x - max))`` is ``1 / sum(exp(x - x_best))``."""
    values = logits.astype(np.float32, copy=False)
    top = np.take_along_axis(values, best[:, :, None], axis=2)
    probability: Array = 1.0 / np.exp(values - top).sum(axis=2)
    return probability


def _check_classes(given: int, classes: int, class_count: int, added: bool) -> None:
    if classes == class_count:
        return
    if not added and given == class_count - 2:
        hint = (
            "it looks like a PaddleOCR dict without the blank and the space: "
            "pass add_blank_and_space=True"
        )
    elif added and given == class_count - 1:
        hint = (
            "the model may be trained without use_space_char: give "
            "paddle_character_list(dict, use_space_char=False) without add_blank_and_space"
        )
    elif not added and given == class_count - 1:
        hint = "one class short: the charset may lack the CTC blank (PaddleOCR's class 0)"
    else:
        hint = "use the charset the model was trained with: one entry per class, blank included"
    what = f"{given} characters + blank + space = {classes}" if added else f"{given}"
    raise ModelError(
        f"CTC decoding: the charset has {what} classes but the model's class axis has "
        f"{class_count}",
        hint,
    )
