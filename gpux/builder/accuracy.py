"""How far a variant's outputs are from the original's, and whether that is within bounds.

For every model output, over every sample feed:

* ``max_abs_error``: the largest |variant - original|;
* ``max_rel_error``: that error divided by the largest |original| value of the output (a
  norm-wise relative error: element-wise ratios explode where the original is near zero);
* ``cosine``: the lowest cosine similarity of one call's output, flattened; an output with a
  single value per call (a speech probability) is compared over all calls at once instead;
* ``top1_agreement`` (classifier outputs): the share of rows whose largest value is at the same
  index. An output is a classifier's when the GPUXfile's labels, ``argmax``, ``top_k`` or
  ``softmax`` apply to it, or when it has a class axis: rank 2, ``[batch, classes]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpux.config.schema import AccuracyBounds

Array = np.ndarray[Any, Any]
CLASS_STEPS = ("argmax", "top_k", "softmax")
MAX_CLASSES = 100_000


def classifier_outputs(
    gpuxfile: Mapping[str, Any], outputs: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """Output name -> why it counts as a classifier's (``labels``, ``top_k`` ..., ``class axis``)."""
    found: dict[str, str] = {}
    labels = gpuxfile.get("labels")
    for result in gpuxfile.get("postprocess", []):
        steps = [step if isinstance(step, str) else next(iter(step)) for step in result["steps"]]
        named = [step for step in steps if step in CLASS_STEPS]
        source = result.get("from") or result.get("source")
        if named and source:
            found.setdefault(source, named[0])
    for output in outputs:
        shape = output.get("shape") or []
        classes = shape[-1] if shape else None
        if output["name"] in found or not isinstance(classes, int):
            continue
        if isinstance(labels, list) and len(labels) == classes and classes > 1:
            found[output["name"]] = "labels"
        elif len(shape) == 2 and 2 <= classes <= MAX_CLASSES and output["dtype"].startswith("f"):
            found[output["name"]] = "class axis"
    return found


def compare(
    reference: Sequence[Mapping[str, Array]],
    variant: Sequence[Mapping[str, Array]],
    classifiers: Mapping[str, str],
) -> dict[str, Any]:
    """Per-output metrics and the worst of each over all outputs."""
    per_output: dict[str, dict[str, Any]] = {}
    for name in reference[0]:
        originals = [np.asarray(call[name]) for call in reference]
        changed = [np.asarray(call[name]) for call in variant]
        metrics = _errors(originals, changed)
        if name in classifiers:
            metrics["top1_agreement"] = _top1(originals, changed)
            metrics["classifier"] = classifiers[name]
        per_output[name] = metrics
    agreements = [m["top1_agreement"] for m in per_output.values() if "top1_agreement" in m]
    return {
        "max_abs_error": max(m["max_abs_error"] for m in per_output.values()),
        "max_rel_error": max(m["max_rel_error"] for m in per_output.values()),
        "cosine": min(m["cosine"] for m in per_output.values()),
        "top1_agreement": min(agreements) if agreements else None,
        "outputs": per_output,
    }


def check(report: Mapping[str, Any], bounds: AccuracyBounds) -> list[dict[str, Any]]:
    """The bounds a report misses: ``{metric, value, bound, output}`` each."""
    limits = [
        ("cosine", "min_cosine", "min"),
        ("max_abs_error", "max_abs_error", "max"),
        ("max_rel_error", "max_rel_error", "max"),
        ("top1_agreement", "min_top1_agreement", "min"),
    ]
    missed = []
    for metric, bound_name, direction in limits:
        bound = getattr(bounds, bound_name)
        value = report.get(metric)
        if bound is None or value is None:
            continue
        if math.isnan(value) or (value < bound if direction == "min" else value > bound):
            worst = _worst_output(report["outputs"], metric, direction)
            missed.append(
                {
                    "metric": metric,
                    "value": value,
                    "bound": bound,
                    "bound_name": bound_name,
                    "kind": direction,
                    "output": worst,
                }
            )
    return missed


def describe_miss(miss: Mapping[str, Any]) -> str:
    """``cosine 0.749298 < min_cosine 0.99 (output last_hidden_state)``."""
    sign = "<" if miss["kind"] == "min" else ">"
    return (
        f"{miss['metric']} {_number(miss['value'], 6)} {sign} {miss['bound_name']} "
        f"{_number(miss['bound'], 6)} (output {miss['output']})"
    )


