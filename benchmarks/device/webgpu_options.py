"""Issue 19, step 1: ONNX Runtime's WebGPU EP under its own options, on the lent GPU.

For each reference model (benchmarks/export_reference_models.py: ResNet-50 and BERT-base at fixed
batch 1 and 32), one session per configuration, each timed for a few seconds with host numpy I/O
(median of warm calls), beside the CUDA EP in the same process:

- layout: ``preferredLayout`` NHWC (ONNX Runtime's default) and NCHW;
- graph capture: ``enableGraphCapture=1``, called as plain ``session.run`` and, where that is
  refused, through IOBinding; checked on two different inputs, so that a replay that ignores
  new data is caught;
- fp16: the model converted as ``gpux build --variant fp16`` does (inputs and outputs kept fp32);
- which nodes leave the device: node counts per provider, and the EP's own verbose log lines that
  say why (captured from session creation).

Every configuration's outputs are compared with the CPU provider's (largest error over the
output's scale), so a fast but wrong option is visible.

    python3 benchmarks/device/webgpu_options.py --models DIR [--seconds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpux.runtime.onnxruntime_backend import RECORD_ASSIGNMENT, node_assignment
from gpux.runtime.webgpu_rewrites import webgpu_model

MODELS = ("resnet50_b1", "resnet50_b32", "bert_b1", "bert_b32")
WEBGPU = "WebGpuExecutionProvider"
# Log lines of session creation that explain a node's provider (ONNX Runtime's CPU fallback of
# shape computations, kernels missing for a type ...).
WHY = re.compile(
    r"fallback|CPUExecutionProvider|not supported|no kernel|Memcpy|placed", re.IGNORECASE
)
NOISE = re.compile(r"GraphTransformer|graph transformer|TraceSessionOptions|Removing initializer")


def feed_for(session: Any, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for meta in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in meta.shape]
        if "int64" in meta.type:
            high = 2 if "mask" in meta.name else 30000
            feed[meta.name] = rng.integers(0 if high == 30000 else 1, high, shape, dtype=np.int64)
        else:
            feed[meta.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def scaled_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Largest absolute error over the reference's largest magnitude, across outputs."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        scale = float(np.max(np.abs(w))) or 1.0
        worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w))) / scale)
    return worst


def webgpu_device(ort: Any) -> Any:
    import onnxruntime_ep_webgpu as plugin

    ort.register_execution_provider_library("webgpu", plugin.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == plugin.get_ep_name()]
    if not devices:
        raise SystemExit("the WebGPU EP found no device (Vulkan loader and driver ICD?)")
    return devices[0]


class CapturedStderr:
    """ONNX Runtime logs from C++ to fd 2: point fd 2 at a file while a session is made."""

    def __enter__(self) -> CapturedStderr:
        self.file = tempfile.TemporaryFile(mode="w+b")
        sys.stderr.flush()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()


def make_session(
    ort: Any, model: Path, provider: str, options: dict[str, str], device: Any, verbose: bool
) -> tuple[Any, float, list[str]]:
    settings = ort.SessionOptions()
    settings.add_session_config_entry(RECORD_ASSIGNMENT, "1")
    if verbose:
        settings.log_severity_level = 0
    started = time.perf_counter()
    with CapturedStderr() as log:
        if provider == "cuda":
            session = ort.InferenceSession(
                str(model), settings, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
        elif provider == "cpu":
            session = ort.InferenceSession(str(model), settings, providers=["CPUExecutionProvider"])
        else:
            settings.add_provider_for_devices([device], options)
            session = ort.InferenceSession(str(model), settings)
    seconds = time.perf_counter() - started
    why = [
        line.strip()[:300]
        for line in log.text.splitlines()
        if WHY.search(line) and not NOISE.search(line)
    ]
    return session, seconds, why[:40]


def io_binding_runner(session: Any) -> Callable[[dict[str, np.ndarray]], list[Any]]:
    """What graph capture needs (ONNX Runtime 1.31's Python checks it): inputs and outputs in
    fixed WebGPU buffers that this session allocated. Each call copies the host inputs in and
    reads the outputs back, the same host I/O as a plain run."""
    binding = session.io_binding()
    inputs, outputs = {}, []
    for meta in session.get_inputs():
        dtype = np.int64 if "int64" in meta.type else np.float32
        inputs[meta.name] = session.create_ortvalue_from_shape_and_type(
            list(meta.shape), dtype, "webgpu", 0
        )
        binding.bind_ortvalue_input(meta.name, inputs[meta.name])
    for meta in session.get_outputs():
        dtype = np.float32 if "float" in meta.type else np.int64
        value = session.create_ortvalue_from_shape_and_type(list(meta.shape), dtype, "webgpu", 0)
        binding.bind_ortvalue_output(meta.name, value)
        outputs.append(value)

    def call(feed: dict[str, np.ndarray]) -> list[Any]:
        for name, array in feed.items():
            inputs[name].update_inplace(array)
        session.run_with_iobinding(binding)
        return [value.numpy() for value in outputs]

    return call


def timed(call: Callable[[], object], seconds: float, most: int = 2000) -> dict[str, float]:
    deadline = time.perf_counter() + seconds / 4
    while time.perf_counter() < deadline:  # warm-up: a quarter of the budget
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and len(times) < most:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return {"p50_ms": round(statistics.median(times) * 1e3, 3), "calls": len(times)}


def measure(
    ort: Any,
    model: Path,
    label: str,
    provider: str,
    options: dict[str, str],
    device: Any,
    reference: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    seconds: float,
) -> dict[str, Any]:
    row: dict[str, Any] = {"config": label, "model": model.stem}
    try:
        session, row["load_s"], row["log"] = make_session(
            ort, model, provider, options, device, verbose=provider == "webgpu"
        )
    except Exception as exc:
        return {**row, "error": f"session: {str(exc).splitlines()[0][:400]}"}
    on = {"cuda": "CUDAExecutionProvider", "webgpu": WEBGPU}.get(provider, "CPUExecutionProvider")
    assignment = node_assignment(session, on)
    row["nodes"] = {k: assignment.get(k) for k in ("nodes", "share", "by_provider", "elsewhere")}
    first, second = feed_for(session, 0), feed_for(session, 1)

    def plain(feed: dict[str, np.ndarray]) -> list[Any]:
        return list(session.run(None, feed))

    runner: Callable[[dict[str, np.ndarray]], list[Any]] = plain
    try:
        plain(first)
        plain(first)  # graph capture happens on a later run than the first
    except Exception as exc:
        row["plain_run"] = str(exc).splitlines()[0][:400]
        runner = io_binding_runner(session)
        row["io"] = "IOBinding over session-allocated WebGPU buffers"
        try:
            runner(first)
            runner(first)
        except Exception as inner:
            return {**row, "error": f"run: {str(inner).splitlines()[0][:400]}"}
    # Two different inputs, each against the CPU: a captured graph must read new data.
    row["error_vs_cpu"] = max(
        scaled_error(runner(first), reference(first)),
        scaled_error(runner(second), reference(second)),
    )
    row.update(timed(lambda: runner(first), seconds))
    return row


def fp16_copy(model: Path, folder: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    target = folder / f"{model.stem}_fp16.onnx"
    if not target.exists():
        converted = convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
        onnx.save(converted, str(target))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--names", default=",".join(MODELS))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    device = webgpu_device(ort)
    print(
        f"onnxruntime {ort.__version__}; WebGPU device: {device.device.vendor} "
        f"{device.device.metadata}",
        flush=True,
    )
    rows = []
    for name in args.names.split(","):
        model = args.models / f"{name}.onnx"
        cpu, _, _ = make_session(ort, model, "cpu", {}, None, verbose=False)

        def reference(feed: dict[str, np.ndarray], cpu: Any = cpu) -> list[np.ndarray]:
            return list(cpu.run(None, feed))

        # GPUX's WebGPU rewrite (gpux/runtime/webgpu_rewrites.py), as the backend applies it.
        fixed, rewrites = webgpu_model(model, args.models / "cache")
        half, _ = webgpu_model(fp16_copy(model, args.models), args.models / "cache")
        nhwc, capture = {"preferredLayout": "NHWC"}, {"enableGraphCapture": "1"}
        configs: list[tuple[str, Path, str, dict[str, str]]] = [
            ("CUDA EP", model, "cuda", {}),
            ("WebGPU NHWC (default)", model, "webgpu", nhwc),
            ("WebGPU NCHW", model, "webgpu", {"preferredLayout": "NCHW"}),
            ("WebGPU NHWC + graph capture", model, "webgpu", {**nhwc, **capture}),
        ]
        if rewrites:
            print(f"{name}: rewritten for WebGPU: {rewrites}", flush=True)
            configs += [
                ("WebGPU NHWC, rewritten", fixed, "webgpu", nhwc),
                ("WebGPU NHWC, rewritten + graph capture", fixed, "webgpu", {**nhwc, **capture}),
            ]
        configs += [
            ("WebGPU NHWC fp16", half, "webgpu", nhwc),
            ("WebGPU NHWC fp16 + graph capture", half, "webgpu", {**nhwc, **capture}),
        ]
        for label, path, provider, options in configs:
            row = measure(ort, path, label, provider, options, device, reference, args.seconds)
            row["model"] = name
            rows.append(row)
            shown = {k: v for k, v in row.items() if k != "log"}
            print(json.dumps(shown), flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
        del cpu
    print(
        f"\n{'model':<14} {'configuration':<40} {'p50 ms':>9} {'vs default':>10} "
        f"{'err/scale':>10} {'on EP':>6}"
    )
    for name in args.names.split(","):
        mine = [r for r in rows if r["model"] == name]
        base = next(
            (r.get("p50_ms") for r in mine if r["config"].startswith("WebGPU NHWC (")), None
        )
        for r in mine:
            p50 = r.get("p50_ms")
            ratio = f"{p50 / base:.2f}x" if p50 and base else "-"
            share = (r.get("nodes") or {}).get("share")
            print(
                f"{name:<14} {r['config']:<40} {p50 if p50 else r.get('error', '-')!s:>9} "
                f"{ratio:>10} {r.get('error_vs_cpu', float('nan')):>10.2e} "
                f"{share if share is not None else '-'!s:>6}"
            )


if __name__ == "__main__":
    main()
