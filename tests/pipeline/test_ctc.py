"""CTC greedy decoding against the authors' own decoder (rapidocr 1.4.4's CTCLabelDecode, a copy of
PaddleOCR's), on the real PP-OCRv4 recogniser's outputs for text lines of a scanned page, and on
synthetic scores built to hit the edge cases (repeats across a blank, ties, empty results)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpux.errors import ModelError, UsageError
from gpux.pipeline.ctc import (
    charset_from_file,
    charset_from_metadata,
    charset_from_text,
    ctc_greedy,
    load_charset,
    paddle_character_list,
)
from tools import zoo

pytestmark = pytest.mark.zoo

Array = np.ndarray[Any, Any]


def _rapidocr() -> Any:
    folder = str(zoo.package("rapidocr_onnxruntime"))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import rapidocr_onnxruntime

    return rapidocr_onnxruntime


def _reference_decoder(characters: list[str]) -> Any:
    _rapidocr()
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

    return CTCLabelDecode(character=list(characters))  # it inserts into the list it is given


@pytest.fixture(scope="module")
def rapidocr_run() -> Iterator[dict[str, Any]]:
    """rapidocr's whole pipeline (det, crop, cls, rec preprocessing) on page.png, batched its way
    (6 lines a batch) and one line a batch; the recogniser's input batches are recorded."""
    RapidOCR = _rapidocr().RapidOCR
    engine = RapidOCR(
        det_model_path=str(zoo.fetch("ppocr-det")), rec_model_path=str(zoo.fetch("ppocr-rec"))
    )
    batches: list[Array] = []
    inner = engine.text_rec.session

    class Recording:
        def __call__(self, batch: Array) -> Any:
            batches.append(batch)
            return inner(batch)

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    engine.text_rec.session = Recording()
    final, _ = engine(str(zoo.fetch("page.png")))
    batched_its_way = len(batches)
    engine.text_rec.rec_batch_num = 1
    engine(str(zoo.fetch("page.png")))
    yield {
        "engine": engine,
        "batches": batches,
        "batched_its_way": batched_its_way,
        "final": final,
    }


@pytest.fixture(scope="module")
def recognised(rapidocr_run: dict[str, Any]) -> list[Array]:
    """The zoo's ppocr-rec run with onnxruntime on rapidocr's preprocessed text-line batches."""
    session = ort.InferenceSession(str(zoo.fetch("ppocr-rec")), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: batch})[0] for batch in rapidocr_run["batches"]]


@pytest.fixture(scope="module")
def charset() -> list[str]:
    return charset_from_metadata(zoo.fetch("ppocr-rec"))


def _assert_same(ours: list[dict[str, Any]], reference: list[tuple[str, float]]) -> None:
    assert [item["text"] for item in ours] == [text for text, _ in reference]
    assert np.allclose(
        [item["confidence"] for item in ours], [score for _, score in reference], rtol=0, atol=1e-6
    )
    for item in ours:
        assert "".join(c["char"] for c in item["characters"]) == item["text"]


# ------------------------------------------------------------------------------ real recogniser
def test_real_recogniser_outputs_decode_as_rapidocr_does(
    recognised: list[Array], charset: list[str]
) -> None:
    reference = _reference_decoder(charset)
    assert len(recognised) >= 6  # one 6-line batch at most, then every line alone
    for output in recognised:
        assert output.ndim == 3 and output.shape[2] == len(charset) + 2
        ours = ctc_greedy(output, charset, add_blank_and_space=True)
        _assert_same(ours, reference(output))
    texts = [item["text"] for item in ctc_greedy(recognised[0], charset, add_blank_and_space=True)]
    assert any("background" in text for text in texts)  # the page's text, read


