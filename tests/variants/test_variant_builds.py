"""Variants of a generated model (y = x @ W + b, x [batch, 4] -> y [batch, 3]) built by
``gpux build``: fp16 and int8 images next to the original, their reports, the bounds that fail a
build, the no-op rebuild, and the GPUXfile and flag errors.

One store per module; tests that must start from a known state use image names of their own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure

GPUXFILE = """\
name: linear
version: "1"
model: ./linear.onnx
build:
  samples: ./samples.jsonl
  optimize:
    - fp16
    - int8
    - name: half-io
      steps: [fp16]
      keep_io_types: false
"""


def write_samples(path: Path, count: int = 12) -> None:
    rows = np.random.default_rng(7).standard_normal((count, 1, 4)).round(4)
    path.write_text("".join(json.dumps({"x": row.tolist()}) + "\n" for row in rows))


@pytest.fixture(scope="module")
def project(workdir: Path) -> Path:
    folder = workdir / "linear"
    generated_models.linear(folder / "linear.onnx")
    write_samples(folder / "samples.jsonl")
    (folder / "GPUXfile").write_text(GPUXFILE)
    return folder


@pytest.fixture(scope="module")
def built(gpux: BoundCLI, project: Path) -> dict[str, Any]:
    report: dict[str, Any] = gpux.json("build", str(project), "--json")
    return report


def test_each_variant_is_an_image_of_its_own(gpux: BoundCLI, built: dict[str, Any]) -> None:
    assert built["image"] == "linear:1"
    assert [v["image"] for v in built["variants"]] == [
        "linear:1-fp16",
        "linear:1-int8",
        "linear:1-half-io",
    ]
    names = gpux.names()
    for name in ("linear:1", "linear:1-fp16", "linear:1-int8", "linear:1-half-io"):
        assert name in names
    steps = [s["step"] for s in built["steps"]]
    # The image first, then per variant: make it, compare it, store it.
    assert steps.index("write image") < steps.index("read build.samples")
    for suffix in ("fp16", "int8", "half-io"):
        assert steps.index(f"variant {suffix}") < steps.index(f"{suffix}: compare")
        assert steps.index(f"{suffix}: compare") < steps.index(f"{suffix}: write image")
    # Real samples were given: no warning about generated inputs.
    assert not any("generated" in w for w in built["warnings"])


def test_inspect_json_report_is_consistent(gpux: BoundCLI, built: dict[str, Any]) -> None:
    base = gpux.json("inspect", "linear:1", "--json")
    info = gpux.json("inspect", "linear:1-int8", "--json")
    report = info["variant"]
    assert report["name"] == "int8" and report["of"] == "linear:1"
    assert report["of_digest"] == base["digest"]
    assert report["steps"][0]["step"] == "int8" and "MatMulInteger" in report["steps"][0]["detail"]
    assert report["settings"] == {"per_channel": True, "reduce_range": False}
    # size: the files the two images run
    size = report["size"]
    model_layers = [layer for layer in info["layers"] if "model" in layer["mediaType"]]
    assert len(model_layers) == 1 and model_layers[0]["size"] == size["variant_bytes"]
    base_models = {layer["mediaType"]: layer["size"] for layer in base["layers"]}
    runnable = base_models.get(
        "application/vnd.gpux.model.optimized.onnx.v1",
        base_models["application/vnd.gpux.model.onnx.v1"],
    )
    assert size["original_bytes"] == runnable
    assert size["ratio"] == pytest.approx(size["variant_bytes"] / size["original_bytes"], abs=1e-4)
    # latency: medians on the same backend
    latency = report["latency"]
    assert latency["backend"] == base["smoke"]["placement"]["backend"] == "cpu"
    assert latency["ratio"] == pytest.approx(
        latency["variant_ms"] / latency["original_ms"], rel=1e-3
    )
    assert latency["runs"] >= 5 and latency["input_shapes"] == {"x": [1, 4]}
    # placement: the CPU takes every node of both graphs, the int8 ops included
    placement = report["placement"]
    assert placement["backend"] == "cpu"
    assert placement["original"]["share"] == placement["variant"]["share"] == 1.0
    variant_nodes = placement["variant"]["nodes"]
    assert variant_nodes == placement["variant"]["nodes_on_backend"] > 1
    assert placement["variant"]["elsewhere"] == {}
    # accuracy: the worst of the outputs, on the 12 samples, within the default bound
    accuracy = report["accuracy"]
    assert accuracy["samples"] == {
        "kind": "real",
        "source": str(Path(built["steps"][0]["detail"]).parent / "samples.jsonl"),
        "items": 12,
        "model_calls": 12,
    }
    y = accuracy["outputs"]["y"]
    assert accuracy["max_abs_error"] == y["max_abs_error"] > 0
    assert accuracy["cosine"] == y["cosine"] >= 0.99
    assert accuracy["max_rel_error"] == pytest.approx(y["max_rel_error"])
    # y is [batch, 3]: a class axis, so top-1 agreement is reported
    assert y["classifier"] == "class axis" and accuracy["top1_agreement"] == y["top1_agreement"]
    assert accuracy["bounds"]["min_cosine"] == 0.99 and accuracy["passed"] is True
    # the base image lists its variants
    listed = {v["image"]: v for v in base["variants"]}
    assert set(listed) == {"linear:1-fp16", "linear:1-int8", "linear:1-half-io"}
    assert listed["linear:1-int8"]["latency_ratio"] == latency["ratio"]


def test_variant_errors_are_what_the_model_says(gpux: BoundCLI, built: dict[str, Any]) -> None:
    """The int8 image really computes x @ W + b, to quantisation error; fp16 to fp16 error."""
    x = [[0.5, -1.0, 2.0, 0.25]]
    exact = np.asarray(x, np.float32) @ generated_models.LINEAR_W + generated_models.LINEAR_B
    for name, tolerance in (("linear:1-fp16", 2e-3), ("linear:1-int8", 0.1)):
        result = gpux.json("run", name, "--input", f"x={json.dumps(x)}")
        assert np.allclose(result["outputs"]["y"]["data"], exact, atol=tolerance), result


def test_keep_io_types_false_changes_the_signature(gpux: BoundCLI, built: dict[str, Any]) -> None:
    info = gpux.json("inspect", "linear:1-half-io", "--json")
    assert [t["dtype"] for t in info["inputs"]] == ["float16"]
    assert [t["dtype"] for t in info["outputs"]] == ["float16"]
    assert info["variant"]["settings"] == {"keep_io_types": False}
    kept = gpux.json("inspect", "linear:1-fp16", "--json")
    assert [t["dtype"] for t in kept["inputs"]] == ["float32"]
    # float32 values are accepted and converted, as for any input
    result = gpux.json("run", "linear:1-half-io", "--input", "x=[[1, 2, 3, 4]]")
    assert result["outputs"]["y"]["dtype"] == "float16"
    exact = (
        np.array([[1, 2, 3, 4]], np.float32) @ generated_models.LINEAR_W + generated_models.LINEAR_B
    )
    assert np.allclose(result["outputs"]["y"]["data"], exact, rtol=2e-3)


def test_inspect_shows_the_report(gpux: BoundCLI, built: dict[str, Any]) -> None:
    text = gpux.ok("inspect", "linear:1-int8", env={"COLUMNS": "200"}).stdout
    for fragment in (
        "variant      int8 of linear:1",
        "size",
        "latency",
        "alternating runs",
        "compared on  12 model calls from 12 real inputs",
        "min_cosine 0.99 kept",
        "accuracy vs the original",
        "(class axis)",
    ):
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    base = gpux.ok("inspect", "linear:1", env={"COLUMNS": "200"}).stdout
    assert "variants" in base and "linear:1-int8" in base


def test_unchanged_variants_are_not_rebuilt(
    gpux: BoundCLI, project: Path, built: dict[str, Any]
) -> None:
    again = gpux.json("build", str(project), "--json")
    assert again["cached"] is True
    assert [v["cached"] for v in again["variants"]] == [True, True, True]
    assert [v["digest"] for v in again["variants"]] == [v["digest"] for v in built["variants"]]
    # a new bound is a new variant: rebuilt, under the same name
    tighter = gpux.json(
        "build", str(project), "--variant", "fp16", "--min-cosine", "0.999", "--json"
    )
    assert [v["cached"] for v in tighter["variants"]] == [False]
    assert tighter["variants"][0]["variant"]["accuracy"]["bounds"]["min_cosine"] == 0.999


def test_a_missed_bound_fails_the_build_and_stores_nothing(
    gpux: BoundCLI, project: Path, workdir: Path
) -> None:
    folder = workdir / "strict"
    generated_models.linear(folder / "linear.onnx")
    write_samples(folder / "samples.jsonl")
    (folder / "GPUXfile").write_text(GPUXFILE.replace("name: linear", "name: strict"))
    gpux.ok("build", str(folder), "--variant", "int8", "-q")
    assert "strict:1-int8" in gpux.names()
    result = gpux("build", str(folder), "--variant", "int8", "--max-abs-error", "1e-9")
    assert_failure(
        result,
        5,
        "variant strict:1-int8 misses its accuracy bounds: max_abs_error",
        "> max_abs_error 1e-09 (output y); it was not stored",
        "size ",
        "latency ",
        "accuracy on 12 model calls (real inputs):",
        "y: cosine ",
        "loosen the bound",
    )
    # the earlier strict:1-int8 is gone too: no image of that name may disagree with the bounds
    assert "removed strict:1-int8" in result.stderr
    names = gpux.names()
    assert "strict:1-int8" not in names and "strict:1" in names


def test_generated_inputs_come_with_a_warning(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "no-samples"
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text(
        "name: plain\nmodel: ./linear.onnx\nbuild:\n  optimize: [fp16]\n"
    )
    report = gpux.json("build", str(folder), "--json")
    assert any("weaker evidence than real ones" in w for w in report["warnings"])
    samples = report["variants"][0]["variant"]["accuracy"]["samples"]
    assert samples["kind"] == "generated" and samples["model_calls"] == 4
    # --no-variants builds the image alone
    only = gpux.json("build", str(folder), "--no-variants", "--json")
    assert only["variants"] == []


BUILD_ERRORS = [
    ("  optimize: [fp61]\n", ["GPUXfile:5", "build.optimize[0]", "fp16"]),
    ("  optimize: [fp16+int8]\n", ["fp16 and int8 both change the precision"]),
    ("  optimize: [fp16, {steps: [fp16]}]\n", ["two variants are named 'fp16'"]),
    ("  optimize: [{steps: [fused], name: Big}]\n", ["variant name 'Big'"]),
    ("  accuracy: {min_cosine: 2}\n", ["build.accuracy.min_cosine"]),
    ("  optimize: [int8-static]\n", ["int8-static needs real inputs to calibrate on"]),
    ("  samples: ./nowhere\n  optimize: [fp16]\n", ["build.samples: './nowhere' does not exist"]),
]


@pytest.mark.parametrize("case", range(len(BUILD_ERRORS)))
def test_build_section_errors_fail_before_the_image_is_built(
    gpux: BoundCLI, workdir: Path, case: int
) -> None:
    build, fragments = BUILD_ERRORS[case]
    folder = workdir / f"bad{case}"
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text(f"name: bad{case}\nmodel: ./linear.onnx\n\nbuild:\n" + build)
    assert_failure(gpux("build", str(folder)), 3, *fragments)
    assert not any(name.startswith(f"bad{case}:") for name in gpux.names())


def test_samples_the_model_cannot_take(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "no-inputs"
    generated_models.linear(folder / "linear.onnx")
    (folder / "samples").mkdir()
    (folder / "samples" / "notes.md").write_text("not an input")
    (folder / "GPUXfile").write_text(
        "name: unfed\nmodel: ./linear.onnx\nbuild: {samples: ./samples, optimize: [fp16]}\n"
    )
    assert_failure(
        gpux("build", str(folder)),
        3,
        "build.samples: '",
        "samples' holds no inputs for this model (it takes x)",
        ".jsonl (one input per line)",
    )
    assert not any(name.startswith("unfed:latest-") for name in gpux.names())


def test_flag_errors(gpux: BoundCLI, project: Path) -> None:
    assert_failure(gpux("build", str(project), "--variant", "fp61"), 2, "--variant 'fp61'", "fp16")
    assert_failure(
        gpux("build", str(project), "--variant", "fp16", "--no-variants"), 2, "contradict"
    )
    assert_failure(gpux("build", str(project), "--min-cosine", "1.5"), 2, "--min-cosine 1.5")


def test_fusion_refuses_a_model_without_transformer_patterns(gpux: BoundCLI, project: Path) -> None:
    result = gpux("build", str(project), "--variant", "fused")
    assert_failure(result, 5, "variant 'fused': fusion found no bert pattern", "model_type")
    assert "linear:1-fused" not in gpux.names()


def test_accuracy_metrics() -> None:
    from gpux.builder import accuracy
    from gpux.config.schema import AccuracyBounds

    reference = [{"p": np.array([[0.1, 0.7, 0.2]]), "s": np.array([[0.9]])}]
    variant = [{"p": np.array([[0.1, 0.3, 0.6]]), "s": np.array([[0.8]])}]
    report = accuracy.compare(reference, variant, {"p": "labels"})
    p = report["outputs"]["p"]
    assert p["max_abs_error"] == pytest.approx(0.4)
    assert p["max_rel_error"] == pytest.approx(0.4 / 0.7)
    cos = (0.01 + 0.21 + 0.12) / (math.sqrt(0.54) * math.sqrt(0.46))
    assert p["cosine"] == pytest.approx(cos)
    assert p["top1_agreement"] == 0.0 and report["top1_agreement"] == 0.0
    # one value per call: compared over all calls at once, not as a sign
    assert report["outputs"]["s"]["cosine"] == pytest.approx(1.0)
    assert report["cosine"] == pytest.approx(cos)
    missed = accuracy.check(report, AccuracyBounds(min_cosine=0.99, min_top1_agreement=1.0))
    assert [m["metric"] for m in missed] == ["cosine", "top1_agreement"]
    assert accuracy.describe_miss(missed[0]).startswith(
        f"cosine {cos:.6g} < min_cosine 0.99 (output p)"
    )
    # NaN where the original is finite fails every bound
    broken = accuracy.compare(reference, [{"p": np.full((1, 3), np.nan), "s": np.ones((1, 1))}], {})
    assert broken["max_abs_error"] == math.inf and broken["cosine"] == 0.0
    assert accuracy.check(broken, AccuracyBounds(min_cosine=None, max_abs_error=1.0))


def _report(
    ratio: float,
    size: float,
    original: tuple[int, int],
    variant: tuple[int, int],
    backend: str = "cuda",
) -> dict[str, Any]:
    def share(nodes: int, here: int) -> dict[str, Any]:
        elsewhere = {"ConvInteger@CPUExecutionProvider": nodes - here} if nodes > here else {}
        return {
            "known": True,
            "nodes": nodes,
            "nodes_on_backend": here,
            "share": round(here / nodes, 4),
            "elsewhere": elsewhere,
        }

    return {
        "size": {"ratio": size},
        "latency": {"backend": backend, "ratio": ratio},
        "placement": {"backend": backend, "original": share(*original), "variant": share(*variant)},
    }


def test_variants_that_leave_the_backend_or_run_slower_are_called_out() -> None:
    from gpux.builder.variants import fit_warnings

    # ResNet-50's int8 on an H100: the ConvIntegers run on the CPU, 51x slower
    (moved,) = fit_warnings("int8", _report(51.21, 0.25, (122, 122), (175, 128)))
    assert moved.startswith("variant 'int8': 47 of its 175 nodes run off cuda ")
    assert "ConvInteger@CPUExecutionProvider x47" in moved and "51.21x" in moved
    assert "against 0 for the original" in moved and "fp16 on GPUs" in moved
    # slower on the same placement: smaller only, or nothing gained at all
    (small,) = fit_warnings("int8", _report(14.7, 0.26, (60, 60), (90, 90), "cpu"))
    assert (
        small
        == "variant 'int8' takes 14.70x the original's time on cpu: it only saves size (0.26x)"
    )
    (fused,) = fit_warnings("fused", _report(1.3, 1.0, (60, 60), (40, 40), "cpu"))
    assert fused.endswith("the original is the better choice there")
    # faster, within 10%, or the CPU (nothing to fall back to): nothing to say
    assert fit_warnings("fp16", _report(0.62, 0.5, (400, 400), (420, 420))) == []
    assert fit_warnings("fp16", _report(1.08, 0.5, (400, 400), (420, 420))) == []
    assert fit_warnings("int8", _report(0.64, 0.25, (60, 60), (90, 90), "cpu")) == []
    # an ONNX Runtime that cannot report placement: only the time is judged
    unknown = _report(3.0, 0.25, (1, 1), (1, 1))
    unknown["placement"]["variant"] = {"known": False}
    assert fit_warnings("int8", unknown) == [
        "variant 'int8' takes 3.00x the original's time on cuda: it only saves size (0.25x)"
    ]


def test_classifier_outputs_are_found() -> None:
    from gpux.builder.accuracy import classifier_outputs

    outputs = [
        {"name": "probs", "dtype": "float32", "shape": ["batch", 4]},
        {"name": "hidden", "dtype": "float32", "shape": ["batch", "sequence", 384]},
        {"name": "score", "dtype": "float32", "shape": ["batch", 1]},
        {"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 9]},
    ]
    gpuxfile = {"postprocess": [{"name": "tags", "from": "logits", "steps": [{"argmax": {}}]}]}
    assert classifier_outputs(gpuxfile, outputs) == {"logits": "argmax", "probs": "class axis"}
    labelled = {"labels": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}
    assert classifier_outputs(labelled, outputs) == {"probs": "class axis", "logits": "labels"}


def test_the_json_schema_knows_the_build_section(gpux: BoundCLI) -> None:
    from tests.cli.test_init_schema import validate

    schema = gpux.json("schema")
    accepted = {
        "model": "./m.onnx",
        "build": {
            "samples": "./samples",
            "optimize": ["fp16", "fused+fp16", {"name": "cal", "steps": ["int8-static"]}],
            "accuracy": {"min_cosine": 0.99, "max_abs_error": None},
        },
    }
    assert validate(schema, accepted) == []
    for wrong, problem in (
        ({"optimize": ["fp61"]}, "matches no option"),
        ({"optimize": [{"steps": ["int8"], "per_chanel": True}]}, "matches no option"),
        ({"accuracy": {"min_cosine": 2}}, "above 1"),
    ):
        problems = validate(schema, {"model": "./m.onnx", "build": wrong})
        assert any(problem in p for p in problems), (wrong, problems)
