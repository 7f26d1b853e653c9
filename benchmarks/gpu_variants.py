"""fp32, fp16, int8 (and fused) builds of the GPU reference models, benchmarked per backend.

For each reference model (benchmarks/export_reference_models.py: ResNet-50 and BERT-base, random
weights, fixed batch 1 or 32), ``gpux build`` on the first backend (CUDA) makes the fp32 image and one
variant at a time (``fp16``, ``int8`` dynamic, ``fused`` transformer fusion for BERT). Accuracy
is the variant report the build stores (``gpux inspect NAME:TAG-fp16``), on four sample inputs
(normal pixels; token ids drawn from BERT's vocabulary with a full mask). Every image is then
benchmarked with ``gpux bench``'s library call on each backend (CUDA, WebGPU) with the same feed,
and each variant's p50 is quoted as a ratio to the fp32 image's p50 on that backend.

Accuracy bounds are turned off, so that every variant is measured whatever its accuracy.

    python benchmarks/gpu_variants.py --models DIR [--seconds 2] [--backends cuda,webgpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("resnet50_b1", "resnet50_b32", "bert_b1", "bert_b32")
VARIANTS = {"resnet50": ("fp16", "int8"), "bert": ("fp16", "int8", "fused")}
SAMPLES = 4
BERT_VOCAB = 30522


def input_shapes(model: Path) -> dict[str, list[int]]:
    """The fixed input shapes, read once: BERT-base's file is 440 MB of weights."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    return {t.name: [d.dim_value for d in t.type.tensor_type.shape.dim] for t in graph.input}