def test_real_results_match_rapidocrs_final_answer(
    rapidocr_run: dict[str, Any], recognised: list[Array], charset: list[str]
) -> None:
    """Everything rapidocr reported for the page (lines scoring >= 0.5) is what we decode."""
    ours = {
        item["text"]: item["confidence"]
        for output in recognised[: rapidocr_run["batched_its_way"]]
        for item in ctc_greedy(output, charset, add_blank_and_space=True)
    }
    assert rapidocr_run["final"]
    for _box, text, score in rapidocr_run["final"]:
        assert ours[text] == pytest.approx(score, abs=1e-6)


def test_time_first_output_decodes_like_batch_first(
    recognised: list[Array], charset: list[str]
) -> None:
    output = recognised[0]
    time_first = np.ascontiguousarray(output.transpose(1, 0, 2))  # [T, N, C], as such models ship
    assert ctc_greedy(time_first, charset, time_axis=0, add_blank_and_space=True) == ctc_greedy(
        output, charset, add_blank_and_space=True
    )


def test_logits_with_softmax_decode_like_probabilities(
    recognised: list[Array], charset: list[str]
) -> None:
    output = recognised[0]
    logits = np.log(np.maximum(output, 1e-30)) + 3.0  # softmax ignores the shift
    _assert_same(
        ctc_greedy(logits, charset, add_blank_and_space=True, softmax=True),
        [
            (item["text"], item["confidence"])
            for item in ctc_greedy(output, charset, add_blank_and_space=True)
        ],
    )


def test_charset_from_metadata_is_rapidocrs_character_list(
    rapidocr_run: dict[str, Any], charset: list[str]
) -> None:
    engine = rapidocr_run["engine"]
    assert charset == engine.text_rec.session.get_character_list()
    assert paddle_character_list(charset) == engine.text_rec.postprocess_op.character
    session = ort.InferenceSession(str(zoo.fetch("ppocr-rec")), providers=["CPUExecutionProvider"])
    assert charset_from_metadata(session.get_modelmeta().custom_metadata_map) == charset
    assert load_charset(model=zoo.fetch("ppocr-rec")) == charset


def test_charset_size_mismatch_names_both_sizes(
    recognised: list[Array], charset: list[str]
) -> None:
    with pytest.raises(ModelError) as raised:
        ctc_greedy(recognised[0], charset)  # the raw dict: blank and space missing
    assert "6623" in raised.value.message and "6625" in raised.value.message
    assert raised.value.hint is not None and "add_blank_and_space=True" in raised.value.hint
    with pytest.raises(ModelError, match="6624 classes"):
        ctc_greedy(recognised[0], charset[:-1], add_blank_and_space=True)


# ------------------------------------------------------------------------------------ synthetic
HELLO = ["h", "e", "l", "o"]  # classes: blank, h, e, l, o, space


def _one_hot(steps: list[int], classes: int, probability: float = 0.9) -> Array:
    """[1, T, C] scores whose best class at step t is steps[t], with that probability."""
    scores = np.full((1, len(steps), classes), (1 - probability) / (classes - 1), np.float32)
    scores[0, np.arange(len(steps)), steps] = probability
    return scores


def test_repeat_across_blank_is_kept_twice() -> None:
    h, e, l, o = 1, 2, 3, 4  # noqa: E741 - the letter
    scores = _one_hot([h, h, e, l, l, 0, l, o, o, 0], 6)
    scores[0, 6, l] = 0.8  # the second "l" is read with another probability
    ours = ctc_greedy(scores, HELLO, add_blank_and_space=True)
    assert ours[0]["text"] == "hello"
    assert [c["confidence"] for c in ours[0]["characters"]] == pytest.approx(
        [0.9, 0.9, 0.9, 0.8, 0.9]
    )
    _assert_same(ours, _reference_decoder(HELLO)(scores))
    without_blank = _one_hot([h, e, l, l, l, o], 6)
    assert ctc_greedy(without_blank, HELLO, add_blank_and_space=True)[0]["text"] == "helo"
    no_collapse = ctc_greedy(
        without_blank, HELLO, add_blank_and_space=True, remove_duplicates=False
    )
    assert no_collapse[0]["text"] == "helllo"