def summary(report: Mapping[str, Any]) -> str:
    """One line: ``cosine 0.99998, max abs error 0.0027, max rel error 0.0004, top-1 100%``."""
    parts = [
        f"cosine {report['cosine']:.6f}",
        f"max abs error {_number(report['max_abs_error'])}",
        f"max rel error {_number(report['max_rel_error'])}",
    ]
    if report.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {report['top1_agreement']:.1%}")
    return ", ".join(parts)


def failure_text(name: str, report: Mapping[str, Any], missed: list[dict[str, Any]]) -> str:
    """The error of a variant that misses its bounds: what it missed, then the whole report."""
    lines = [
        f"variant {name} misses its accuracy bounds: "
        + "; ".join(describe_miss(m) for m in missed)
        + "; it was not stored",
        f"size {report['size']['original_bytes'] / 1e6:.1f} MB -> "
        f"{report['size']['variant_bytes'] / 1e6:.1f} MB ({report['size']['ratio']:.2f}x); "
        f"latency {report['latency']['original_ms']:.3f} -> {report['latency']['variant_ms']:.3f}"
        f" ms on {report['latency']['backend']} ({report['latency']['ratio']:.2f}x)",
    ]
    samples = report["accuracy"]["samples"]
    lines.append(f"accuracy on {samples['model_calls']} model calls ({samples['kind']} inputs):")
    for output, metrics in report["accuracy"]["outputs"].items():
        lines.append(f"  {output}: {summary(metrics)}")
    return "\n".join(lines)


def failure_hint(samples_kind: str) -> str:
    hint = (
        "loosen the bound in build.accuracy (or the variant's accuracy), change the variant's "
        "settings, or drop the variant"
    )
    if samples_kind != "real":
        hint += "; generated inputs can exaggerate errors: give build.samples of real inputs"
    return hint


def _errors(originals: list[Array], changed: list[Array]) -> dict[str, Any]:
    if not all(a.shape == b.shape for a, b in zip(originals, changed, strict=True)):
        return {"max_abs_error": math.inf, "max_rel_error": math.inf, "cosine": 0.0}
    if any(a.dtype.kind not in "biufc" for a in originals):  # strings: equal or not
        same = all(np.array_equal(a, b) for a, b in zip(originals, changed, strict=True))
        error = 0.0 if same else math.inf
        return {"max_abs_error": error, "max_rel_error": error, "cosine": 1.0 if same else 0.0}
    a = np.concatenate([x.astype(np.float64).ravel() for x in originals])
    b = np.concatenate([x.astype(np.float64).ravel() for x in changed])
    if not np.isfinite(b[np.isfinite(a)]).all():
        return {"max_abs_error": math.inf, "max_rel_error": math.inf, "cosine": 0.0}
    difference = np.abs(a - b)
    max_abs = float(np.nanmax(difference)) if difference.size else 0.0
    scale = float(np.nanmax(np.abs(a))) if a.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    if originals and originals[0].size > 1:
        cosine = min(
            _cosine(x.astype(np.float64).ravel(), y.astype(np.float64).ravel())
            for x, y in zip(originals, changed, strict=True)
        )
    else:
        cosine = _cosine(a, b)
    return {"max_abs_error": max_abs, "max_rel_error": max_rel, "cosine": cosine}


def _cosine(a: Array, b: Array) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.clip(np.dot(a, b) / norms, -1.0, 1.0))


def _top1(originals: list[Array], changed: list[Array]) -> float:
    agree = total = 0
    for a, b in zip(originals, changed, strict=True):
        if a.ndim == 0 or a.shape != b.shape:
            continue
        rows_a = a.reshape(-1, a.shape[-1]).argmax(axis=-1)
        rows_b = b.reshape(-1, b.shape[-1]).argmax(axis=-1)
        agree += int((rows_a == rows_b).sum())
        total += rows_a.size
    return agree / total if total else 1.0


def _worst_output(outputs: Mapping[str, Mapping[str, Any]], metric: str, direction: str) -> str:
    ranked = [(m[metric], name) for name, m in outputs.items() if m.get(metric) is not None]
    return (min(ranked) if direction == "min" else max(ranked))[1]


def _number(value: float, digits: int = 4) -> str:
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.{digits}g}"
