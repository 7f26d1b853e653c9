"""The generative engine against onnxruntime-genai itself, on the tiny random Llama.

The reference is a bare onnxruntime-genai loop (``og.Generator`` step by step), written here
without GPUX; the fixture model is checked against ONNX Runtime with no cache at all, so a KV
cache bug in the fixture cannot hide behind two runs of the same engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_genai as og
import pytest

from gpux.errors import BackendError, InputError
from gpux.runtime.generative import Completion, GenerativeModel, Stream

PROMPTS = ["Hello, world!", "The answer is", "{"]


@pytest.fixture(scope="module")
def model(tiny_llm: Path) -> GenerativeModel:
    return GenerativeModel(tiny_llm, "cpu")


def bare_genai_greedy(folder: Path, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """The tokens onnxruntime-genai's own loop picks, end-of-sequence excluded."""
    genai_model = og.Model(str(folder))
    eos = set(int(t) for t in og.Tokenizer(genai_model).eos_token_ids)
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=len(prompt_ids) + new_tokens, do_sample=False)
    generator = og.Generator(genai_model, params)
    generator.append_tokens(prompt_ids)
    tokens: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        if token in eos:
            break
        tokens.append(token)
    return tokens


def complete(model: GenerativeModel, prompt: str, **settings: object) -> Completion:
    result = model.generate(prompt, **settings)
    assert isinstance(result, Completion)
    return result


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_output_equals_a_bare_genai_loop_token_for_token(
    model: GenerativeModel, tiny_llm: Path, prompt: str
) -> None:
    ours = complete(model, prompt, max_new_tokens=40)
    reference = bare_genai_greedy(tiny_llm, model.encode(prompt), 40)
    assert ours.token_ids == reference
    assert ours.completion_tokens == len(reference) == 40
    assert ours.prompt_tokens == len(model.encode(prompt))
    assert ours.finish_reason == "length"


def test_chat_greedy_equals_a_bare_genai_loop_on_the_templated_prompt(
    model: GenerativeModel, tiny_llm: Path
) -> None:
    messages = [{"role": "user", "content": "What is 42?"}]
    chat = model.chat(messages, max_new_tokens=24)
    assert isinstance(chat, Completion)
    tokenizer = og.Tokenizer(og.Model(str(tiny_llm)))
    templated = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    assert templated.endswith("<|im_start|>assistant\n")
    ids = [int(t) for t in tokenizer.encode(templated)]
    assert chat.token_ids == bare_genai_greedy(tiny_llm, ids, 24)


def test_the_fixture_decodes_with_its_cache_as_without(tiny_llm: Path) -> None:
    """genai's cached decoding equals recomputing the whole sequence each step (plain ORT)."""
    session = ort.InferenceSession(str(tiny_llm / "model.onnx"), providers=["CPUExecutionProvider"])
    cached = GenerativeModel(tiny_llm, "cpu")
    prompt = cached.encode("Once upon a time")
    generated = complete(cached, "Once upon a time", max_new_tokens=12).token_ids
    sequence = list(prompt)
    for _ in range(12):
        length = len(sequence)
        feed = {
            "input_ids": np.array([sequence], np.int64),
            "attention_mask": np.ones((1, length), np.int64),
            "position_ids": np.arange(length, dtype=np.int64)[None],
        }
        for layer in range(2):
            for kind in ("key", "value"):
                feed[f"past_key_values.{layer}.{kind}"] = np.zeros((1, 2, 0, 32), np.float32)
        sequence.append(int(session.run(["logits"], feed)[0][0, -1].argmax()))
    assert generated == sequence[len(prompt) :]


@pytest.mark.parametrize("stop", [[], ["value"], ["p b", "QR"]])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_streamed_pieces_concatenate_to_the_text(
    model: GenerativeModel, prompt: str, stop: list[str]
) -> None:
    whole = complete(model, prompt, max_new_tokens=30, stop=stop)
    stream = model.generate(prompt, max_new_tokens=30, stop=stop, stream=True)
    assert isinstance(stream, Stream)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == whole.text == stream.completion.text  # type: ignore[union-attr]
    for piece in pieces:
        assert not any(s in piece for s in stop)


def test_a_stop_string_ends_the_text_where_it_first_appears(model: GenerativeModel) -> None:
    free = complete(model, "Hello, world!", max_new_tokens=30)
    stop = free.text[8:11]  # three characters from the middle of the greedy answer
    cut = complete(model, "Hello, world!", max_new_tokens=30, stop=[stop])
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < free.completion_tokens


def test_defaults_come_from_the_generation_settings(tiny_llm: Path) -> None:
    from gpux.config.generation import Generation

    limited = GenerativeModel(tiny_llm, "cpu", defaults=Generation(max_new_tokens=5))
    assert complete(limited, "Hello").completion_tokens == 5
    assert complete(limited, "Hello", max_new_tokens=7).completion_tokens == 7