def test_all_blank_is_empty_text_with_confidence_zero() -> None:
    scores = _one_hot([0] * 7, 6)
    ours = ctc_greedy(scores, HELLO, add_blank_and_space=True)
    assert ours == [{"text": "", "confidence": 0.0, "characters": []}]
    assert _reference_decoder(HELLO)(scores) == [("", 0.0)]


def test_blank_last_decodes_like_blank_first() -> None:
    rng = np.random.default_rng(7)
    scores = rng.random((3, 20, 6)).astype(np.float32)
    classes = paddle_character_list(HELLO)
    blank_last = np.roll(scores, -1, axis=2)  # class 0 (blank) moves to the end
    ours = ctc_greedy(blank_last, [*classes[1:], classes[0]], blank=-1)
    assert ours == ctc_greedy(scores, HELLO, add_blank_and_space=True)
    _assert_same(ours, _reference_decoder(HELLO)(scores))


@settings(max_examples=150, deadline=None)
@given(
    batch=st.integers(0, 4),
    steps=st.integers(0, 12),
    characters=st.integers(1, 4),
    levels=st.integers(2, 4),
    seed=st.integers(0, 2**32 - 1),
    remove_duplicates=st.booleans(),
)
def test_matches_rapidocr_on_random_scores(
    batch: int, steps: int, characters: int, levels: int, seed: int, remove_duplicates: bool
) -> None:
    """Few classes and few distinct values: runs, blanks and ties (first best wins) are common."""
    charset = [chr(ord("a") + i) for i in range(characters)]
    rng = np.random.default_rng(seed)
    scores = (rng.integers(0, levels, (batch, steps, characters + 2)) / levels).astype(np.float32)
    reference = _reference_decoder(charset)
    expected = reference.decode(
        scores.argmax(axis=2), scores.max(axis=2), is_remove_duplicate=remove_duplicates
    )
    ours = ctc_greedy(
        scores, charset, add_blank_and_space=True, remove_duplicates=remove_duplicates
    )
    _assert_same(ours, expected)
    time_first = ctc_greedy(
        scores.transpose(1, 0, 2),
        charset,
        time_axis=0,
        add_blank_and_space=True,
        remove_duplicates=remove_duplicates,
    )
    assert time_first == ours


def test_shape_and_argument_errors() -> None:
    with pytest.raises(ModelError, match=r"\[batch, time, classes\]"):
        ctc_greedy(np.zeros((5, 6), np.float32), HELLO, add_blank_and_space=True)
    with pytest.raises(ModelError, match="time_axis"):
        ctc_greedy(np.zeros((1, 5, 6), np.float32), HELLO, add_blank_and_space=True, time_axis=2)
    with pytest.raises(ModelError, match="blank=3"):
        ctc_greedy(np.zeros((1, 5, 6), np.float32), HELLO, add_blank_and_space=True, blank=3)
    with pytest.raises(ModelError, match="blank=6"):
        ctc_greedy(np.zeros((1, 5, 6), np.float32), paddle_character_list(HELLO), blank=6)


# -------------------------------------------------------------------------------------- charset
@pytest.mark.parametrize(
    "content",
    [
        b"a\nb\n \nc\n",  # a space entry, final newline
        b"a\r\nb\r\n\xe4\xb8\x80\r\n",  # CRLF, a CJK character
        b"a\n\nb",  # an empty entry, no final newline
        b"\n",
        b"",
    ],
)
def test_dict_files_read_as_paddleocr_reads_them(tmp_path: Path, content: bytes) -> None:
    _rapidocr()
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

    path = tmp_path / "keys.txt"
    path.write_bytes(content)
    expected = CTCLabelDecode.read_character_file(path)
    assert charset_from_file(path) == expected
    assert charset_from_text(content.decode("utf-8")) == expected
    assert load_charset(file=path) == expected


