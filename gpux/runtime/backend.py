"""The backend contract: how a model is loaded and executed on some device.

A backend is a handful of methods. The ONNX Runtime backend (``onnxruntime_backend.py``) is the
first; others (a native WebGPU engine) plug in by registering a factory under a name in
``gpux.runtime.engines`` with no change elsewhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.schema import Runtime


def describe_elsewhere(elsewhere: Mapping[str, int]) -> str:
    """``{"ConvInteger@CPUExecutionProvider": 53}`` -> ``ConvInteger@CPUExecutionProvider x53``"""
    return ", ".join(f"{op} x{count}" for op, count in elsewhere.items())


@dataclass
class Placement:
    """Where a loaded model really runs: recorded at build, reported by run/inspect/serve."""

    backend: str  # the GPUX backend name that runs the model ("cpu", "cuda", ...)
    providers: list[str]  # engine-level names, e.g. ONNX Runtime execution providers in use
    device: str  # human description of the device
    requested: str  # what the user asked for ("auto", "cuda", ...)
    fallback_reason: str | None = None  # set when "auto" could not use a better backend
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "providers": self.providers,
            "device": self.device,
            "requested": self.requested,
            "fallback_reason": self.fallback_reason,
            **({"details": self.details} if self.details else {}),
        }


class Backend(ABC):
    """A loaded model on one device.

    Contract:

    * ``load`` prepares everything needed to run (session, kernels, buffers). A backend the user
      requested explicitly that cannot start raises :class:`gpux.errors.BackendError` naming the
      cause and the fix; it never silently runs elsewhere.
    * ``run`` takes arrays already checked against the signature (names, dtypes, shapes) and
      returns every output by name, as host numpy arrays.
    * ``placement`` tells what really runs the model, after load.
    * ``close`` releases device memory; the backend is unusable afterwards.
    """

    name: str = "abstract"

    @classmethod
    @abstractmethod
    def load(
        cls,
        model_path: Path,
        runtime: Runtime,
        cache_dir: Path | None = None,
        dimensions: Mapping[str, int] | None = None,
    ) -> Backend:
        """Load the model at ``model_path`` with the GPUXfile's runtime settings.

        ``cache_dir`` is a folder, specific to this model, where the backend may keep compiled
        artefacts (TensorRT engines, in a subfolder per GPU model and library version). ``dimensions`` fixes
        symbolic dimensions by name (``{"batch": 1}``), as the GPUXfile declared them.
        """

    @abstractmethod
    def run(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run one inference."""

    @property
    @abstractmethod
    def placement(self) -> Placement:
        """Where the model runs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
