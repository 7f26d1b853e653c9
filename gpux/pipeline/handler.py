"""Run the image's handler code: ``preprocess(items, context)`` and ``postprocess(outputs,
context)``, the escape hatch for a step no declarative one covers.

The code is imported once per load from its unpacked folder under a name of its own (two images'
``handler.py`` never meet in ``sys.modules``). Its errors are its author's: they come back as
:class:`HandlerError` naming the handler's file and line, never as a GPUX internal error; a
:class:`GPUXError` it raises on purpose (``gpux.InputError`` for a bad item) passes unchanged,
so a server answers 400 for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from gpux.errors import GPUXError, HandlerError, RequirementError

Array = np.ndarray[Any, Any]


@dataclass
class HandlerContext:
    """What a handler function may read besides its first argument."""

    batch_size: int  # the items of this call
    items: Sequence[Mapping[str, Any]]  # as users sent them
    labels: list[str] | None  # the GPUXfile's labels
    config: Mapping[str, Any]  # the stored GPUXfile, completed by the build (charsets, axes)
    files: Path  # the handler's own folder: data files shipped beside the code
    run: Callable[[Mapping[str, Any]], dict[str, Array]]  # one more model call, if needed
    feed: dict[str, Any] = field(default_factory=dict)  # the model's inputs
    results: list[dict[str, Any]] = field(default_factory=list)  # declarative results per item


class Handler:
    """The functions of one handler module or package, loaded from ``folder/entry``."""

    def __init__(self, folder: Path, entry: str, requirements: Sequence[str] = ()) -> None:
        check_requirements(requirements, entry)
        self.folder = folder
        self.entry = entry
        self.module = _import(folder, entry)
        self.preprocess = _function(self.module, "preprocess", entry)
        self.postprocess = _function(self.module, "postprocess", entry)
        if self.preprocess is None and self.postprocess is None:
            raise HandlerError(
                f"handler '{entry}' defines neither preprocess nor postprocess",
                "define preprocess(items, context) and/or postprocess(outputs, context)",
            )

    @property
    def files(self) -> Path:
        path = self.folder / self.entry
        return path if path.is_dir() else self.folder

    def call_preprocess(
        self, items: list[dict[str, Any]], context: HandlerContext
    ) -> dict[str, Any]:
        assert self.preprocess is not None
        produced = self._call(self.preprocess, items, context)
        if not isinstance(produced, Mapping) or not all(isinstance(k, str) for k in produced):
            raise HandlerError(
                f"{self.entry}: preprocess returned {type(produced).__name__}, not a mapping of "
                "model input names to arrays",
                "return e.g. {'input_ids': numpy_array} with one row per item",
            )
        return dict(produced)

    def call_postprocess(self, outputs: Mapping[str, Array], context: HandlerContext) -> list[Any]:
        assert self.postprocess is not None
        produced = self._call(self.postprocess, outputs, context)
        if isinstance(produced, Mapping) or not isinstance(produced, Sequence):
            raise HandlerError(
                f"{self.entry}: postprocess returned {type(produced).__name__}, not a list of "
                f"{context.batch_size} results (one mapping per item)",
                "return [ {...}, ... ] with one mapping per item of the batch",
            )
        if len(produced) != context.batch_size or not all(isinstance(r, Mapping) for r in produced):
            raise HandlerError(
                f"{self.entry}: postprocess returned {len(produced)} results for "
                f"{context.batch_size} items, or results that are not mappings",
                "return one mapping per item, in the items' order",
            )
        return list(produced)

    def _call(self, function: Callable[..., Any], first: Any, context: HandlerContext) -> Any:
        try:
            return function(first, context)
        except GPUXError:
            raise  # raised on purpose (InputError for a bad item), or a model call that failed
        except Exception as exc:
            raise HandlerError(
                f"{_where(exc, self.folder, function.__name__)}: {type(exc).__name__}: {exc}",
                "the error is in the handler's code: fix it and rebuild the image",
            ) from exc


def check_requirements(requirements: Sequence[str], entry: str) -> None:
    """Every requirement installed at a version it allows; else one RequirementError naming
    them all and the command that installs them (GPUX never installs packages itself)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    missing: list[str] = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise RequirementError(
                f"handler '{entry}': requirement {text!r} cannot be read: {exc}",
                "write a PEP 508 specifier such as 'scipy>=1.10' in the GPUXfile and rebuild",
            ) from exc
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            found = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(f"{text} (not installed)")
            continue
        if requirement.specifier and not requirement.specifier.contains(found, prereleases=True):
            missing.append(f"{text} ({found} is installed)")
    if missing:
        quoted = " ".join(f"'{text.split(' (')[0]}'" for text in missing)
        raise RequirementError(
            f"handler '{entry}' needs {', '.join(missing)}",
            f"install into GPUX's environment: uv pip install {quoted} (or pip install "
            f"{quoted}); GPUX does not install packages itself",
        )


def _import(folder: Path, entry: str) -> ModuleType:
    path = folder / entry
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    name = f"gpux_handler_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise HandlerError(f"handler '{entry}' cannot be imported", "rebuild the image")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        hint = "the error is in the handler's code: fix it and rebuild the image"
        if isinstance(exc, ImportError) and exc.name:
            hint = (
                f"module '{exc.name}' is not installed here: install it, and list it under "
                "handler.requirements so that the next machine is told"
            )
        raise HandlerError(
            f"{_where(exc, folder, '<module>')}: {type(exc).__name__}: {exc}", hint
        ) from exc
    return module


def _function(module: ModuleType, name: str, entry: str) -> Callable[..., Any] | None:
    function = getattr(module, name, None)
    if function is not None and not callable(function):
        raise HandlerError(
            f"handler '{entry}': {name} is a {type(function).__name__}, not a function",
            f"define def {name}(..., context): in the handler",
        )
    return function


def _where(exc: BaseException, folder: Path, function: str) -> str:
    """``handler.py:14 in postprocess``: the deepest frame of the traceback in the handler's
    own files (the line that failed, or that called the library that failed)."""
    root = folder.resolve()
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.is_relative_to(root):
            name = frame.name
            if name.startswith("<") and name != "<module>" and found is not None:
                name = found[2]  # a comprehension (<listcomp>): name the function around it
            found = (path.relative_to(root).as_posix(), frame.lineno, name)
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).is_relative_to(root):
        found = (Path(exc.filename).relative_to(root).as_posix(), exc.lineno, "<module>")
    if found is None:
        return f"handler ({function})"
    return f"{found[0]}:{found[1]} in {found[2]}"