def test_load_charset_takes_exactly_one_source(tmp_path: Path) -> None:
    assert load_charset(characters=("a", "b")) == ["a", "b"]
    with pytest.raises(UsageError, match="got 0"):
        load_charset()
    with pytest.raises(UsageError, match="characters, file"):
        load_charset(characters=["a"], file=tmp_path / "keys.txt")
    with pytest.raises(UsageError, match="list of strings"):
        load_charset(characters="abc")


@pytest.mark.parametrize("value", ["a\r\nb\n", "a\nb\x0cc\u2028d", " \n\n\u3000"])
def test_metadata_split_as_rapidocr_splits_it(value: str) -> None:
    """rapidocr reads the property with str.splitlines(), which ends lines at more than \\n."""
    from types import SimpleNamespace

    _rapidocr()
    from rapidocr_onnxruntime.utils.infer_engine import OrtInferSession

    metadata = {"character": value}
    holder = SimpleNamespace(
        session=SimpleNamespace(get_modelmeta=lambda: SimpleNamespace(custom_metadata_map=metadata))
    )
    assert charset_from_metadata(metadata) == OrtInferSession.get_character_list(holder)


def test_metadata_without_the_key_names_what_is_there() -> None:
    with pytest.raises(ModelError, match="'vocab'"):
        charset_from_metadata({"vocab": "a\nb"})
    assert charset_from_metadata({"vocab": "a\nb"}, key="vocab") == ["a", "b"]


# ------------------------------------------------------------------ the ctc step in a GPUXfile
@pytest.mark.parametrize(
    "charset",
    [
        "",  # the default: the model's metadata
        "        charset: ./ppocr_keys.txt\n",  # a PaddleOCR dict in the project
    ],
)
def test_a_gpuxfile_ctc_step_reads_as_rapidocr_does(
    rapidocr_run: dict[str, Any], charset: str, tmp_path: Path, gpux_home: Path
) -> None:
    """Built and loaded as users do, the step gives rapidocr's texts and confidences for the
    batches its own preprocessing made; the charset is read at build and kept in the image."""
    import gpux
    from tests.conftest import make_project

    rec = zoo.fetch("ppocr-rec")
    keys = "\n".join(charset_from_metadata(rec)) + "\n"
    options = "{ctc: {}}" if not charset else "\n    - ctc:\n" + charset
    project = make_project(
        tmp_path / "rec",
        rec,
        f"name: rec\nmodel: ./{rec.name}\npostprocess:\n  - name: text\n    steps: "
        + (f"[{options}]\n" if not charset else options),
    )
    (project / "ppocr_keys.txt").write_text(keys, "utf-8")
    model = gpux.load(str(project))
    (project / "ppocr_keys.txt").unlink()  # the image holds the characters, not the file
    model = gpux.load("rec")
    reference = _reference_decoder(charset_from_metadata(rec))
    session = ort.InferenceSession(str(rec), providers=["CPUExecutionProvider"])
    for batch in rapidocr_run["batches"][: rapidocr_run["batched_its_way"]]:
        results = model.predict_batch([{"x": batch[i : i + 1]} for i in range(len(batch))])
        expected = reference(session.run(None, {"x": batch})[0])
        _assert_same([r["text"] for r in results], expected)


def test_a_charset_that_does_not_fit_the_classes_fails_the_build(
    tmp_path: Path, gpux_home: Path
) -> None:
    import gpux
    from gpux.errors import ConfigValidationError
    from tests.conftest import make_project

    rec = zoo.fetch("ppocr-rec")
    project = make_project(
        tmp_path / "rec",
        rec,
        f"model: ./{rec.name}\npostprocess:\n  - name: text\n    steps: [{{ctc: {{charset: [a, b]}}}}]\n",
    )
    with pytest.raises(ConfigValidationError) as caught:
        gpux.load(str(project))
    assert "the charset has 2 characters but the model has 6625 classes" in caught.value.message
    assert "6623 (a PaddleOCR dict" in str(caught.value.hint)