def feed(shapes: dict[str, list[int]], seed: int) -> dict[str, np.ndarray]:
    """A realistic input: token ids from the vocabulary with a full mask, or normal pixels."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        if name == "input_ids":
            # [CLS] ... [SEP] around ids past the special tokens, as a tokenizer writes them
            ids = rng.integers(1000, BERT_VOCAB, shape)
            ids[:, 0], ids[:, -1] = 101, 102
            values[name] = ids.astype(np.int64)
        elif name == "attention_mask":
            values[name] = np.ones(shape, np.int64)
        else:
            values[name] = rng.standard_normal(shape).astype(np.float32)
    return values


def project(work: Path, model: Path, shapes: dict[str, list[int]]) -> Path:
    folder = work / model.stem
    (folder / "samples").mkdir(parents=True)
    (folder / model.name).symlink_to(model.resolve())
    (folder / "GPUXfile").write_text(
        f"name: {model.stem.replace('_', '-')}\nmodel: ./{model.name}\n"
    )
    for seed in range(SAMPLES):
        np.savez(folder / "samples" / f"sample_{seed}.npz", **feed(shapes, seed))  # type: ignore[arg-type]
    return folder


def bench(
    image: str, backend: str, seconds: float, values: dict[str, np.ndarray], store: Any
) -> dict[str, Any]:
    from gpux.bench import BenchSettings, benchmark
    from gpux.errors import GPUXError

    settings = BenchSettings(backends=[backend], duration_s=seconds, warmup_s=1.0)
    try:
        run = benchmark(image, settings, inputs=values, store=store)
    except GPUXError as exc:
        return {"error": exc.message}
    if not run.results:
        return {"error": "; ".join(s.reason for s in run.skipped) or "no result"}
    result = run.results[0]
    return {
        "p50_ms": result.latency_ms["p50"],
        "p99_ms": result.latency_ms["p99"],
        "throughput": result.throughput,
        "share": result.placement["share"],
        "providers": result.placement["providers"],
        "device_bytes": result.memory["device"].get("bytes"),
    }


def measure(
    model: Path, work: Path, store: Any, backends: list[str], seconds: float
) -> list[dict[str, Any]]:
    from gpux.builder.build import BuildOptions, build
    from gpux.errors import GPUXError

    shapes = input_shapes(model)
    folder = project(work, model, shapes)
    values = feed(shapes, seed=100)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    images: list[tuple[str, str, dict[str, Any] | None]] = []
    for variant in VARIANTS[model.stem.split("_")[0]]:
        options = BuildOptions(
            backend=backends[0],
            variants=[variant],
            samples=str(folder / "samples"),
            accuracy={"min_cosine": None},
        )
        try:
            result = build(folder, options, store=store)
        except GPUXError as exc:
            failed.append({"model": model.stem, "variant": variant, "error": exc.message})
            continue
        if not images:
            images.append(("fp32", result.image.name, None))
        variant_image = result.variants[0].image
        images.append((variant, variant_image.name, variant_image.config["variant"]))
        print(f"{model.stem} {variant}: built", file=sys.stderr, flush=True)
    for variant, image, report in images:
        row: dict[str, Any] = {"model": model.stem, "variant": variant, "report": report}
        for backend in backends:
            row[backend] = bench(image, backend, seconds, values, store)
            print(f"{model.stem} {variant} {backend}: {row[backend]}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows + failed


def table(rows: list[dict[str, Any]], backends: list[str]) -> str:
    head = "| model | variant | size | cosine | max abs error | top-1 agreement |"
    rule = "|---|---|---|---|---|---|"
    for backend in backends:
        head += f" {backend} p50 ms | {backend} ratio | {backend} nodes on backend |"
        rule += "---|---|---|"
    lines = [head, rule]
    base: dict[tuple[str, str], float] = {}
    for row in rows:
        if "error" in row:
            reason = row["error"].splitlines()[0]
            lines.append(f"| {row['model']} | {row['variant']} | not built: {reason} |")
            continue
        report = row["report"]
        if report is None:
            cells = "1.00x | - | - | - |"
        else:
            size, accuracy = report["size"], report["accuracy"]
            top1 = accuracy.get("top1_agreement")
            cells = (
                f"{size['ratio']:.2f}x ({size['original_bytes'] / 1e6:.0f} -> "
                f"{size['variant_bytes'] / 1e6:.0f} MB) | {accuracy['cosine']:.6f} | "
                f"{accuracy['max_abs_error']:.3g} | {'-' if top1 is None else f'{top1:.0%}'} |"
            )
        for backend in backends:
            result = row[backend]
            if "error" in result:
                cells += f" {result['error'].splitlines()[0][:80]} | | |"
                continue
            if row["variant"] == "fp32":
                base[(row["model"], backend)] = result["p50_ms"]
            reference = base.get((row["model"], backend))
            ratio = f"**{result['p50_ms'] / reference:.2f}x**" if reference else "-"
            share = result["share"]
            cells += (
                f" {result['p50_ms']:.3f} | {ratio} | {'?' if share is None else f'{share:.0%}'} |"
            )
        lines.append(f"| {row['model']} | {row['variant']} | {cells}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="Folder of reference models.")
    parser.add_argument("--names", default=",".join(MODELS), help="Comma-separated subset.")
    parser.add_argument("--backends", default="cuda,webgpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="Timed phase per image.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",")]
    work = Path(tempfile.mkdtemp(prefix="gpux-gpu-variants-"))
    os.environ["GPUX_HOME"] = str(work / "home")

    import onnxruntime

    from gpux.builder import head_to_head
    from gpux.runtime import libraries
    from gpux.store import Store

    head_to_head.LATENCY_SECONDS = args.seconds
    store = Store(work / "home")
    rows: list[dict[str, Any]] = []
    for name in args.names.split(","):
        path = args.models / f"{name.strip()}.onnx"
        if path.exists():
            rows.extend(measure(path, work, store, backends, args.seconds))
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2))
    print(
        f"GPU: {', '.join(libraries.gpu_models()) or '?'}, driver "
        f"{libraries.nvidia_driver_version()}, onnxruntime {onnxruntime.__version__}; "
        f"builds on {backends[0]}; gpux bench {args.seconds:g} s per image after 1 s warm-up"
    )
    print(table(rows, backends))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
