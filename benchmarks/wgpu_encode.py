"""What encoding one compute dispatch costs the CPU in wgpu-py: with bind groups built at load
(what the wgpu engine does) against a new bind group per dispatch, as a ratio.

    python benchmarks/wgpu_encode.py [--dispatches 500] [--repeats 7] [--software]

Each repeat encodes ``--dispatches`` dispatches of one small kernel into one compute pass, then
submits and waits; the figures are medians per dispatch, of encoding alone (submit excluded).
``--software`` allows lavapipe, the only adapter on a CPU machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHADER = """
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&y)) { y[id.x] = x[id.x] + 1.0; }
}
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dispatches", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--software", action="store_true")
    args = parser.parse_args()

    from gpux.runtime.wgpu.device import open_device
    from gpux.runtime.wgpu.kernel import Binding, Dispatch

    gpu = open_device(allow_software=args.software)
    dispatch = Dispatch(SHADER, (Binding("input", 0), Binding("output", 0)), (1, 1, 1))
    pipeline = gpu.pipeline(dispatch)
    # Two buffers per dispatch, as consecutive nodes of a graph have.
    buffers = [gpu.upload(np.zeros(64, dtype=np.float32)) for _ in range(args.dispatches + 1)]
    prebuilt = [gpu.bind_group(dispatch, buffers[n : n + 2]) for n in range(args.dispatches)]
    layout = pipeline.get_bind_group_layout(0)

    def new_bind_group(n: int) -> object:
        return gpu.device.create_bind_group(
            layout=layout,
            entries=[
                {"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}}
                for i, b in enumerate(buffers[n : n + 2])
            ],
        )

    def encode(fresh: bool) -> float:
        started = time.perf_counter()
        encoder = gpu.device.create_command_encoder()
        compute_pass = encoder.begin_compute_pass()
        compute_pass.set_pipeline(pipeline)
        for n in range(args.dispatches):
            group = new_bind_group(n) if fresh else prebuilt[n]
            compute_pass.set_bind_group(0, group)
            compute_pass.dispatch_workgroups(1, 1, 1)
        compute_pass.end()
        command = encoder.finish()
        elapsed = time.perf_counter() - started
        gpu.queue.submit([command])
        gpu.queue.read_buffer(buffers[-1])  # waits for the pass: no backlog between rounds
        return elapsed / args.dispatches * 1e6

    results = {}
    for fresh in (False, True, False, True):  # warm-up round first, then measured rounds
        results[fresh] = statistics.median(encode(fresh) for _ in range(args.repeats))
    print(f"adapter: {gpu.adapter_summary}; {args.dispatches} dispatches per pass")
    print(f"prebuilt bind groups: {results[False]:.2f} us per dispatch")
    print(f"new bind group each:  {results[True]:.2f} us per dispatch")
    print(f"ratio new/prebuilt:   {results[True] / results[False]:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
