"""``gpux convert`` and ``gpux build`` of a model converted at build (``format: transformers``).

The mistakes (a file that is not GGUF, a folder that is already genai, an unknown precision, no
converter installed) run everywhere in seconds. The conversion itself needs the converter's
Python (torch, transformers, onnx-ir: ``make convert-tools``, or GPUX_CONVERT_PYTHON); without
it those tests skip and say so. With it, a tiny random Llama checkpoint, written by transformers
in that Python, is converted to fp32 and GPUX's greedy tokens must equal transformers' own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.expect import BoundCLI, assert_failure

ROOT = Path(__file__).resolve().parents[2]
USAGE, BACKEND = 2, 7
PROMPT = "The quick brown fox"


def converter_python() -> str | None:
    """GPUX_CONVERT_PYTHON, else the checkout's .venv-convert, when it has what converting needs."""
    candidates = [os.environ.get("GPUX_CONVERT_PYTHON"), str(ROOT / ".venv-convert/bin/python")]
    for python in filter(None, candidates):
        if not Path(python).is_file():
            continue
        probe = "import torch, transformers, onnx_ir, onnxruntime_genai, accelerate, gguf"
        if subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
            return python
    return None


CONVERTER = converter_python()
needs_converter = pytest.mark.skipif(
    CONVERTER is None,
    reason="no converter Python (torch, transformers, onnx-ir): run make convert-tools, or set "
    "GPUX_CONVERT_PYTHON",
)

# Written and run in the converter's Python: a random 2-layer Llama saved as a checkpoint with
# the tiny tokenizer, and its own greedy continuation of the prompt.
CHECKPOINT_SCRIPT = """
import json, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
out, prompt = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
config = LlamaConfig(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    tie_word_embeddings=False,
)
model = LlamaForCausalLM(config).eval()
model.save_pretrained(out)
ids = tokenizer(prompt, return_tensors="pt").input_ids
with torch.no_grad():
    generated = model.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)
print(json.dumps(generated[0, ids.shape[1]:].tolist()))
"""


@pytest.fixture(scope="module")
def checkpoint(workdir: Path, tiny_llm: Path) -> tuple[Path, list[int]]:
    """A transformers checkpoint folder and transformers' greedy tokens for PROMPT."""
    assert CONVERTER is not None
    folder = workdir / "checkpoint"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llm / name, folder / name)
    done = subprocess.run(
        [CONVERTER, "-c", CHECKPOINT_SCRIPT, str(folder), PROMPT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, json.loads(done.stdout.strip().splitlines()[-1])


def test_a_file_that_is_not_gguf_is_refused(gpux: BoundCLI, workdir: Path) -> None:
    text = workdir / "notes.gguf"
    text.write_text("not a model")
    result = gpux("convert", str(text), str(workdir / "out"))
    assert_failure(result, USAGE, "is not a GGUF file", "magic bytes")


def test_a_genai_folder_needs_no_conversion(gpux: BoundCLI, workdir: Path, tiny_llm: Path) -> None:
    result = gpux("convert", str(tiny_llm), str(workdir / "out"))
    assert_failure(result, USAGE, "is already an onnxruntime-genai folder")
    assert "format: genai" in result.stderr


def test_an_unknown_precision_is_refused(gpux: BoundCLI, workdir: Path) -> None:
    gguf = workdir / "magic.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    result = gpux("convert", str(gguf), str(workdir / "out"), "--precision", "int3")
    assert_failure(result, USAGE, "precision 'int3'", "int4, int8, fp16, fp32")


def test_without_the_converter_the_error_names_the_install_command(
    gpux: BoundCLI, workdir: Path
) -> None:
    gguf = workdir / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    # GPUX's own test environment has no torch or transformers: the base install stays light.
    result = gpux(
        "convert", str(gguf), str(workdir / "out"), env={"GPUX_CONVERT_PYTHON": sys.executable}
    )
    assert_failure(result, BACKEND, "converting a model needs", "torch", "transformers")
    assert "make convert-tools" in result.stderr and "pip install torch" in result.stderr
    assert not (workdir / "out").exists()


@needs_converter
@pytest.mark.slow
def test_convert_a_checkpoint_then_generate_what_transformers_generates(
    gpux: BoundCLI, workdir: Path, checkpoint: tuple[Path, list[int]]
) -> None:
    from gpux.runtime.generative import Completion, GenerativeModel

    folder, expected = checkpoint
    out = workdir / "converted"
    env = {"GPUX_CONVERT_PYTHON": str(CONVERTER)}
    gpux.ok("convert", str(folder), str(out), "--precision", "fp32", env=env)
    assert (out / "genai_config.json").is_file() and (out / "model.onnx").is_file()
    model = GenerativeModel(out, "cpu")
    result = model.generate(PROMPT, max_new_tokens=12)
    assert isinstance(result, Completion)
    eos = set(model.eos_token_ids)
    stop = next((i for i, token in enumerate(expected) if token in eos), len(expected))
    assert result.token_ids == expected[:stop]
    again = gpux("convert", str(folder), str(out), env=env)
    assert_failure(again, USAGE, "already exists")


@needs_converter
@pytest.mark.slow
def test_build_converts_a_transformers_checkpoint_once(
    gpux: BoundCLI, workdir: Path, checkpoint: tuple[Path, list[int]]
) -> None:
    folder, _ = checkpoint
    project = workdir / "from-checkpoint"
    shutil.copytree(folder, project / "checkpoint")
    (project / "GPUXfile").write_text(
        "name: converted\nmodel:\n  source: ./checkpoint\n  format: transformers\n"
        "  precision: fp32\ngeneration:\n  max_new_tokens: 6\n"
    )
    env = {"GPUX_CONVERT_PYTHON": str(CONVERTER)}
    gpux.ok("build", str(project), "-q", env=env)
    info = gpux.json("inspect", "converted", "--json")
    assert json.dumps(info).count('"converted_from"') == 1, info
    answer = gpux.json("run", "converted", "--input", PROMPT, "--json")
    assert answer["usage"]["completion_tokens"] >= 1
    # The second build finds the converted folder: no converter needed any more.
    rebuilt = gpux(
        "build", str(project), "--force", "-q", env={"GPUX_CONVERT_PYTHON": "/nonexistent"}
    )
    assert rebuilt.code == 0, rebuilt.output


def test_a_gguf_source_is_converted_at_build_which_names_the_install_command(
    gpux: BoundCLI, workdir: Path
) -> None:
    project = workdir / "gguf-project"
    project.mkdir()
    (project / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    (project / "GPUXfile").write_text("name: from-gguf\nmodel: ./model.gguf\n")  # no format: .gguf
    result = gpux("build", str(project), env={"GPUX_CONVERT_PYTHON": sys.executable})
    assert_failure(result, BACKEND, "converting a model needs", "torch")
    assert "make convert-tools" in result.stderr
    assert not any(name.startswith("from-gguf") for name in gpux("images", "-q").stdout.split())
