"""Pieces shared by the GPUXfile's sections."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from gpux.config.paths import check_member_name


def _int_as_text(value: Any) -> Any:
    # ONNX exporters name tensors "461": YAML reads `from: 461` as an int, meaning the text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


TensorName = Annotated[str, BeforeValidator(_int_as_text)]
"""A model input or output name; a number YAML reads as an int is its text."""


class Strict(BaseModel):
    """Unknown keys are errors: a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def _member_inside_archive(name: str | None) -> str | None:
    return None if name is None else check_member_name(name)


class FileSource(Strict):
    """A file fetched at build: a project path, an https URL or a Hugging Face Hub file."""

    source: str = Field(
        min_length=1,
        examples=["./model.onnx"],
        description="A path inside the project folder (relative to it), an ``https://`` URL (``sha256`` required), or ``hf:org/repo[/path/to/file][@revision]`` (a Hugging Face Hub file, also spelled ``hf://``, ``hf.co/`` or ``huggingface.co/``; without a path, the repo's only .onnx; a 40-hex commit pins it, and the image records the commit it got).",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Expected SHA-256 (hex) of what ``source`` names (the archive, when ``member`` is given). Required for URLs, checked for every source.",
    )
    member: str | None = Field(
        default=None,
        min_length=1,
        examples=["package/models/model.onnx"],
        description="A file inside ``source`` when it is a zip (also .whl) or tar archive: its path as ``unzip -l`` or ``tar tf`` lists it (no ``..``, no leading ``/``).",
    )

    _member_inside = field_validator("member")(_member_inside_archive)
