"""MiniLM sentence embeddings through the GPUXfile's text pipeline, against an independent
reference (``tokenizers`` + onnxruntime + numpy written here), through the API and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project

pytestmark = [pytest.mark.zoo]

GPUXFILE = """\
name: minilm
model: ./model.onnx
preprocess:
  - text:
      tokenizer: ./tokenizer.json
      max_length: {max_length}
      truncation: {truncation}
postprocess:
  - name: embedding
    from: last_hidden_state
    steps: [mean_pool, l2_normalize]
"""
SIMILAR = [
    ("A man is playing a guitar.", "Someone is playing the guitar."),
    ("The cat sleeps on the sofa.", "A cat is sleeping on a couch."),
    ("How do I reset my password?", "I forgot my password, how can I change it?"),
]
UNRELATED = [
    ("A man is playing a guitar.", "The central bank raised interest rates."),
    ("The cat sleeps on the sofa.", "Quantum computers use qubits."),
    ("How do I reset my password?", "The volcano erupted last night."),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, zoo_file: Callable[[str], Path]) -> Path:
    folder = tmp_path_factory.mktemp("minilm")
    make_project(folder, zoo_file("minilm"), GPUXFILE.format(max_length=128, truncation="true"))
    (folder / "tokenizer.json").write_bytes(zoo_file("minilm-tokenizer").read_bytes())
    return folder


@pytest.fixture(scope="module")
def gpux(tmp_path_factory: pytest.TempPathFactory, project: Path) -> BoundCLI:
    bound = BoundCLI(tmp_path_factory.mktemp("home"))
    bound.ok("build", str(project), "-q")
    return bound


@pytest.fixture(scope="module")
def model(gpux: BoundCLI) -> Any:
    import gpux as api
    from gpux.store import Store

    return api.load("minilm", backend="cpu", store=Store(gpux.home))


def reference_embeddings(model_path: Path, tokenizer_path: Path, texts: list[str]) -> np.ndarray:
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_truncation(128)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (hidden,) = session.run(
        ["last_hidden_state"],
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
    )
    weights = mask[:, :, None].astype(np.float64)
    pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_similar_sentences_score_high_and_unrelated_low(model: Any) -> None:
    for pairs, check in ((SIMILAR, lambda c: c >= 0.6), (UNRELATED, lambda c: c <= 0.2)):
        for first, second in pairs:
            a, b = (np.array(r["embedding"]) for r in model.predict_batch([first, second]))
            cosine = float(a @ b)
            assert check(cosine), f"{first!r} vs {second!r}: cosine {cosine:.3f}"


def test_embedding_equals_an_independent_reference(
    model: Any, project: Path, zoo_file: Callable[[str], Path]
) -> None:
    texts = [s for pair in SIMILAR + UNRELATED for s in pair] + ["short", "x " * 300]
    ours = np.array([r["embedding"] for r in model.predict_batch(texts)])
    expected = reference_embeddings(project / "model.onnx", project / "tokenizer.json", texts)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # Batched and one-by-one give the same embedding (padding must not leak into the mean).
    alone = np.array(model.predict(texts[0])["embedding"])
    np.testing.assert_allclose(alone, ours[0], atol=1e-5)


def test_raw_outputs_come_back_next_to_the_result(model: Any) -> None:
    result = model.predict("hello world", raw=True)
    assert len(result["embedding"]) == 384
    hidden = result["outputs"]["last_hidden_state"]  # the whole tensor, as numpy
    assert isinstance(hidden, np.ndarray) and hidden.shape == (4, 384)  # [CLS] hello world [SEP]
    mask = np.ones((1, 4), dtype=np.float32)
    pooled = (hidden * mask[0][:, None]).sum(0) / mask.sum()
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled), result["embedding"], atol=1e-5)


def test_cli_raw_full_and_npz_give_whole_tensors(gpux: BoundCLI, tmp_path: Path) -> None:
    summary = gpux.json("run", "minilm", "--input", "hello world", "--raw")
    described = summary["result"]["outputs"]["last_hidden_state"]
    assert described["shape"] == [4, 384] and described["truncated"] is True
    whole = gpux.json("run", "minilm", "--input", "hello world", "--raw", "--full")
    data = np.asarray(whole["result"]["outputs"]["last_hidden_state"]["data"])
    assert data.shape == (4, 384)
    target = tmp_path / "raw.npz"
    written = gpux.json("run", "minilm", "--input", "hello world", "-o", str(target))
    assert written["written"] == [str(target)] and "outputs" not in written["result"]
    with np.load(target) as saved:
        np.testing.assert_allclose(saved["last_hidden_state"], data, atol=1e-6)
    many = tmp_path / "many.npz"
    lines = gpux(
        "run", "minilm", "--input", "hello world", "--input", "a second one", "-o", str(many)
    )
    assert lines.code == 0, lines.output
    with np.load(many) as saved:
        assert sorted(saved.files) == ["0.last_hidden_state", "1.last_hidden_state"]
        # One batch, padded to its longest text ([CLS] a second one [SEP]); the padding of
        # the shorter one is masked out, so its real tokens match the run on its own.
        assert saved["1.last_hidden_state"].shape == (5, 384)
        np.testing.assert_allclose(saved["0.last_hidden_state"][:4], data, atol=1e-4)


def test_cli_bare_value_stdin_lines_and_many_inputs(gpux: BoundCLI, tmp_path: Path) -> None:
    one = gpux.json("run", "minilm", "--input", "I love this product")
    assert one["backend"] and len(one["result"]["embedding"]) == 384
    piped = gpux.json("run", "minilm", stdin="I love this product\n")
    np.testing.assert_allclose(piped["result"]["embedding"], one["result"]["embedding"], atol=1e-6)

    lines = gpux.ok("run", "minilm", stdin="first sentence\n\nsecond one\nthird\n").stdout
    rows = [json.loads(line) for line in lines.splitlines()]
    assert [r["input"] for r in rows] == ["line 1", "line 2", "line 3"]

    many = gpux.ok("run", "minilm", "-i", "a", "-i", "b", "-i", "c", "--batch-size", "2")
    assert [json.loads(line)["input"] for line in many.stdout.splitlines()] == ["a", "b", "c"]

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("one\ntwo\n")
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text('"one"\n{"text": "two"}\n')
    out = tmp_path / "out.jsonl"
    from_txt = gpux.ok("run", "minilm", "--input", f"@{sentences}", "-o", str(out)).stdout
    from_jsonl = gpux.ok("run", "minilm", "--input", str(jsonl)).stdout
    embeddings = [
        [json.loads(line)["embedding"] for line in text.splitlines()]
        for text in (from_txt, from_jsonl, out.read_text())
    ]
    np.testing.assert_allclose(embeddings[0], embeddings[1], atol=1e-6)
    assert embeddings[2] == embeddings[0]


def test_interactive_answers_each_line_and_survives_a_bad_one(gpux: BoundCLI) -> None:
    result = gpux("run", "minilm", "--interactive", stdin='hello\n{"nope": 1}\nworld\n')
    assert result.code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all(len(r["embedding"]) == 384 for r in rows)
    assert "unknown input 'nope'" in result.stderr


def test_text_over_max_length_without_truncation_is_refused(
    tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    folder = make_project(
        tmp_path / "strict",
        zoo_file("minilm"),
        GPUXFILE.format(max_length=8, truncation="false").replace("name: minilm", "name: strict"),
    )
    (folder / "tokenizer.json").write_bytes(zoo_file("minilm-tokenizer").read_bytes())
    gpux = BoundCLI(tmp_path / "home")
    gpux.ok("build", str(folder), "-q")
    assert_failure(
        gpux("run", "strict", "--input", "a sentence that is much longer than eight tokens"),
        6,
        "input 'text' has 12 tokens, more than max_length 8",
        "truncation: true",
    )
    assert gpux.json("run", "strict", "--input", "short one")["result"]["embedding"]


def test_a_broken_tokenizer_fails_the_build(
    tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    text = GPUXFILE.format(max_length=16, truncation="true")
    folder = make_project(tmp_path / "broken", zoo_file("minilm"), text)
    (folder / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    assert_failure(
        BoundCLI(tmp_path / "home")("build", str(folder)),
        3,
        "'tokenizer.json' is not a tokenizer.json the tokenizers library can read",
    )


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (("./tokenizer.json", "./missing.json"), ["tokenizer file './missing.json' not found"]),
        (("from: last_hidden_state", "from: logits"), ["'logits' is not a model output"]),
        (("[mean_pool, l2_normalize]", "[{mean_pool: {mask: attn}}]"), ["mask 'attn'"]),
        (("[mean_pool, l2_normalize]", "[top_k, softmax]"), ["'top_k' must be the last step"]),
        (
            ("      max_length", "      ids: ids\n      max_length"),
            ["text.ids 'ids' is not a model input"],
        ),
    ],
)
def test_pipeline_mistakes_fail_the_build(
    tmp_path: Path, zoo_file: Callable[[str], Path], change: tuple[str, str], fragments: list[str]
) -> None:
    text = GPUXFILE.format(max_length=16, truncation="true").replace(*change)
    folder = make_project(tmp_path / "bad", zoo_file("minilm"), text)
    (folder / "tokenizer.json").write_bytes(zoo_file("minilm-tokenizer").read_bytes())
    result = BoundCLI(tmp_path / "home")("build", str(folder))
    assert result.code in (3, 4), result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.output
    assert "hint:" in result.stderr and "Traceback" not in result.output
