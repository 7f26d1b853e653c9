"""``gpux bench`` on real models: the JSON report's figures agree with each other and carry
their context, sweeps and backend comparisons make table rows, plots and CSV files are valid,
and mistakes get clear errors."""

from __future__ import annotations

import csv
import html.parser
import math
from pathlib import Path

import pytest

from tests.bench.conftest import webgpu_skip_reason
from tests.cli.expect import BoundCLI, assert_failure

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

QUICK = ("--runs", "12", "--warmup", "2")


def test_json_report_is_consistent_and_carries_its_context(gpux: BoundCLI) -> None:
    report = gpux.json("bench", "minilm", *QUICK, "--json")

    image = gpux.json("inspect", "minilm", "--json")
    assert report["image"]["name"] == "minilm:latest"
    assert report["image"]["digest"] == image["digest"]
    machine = report["machine"]
    for field in ("cpu", "cpu_cores", "os", "python", "onnxruntime", "providers_available"):
        assert machine[field], field
    assert isinstance(machine["gpus"], list)
    assert "CPUExecutionProvider" in machine["providers_available"]
    assert report["inputs"] == "generated"

    [result] = report["results"]
    assert result["runs"] == 12
    assert result["warmup_runs"] == 2
    assert result["batch_size"] == 1 and result["concurrency"] == 1
    assert result["input_shapes"] == {name: [1, 32] for name in image_inputs(image)}
    latency = result["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
    assert latency["p99"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]
    # One caller: items/s is the batch over the mean latency, up to the loop's own time.
    assert result["throughput_items_per_s"] == pytest.approx(1e3 / latency["mean"], rel=0.05)
    assert result["calls_per_s"] * result["elapsed_s"] == pytest.approx(12, rel=1e-3)

    placement = result["placement"]
    assert placement["backend"] == result["backend"] == "cpu"
    assert placement["providers"] == ["CPUExecutionProvider"]
    assert placement["share"] == 1.0 and placement["nodes"] == placement["nodes_on_backend"] > 0
    assert placement["device"].startswith("CPU")
    memory = result["memory"]
    assert memory["host_peak_rss_bytes"] >= memory["host_rss_before_bytes"] > 10 * 2**20
    assert memory["device"]["bytes"] is None and "cpu" in memory["device"]["why"]
    assert "latencies_ms" not in result
    assert report["skipped"] == []


def image_inputs(image: dict[str, object]) -> list[str]:
    inputs = image["inputs"]
    assert isinstance(inputs, list)
    return [entry["name"] for entry in inputs]


def test_raw_latencies_are_the_calls_the_summary_describes(gpux: BoundCLI) -> None:
    report = gpux.json("bench", "orientation", *QUICK, "--json", "--raw-latencies")
    [result] = report["results"]
    latencies = result["latencies_ms"]
    assert len(latencies) == result["runs"] == 12
    assert min(latencies) == pytest.approx(result["latency_ms"]["min"], abs=1e-3)
    assert max(latencies) == pytest.approx(result["latency_ms"]["max"], abs=1e-3)
    assert sum(latencies) / 12 == pytest.approx(result["latency_ms"]["mean"], abs=1e-3)


def test_sweep_and_backend_comparison_make_the_table(gpux: BoundCLI) -> None:
    output = gpux.ok("bench", "minilm", "-b", "1,4", "--backend", "cpu,webgpu", *QUICK).stdout
    rows = [line.split() for line in output.splitlines()]
    cpu_rows = [row[:3] for row in rows if row and row[0] == "cpu" and len(row) >= 11]
    assert cpu_rows == [["cpu", "1", "12"], ["cpu", "4", "12"]], output
    assert "minilm:latest" in output and "onnxruntime" in output and "CPU" in output
    reason = webgpu_skip_reason()
    if reason is None:
        assert [row[:2] for row in rows if row and row[0] == "webgpu"][:2] == [
            ["webgpu", "1"],
            ["webgpu", "4"],
        ], output
    else:
        assert f"webgpu: skipped backend 'webgpu' is not available: {reason}" in output, output


def test_comparison_report_names_the_skipped_backend_and_why(gpux: BoundCLI) -> None:
    reason = webgpu_skip_reason()
    if reason is None:
        pytest.skip("WebGPU runs on this machine: nothing is skipped")
    report = gpux.json("bench", "minilm", "-b", "1,4", "--backend", "cpu,webgpu", *QUICK, "--json")
    assert [(r["backend"], r["batch_size"]) for r in report["results"]] == [("cpu", 1), ("cpu", 4)]
    assert report["results"][1]["input_shapes"]["input_ids"] == [4, 32]
    [skip] = report["skipped"]
    assert skip["backend"] == "webgpu" and reason in skip["reason"] and skip["hint"]


def test_the_only_backend_unavailable_is_an_error(gpux: BoundCLI) -> None:
    reason = webgpu_skip_reason()
    if reason is None:
        pytest.skip("WebGPU runs on this machine")
    assert_failure(gpux("bench", "minilm", "--backend", "webgpu", *QUICK), 7, reason)


def test_png_plot(gpux: BoundCLI, workdir: Path) -> None:
    from PIL import Image

    target = workdir / "plots" / "orientation.png"
    result = gpux.ok("bench", "orientation", "-b", "1,2", *QUICK, "--plot", str(target))
    assert f"wrote {target}" in result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(target) as picture:
        picture.verify()
    with Image.open(target) as picture:
        assert picture.format == "PNG" and picture.width > 800 and picture.height > 300


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.open: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)
        if tag in ("svg", "table", "body", "html", "g"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("svg", "table", "body", "html", "g"):
            assert self.open and self.open[-1] == tag, (self.open, tag)
            self.open.pop()


def test_html_plot_is_self_contained(gpux: BoundCLI, workdir: Path) -> None:
    target = workdir / "orientation.html"
    gpux.ok("bench", "orientation", "-b", "1,2", *QUICK, "--plot", str(target))
    page = target.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    parser = _Elements()
    parser.feed(page)
    parser.close()
    assert parser.open == []  # every svg, g, table, body and html element closed
    assert parser.tags.count("svg") == 2
    assert parser.tags.count("circle") == 2  # throughput at batch 1 and 2
    assert "orientation:latest" in page and "onnxruntime" in page
    # Nothing fetched from elsewhere: no script, no external reference.
    assert "script" not in parser.tags
    assert not [value for name, value in parser.attributes if name in ("src", "href")]


def test_csv_matches_the_json(gpux: BoundCLI, workdir: Path) -> None:
    target = workdir / "minilm.csv"
    report = gpux.json("bench", "minilm", "-b", "1,2", *QUICK, "--json", "--csv", str(target))
    with target.open(newline="", encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    assert len(rows) == len(report["results"]) == 2
    for row, result in zip(rows, report["results"], strict=True):
        assert row["image"] == report["image"]["name"]
        assert row["digest"] == report["image"]["digest"]
        assert row["backend"] == result["backend"]
        assert int(row["batch_size"]) == result["batch_size"]
        assert int(row["runs"]) == result["runs"]
        for key in ("min", "p50", "p90", "p99", "max"):
            assert float(row[f"latency_{key}_ms"]) == result["latency_ms"][key]
        assert float(row["throughput_items_per_s"]) == result["throughput_items_per_s"]
        assert int(row["host_peak_rss_bytes"]) == result["memory"]["host_peak_rss_bytes"]
        assert row["device_memory_bytes"] == ""
        assert row["cpu"] == report["machine"]["cpu"]
        assert row["onnxruntime"] == report["machine"]["onnxruntime"]
        assert float(row["placement_share"]) == result["placement"]["share"]


def test_unknown_image(gpux: BoundCLI) -> None:
    assert_failure(gpux("bench", "nothere", *QUICK), 4, "image 'nothere' not found")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("1,x", "'x' is not a positive integer"), ("0", "'0' is not a positive integer")],
)
def test_bad_batch_size_text(gpux: BoundCLI, text: str, fragment: str) -> None:
    assert_failure(gpux("bench", "minilm", "--batch-size", text), 2, fragment, "1,8,32")


