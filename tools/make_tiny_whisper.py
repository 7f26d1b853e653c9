"""Make a tiny random-weight Whisper as an onnxruntime-genai model folder (about 1 MB), offline.

    python -m tools.make_tiny_whisper OUT_DIR [--seed 0]

The folder holds what ``onnxruntime_genai.models.builder`` writes for Whisper:

* ``genai_config.json`` of model type ``whisper``;
* ``encoder.onnx``: ``audio_features`` [batch, 80, 3000] (log-mel frames of 30 s) ->
  ``hidden_states`` [batch, 1500, hidden] and each decoder layer's cross-attention cache
  ``present_key_cross_N`` / ``present_value_cross_N`` [batch, heads, 1500, head];
* ``decoder.onnx``: ``input_ids`` (int32), ``past_key_self_N`` / ``past_value_self_N`` and
  ``past_key_cross_N`` / ``past_value_cross_N`` -> ``logits``, ``present_key_self_N`` /
  ``present_value_self_N``; positions come from the self cache's length, as in the builder's graph
  (genai gives a Whisper decoder no attention mask and no position ids);
* ``audio_processor_config.json``: the feature extraction onnxruntime-genai's processor runs
  (decode, STFT, 80-bin log-mel of 30 s chunks), the builder's own;
* ``tokenizer.json`` / ``tokenizer_config.json`` with Whisper's special tokens, and
  ``generation_config.json`` as transformers writes it for Whisper (``is_multilingual``,
  ``lang_to_id``, ``task_to_id``, ``no_timestamps_token_id``): GPUX reads the prompt tokens there.

The layers follow Whisper's (pre-LayerNorm, GELU, a convolution stem with stride 2, learned
positions, tied output embedding) in plain opset-17 ONNX written with ``onnx.helper``: the builder
imports torch, which the tests must not need. The weights are random, with one designed
property so that tests see a natural end: from decoder position ``ENDS_AFTER`` on, the logit of
``<|endoftext|>`` gets a large bias, so a greedy transcript stops there (earlier if the random
weights pick it). Same seed, same bytes.
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
MELS = 80
FRAMES = 3000  # 30 s at a hop of 160 samples (16 kHz): onnxruntime-genai requires this count
SOURCE_POSITIONS = FRAMES // 2
WORD_BIAS = 3.0
POSITION_SCALE = 1.0  # strong positions: the random text varies along the transcript
ENDS_AFTER = 24  # decoder positions before <|endoftext|> is forced (see the module docstring)


@dataclass(frozen=True)
class Shape:
    """The model's sizes; the vocabulary is the tokenizer's (trained to ``vocab`` tokens)."""

    hidden: int = 32
    heads: int = 2
    intermediate: int = 64
    encoder_layers: int = 1
    decoder_layers: int = 2
    target_positions: int = 448
    vocab: int = 384

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads


LANGUAGES = ["en", "de", "fr", "es"]
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    *(f"<|{code}|>" for code in LANGUAGES),
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! This is a meeting about the budget for next year.",
    "Speech recognition turns sound into text, one token at a time.",
    "Bonjour, guten Tag, buenos dias: many languages, one tiny model.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]

# The builder's feature extraction (onnxruntime_genai/models/builders/whisper.py), as JSON.
AUDIO_PROCESSOR = {
    "feature_extraction": {
        "sequence": [
            {"operation": {"name": "audio_decoder", "type": "AudioDecoder"}},
            {
                "operation": {
                    "name": "STFT",
                    "type": "STFTNorm",
                    "attrs": {"n_fft": 400, "frame_length": 400, "hop_length": 160},
                }
            },
            {
                "operation": {
                    "name": "log_mel_spectrogram",
                    "type": "LogMelSpectrum",
                    "attrs": {"chunk_size": 30, "hop_length": 160, "n_fft": 400, "n_mel": MELS},
                }
            },
        ]
    }
}


def make_tokenizer(out: Path, shape: Shape) -> dict[str, int]:
    """A byte-level BPE with Whisper's special tokens; returns their ids."""
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
    ids = {token: int(tokenizer.token_to_id(token)) for token in SPECIAL_TOKENS}
    config = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "add_prefix_space": False,
        "model_max_length": shape.target_positions,
        "added_tokens_decoder": {
            str(ids[token]): {
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
    return ids


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

    def named(self, op_type: str, inputs: list[str], output: str, **attributes: object) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def linear(self, x: str, name: str, size_in: int, size_out: int, bias: bool = True) -> str:
        y = self.op("MatMul", x, self.weight(f"{name}.weight", (size_in, size_out), size_in**-0.5))
        if bias:
            y = self.op("Add", y, self.weight(f"{name}.bias", (size_out,), 0.02))
        return y

    def layer_norm(self, x: str, name: str) -> str:
        hidden = self.shape.hidden
        scale = self.const(
            f"{name}.weight", (1 + 0.1 * self.rng.standard_normal(hidden)).astype(np.float32)
        )
        bias = self.weight(f"{name}.bias", (hidden,), 0.02)
        return self.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=EPS)

    def gelu(self, x: str) -> str:
        """0.5 x (1 + erf(x / sqrt 2)): Gelu is an operator from opset 20 only."""
        erf = self.op("Erf", self.op("Mul", x, "inverse_sqrt2"))
        return self.op("Mul", self.op("Mul", x, "half"), self.op("Add", erf, "one_f"))

    def heads(self, x: str, length: str = "heads_shape") -> str:
        """[batch, seq, hidden] -> [batch, heads, seq, head]."""
        return self.op("Transpose", self.op("Reshape", x, length), perm=[0, 2, 1, 3])

    def merge(self, x: str) -> str:
        """[batch, heads, seq, head] -> [batch, seq, hidden]."""
        return self.op("Reshape", self.op("Transpose", x, perm=[0, 2, 1, 3]), "hidden_shape")

    def attend(self, query: str, key: str, value: str, mask: str | None = None) -> str:
        scores = self.op(
            "Mul", self.op("MatMul", query, self.op("Transpose", key, perm=[0, 1, 3, 2])), "scale"
        )
        if mask is not None:
            scores = self.op("Where", mask, scores, "masked_score")
        return self.op("MatMul", self.op("Softmax", scores, axis=-1), value)

    def mlp(self, x: str, name: str) -> str:
        shape = self.shape
        up = self.gelu(self.linear(x, f"{name}.fc1", shape.hidden, shape.intermediate))
        return self.linear(up, f"{name}.fc2", shape.intermediate, shape.hidden)

    def constants(self) -> None:
        shape = self.shape
        self.const("eps", np.array(EPS, np.float32))
        self.const("half", np.array(0.5, np.float32))
        self.const("one_f", np.array(1.0, np.float32))
        self.const("inverse_sqrt2", np.array(2**-0.5, np.float32))
        self.const("scale", np.array(shape.head_size**-0.5, np.float32))
        self.const("masked_score", np.array(-1e9, np.float32))
        self.const("heads_shape", np.array([0, -1, shape.heads, shape.head_size], np.int64))
        self.const("hidden_shape", np.array([0, -1, shape.hidden], np.int64))


def _tensor(name: str, dtype: int, dims: list[str | int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, dims)


def _save(
    graph: _Graph,
    name: str,
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    out: Path,
) -> None:
    model = helper.make_model(
        helper.make_graph(graph.nodes, name, inputs, outputs, graph.initializers),
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="gpux tools/make_tiny_whisper.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(out / f"{name}.onnx"))


def make_encoder(out: Path, rng: np.random.Generator, shape: Shape) -> None:
    graph = _Graph(rng, shape)
    graph.constants()
    hidden = shape.hidden
    stem_1 = graph.op(
        "Conv",
        "audio_features",
        graph.weight("conv1.weight", (hidden, MELS, 3), (MELS * 3) ** -0.5),
        graph.weight("conv1.bias", (hidden,), 0.02),
        kernel_shape=[3],
        pads=[1, 1],
    )
    stem_2 = graph.op(
        "Conv",
        graph.gelu(stem_1),
        graph.weight("conv2.weight", (hidden, hidden, 3), (hidden * 3) ** -0.5),
        graph.weight("conv2.bias", (hidden,), 0.02),
        kernel_shape=[3],
        pads=[1, 1],
        strides=[2],
    )
    frames = graph.op("Transpose", graph.gelu(stem_2), perm=[0, 2, 1])  # [batch, 1500, hidden]
    x = graph.op("Add", frames, graph.weight("embed_positions", (SOURCE_POSITIONS, hidden), 0.1))
    for index in range(shape.encoder_layers):
        name = f"encoder.layers.{index}"
        normed = graph.layer_norm(x, f"{name}.self_attn_layer_norm")
        query = graph.heads(graph.linear(normed, f"{name}.q_proj", hidden, hidden))
        key = graph.heads(graph.linear(normed, f"{name}.k_proj", hidden, hidden, bias=False))
        value = graph.heads(graph.linear(normed, f"{name}.v_proj", hidden, hidden))
        attended = graph.linear(
            graph.merge(graph.attend(query, key, value)), f"{name}.out_proj", hidden, hidden
        )
        x = graph.op("Add", x, attended)
        x = graph.op("Add", x, graph.mlp(graph.layer_norm(x, f"{name}.final_layer_norm"), name))
    hidden_states = graph.named(
        "LayerNormalization",
        [
            x,
            graph.const("layer_norm.weight", np.ones(hidden, np.float32)),
            graph.const("layer_norm.bias", np.zeros(hidden, np.float32)),
        ],
        "hidden_states",
        axis=-1,
        epsilon=EPS,
    )
    cache = ["batch_size", shape.heads, SOURCE_POSITIONS, shape.head_size]
    outputs = [
        _tensor("hidden_states", TensorProto.FLOAT, ["batch_size", SOURCE_POSITIONS, hidden])
    ]
    # The decoder's cross-attention keys and values, computed once here (the builder's layout).
    for index in range(shape.decoder_layers):
        name = f"decoder.layers.{index}.encoder_attn"
        key = graph.linear(hidden_states, f"{name}.k_proj", hidden, hidden, bias=False)
        value = graph.linear(hidden_states, f"{name}.v_proj", hidden, hidden)
        for kind, projected in (("key", key), ("value", value)):
            graph.named(
                "Transpose",
                [graph.op("Reshape", projected, "heads_shape")],
                f"present_{kind}_cross_{index}",
                perm=[0, 2, 1, 3],
            )
            outputs.append(_tensor(f"present_{kind}_cross_{index}", TensorProto.FLOAT, cache))
    inputs = [_tensor("audio_features", TensorProto.FLOAT, ["batch_size", MELS, FRAMES])]
    _save(graph, "encoder", inputs, outputs, out)


def make_decoder(out: Path, rng: np.random.Generator, shape: Shape, end_of_text: int) -> None:
    graph = _Graph(rng, shape)
    graph.constants()
    hidden = shape.hidden
    graph.const("zero", np.array(0, np.int64))
    graph.const("one", np.array(1, np.int64))
    graph.const("two", np.array(2, np.int64))
    graph.const("axis_0", np.array([0], np.int64))
    graph.const("axis_minus_1", np.array([-1], np.int64))
    graph.const("ends_after", np.array(ENDS_AFTER, np.int64))
    graph.const("end_bias", np.eye(1, shape.vocab, end_of_text, dtype=np.float32) * 1e4)
    # Words over bytes: the BPE's merged tokens (after the specials and the 256 bytes) are
    # favoured, so the random text reads as word pieces; the special tokens are suppressed, as
    # Whisper's decoding suppresses them (<|endoftext|> comes through end_bias).
    token_bias = np.zeros(shape.vocab, np.float32)
    token_bias[len(SPECIAL_TOKENS) + 256 :] = WORD_BIAS
    token_bias[: len(SPECIAL_TOKENS)] = -1e4
    token_bias[end_of_text] = 0.0
    graph.const("token_bias", token_bias)

    # Positions past, past + 1 ... of the new tokens: the past is the self cache's length.
    past = graph.op("Gather", graph.op("Shape", "past_key_self_0"), "two")
    new = graph.op("Gather", graph.op("Shape", "input_ids"), "one")
    total = graph.op("Add", past, new)
    positions = graph.op("Range", past, total, "one")  # [seq]
    embed = graph.weight("embed_tokens", (shape.vocab, hidden), 1.0)
    tokens = graph.op("Gather", embed, graph.op("Cast", "input_ids", to=TensorProto.INT64))
    learned = graph.weight("embed_positions", (shape.target_positions, hidden), POSITION_SCALE)
    x = graph.op("Add", tokens, graph.op("Gather", learned, positions))
    # Causal: a new token sees the cached keys and the new ones up to itself. [seq, total]
    columns = graph.op("Range", "zero", total, "one")
    causal = graph.op(
        "LessOrEqual",
        graph.op("Unsqueeze", columns, "axis_0"),
        graph.op("Unsqueeze", positions, "axis_minus_1"),
    )

    inputs = [_tensor("input_ids", TensorProto.INT32, ["batch_size", "sequence_length"])]
    outputs = [_tensor("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", shape.vocab])]
    self_in = ["batch_size", shape.heads, "past_sequence_length", shape.head_size]
    self_out = ["batch_size", shape.heads, "total_sequence_length", shape.head_size]
    cross = ["batch_size", shape.heads, SOURCE_POSITIONS, shape.head_size]
    for index in range(shape.decoder_layers):
        name = f"decoder.layers.{index}"
        for kind in ("key", "value"):
            inputs.append(_tensor(f"past_{kind}_self_{index}", TensorProto.FLOAT, self_in))
            outputs.append(_tensor(f"present_{kind}_self_{index}", TensorProto.FLOAT, self_out))
        for kind in ("key", "value"):
            inputs.append(_tensor(f"past_{kind}_cross_{index}", TensorProto.FLOAT, cross))

        normed = graph.layer_norm(x, f"{name}.self_attn_layer_norm")
        query = graph.heads(graph.linear(normed, f"{name}.self_attn.q_proj", hidden, hidden))
        key = graph.heads(graph.linear(normed, f"{name}.self_attn.k_proj", hidden, hidden, False))
        value = graph.heads(graph.linear(normed, f"{name}.self_attn.v_proj", hidden, hidden))
        keys = graph.named(
            "Concat", [f"past_key_self_{index}", key], f"present_key_self_{index}", axis=2
        )
        values = graph.named(
            "Concat", [f"past_value_self_{index}", value], f"present_value_self_{index}", axis=2
        )
        attended = graph.merge(graph.attend(query, keys, values, causal))
        x = graph.op("Add", x, graph.linear(attended, f"{name}.self_attn.out_proj", hidden, hidden))

        normed = graph.layer_norm(x, f"{name}.encoder_attn_layer_norm")
        query = graph.heads(graph.linear(normed, f"{name}.encoder_attn.q_proj", hidden, hidden))
        heard = graph.attend(query, f"past_key_cross_{index}", f"past_value_cross_{index}")
        x = graph.op(
            "Add",
            x,
            graph.linear(graph.merge(heard), f"{name}.encoder_attn.out_proj", hidden, hidden),
        )
        x = graph.op("Add", x, graph.mlp(graph.layer_norm(x, f"{name}.final_layer_norm"), name))

    x = graph.layer_norm(x, "decoder.layer_norm")
    # An output projection of its own (Whisper ties it to the embedding): with random weights a
    # tied one repeats the last token forever, and tests want text that depends on the audio.
    logits = graph.linear(x, "proj_out", hidden, shape.vocab, bias=False)
    # The designed end: <|endoftext|> wins from position ENDS_AFTER on. [seq, 1] x [1, vocab]
    late = graph.op(
        "Cast",
        graph.op("Unsqueeze", graph.op("GreaterOrEqual", positions, "ends_after"), "axis_minus_1"),
        to=TensorProto.FLOAT,
    )
    logits = graph.op("Add", logits, "token_bias")
    graph.named("Add", [logits, graph.op("Mul", late, "end_bias")], "logits")
    _save(graph, "decoder", inputs, outputs, out)


def make_configs(out: Path, shape: Shape, ids: dict[str, int]) -> None:
    end_of_text = ids["<|endoftext|>"]
    session = {"log_id": "onnxruntime-genai", "provider_options": []}
    common = {"head_size": shape.head_size, "hidden_size": shape.hidden}
    config = {
        "model": {
            "bos_token_id": end_of_text,
            "context_length": shape.target_positions,
            "decoder": {
                "session_options": session,
                "filename": "decoder.onnx",
                **common,
                "inputs": {
                    "input_ids": "input_ids",
                    "past_key_names": "past_key_self_%d",
                    "past_value_names": "past_value_self_%d",
                    "cross_past_key_names": "past_key_cross_%d",
                    "cross_past_value_names": "past_value_cross_%d",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present_key_self_%d",
                    "present_value_names": "present_value_self_%d",
                },
                "num_attention_heads": shape.heads,
                "num_hidden_layers": shape.decoder_layers,
                "num_key_value_heads": shape.heads,
            },
            "encoder": {
                "session_options": session,
                "filename": "encoder.onnx",
                **common,
                "inputs": {"audio_features": "audio_features"},
                "outputs": {
                    "encoder_hidden_states": "hidden_states",
                    "cross_present_key_names": "present_key_cross_%d",
                    "cross_present_value_names": "present_value_cross_%d",
                },
                "num_attention_heads": shape.heads,
                "num_hidden_layers": shape.encoder_layers,
                "num_key_value_heads": shape.heads,
            },
            "eos_token_id": end_of_text,
            "pad_token_id": end_of_text,
            "type": "whisper",
            "vocab_size": shape.vocab,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": shape.target_positions,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
    (out / "genai_config.json").write_text(json.dumps(config, indent=4) + "\n")
    (out / "audio_processor_config.json").write_text(json.dumps(AUDIO_PROCESSOR, indent=4) + "\n")
    generation = {  # the keys transformers' WhisperForConditionalGeneration.generate reads
        "bos_token_id": end_of_text,
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": end_of_text,
        "pad_token_id": end_of_text,
        "is_multilingual": True,
        "lang_to_id": {f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "max_length": shape.target_positions,
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def make_tiny_whisper(out: Path, seed: int = 0, shape: Shape | None = None) -> Path:
    """Write the folder (created if missing) and return it."""
    shape = shape or Shape()
    if shape.hidden % shape.heads:
        raise ValueError("hidden must split into heads")
    out.mkdir(parents=True, exist_ok=True)
    ids = make_tokenizer(out, shape)
    rng = np.random.default_rng(seed)
    make_encoder(out, rng, shape)
    make_decoder(out, rng, shape, ids["<|endoftext|>"])
    make_configs(out, shape, ids)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    arguments = parser.parse_args()
    folder = make_tiny_whisper(arguments.out, arguments.seed)
    size = sum(path.stat().st_size for path in folder.iterdir())
    print(f"{folder}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
