"""The tensor utility steps (pick, slice, transpose, squeeze, argmax over an axis): what each
does to a batch, and the messages for axes that do not fit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from gpux.config.pipeline import Step
from gpux.errors import ModelError
from gpux.pipeline.steps import StepContext, apply, is_decoding

# A v8-style detector output: [batch 2, 4 box values + 3 classes, 5 anchors].
BATCH = np.random.default_rng(0).random((2, 7, 5), dtype=np.float32)


def chain(*steps: Any) -> list[Any]:
    return apply(BATCH, [Step.model_validate(s) for s in steps], StepContext(result="r"))


def test_each_step_does_to_every_item_what_numpy_does_to_it() -> None:
    item = BATCH[1]
    assert chain({"transpose": {"axes": [0, 2, 1]}})[1] == item.T.tolist()
    assert chain({"pick": {"axis": 1, "index": 4}})[1] == item[4].tolist()
    assert chain({"pick": {"axis": -1, "index": -1}})[1] == item[:, -1].tolist()
    assert chain({"slice": {"axis": 1, "start": 4}})[1] == item[4:].tolist()
    assert chain({"slice": {"axis": -1, "stop": 3, "step": 2}})[1] == item[:, :3:2].tolist()
    assert chain({"argmax": {"axis": 1}})[1] == item.argmax(axis=0).tolist()
    # Chained: the best class of each anchor, as a v8 decoder starts.
    best = chain({"slice": {"axis": 1, "start": 4}}, {"argmax": {"axis": 1}})
    assert best[0] == BATCH[0, 4:].argmax(axis=0).tolist()


def test_squeeze_drops_size_one_axes_but_never_the_batch() -> None:
    single = BATCH[:1, None]  # [1, 1, 7, 5]: one item, a size-1 axis
    steps = [Step.model_validate("squeeze")]
    (item,) = apply(single, steps, StepContext(result="r"))
    assert np.asarray(item).shape == (7, 5)
    with pytest.raises(ModelError, match=r"squeeze axis 2 has size 5, not 1") as caught:
        apply(BATCH, [Step.model_validate({"squeeze": {"axis": 2}})], StepContext(result="r"))
    assert "use pick" in str(caught.value.hint)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"pick": {"axis": 3, "index": 0}}, "pick axis 3 does not fit the output's 2 item axes"),
        ({"pick": {"axis": 1, "index": 7}}, "pick index 7 is outside axis 1, which has 7"),
        ({"argmax": {"axis": -3}}, "argmax axis -3 does not fit"),
        ({"transpose": {"axes": [0, 1]}}, "transpose lists 2 axes, but the output has 3"),
    ],
)
def test_an_axis_that_does_not_fit_the_output_is_a_model_error(
    step: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        chain(step)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"pick": {"axis": 0, "index": 0}}, "axis 0 holds the items of a batch"),
        ({"squeeze": {"axis": 0}}, "axis 0 holds the items of a batch"),
        ({"transpose": {"axes": [1, 0, 2]}}, "the batch axis stays first"),
        ({"transpose": {"axes": [0, 2, 2]}}, "give every axis once"),
        ({"argmax": {"axis": 1, "labels": ["a"]}}, "gives indices, not labels"),
    ],
)
def test_the_schema_refuses_steps_that_would_touch_the_batch_axis(
    step: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Step.model_validate(step)


def test_argmax_over_an_axis_goes_on_while_plain_argmax_ends_the_chain() -> None:
    assert not is_decoding(Step.model_validate({"argmax": {"axis": -1}}))
    assert is_decoding(Step.model_validate("argmax"))
    assert not is_decoding(Step.model_validate({"pick": {"axis": 1, "index": 0}}))
