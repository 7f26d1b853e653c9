"""Output tensors -> JSON that people and programs can read.

Large tensors are summarised (dtype, shape, min/max/mean/std and the first values) unless the
caller asks for everything. Non-finite floats become the strings "nan", "inf", "-inf" so the
output stays valid JSON.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from gpux.errors import UsageError

FULL_LIMIT = 32  # tensors up to this many elements are always printed in full
HEAD = 8


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def tensor_to_json(array: np.ndarray[Any, Any], full: bool = False) -> dict[str, Any]:
    array = np.asarray(array)
    described: dict[str, Any] = {"dtype": _dtype_name(array), "shape": list(array.shape)}
    if full or array.size <= FULL_LIMIT:
        described["data"] = _clean(array.tolist())
        return described
    flat = array.reshape(-1)
    described["head"] = _clean(flat[:HEAD].tolist())
    if array.dtype.kind in "fiub":
        values = flat.astype(np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            described["summary"] = {
                "min": float(finite.min()),
                "max": float(finite.max()),
                "mean": float(finite.mean()),
                "std": float(finite.std()),
            }
    described["truncated"] = True
    return described


def _dtype_name(array: np.ndarray[Any, Any]) -> str:
    return "string" if array.dtype.kind in "OUS" else str(array.dtype)


def outputs_to_json(
    outputs: dict[str, np.ndarray[Any, Any]], full: bool = False
) -> dict[str, dict[str, Any]]:
    return {name: tensor_to_json(value, full) for name, value in outputs.items()}


def result_to_json(result: dict[str, Any], full: bool = False) -> dict[str, Any]:
    """A pipeline result for JSON: its raw ``outputs`` (numpy arrays, present when raw tensors
    were asked for) become tensor descriptions, summarised unless ``full``."""
    if not isinstance(result.get("outputs"), dict):
        return result
    return {**result, "outputs": outputs_to_json(result["outputs"], full=full)}


OUTPUT_SUFFIXES = (".json", ".npy", ".npz")


def check_output_path(path: Path) -> None:
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(
            f"cannot write outputs to '{path.name}': unknown file type '{path.suffix}'",
            "use --output out.json, out.npy or out.npz",
        )


def write_outputs(outputs: dict[str, np.ndarray[Any, Any]], path: Path) -> list[Path]:
    """Write outputs to .json (all), .npz (all) or .npy (one output; several get name suffixes)."""
    import json

    check_output_path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(json.dumps(outputs_to_json(outputs, full=True)) + "\n", "utf-8")
        return [path]
    if suffix == ".npz":
        np.savez(path, **{name: np.asarray(v) for name, v in outputs.items()})  # type: ignore[arg-type]
        return [path]
    if suffix == ".npy":
        if len(outputs) == 1:
            np.save(path, np.asarray(next(iter(outputs.values()))), allow_pickle=False)
            return [path]
        written = []
        for name, value in outputs.items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            target = path.with_name(f"{path.stem}.{safe}.npy")
            np.save(target, np.asarray(value), allow_pickle=False)
            written.append(target)
        return written
    raise UsageError(
        f"cannot write outputs to '{path.name}': unknown file type '{suffix}'",
        "use --output out.json, out.npy or out.npz",
    )
