"""``--plot out.png|out.html``: latency distribution per backend x batch size, and throughput
against batch size per backend, titled with the machine they were measured on.

PNG goes through matplotlib (the ``plot`` extra) on its Agg canvas, without pyplot's global
state; HTML needs nothing: a self-contained page with inline SVG (``gpux.bench.html``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from gpux.bench.report import BenchReport, BenchResult
from gpux.errors import UsageError

COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1", "#edc948")
SUFFIXES = (".png", ".html", ".htm")


def check_target(path: Path) -> None:
    """A plot file GPUX can write: .png with matplotlib installed, or .html."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(
            f"cannot plot to '{path.name}': unknown format '{suffix or path.name}'",
            "use --plot out.png (needs matplotlib) or --plot out.html (self-contained)",
        )
    if suffix == ".png" and importlib.util.find_spec("matplotlib") is None:
        raise _no_matplotlib(path)


def _no_matplotlib(path: Path) -> UsageError:
    return UsageError(
        f"--plot {path.name} needs matplotlib, which is not installed",
        "pip install 'gpux[plot]', or write an HTML plot (--plot out.html needs nothing)",
    )


def write_plot(report: BenchReport, path: Path) -> Path:
    """Write the plots to ``path``; its suffix picks the format."""
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        _png(report, path)
    else:
        from gpux.bench.html import page

        path.write_text(page(report), encoding="utf-8")
    return path


def title(report: BenchReport) -> str:
    """One line of context: image, CPU, GPUs, ONNX Runtime, OS."""
    machine = report.machine
    gpus = ", ".join(machine["gpus"]) or "no NVIDIA GPU"
    return (
        f"{report.image['name']} ({report.image['digest'][7:19]}) · {machine['cpu']}, "
        f"{machine['cpu_cores']} cores · {gpus} · onnxruntime {machine['onnxruntime']} · "
        f"{machine['os']} · Python {machine['python']}"
    )


def label(result: BenchResult) -> str:
    return f"{result.backend} · batch {result.batch_size}"


def backend_colors(report: BenchReport) -> dict[str, str]:
    backends = list(dict.fromkeys(r.backend for r in report.results))
    return {b: COLORS[i % len(COLORS)] for i, b in enumerate(backends)}


def throughput_series(report: BenchReport) -> dict[str, list[tuple[int, float]]]:
    """Per backend, (batch size, items/s) in batch order."""
    series: dict[str, list[tuple[int, float]]] = {}
    for result in report.results:
        series.setdefault(result.backend, []).append((result.batch_size, result.throughput))
    return {b: sorted(points) for b, points in series.items()}


def latencies_ms(result: BenchResult) -> np.ndarray[Any, Any]:
    return np.asarray(result.latencies_ns, dtype=np.float64) / 1e6


def _png(report: BenchReport, path: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise _no_matplotlib(path) from None
    colors = backend_colors(report)
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    distribution, throughput = figure.subplots(1, 2, width_ratios=[3, 2])

    results = report.results
    boxes = distribution.boxplot(
        [latencies_ms(r) for r in results],
        whis=(0, 100),  # whiskers at min and max: every call is shown
        patch_artist=True,
        medianprops={"color": "black"},
    )
    for box, result in zip(boxes["boxes"], results, strict=True):
        box.set_facecolor(colors[result.backend])
        box.set_alpha(0.75)
    positions = range(1, len(results) + 1)
    distribution.scatter(
        positions, [r.latency_ms["p99"] for r in results], marker="_", s=300, color="black",
        label="p99", zorder=3,
    )  # fmt: skip
    distribution.set_xticks(list(positions), [label(r).replace(" · ", "\n") for r in results])
    if max(r.latency_ms["max"] for r in results) > 4 * min(r.latency_ms["min"] for r in results):
        distribution.set_yscale("log")  # rows far apart (batch 1 and 64): each still readable
    distribution.set_ylabel("latency per call (ms)")
    distribution.set_title("Latency distribution (box: p25-p75, line: p50, whiskers: min-max)")
    distribution.legend(loc="upper left")
    distribution.grid(axis="y", alpha=0.3)

    for backend, points in throughput_series(report).items():
        sizes = [b for b, _ in points]
        values = [t for _, t in points]
        throughput.plot(sizes, values, marker="o", color=colors[backend], label=backend)
        for size, value in points:
            throughput.annotate(
                f"{value:.4g}", (size, value), textcoords="offset points", xytext=(0, 6),
                ha="center", fontsize=8,
            )  # fmt: skip
    all_sizes = sorted({r.batch_size for r in results})
    if len(all_sizes) > 1:
        throughput.set_xscale("log", base=2)
    throughput.set_xticks(all_sizes, [str(s) for s in all_sizes])
    throughput.set_ylim(0, max(r.throughput for r in results) * 1.15)
    throughput.set_xlabel("batch size")
    throughput.set_ylabel("throughput (items/s)")
    throughput.set_title(f"Throughput vs batch size ({results[0].concurrency} caller(s))")
    throughput.legend()
    throughput.grid(alpha=0.3)

    figure.suptitle(title(report), fontsize=9)
    figure.savefig(path, dpi=110)
