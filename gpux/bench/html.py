"""``--plot out.html``: one self-contained page (inline SVG and CSS, no script, no CDN).

Two charts drawn here: the latency distribution of every backend x batch size (box p25-p75,
p50 line, whiskers min-max, p90 and p99 ticks) and throughput against batch size per backend;
then the results table and the machine they were measured on.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

from gpux.bench.plot import backend_colors, label, latencies_ms, throughput_series, title
from gpux.bench.report import BenchReport

WIDTH = 760
ROW = 34
MARGIN_LEFT = 150
MARGIN_RIGHT = 30
TOP = 48  # the latency chart's title and legend lines


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (steps of 1, 2 or 5 x 10^k)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _number(value: float) -> str:
    return f"{value:.4g}"


def one_two_five(low: float, high: float) -> list[float]:
    """Ticks 1, 2, 5 x 10^k from the largest at or below ``low`` to the smallest at or above
    ``high`` (a logarithmic axis)."""
    values = [
        m * 10.0**k
        for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
        for m in (1, 2, 5)
    ]
    first = max(v for v in values if v <= low * (1 + 1e-9))
    last = min(v for v in values if v >= high * (1 - 1e-9))
    return [v for v in values if first <= v <= last]


def latency_svg(report: BenchReport) -> str:
    colors = backend_colors(report)
    results = report.results
    low = max(min(r.latency_ms["min"] for r in results), 1e-6)
    top = max(r.latency_ms["max"] for r in results)
    span = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    logarithmic = top / low > 4  # rows far apart (batch 1 and 64): each still readable
    ticks = one_two_five(low, top) if logarithmic else nice_ticks(top)
    height = TOP + ROW * len(results) + 30

    def x(value: float) -> float:
        if logarithmic:
            lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
            share = (math.log10(max(value, ticks[0])) - lo) / (hi - lo)
        else:
            share = value / ticks[-1]
        return round(MARGIN_LEFT + share * span, 2)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="latency distribution">',
        '<text x="10" y="16" class="title">Latency per call, ms'
        + (" (logarithmic scale)" if logarithmic else "")
        + '</text><text x="10" y="32" class="small">box: p25 to p75 · thick line: p50 · '
        "whiskers: min to max · thin line: p90 · triangle: p99</text>",
    ]
    axis_y = TOP + ROW * len(results)
    for tick in ticks:
        parts.append(
            f'<line x1="{x(tick)}" y1="{TOP - 4}" x2="{x(tick)}" y2="{axis_y}" class="grid"/>'
            f'<text x="{x(tick)}" y="{axis_y + 16}" text-anchor="middle">{_number(tick)}</text>'
        )
    for index, result in enumerate(results):
        middle = TOP + ROW * index + ROW / 2
        values = latencies_ms(result)
        p25, p75 = (float(v) for v in np.percentile(values, [25, 75]))
        stats = result.latency_ms
        color = colors[result.backend]
        half = ROW * 0.3
        parts.append(
            f"<g><title>{escape(label(result))}: min {stats['min']} p50 {stats['p50']} "
            f"p90 {stats['p90']} p99 {stats['p99']} max {stats['max']} ms, "
            f"{result.runs} runs</title>"
            f'<text x="{MARGIN_LEFT - 8}" y="{middle + 4}" text-anchor="end">'
            f"{escape(label(result))}</text>"
            f'<line x1="{x(stats["min"])}" y1="{middle}" x2="{x(stats["max"])}" y2="{middle}" '
            f'stroke="{color}"/>'
            f'<rect x="{x(p25)}" y="{middle - half}" width="{max(x(p75) - x(p25), 1)}" '
            f'height="{2 * half}" fill="{color}" fill-opacity="0.7" stroke="{color}"/>'
            f'<line x1="{x(stats["p50"])}" y1="{middle - half}" x2="{x(stats["p50"])}" '
            f'y2="{middle + half}" stroke="black" stroke-width="2"/>'
        )
        p90, p99 = x(stats["p90"]), x(stats["p99"])
        parts.append(
            f'<line x1="{p90}" y1="{middle - half}" x2="{p90}" y2="{middle + half}" '
            'stroke="black"/>'
            f'<path d="M{p99} {middle - half} l-4 -6 h8 z" fill="black"/></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def throughput_svg(report: BenchReport) -> str:
    colors = backend_colors(report)
    series = throughput_series(report)
    sizes = sorted({r.batch_size for r in report.results})
    height, top_margin, bottom = 320, 30, 270
    ticks = nice_ticks(max(r.throughput for r in report.results) * 1.1)
    # Batch sizes are spaced by their logarithm (1, 2, 4 ... evenly) when there are several.
    low, high = math.log2(sizes[0]), math.log2(sizes[-1])

    def x(size: int) -> float:
        if high == low:
            return (MARGIN_LEFT + WIDTH - MARGIN_RIGHT) / 2
        share = (math.log2(size) - low) / (high - low)
        return round(MARGIN_LEFT + 20 + share * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT - 40), 2)

    def y(value: float) -> float:
        return round(bottom - value / ticks[-1] * (bottom - top_margin), 2)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="throughput against batch size">',
        f'<text x="10" y="16" class="title">Throughput (items/s) against batch size, '
        f"{report.results[0].concurrency} caller(s)</text>",
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y(tick)}" x2="{WIDTH - MARGIN_RIGHT}" y2="{y(tick)}" '
            f'class="grid"/><text x="{MARGIN_LEFT - 8}" y="{y(tick) + 4}" text-anchor="end">'
            f"{_number(tick)}</text>"
        )
    for size in sizes:
        parts.append(f'<text x="{x(size)}" y="{bottom + 18}" text-anchor="middle">{size}</text>')
    parts.append(
        f'<text x="{(MARGIN_LEFT + WIDTH) / 2}" y="{bottom + 38}" text-anchor="middle">'
        "batch size</text>"
    )
    for index, (backend, points) in enumerate(series.items()):
        color = colors[backend]
        line = " ".join(f"{x(b)},{y(t)}" for b, t in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        for size, value in points:
            parts.append(
                f'<circle cx="{x(size)}" cy="{y(value)}" r="4" fill="{color}">'
                f"<title>{escape(backend)} batch {size}: {_number(value)} items/s</title></circle>"
                f'<text x="{x(size)}" y="{y(value) - 8}" text-anchor="middle" class="small">'
                f"{_number(value)}</text>"
            )
        legend_y = top_margin + 4 + 18 * index
        parts.append(
            f'<rect x="{WIDTH - MARGIN_RIGHT - 110}" y="{legend_y - 9}" width="12" height="12" '
            f'fill="{color}"/><text x="{WIDTH - MARGIN_RIGHT - 92}" y="{legend_y + 2}">'
            f"{escape(backend)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(report: BenchReport) -> str:
    head = (
        "<tr><th>backend</th><th>device</th><th>nodes on backend</th><th>batch</th>"
        "<th>runs</th><th>min ms</th><th>p50</th><th>p90</th><th>p99</th><th>max</th>"
        "<th>items/s</th><th>peak RSS</th></tr>"
    )
    rows = []
    for result in report.results:
        stats, placement = result.latency_ms, result.placement
        share = "n/a" if placement["share"] is None else f"{placement['share']:.0%}"
        rss = result.memory["host_peak_rss_bytes"]
        cells = [
            result.backend,
            placement["device"],
            share,
            result.batch_size,
            result.runs,
            *(f"{stats[k]:.3f}" for k in ("min", "p50", "p90", "p99", "max")),
            _number(result.throughput),
            "n/a" if rss is None else f"{rss / 2**20:.0f} MiB",
        ]
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    for skip in report.skipped:
        rows.append(
            f'<tr><td>{escape(skip.backend)}</td><td colspan="11" class="note">skipped: '
            f"{escape(skip.reason)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } .context { color: #555; }
svg { display: block; margin: 16px 0; } svg text { font: 12px system-ui, sans-serif; }
svg .title { font-weight: 600; } svg .small { font-size: 10px; }
svg .grid { stroke: #ddd; }
table { border-collapse: collapse; } td, th { padding: 3px 8px; text-align: right; white-space: nowrap; }
th { border-bottom: 1px solid #999; } td:first-child, th:first-child, td.note { text-align: left; }
td.note { white-space: normal; }
"""


def page(report: BenchReport) -> str:
    """The whole HTML document."""
    machine = report.machine
    facts = {
        "image": f"{report.image['name']} ({report.image['digest']})",
        "CPU": f"{machine['cpu']}, {machine['cpu_cores']} cores",
        "GPUs": ", ".join(machine["gpus"]) or "none seen by the NVIDIA driver",
        "OS": f"{machine['os']} ({machine['machine']})",
        "Python": machine["python"],
        "ONNX Runtime": f"{machine['onnxruntime']}; providers: "
        + ", ".join(machine["providers_available"]),
        "inputs": report.inputs,
        "settings": ", ".join(f"{k}={v}" for k, v in report.settings.items() if v is not None),
    }
    context = "".join(f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in facts.items())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>gpux bench {escape(report.image['name'])}</title><style>{STYLE}</style></head>"
        f"<body><h1>gpux bench {escape(report.image['name'])}</h1>"
        f'<p class="context">{escape(title(report))}</p>'
        f"{latency_svg(report)}{throughput_svg(report)}{_table(report)}"
        f"<h2>Context</h2><ul>{context}</ul></body></html>\n"
    )
