"""Graph rewrites that keep a model whole on ONNX Runtime's WebGPU execution provider.

Measured on an H100 through Vulkan (benchmarks/device/webgpu_options.py, 2026-12-06):
BERT-base as transformers exports it (SDPA attention) has one ``IsNaN`` per layer, which zeroes
the softmax of fully masked rows. The WebGPU EP has no ``IsNaN`` kernel, so ONNX Runtime ran
those 12 nodes on the CPU and copied each layer's attention probabilities ([b, 12, 128, 128])
to the host and back: 24 copies per call, 2.7% of the nodes, most of the time (33.7 ms at b1
against 3.4 ms on the CUDA EP), and no graph capture ("all compute graph nodes have not been
partitioned to the WebGpuExecutionProvider").

``IsNaN(x)`` is ``Not(Equal(x, x))``: NaN is the only value unequal to itself, and the EP has
both kernels. The rewritten copy is made once per model file, kept in the model's cache folder,
and named in the placement proof; the stored image is never changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# Float types that can hold NaN and that WebGPU's Equal takes.
_FLOATS = {1, 10}  # onnx.TensorProto.FLOAT, FLOAT16


def _rewrite_isnan(graph: Any, counter: list[int]) -> None:
    import onnx

    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in graph.input})
    types.update({t.name: t.data_type for t in graph.initializer})
    nodes = []
    for node in graph.node:
        for attribute in node.attribute:  # If/Loop/Scan bodies
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rewrite_isnan(attribute.g, counter)
            for sub in attribute.graphs:
                _rewrite_isnan(sub, counter)
        if node.op_type == "IsNaN" and node.domain in ("", "ai.onnx"):
            source, target = node.input[0], node.output[0]
            if types.get(source, 1) not in _FLOATS:  # unknown types are float: IsNaN takes floats
                nodes.append(node)
                continue
            equal = f"{target}/gpux_self_equal"
            base = node.name or target
            nodes.append(onnx.helper.make_node("Equal", [source, source], [equal], f"{base}/eq"))
            nodes.append(onnx.helper.make_node("Not", [equal], [target], f"{base}/not"))
            counter[0] += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _key(model_path: Path) -> str:
    stat = model_path.stat()
    text = f"{model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def webgpu_model(model_path: Path, cache_dir: Path | None) -> tuple[Path | bytes, dict[str, int]]:
    """The model to give the WebGPU EP (a file, or the rewritten model's bytes), and the rewrites
    it has (``{}``: the original).

    Without a ``cache_dir`` (a bare .onnx file: nothing may be written beside it) the rewrite is
    made in memory each load, for a model whose weights are inside its file.
    """
    if cache_dir is None:
        return _rewritten_in_memory(model_path)
    folder = cache_dir / "webgpu" / _key(model_path)
    verdict = folder / "rewrites.json"
    if verdict.exists():
        rewrites: dict[str, int] = json.loads(verdict.read_text())
        rewritten = folder / "model.onnx"
        if not rewrites:
            return model_path, {}
        if rewritten.exists():
            return rewritten, rewrites
    import onnx

    model = onnx.load(os.fspath(model_path), load_external_data=False)
    if not any(n.op_type == "IsNaN" for n in _all_nodes(model.graph)):
        _write_atomically(verdict, b"{}")
        return model_path, {}
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    model = onnx.load(os.fspath(model_path))  # with its external weights, to write them again
    counter = [0]
    _rewrite_isnan(model.graph, counter)
    rewrites = {"IsNaN -> Not(Equal(x, x))": counter[0]} if counter[0] else {}
    if rewrites:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".partial-"))
        large = external or model.ByteSize() > 1_900_000_000
        onnx.save(
            model,
            os.fspath(staging / "model.onnx"),
            save_as_external_data=large,
            location="model.onnx.data",
        )
        for part in staging.iterdir():  # weights first, graph last: the graph marks it done
            if part.name != "model.onnx":
                os.replace(part, folder / part.name)
        os.replace(staging / "model.onnx", folder / "model.onnx")
        staging.rmdir()
    _write_atomically(verdict, json.dumps(rewrites).encode())
    return (folder / "model.onnx", rewrites) if rewrites else (model_path, {})


def _rewritten_in_memory(model_path: Path) -> tuple[Path | bytes, dict[str, int]]:
    import onnx

    model = onnx.load(os.fspath(model_path), load_external_data=False)
    if not any(n.op_type == "IsNaN" for n in _all_nodes(model.graph)):
        return model_path, {}
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return model_path, {}  # its weights live beside it: the file is what the EP must read
    counter = [0]
    _rewrite_isnan(model.graph, counter)
    if not counter[0]:
        return model_path, {}
    return model.SerializeToString(), {"IsNaN -> Not(Equal(x, x))": counter[0]}


def _all_nodes(graph: Any) -> list[Any]:
    found = []
    for node in graph.node:
        found.append(node)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found.extend(_all_nodes(attribute.g))
            for sub in attribute.graphs:
                found.extend(_all_nodes(sub))
    return found


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(temporary, path)