def test_batch_size_a_fixed_batch_model_cannot_take(gpux: BoundCLI) -> None:
    result = gpux("bench", "orientation-fixed", "-b", "1,4", *QUICK)
    assert_failure(
        result,
        6,
        "model 'orientation-fixed:latest' has a fixed batch size of 1 "
        "(input 'x' is [1, 3, 224, 224]); it cannot run --batch-size 4",
        "use --batch-size 1",
    )
    [only] = gpux.json("bench", "orientation-fixed", *QUICK, "--json")["results"]
    assert only["batch_size"] == 1 and only["input_shapes"] == {"x": [1, 3, 224, 224]}


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--backend", "cpu,gpu"), 2, "unknown backend 'gpu'"),
        (("--plot", "out.svg"), 2, "cannot plot to 'out.svg'"),
        (("--warmup", "soon"), 2, "--warmup 'soon'"),
    ],
)
def test_other_mistakes(gpux: BoundCLI, args: tuple[str, ...], code: int, fragment: str) -> None:
    assert_failure(gpux("bench", "minilm", *args), code, fragment)


def test_throughput_grows_with_the_batch_it_is_counted_in(gpux: BoundCLI) -> None:
    """items/s counts items, not calls: batch 4 makes 4 items per call."""
    report = gpux.json("bench", "orientation", "-b", "1,4", *QUICK, "--json")
    for result in report["results"]:
        per_call = result["throughput_items_per_s"] / result["calls_per_s"]
        assert math.isclose(per_call, result["batch_size"], rel_tol=1e-3)
    assert report["results"][1]["input_shapes"] == {"x": [4, 3, 224, 224]}