def test_sampling_is_reproducible_with_a_seed(model: GenerativeModel) -> None:
    settings = {"max_new_tokens": 30, "temperature": 1.0, "top_k": 100}
    first = complete(model, "Hello", seed=7, **settings)
    assert complete(model, "Hello", seed=7, **settings).token_ids == first.token_ids
    others = {tuple(complete(model, "Hello", seed=s, **settings).token_ids) for s in (1, 2, 3)}
    assert len(others | {tuple(first.token_ids)}) > 1
    assert tuple(complete(model, "Hello", max_new_tokens=30).token_ids) not in others


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "count": {"type": "integer", "minimum": 0, "maximum": 1000},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "count", "ok"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("prompt", PROMPTS)
def test_json_schema_guidance_output_parses_against_the_schema(
    model: GenerativeModel, prompt: str
) -> None:
    result = complete(model, prompt, max_new_tokens=120, guidance={"json_schema": SCHEMA})
    assert result.finish_reason == "stop", result.text
    jsonschema.validate(json.loads(result.text), SCHEMA)
    unguided = complete(model, prompt, max_new_tokens=60).text
    with pytest.raises(ValueError):
        json.loads(unguided)  # the random model writes JSON only when guided


def test_regex_guidance_output_matches(model: GenerativeModel) -> None:
    pattern = r"(yes|no), [0-9]{3}!"
    result = complete(model, "Hello", max_new_tokens=20, guidance={"regex": pattern})
    assert re.fullmatch(pattern, result.text), result.text


def test_grammar_guidance_output_matches(model: GenerativeModel) -> None:
    grammar = 'start: "A" NUMBER ";"\nNUMBER: /[0-9]{2,4}/'
    result = complete(model, "Hello", max_new_tokens=20, guidance={"grammar": grammar})
    assert re.fullmatch(r"A[0-9]{2,4};", result.text), result.text


def test_figures_are_reported(model: GenerativeModel) -> None:
    result = complete(model, "Hello, world!", max_new_tokens=16)
    figures = result.to_json()
    assert figures["usage"] == {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}
    assert 0 < figures["time_to_first_token_ms"] < figures["seconds"] * 1e3
    assert figures["tokens_per_second"] > 0


def test_placement_is_read_from_onnxruntimes_log(tiny_llm: Path) -> None:
    proven = GenerativeModel(tiny_llm, "cpu", prove_placement=True).placement
    nodes = len(onnx.load(str(tiny_llm / "model.onnx"), load_external_data=False).graph.node)
    assert proven.details["proof"] == "onnxruntime-log"
    # ONNX Runtime counts its optimised graph: a few nodes fewer than the file holds.
    assert list(proven.details["nodes"]) == ["CPUExecutionProvider"]
    assert nodes * 0.8 < proven.details["nodes"]["CPUExecutionProvider"] <= nodes
    assert proven.backend == "cpu" and proven.providers == ["CPUExecutionProvider"]
    unproven = GenerativeModel(tiny_llm, "cpu").placement
    assert unproven.details["proof"] == "genai-device"
    assert "unproven" in unproven.details


def test_mistakes_are_input_errors(model: GenerativeModel) -> None:
    with pytest.raises(InputError, match="empty"):
        model.generate("")
    with pytest.raises(InputError, match="temperature"):
        model.generate("Hello", temperature=-1)
    with pytest.raises(InputError, match="context length"):
        model.generate("Hello " * 300)
    with pytest.raises(InputError, match="role"):
        model.chat([{"content": "no role"}])
    with pytest.raises(
        InputError, match=r"regex guidance does not compile: .*look-around, including look-ahead"
    ):
        model.generate("Hello", guidance={"regex": "(?=a)b"})
    with pytest.raises(InputError, match="json_schema guidance does not compile"):
        model.generate("Hello", guidance={"json_schema": {"type": "foo"}})


def test_backends_genai_cannot_serve_are_refused(tiny_llm: Path) -> None:
    with pytest.raises(BackendError, match="tensorrt"):
        GenerativeModel(tiny_llm, "tensorrt")
    if not og.is_cuda_available():
        with pytest.raises(BackendError, match="gpux\\[cuda\\]"):
            GenerativeModel(tiny_llm, "cuda")


def test_closing_a_stream_early_stops_generating(model: GenerativeModel) -> None:
    stream = model.generate("Hello, world!", max_new_tokens=50, stream=True)
    assert isinstance(stream, Stream)
    next(stream)
    stream.close()
    assert list(stream) == []


def test_auto_falls_back_to_the_cpu_when_the_folders_provider_cannot_start(
    tiny_llm: Path, tmp_path: Path
) -> None:
    if og.is_cuda_available():
        pytest.skip("this onnxruntime-genai build has CUDA: the folder's provider would start")
    import shutil

    folder = shutil.copytree(tiny_llm, tmp_path / "cuda-llm")
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"]["provider_options"] = [{"cuda": {}}]
    (folder / "genai_config.json").write_text(json.dumps(config))
    model = GenerativeModel(folder, "auto")
    assert model.placement.backend == "cpu"
    assert model.placement.fallback_reason is not None
    assert model.placement.fallback_reason.startswith("the folder's provider could not start")
    assert complete(model, "Hello", max_new_tokens=3).completion_tokens == 3
    with pytest.raises(BackendError, match="gpux\\[cuda\\]"):
        GenerativeModel(folder, "cuda")
