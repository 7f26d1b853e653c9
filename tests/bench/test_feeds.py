"""Feeds for benchmarks keep each input's rank (a scalar such as Silero VAD's sample rate)."""

from __future__ import annotations

import numpy as np

from gpux.bench import feeds
from gpux.runtime.tensors import TensorSignature


def test_resize_grows_batch_axes_and_keeps_scalars() -> None:
    signatures = [
        TensorSignature("x", "float32", ["batch", 4]),
        TensorSignature("sr", "int64", []),
        TensorSignature("state", "float32", [2, 1, 8]),
    ]
    feed = {
        "x": np.arange(8, dtype=np.float32).reshape(2, 4),
        "sr": np.array(16000, dtype=np.int64),
        "state": np.zeros((2, 1, 8), np.float32),
    }
    resized = feeds.resize(feed, signatures, 5)
    assert resized["x"].shape == (5, 4)
    np.testing.assert_array_equal(resized["x"][2], feed["x"][0])  # rows repeated in turn
    assert resized["sr"].shape == () and int(resized["sr"]) == 16000
    assert resized["state"].shape == (2, 1, 8)
    assert all(v.flags.c_contiguous for v in resized.values())
