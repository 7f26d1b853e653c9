"""The GPUXfile's ``handler:``: Python code shipped inside the image, for the step no
declarative one covers.

``handler: ./handler.py`` (a module) or ``handler: ./decoders/`` (a package folder with an
``__init__.py``) may define ``preprocess(items, context)`` (the batch of items users sent ->
model input tensors) and ``postprocess(outputs, context)`` (the batch's model outputs -> one
mapping per item). Either or both; declarative ``preprocess``/``postprocess`` entries run
first and their results are in the context.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from gpux.config.common import Strict, TensorName

# PEP 508's name and version part, enough to refuse a pip option (-e, --index-url, a URL) early:
# GPUX checks requirements, it never installs them.
_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,\s-]*\])?\s*([<>=!~;(].*)?$")


class HandlerSpec(Strict):
    """Python code that runs inside the pipeline (``handler: ./handler.py`` is shorthand for
    ``{path: ./handler.py}``)."""

    path: str = Field(
        min_length=1,
        examples=["./handler.py", "./decoders/"],
        description="A .py file or a package folder (with __init__.py) inside the project. It may define preprocess(items, context) and postprocess(outputs, context); see docs/gpuxfile.md.",
    )
    requirements: list[str] | str = Field(
        default=[],
        examples=[["scipy>=1.10"], "./requirements.txt"],
        description="Python packages the code imports beyond GPUX's own, as PEP 508 specifiers (a list, or a project-relative requirements.txt). Checked when the image loads, with the command that installs what is missing; never installed by GPUX.",
    )
    inputs: list[TensorName] | None = Field(
        default=None,
        examples=[["text"]],
        description="What users send to preprocess(), by name (default: the model inputs that no declarative preprocess entry feeds).",
    )
    example: dict[str, Any] | None = Field(
        default=None,
        examples=[{"text": "GPUX runs this at build"}],
        description="One item (input name -> value) that the build's smoke run sends through preprocess(); needed when inputs are named here.",
    )

    @field_validator("requirements")
    @classmethod
    def _specifiers(cls, value: list[str] | str) -> list[str] | str:
        for text in value if isinstance(value, list) else []:
            check_requirement(text)
        return value


def check_requirement(text: str) -> str:
    """``text`` when it reads as a PEP 508 requirement (``scipy>=1.10``), else ValueError."""
    if not _REQUIREMENT.fullmatch(text.strip()):
        raise ValueError(
            f"requirement {text!r} is not a package specifier like 'scipy>=1.10' (pip options, "
            "URLs and paths are not accepted: GPUX checks requirements, it does not install them)"
        )
    return text.strip()


def handler_shorthand(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value
