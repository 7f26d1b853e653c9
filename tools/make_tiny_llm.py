"""Make a tiny random-weight Llama as an onnxruntime-genai model folder (about 1 MB), offline.

    python -m tools.make_tiny_llm OUT_DIR [--seed 0]

The folder holds what ``onnxruntime_genai.models.builder`` writes for a Llama: ``genai_config.json``,
``model.onnx`` with its weights in ``model.onnx.data``, ``tokenizer.json`` and
``tokenizer_config.json`` (with a ChatML chat template).

Why not the builder itself: it imports torch and transformers at module level, and torch from PyPI
is a CUDA build of several GB. The tests need a real decoder, not a converted checkpoint, so the
graph is written here with ``onnx.helper`` in plain ONNX operators: the same inputs and outputs as
the builder's Llama (``input_ids``, ``attention_mask``, ``position_ids``,
``past_key_values.N.key/value`` -> ``logits``, ``present.N.key/value``), rotary position embeddings,
RMS norms, a SwiGLU MLP, and a KV cache that grows by concatenation
(``past_present_share_buffer: false``). onnxruntime-genai runs it like any Llama it built: its own
loop, cache, search and sampling. The tokenizer is a byte-level BPE trained with ``tokenizers`` on
a fixed text, so every run of the same seed makes the same bytes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EPS = 1e-5


@dataclass(frozen=True)
class Shape:
    """The model's sizes. The default is the tests' 0.66 MB model; larger ones (``--hidden 576
    --layers 8 --heads 9``...) cost what a real model of that shape costs per token, for
    benchmarks. The vocabulary is the tokenizer's."""

    hidden: int = 64
    heads: int = 2
    intermediate: int = 128
    layers: int = 2
    context: int = 256
    vocab: int = 512

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# SmolLM2's template: ChatML, with a system turn added when the conversation has none.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! GPUX builds, runs and serves ONNX models on any GPU.",
    '{"name": "tiny", "value": 42, "items": [1, 2, 3], "ok": true, "none": null}',
    "Once upon a time there was a tiny language model that knew very few words.",
    "user assistant system: what is the answer? The answer is 42.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def make_tokenizer(out: Path, shape: Shape) -> None:
    """A byte-level BPE (every byte is a token, so any text encodes) with ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=shape.vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "add_prefix_space": False,
        "model_max_length": shape.context,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(token)): {
                "content": token,
                "special": True,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            }
            for token in SPECIAL_TOKENS
        },
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


class _Graph:
    """Nodes and initializers with generated names, so the layer code reads like the math."""

    def __init__(self, rng: np.random.Generator, shape: Shape) -> None:
        self.rng = rng
        self.shape = shape
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def op(self, op_type: str, *inputs: str, **attributes: object) -> str:
        self.count += 1
        output = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def rms_norm(self, x: str, name: str) -> str:
        variance = self.op("ReduceMean", self.op("Mul", x, x), axes=[-1], keepdims=1)
        inverse = self.op("Reciprocal", self.op("Sqrt", self.op("Add", variance, "eps")))
        scale = self.const(
            name, (1 + 0.1 * self.rng.standard_normal(self.shape.hidden)).astype(np.float32)
        )
        return self.op("Mul", self.op("Mul", x, inverse), scale)

    def rotate(self, x: str, cos: str, sin: str) -> str:
        """Rotary embedding, rotate-half form: [x1*cos - x2*sin, x2*cos + x1*sin]."""
        self.count += 1
        first, second = f"half1_{self.count}", f"half2_{self.count}"
        self.nodes.append(helper.make_node("Split", [x, "halves"], [first, second], axis=-1))
        rotated_first = self.op("Sub", self.op("Mul", first, cos), self.op("Mul", second, sin))
        rotated_second = self.op("Add", self.op("Mul", second, cos), self.op("Mul", first, sin))
        return self.op("Concat", rotated_first, rotated_second, axis=-1)


def _layer(graph: _Graph, x: str, index: int, cos: str, sin: str, mask: str) -> str:
    shape = graph.shape
    scale = shape.hidden**-0.5
    normed = graph.rms_norm(x, f"layers.{index}.input_layernorm.weight")

    def heads(name: str) -> str:
        projected = graph.op(
            "MatMul", normed, graph.weight(name, (shape.hidden, shape.hidden), scale)
        )
        split = graph.op("Reshape", projected, "heads_shape")
        return graph.op("Transpose", split, perm=[0, 2, 1, 3])  # [batch, heads, seq, head]

    query = graph.rotate(heads(f"layers.{index}.attn.q_proj.weight"), cos, sin)
    key = graph.rotate(heads(f"layers.{index}.attn.k_proj.weight"), cos, sin)
    value = heads(f"layers.{index}.attn.v_proj.weight")
    graph.nodes.append(
        helper.make_node(
            "Concat", [f"past_key_values.{index}.key", key], [f"present.{index}.key"], axis=2
        )
    )
    graph.nodes.append(
        helper.make_node(
            "Concat", [f"past_key_values.{index}.value", value], [f"present.{index}.value"], axis=2
        )
    )
    keys_t = graph.op("Transpose", f"present.{index}.key", perm=[0, 1, 3, 2])
    scores = graph.op("Mul", graph.op("MatMul", query, keys_t), "attention_scale")
    masked = graph.op("Where", mask, scores, "masked_score")
    weights = graph.op("Softmax", masked, axis=-1)
    attended = graph.op("MatMul", weights, f"present.{index}.value")
    merged = graph.op("Reshape", graph.op("Transpose", attended, perm=[0, 2, 1, 3]), "hidden_shape")
    out = graph.weight(f"layers.{index}.attn.o_proj.weight", (shape.hidden, shape.hidden), scale)
    x = graph.op("Add", x, graph.op("MatMul", merged, out))

    normed = graph.rms_norm(x, f"layers.{index}.post_attention_layernorm.weight")
    gate = graph.op(
        "MatMul",
        normed,
        graph.weight(
            f"layers.{index}.mlp.gate_proj.weight", (shape.hidden, shape.intermediate), scale
        ),
    )
    up = graph.op(
        "MatMul",
        normed,
        graph.weight(
            f"layers.{index}.mlp.up_proj.weight", (shape.hidden, shape.intermediate), scale
        ),
    )
    activated = graph.op("Mul", graph.op("Mul", gate, graph.op("Sigmoid", gate)), up)
    down = graph.weight(
        f"layers.{index}.mlp.down_proj.weight",
        (shape.intermediate, shape.hidden),
        shape.intermediate**-0.5,
    )
    return graph.op("Add", x, graph.op("MatMul", activated, down))


def make_model(out: Path, seed: int, shape: Shape) -> None:
    graph = _Graph(np.random.default_rng(seed), shape)
    head = shape.head_size
    graph.const("eps", np.array(EPS, np.float32))
    graph.const("halves", np.array([head // 2, head // 2], np.int64))
    graph.const("heads_shape", np.array([0, 0, shape.heads, head], np.int64))
    graph.const("hidden_shape", np.array([0, 0, shape.hidden], np.int64))
    graph.const("attention_scale", np.array(head**-0.5, np.float32))
    graph.const("masked_score", np.array(-1e9, np.float32))
    graph.const("zero", np.array(0, np.int64))
    graph.const("one", np.array(1, np.int64))
    graph.const("axis_0", np.array([0], np.int64))
    graph.const("axes_1_2", np.array([1, 2], np.int64))
    graph.const("axis_minus_1", np.array([-1], np.int64))
    graph.const("index_1", np.array([1], np.int64))
    inverse_frequency = 10000.0 ** (-np.arange(0, head, 2, dtype=np.float64) / head)
    angles = np.outer(np.arange(shape.context, dtype=np.float64), inverse_frequency)
    graph.const("cos_cache", np.cos(angles).astype(np.float32))
    graph.const("sin_cache", np.sin(angles).astype(np.float32))

    # cos/sin of each token's position, [batch, 1, seq, head/2], shared by every layer.
    cos = graph.op("Unsqueeze", graph.op("Gather", "cos_cache", "position_ids"), "index_1")
    sin = graph.op("Unsqueeze", graph.op("Gather", "sin_cache", "position_ids"), "index_1")

    # Which keys each new token may see: causal (key position <= its own) and not padding.
    total = graph.op("Gather", graph.op("Shape", "attention_mask"), "one")
    new = graph.op("Gather", graph.op("Shape", "input_ids"), "one")
    past = graph.op("Sub", total, new)
    rows = graph.op("Add", graph.op("Range", "zero", new, "one"), past)
    columns = graph.op("Range", "zero", total, "one")
    causal = graph.op(
        "LessOrEqual",
        graph.op("Unsqueeze", columns, "axis_0"),
        graph.op("Unsqueeze", rows, "axis_minus_1"),
    )
    not_padding = graph.op(
        "Unsqueeze", graph.op("Cast", "attention_mask", to=TensorProto.BOOL), "axes_1_2"
    )
    mask = graph.op("And", causal, not_padding)  # [batch, 1, seq, total]

    x = graph.op(
        "Gather", graph.weight("embed_tokens.weight", (shape.vocab, shape.hidden), 1.0), "input_ids"
    )
    for index in range(shape.layers):
        x = _layer(graph, x, index, cos, sin, mask)
    x = graph.rms_norm(x, "norm.weight")
    lm_head = graph.weight("lm_head.weight", (shape.hidden, shape.vocab), shape.hidden**-0.5 * 4)
    graph.nodes.append(helper.make_node("MatMul", [x, lm_head], ["logits"]))

    def tensor(name: str, dtype: int, shape: list[str | int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, dtype, shape)

    cache_in = ["batch_size", shape.heads, "past_sequence_length", head]
    cache_out = ["batch_size", shape.heads, "total_sequence_length", head]
    inputs = [
        tensor("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        tensor("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        tensor("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [tensor("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", shape.vocab])]
    for index in range(shape.layers):
        for kind in ("key", "value"):
            inputs.append(tensor(f"past_key_values.{index}.{kind}", TensorProto.FLOAT, cache_in))
            outputs.append(tensor(f"present.{index}.{kind}", TensorProto.FLOAT, cache_out))
    model = helper.make_model(
        helper.make_graph(graph.nodes, "tiny-llama", inputs, outputs, graph.initializers),
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="gpux tools/make_tiny_llm.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(
        model,
        str(out / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=1024,
    )


def make_genai_config(out: Path, shape: Shape) -> None:
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    ids = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    config = {
        "model": {
            "bos_token_id": ids["<|im_start|>"],
            "context_length": shape.context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": shape.head_size,
                "hidden_size": shape.hidden,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": shape.heads,
                "num_hidden_layers": shape.layers,
                "num_key_value_heads": shape.heads,
            },
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad_token_id": ids["<|endoftext|>"],
            "type": "llama",
            "vocab_size": shape.vocab,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": shape.context,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 50,
            "top_p": 1.0,
        },
    }
    (out / "genai_config.json").write_text(json.dumps(config, indent=4) + "\n")


def make_tiny_llm(out: Path, seed: int = 0, shape: Shape | None = None) -> Path:
    """Write the folder (created if missing) and return it."""
    shape = shape or Shape()
    if shape.hidden % shape.heads or shape.head_size % 2:
        raise ValueError("hidden must split into heads of an even size")
    out.mkdir(parents=True, exist_ok=True)
    make_tokenizer(out, shape)
    make_model(out, seed, shape)
    make_genai_config(out, shape)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    for name, default in vars(Shape()).items():
        parser.add_argument(f"--{name}", type=int, default=default, help=f"default {default}")
    arguments = parser.parse_args()
    shape = Shape(**{name: getattr(arguments, name) for name in vars(Shape())})
    folder = make_tiny_llm(arguments.out, arguments.seed, shape)
    size = sum(path.stat().st_size for path in folder.iterdir())
    print(f"{folder}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
