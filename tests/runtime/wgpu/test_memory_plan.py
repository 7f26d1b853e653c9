"""The wgpu engine's static memory plan, on made-up graphs (no device needed)."""

from __future__ import annotations

from gpux.runtime.wgpu.plan import Step, padded, plan_memory


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return not (a[1] < b[0] or b[1] < a[0])


def _lifetimes(steps: list[Step]) -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    for index, step in enumerate(steps):
        for name in (*step.reads, *step.writes):
            start = spans.get(name, (index, index))[0]
            spans[name] = (start, index)
    return spans


def test_a_chain_reuses_two_buffers_for_its_activations() -> None:
    # x -> a -> b -> c -> d -> y: each activation dies as the next one is made.
    names = ["x", "a", "b", "c", "d", "y"]
    steps = [Step(reads=(names[i],), writes=(names[i + 1],)) for i in range(5)]
    plan = plan_memory(steps, dict.fromkeys(names, 1000), pinned={"x", "y"})
    pooled = {plan.location[n] for n in "abcd"}
    assert len(pooled) == 2
    assert plan.location["a"] == plan.location["c"] and plan.location["b"] == plan.location["d"]
    assert len(plan.buffer_sizes) == 4  # x, y and two pooled
    assert plan.pooled_bytes == 2000


def test_values_alive_at_once_never_share_and_buffers_are_big_enough() -> None:
    # A diamond with a long skip: s is read at the last step, so it overlaps everything.
    steps = [
        Step(reads=("x",), writes=("s",)),
        Step(reads=("s",), writes=("p",)),
        Step(reads=("p",), writes=("q",), scratch=(64,)),
        Step(reads=("q",), writes=("r",)),
        Step(reads=("r", "s"), writes=("y",)),
    ]
    sizes = {"x": 10, "s": 400, "p": 4000, "q": 100, "r": 4000, "y": 8}
    plan = plan_memory(steps, sizes, pinned={"x", "y"})
    spans = _lifetimes(steps)
    for first, span_a in spans.items():
        for second, span_b in spans.items():
            if first < second and _overlaps(span_a, span_b):
                assert plan.location[first] != plan.location[second], (first, second)
    for name, size in sizes.items():
        assert plan.buffer_sizes[plan.location[name]] >= padded(size)
    scratch = plan.scratch[(2, 0)]
    assert scratch not in {plan.location["p"], plan.location["q"], plan.location["s"]}
    # p and r (4000 bytes each) do not overlap: they share, and the scratch reuses r's buffer
    # or another free one rather than a new one per node.
    assert plan.location["p"] == plan.location["r"]


def test_an_alias_shares_its_source_buffer_and_extends_its_life() -> None:
    steps = [
        Step(reads=("x",), writes=("a",)),
        Step(reads=("a",), writes=("a_flat",), alias=("a_flat", "a")),
        Step(reads=("x",), writes=("b",)),
        Step(reads=("a_flat", "b"), writes=("y",)),
    ]
    plan = plan_memory(steps, {"x": 16, "a": 32, "a_flat": 32, "b": 32, "y": 16}, {"x", "y"})
    assert plan.location["a"] == plan.location["a_flat"]
    assert plan.location["b"] != plan.location["a"]  # a lives on through its alias


def test_inputs_outputs_and_constants_are_pinned_even_through_an_alias() -> None:
    steps = [
        Step(reads=("x",), writes=("x2",), alias=("x2", "x")),
        Step(reads=("x2", "w"), writes=("h",)),
        Step(reads=("h",), writes=("y",)),
        Step(reads=("y",), writes=("z",)),
    ]
    sizes = {"x": 40, "x2": 40, "w": 40, "h": 40, "y": 40, "z": 40}
    plan = plan_memory(steps, sizes, pinned={"x", "w", "y", "z"})
    pinned = {plan.location[n] for n in ("x", "w", "y", "z")}
    assert len(pinned) == 4 and pinned <= plan.pinned
    assert plan.location["x2"] == plan.location["x"]
    assert plan.location["h"] not in plan.pinned


def test_sizes_are_padded_to_words_and_never_zero() -> None:
    assert padded(0) == 4 and padded(1) == 4 and padded(5) == 8 and padded(8) == 8
    plan = plan_memory([Step(reads=("x",), writes=("y",))], {"x": 0, "y": 3}, {"x"})
    assert plan.buffer_sizes[plan.location["y"]] == 4


def test_the_plan_is_the_same_on_every_load() -> None:
    steps = [Step(reads=(f"v{i}",), writes=(f"v{i + 1}",)) for i in range(20)]
    sizes = {f"v{i}": (i * 37) % 11 * 100 + 4 for i in range(21)}
    first = plan_memory(steps, sizes, {"v0"})
    second = plan_memory(steps, sizes, {"v0"})
    assert first.location == second.location and first.buffer_sizes == second.buffer_sizes
