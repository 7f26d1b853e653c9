"""GPUXfiles of generative models (``model.format: genai``, ``generation:``) that are wrong, through
``gpux build`` as a user meets them: exit 3, the key or file at fault, a hint that says the fix,
no traceback and no image; and the forms that are right, read as meant."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpux.config.load import parse_config
from tests.cli.expect import BoundCLI, assert_failure, hint_of

CONFIG = 3
GENAI = "model:\n  source: ./tiny-llm\n  format: genai\n"


@dataclass
class Case:
    id: str
    gpuxfile: str
    fragments: list[str]
    hint: str


GENAI_PRECISION = "model:\n  source: ./tiny-llm\n  format: genai\n  precision: int4\n"
CASES = [
    Case(
        "generation without genai",
        "model: ./tiny-llm/model.onnx\ngeneration:\n  max_new_tokens: 8\n",
        ["'generation' applies to generative models"],
        "",
    ),
    Case(
        "tensor keys on a generative model",
        GENAI + "inputs:\n  - name: input_ids\npreprocess:\n  - name: text\n    text:\n"
        "      tokenizer: ./tiny-llm/tokenizer.json\n",
        ["takes text, not tensors", "remove 'inputs', 'preprocess'"],
        "",
    ),
    Case(
        "a file, not a folder",
        "model:\n  source: ./tiny-llm/model.onnx\n  format: genai\n",
        ["model.source './tiny-llm/model.onnx' is a file", "is a folder"],
        "gpux convert SRC OUT",
    ),
    Case(
        "a folder without genai_config.json",
        "model:\n  source: ./empty\n  format: genai\n",
        ["model.source './empty' has no genai_config.json"],
        "the folder that holds genai_config.json",
    ),
    Case(
        "a folder outside the project",
        "model:\n  source: ../elsewhere\n  format: genai\n",
        ["outside the project folder"],
        "copy it into the project folder",
    ),
    Case(
        "unknown format",
        "model:\n  source: ./tiny-llm\n  format: safetensors\n",
        ["GPUXfile:3:11: model.format", "onnx|genai|gguf|transformers"],
        "",
    ),
    Case(
        "a transformers checkpoint without config.json",
        "model:\n  source: ./empty\n  format: transformers\n",
        ["model.source './empty' has no config.json", "not a Hugging Face transformers"],
        "the folder that save_pretrained wrote",
    ),
    Case(
        "precision of a model that is not converted",
        GENAI_PRECISION,
        ["'precision' and 'target' apply to a model converted at build"],
        "",
    ),
    Case(
        "max_new_tokens 0",
        GENAI + "generation:\n  max_new_tokens: 0\n",
        ["GPUXfile:5:19: generation.max_new_tokens: expected greater than or equal to 1"],
        "",
    ),
    Case(
        "negative temperature",
        GENAI + "generation:\n  temperature: -0.5\n",
        ["generation.temperature: expected greater than or equal to 0"],
        "",
    ),
    Case(
        "top_p above 1",
        GENAI + "generation:\n  top_p: 1.5\n",
        ["generation.top_p: expected less than or equal to 1"],
        "",
    ),
    Case(
        "empty stop string",
        GENAI + "generation:\n  stop: ['']\n",
        ["an empty stop string would stop before the first token"],
        "",
    ),
    Case(
        "two kinds of guidance",
        GENAI + "generation:\n  guidance:\n    regex: 'a+'\n    grammar: 'start: \"a\"'\n",
        ["guidance takes exactly one of json_schema, regex or grammar (got regex, grammar)"],
        "",
    ),
    Case(
        "no guidance given",
        GENAI + "generation:\n  guidance: {}\n",
        ["guidance takes exactly one of json_schema, regex or grammar"],
        "",
    ),
    Case(
        "a regex that does not compile",
        GENAI + "generation:\n  guidance:\n    regex: '(yes|no'\n",
        ["regex '(yes|no' does not compile"],
        "",
    ),
    Case(
        "guidance llguidance cannot compile",
        GENAI + "generation:\n  guidance:\n    grammar: 'start: ???'\n",
        ["GPUXfile: generation.guidance: the lark_grammar guidance does not compile"],
        "fix the schema, regex or grammar",
    ),
    Case(
        "a typo in generation",
        GENAI + "generation:\n  max_tokens: 8\n",
        ["unknown key 'max_tokens' in generation"],
        "valid keys in generation: guidance, max_new_tokens",
    ),
]


@pytest.fixture(scope="module")
def projects(workdir: Path, tiny_llm: Path) -> Path:
    root = workdir / "generation-cases"
    (root / "elsewhere").mkdir(parents=True)
    return root


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_wrong_generative_gpuxfile_names_the_problem_and_the_fix(
    gpux: BoundCLI, projects: Path, tiny_llm: Path, case: Case
) -> None:
    project = projects / case.id.replace(" ", "-")
    if not project.exists():
        shutil.copytree(tiny_llm, project / "tiny-llm")
        (project / "empty").mkdir()
    (project / "GPUXfile").write_text(case.gpuxfile)
    result = gpux("build", str(project))
    assert_failure(result, CONFIG, *case.fragments)
    assert case.hint in hint_of(result)
    assert gpux.names() == []


def test_generation_defaults_are_filled_for_a_generative_model() -> None:
    config = parse_config(GENAI)
    assert config.generation is not None
    assert config.generation.max_new_tokens == 256
    assert config.generation.temperature == 0.0
    assert config.generation.stop == []


def test_one_stop_string_may_be_written_alone_and_guidance_keeps_its_schema() -> None:
    config = parse_config(
        GENAI + 'generation:\n  stop: "\\n\\n"\n  seed: 3\n  guidance:\n    json_schema:\n'
        "      type: object\n      properties: {answer: {type: integer}}\n"
    )
    generation = config.generation
    assert generation is not None
    assert generation.stop == ["\n\n"]
    assert generation.seed == 3
    assert generation.guidance is not None
    assert generation.guidance.kind == "json_schema"
    assert generation.guidance.json_schema == {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
    }


def test_overrides_are_validated_like_the_gpuxfile() -> None:
    config = parse_config(GENAI + "generation:\n  max_new_tokens: 8\n  stop: [END]\n")
    assert config.generation is not None
    merged = config.generation.merged(temperature=0.7, stop=None, max_new_tokens=None)
    assert (merged.temperature, merged.stop, merged.max_new_tokens) == (0.7, ["END"], 8)
    with pytest.raises(ValueError, match="top_k"):
        config.generation.merged(top_k=0)
