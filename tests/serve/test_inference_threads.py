"""How many calls of one model run at once, by default and as ``GPUX_INFERENCE_THREADS`` says:
one on the CPU (each call already uses every core), two on a GPU, four in the shared engine on
CUDA, which runs the calls of every front-end (docs/benchmarks.md has the H100 figures)."""

from __future__ import annotations

import pytest

from gpux.errors import UsageError
from gpux.serve.app import inference_threads


def test_defaults_by_backend_and_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUX_INFERENCE_THREADS", raising=False)
    assert inference_threads("cpu") == 1
    assert inference_threads("cpu", shared_engine=True) == 1
    assert inference_threads("cuda") == 2
    assert inference_threads("cuda", shared_engine=True) == 4
    assert inference_threads("webgpu", shared_engine=True) == 2  # not measured there


def test_the_environment_sets_it_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUX_INFERENCE_THREADS", "3")
    assert [inference_threads(b, s) for b in ("cpu", "cuda") for s in (False, True)] == [3] * 4
    monkeypatch.setenv("GPUX_INFERENCE_THREADS", "0")  # 0: the default
    assert inference_threads("cuda", shared_engine=True) == 4
    monkeypatch.setenv("GPUX_INFERENCE_THREADS", "four")
    with pytest.raises(UsageError, match="GPUX_INFERENCE_THREADS='four' is not a whole number"):
        inference_threads("cuda")
