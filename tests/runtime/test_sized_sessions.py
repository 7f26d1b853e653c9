"""One session per batch size (the server's preferred sizes on CUDA), exercised on the CPU: each
size goes to its own session with the batch fixed, other sizes to the general one, and every
answer equals the general session's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import generated_models


def test_each_size_runs_on_its_own_session_with_the_same_answers(
    tmp_path: Path, gpux_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gpux
    from gpux.pipeline import loading
    from gpux.runtime import sized_sessions
    from gpux.runtime.sized_sessions import SizedSessions

    folder = tmp_path / "p"
    folder.mkdir()
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text("name: lin\nmodel: ./linear.onnx\n")
    image = gpux.build(str(folder), backend="cpu").image
    plain = loading.load_image(image, "cpu", batch_sizes=(2, 4))
    assert not isinstance(plain.backend, SizedSessions)  # CPU: sizes are cheap to change

    monkeypatch.setattr(loading, "SIZED_SESSION_BACKENDS", frozenset({"cpu"}))
    # On the CPU a size change costs nothing, so the loader keeps one session ...
    kept = loading.load_image(image, "cpu", batch_sizes=(2, 4))
    assert not isinstance(kept.backend, SizedSessions)
    kept.close()
    # ... and where it is slow (ResNet-50 on the CUDA EP), it makes one per size.
    monkeypatch.setattr(sized_sessions, "changes_are_slow", lambda *args: True)
    model = loading.load_image(image, "cpu", batch_sizes=(2, 4))
    sized = model.backend
    assert isinstance(sized, SizedSessions) and sorted(sized.sized) == [2, 4]
    assert model.placement.details["batch_sessions"] == [2, 4]
    calls: list[str] = []
    for size, backend in [*sized.sized.items(), (0, sized.general)]:
        run = backend.run
        monkeypatch.setattr(
            backend, "run", lambda feed, run=run, size=size: calls.append(str(size)) or run(feed)
        )
    rng = np.random.default_rng(0)
    for rows in (2, 3, 4, 2):
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        np.testing.assert_allclose(model.run({"x": x})["y"], plain.run({"x": x})["y"], rtol=1e-6)
    assert calls == ["2", "0", "4", "2"]
    model.close()
    plain.close()


def test_a_fixed_size_session_refuses_other_sizes(tmp_path: Path) -> None:
    """The sessions really are fixed: that is why other sizes must go to the general one."""
    from gpux.config.schema import Runtime
    from gpux.errors import InputError
    from gpux.runtime.engines import engine

    path = generated_models.linear(tmp_path / "linear.onnx")
    fixed = engine().load(path, Runtime(backend="cpu"), dimensions={"batch": 2})
    assert fixed.run({"x": np.zeros((2, 4), np.float32)})["y"].shape == (2, 3)
    with pytest.raises(InputError, match="Expected: 2"):
        fixed.run({"x": np.zeros((3, 4), np.float32)})


class _ShapeStateful:
    """A made-up session that rebuilds its state whenever the batch size differs from the last
    call's, as the CUDA EP's Conv kernels do (``rebuild`` seconds), else answers at once."""

    def __init__(self, rebuild: float) -> None:
        self.rebuild, self.last = rebuild, -1

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import time

        rows = next(iter(feed.values())).shape[0]
        if rows != self.last:
            time.sleep(self.rebuild)
        self.last = rows
        return {}


@pytest.mark.parametrize(("rebuild", "slow"), [(0.05, True), (0.0, False)])
def test_slow_size_changes_are_found(rebuild: float, slow: bool) -> None:
    """Each timed call of the probe must change the size: a repeat among them would be timed as
    a change and hide the cost (it did, and a GPU served ResNet-50 at 23 inf/s)."""
    from gpux.runtime.sized_sessions import changes_are_slow

    feed = {"x": np.zeros((2, 4), np.float32)}
    assert changes_are_slow(_ShapeStateful(rebuild), feed, "x") is slow  # type: ignore[arg-type]


def test_the_proof_reports_the_graphs_of_the_batch_size_sessions(tmp_path: Path) -> None:
    """With ``runtime.cuda.cuda_graphs``, the general session (symbolic batch) never captures a
    graph, and each session of a fixed batch size may: the placement says which sizes replay
    one and why the others do not, never the general session's refusal alone. (The CUDA
    sessions' own notes are written on CPU sessions here, the way the CUDA EP path writes them.)"""
    from gpux.config.schema import Runtime
    from gpux.runtime.engines import engine
    from gpux.runtime.sized_sessions import SizedSessions

    path = generated_models.linear(tmp_path / "linear.onnx")
    load = engine().load
    general = load(path, Runtime(backend="cpu"), dimensions={})
    sized = {n: load(path, Runtime(backend="cpu"), dimensions={"batch": n}) for n in (2, 4, 8)}
    why = "shapes must be fixed to replay a graph, and x[0] is not"
    general.placement.details["cuda_graphs"] = {"enabled": False, "why": why}
    sized[2].placement.details["cuda_graphs"] = {"enabled": True}
    sized[4].placement.details["cuda_graphs"] = {"enabled": True}
    sized[8].placement.details["cuda_graphs"] = {"enabled": False, "why": "capture failed"}
    wrapped = SizedSessions(general, sized, "x")
    for _ in range(2):  # reading it twice reads the same (the general's own is not changed)
        assert wrapped.placement.details["cuda_graphs"] == {
            "enabled": True,
            "batch_sizes": [2, 4],
            "other_sizes": why,
        }
    assert general.placement.details["cuda_graphs"] == {"enabled": False, "why": why}
    for backend in sized.values():
        backend.placement.details["cuda_graphs"] = {"enabled": False, "why": "no"}
    assert wrapped.placement.details["cuda_graphs"]["enabled"] is False
    without = SizedSessions(load(path, Runtime(backend="cpu"), dimensions={}), sized, "x")
    assert "cuda_graphs" not in without.placement.details  # not asked for: not mentioned
    wrapped.close()
    without.general.close()


