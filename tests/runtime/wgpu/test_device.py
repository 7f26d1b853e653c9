"""The wgpu device layer: device dtypes on the way in and out, the int32 guard, pipelines made
once, and one lowering run end to end."""

from __future__ import annotations

import numpy as np
import pytest

from gpux.errors import InputError
from gpux.runtime.wgpu.device import (
    Gpu,
    device_bytes,
    from_device_bytes,
    pack_params,
    run_lowering,
    to_device_bytes,
)
from gpux.runtime.wgpu.kernel import Binding, Dispatch, Lowering, TensorInfo

SCALE = """
struct Params { count: u32, factor: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < params.count) { y[id.x] = x[id.x] * params.factor; }
}
"""


def info(shape: tuple[int, ...], dtype: type) -> TensorInfo:
    return TensorInfo(shape, np.dtype(dtype))


@pytest.mark.parametrize(
    ("array", "stored"),
    [
        (np.array([1.5, -2.0, 3.25], dtype=np.float32), 12),
        (np.array([1.5, -2.0, 3.25], dtype=np.float16), 8),  # 6 bytes padded to 8
        (np.array([[7, -9]], dtype=np.int64), 8),  # narrowed to i32
        (np.array([True, False, True]), 12),  # one u32 each
        (np.zeros((0, 3), dtype=np.float32), 4),  # WebGPU refuses empty buffers
    ],
)
def test_device_bytes_round_trip(array: np.ndarray, stored: int) -> None:
    tensor = TensorInfo(array.shape, array.dtype)
    data = to_device_bytes(array)
    assert len(data) == stored == device_bytes(tensor)
    back = from_device_bytes(data, tensor)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_int64_outside_int32_is_refused_with_the_values() -> None:
    with pytest.raises(InputError, match=r"outside int32 \(0\.\.4294967296\)"):
        to_device_bytes(np.array([0, 2**32], dtype=np.int64))


def test_lowering_runs_and_pipelines_are_made_once(gpu: Gpu) -> None:
    x = np.arange(100, dtype=np.float32)
    dispatch = Dispatch(
        SCALE,
        (Binding("input", 0), Binding("output", 0), Binding("params")),
        (2, 1, 1),
        pack_params(100, 2.5),
    )
    for _ in range(2):
        (y,) = run_lowering(gpu, Lowering((dispatch,)), [x], [info((100,), np.float32)])
        np.testing.assert_array_equal(y, x * 2.5)
    assert gpu.pipeline(dispatch) is gpu.pipeline(dispatch)


def test_alias_keeps_the_data_and_takes_the_output_shape(gpu: Gpu) -> None:
    x = np.arange(6, dtype=np.int64)
    (y,) = run_lowering(gpu, Lowering(alias_input=0), [x], [info((2, 3), np.int64)])
    np.testing.assert_array_equal(y, x.reshape(2, 3))


def test_software_adapter_is_not_picked_unless_allowed(gpu: Gpu) -> None:
    from gpux.errors import BackendError
    from gpux.runtime.wgpu.device import open_device

    if not gpu.is_software:
        pytest.skip("this machine has a hardware adapter")
    with pytest.raises(BackendError, match="no usable wgpu adapter"):
        open_device()