def test_graph_sessions_of_one_size_are_copied_and_run_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GPUX_GRAPH_COPIES``: a size whose session replays a CUDA graph gets that many sessions,
    and each call runs on a free one, never on one another call is using (its graph's buffers
    are fixed); a size without a graph stays one session. On the CPU (real sessions), the
    sessions that "have a graph" are marked so, as the CUDA EP's loader marks them."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from gpux import env
    from gpux.config.schema import Runtime
    from gpux.runtime.engines import engine
    from gpux.runtime.sized_sessions import GraphCopies, wrap

    path = generated_models.linear(tmp_path / "linear.onnx")
    general = engine().load(path, Runtime(backend="cpu"))
    monkeypatch.setenv("GPUX_GRAPH_COPIES", "3")
    busy: dict[int, int] = {}
    overlapped = [False]
    clashes: list[int] = []
    lock = threading.Lock()

    def load(dimensions: dict[str, int]) -> object:
        backend = engine().load(path, Runtime(backend="cpu"), dimensions=dimensions)
        if dimensions["batch"] == 2:
            backend.graph = object()  # type: ignore[attr-defined]
            run = backend.run

            def watched(feed: dict[str, np.ndarray], me: int = id(backend)) -> object:
                with lock:
                    if busy.get(me):  # two calls on one copy at once
                        clashes.append(me)
                    busy[me] = 1
                    overlapped[0] = overlapped[0] or sum(busy.values()) > 1
                time.sleep(0.002)
                try:
                    return run(feed)
                finally:
                    with lock:
                        busy[me] = 0

            backend.run = watched  # type: ignore[method-assign]
        return backend

    sized = wrap(general, (2, 4), "batch", "x", load, copies=env.graph_copies())  # type: ignore[arg-type]
    copies = sized.sized[2]
    assert isinstance(copies, GraphCopies) and len(copies.copies) == 3
    assert copies.placement.details["copies"] == 3
    assert sized.placement.details["graph_copies"] == {"copies": 3, "batch_sizes": [2]}
    assert not isinstance(sized.sized[4], GraphCopies)
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(48)]

    def matches(x: np.ndarray) -> bool:
        return np.allclose(sized.run({"x": x})["y"], general.run({"x": x})["y"], rtol=1e-6)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(matches, feeds))
    assert clashes == [] and len(busy) == 3 and overlapped[0]
    sized.close()
