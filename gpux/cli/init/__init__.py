"""``gpux init``: write a commented GPUXfile for a model.

This module is the command; :mod:`.signature` reads the model (a local .onnx file) and
:mod:`.slots` turns what it says into the template's values: the real input and output names,
and for image templates the layout and size of the image input.
"""

from __future__ import annotations

from pathlib import Path

import typer

TEMPLATES = (
    "minimal",
    "full",
    "text-embedding",
    "image-classification",
    "audio-vad",
    "ocr-detection",
)


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        directory: Path = typer.Argument(Path("."), help="Project folder (created if missing)."),
        template: str = typer.Option("minimal", "--template", help=" | ".join(TEMPLATES)),
        model: str | None = typer.Option(
            None, "--model", help="Model source (default: the only .onnx file in the folder)."
        ),
        name: str | None = typer.Option(None, "--name", help="Image name (default: folder)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing GPUXfile."),
    ) -> None:
        """Write a commented GPUXfile for a model."""
        from gpux.cli.console import stderr

        path = write_gpuxfile(directory, template, model, name, force)
        stderr().print(f"wrote {path}; next: gpux build {directory}")


def write_gpuxfile(
    directory: Path, template: str, model: str | None, name: str | None, force: bool
) -> Path:
    """Write ``directory/GPUXfile`` from ``template`` and return its path; the model's own
    names, layout and sizes go in when ``model`` is a local .onnx file that exists."""
    from importlib import resources

    from gpux.cli.init.signature import read_signature
    from gpux.cli.init.slots import fill, template_slots, yaml_scalar
    from gpux.config.load import GPUXFILE_NAMES, name_from_folder, parse_config
    from gpux.config.schema import IMAGE_NAME
    from gpux.errors import ConfigError, UsageError

    if template not in TEMPLATES:
        raise UsageError(f"unknown template '{template}'", f"choose one of: {', '.join(TEMPLATES)}")
    existing = [directory / n for n in GPUXFILE_NAMES if (directory / n).exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists", "pass --force to overwrite it")
    if name is not None and not IMAGE_NAME.fullmatch(name):
        raise UsageError(
            f"--name {name!r} is not a valid image name",
            "use lowercase letters, digits and . _ - separators, like 'sentiment'",
        )
    if model is None:
        candidates = sorted(p.name for p in directory.glob("*.onnx")) if directory.is_dir() else []
        model = f"./{candidates[0]}" if len(candidates) == 1 else "./model.onnx"
    template_text = (
        resources.files("gpux.cli.templates").joinpath(f"{template}.yaml").read_text("utf-8")
    )
    values = {"name": name or name_from_folder(directory), "model": yaml_scalar(model)}
    values.update(template_slots(template, read_signature(directory, model)))
    text = fill(template_text, values)
    try:
        parse_config(text, "template")
    except ConfigError as exc:
        raise UsageError(
            f"these options do not make a valid GPUXfile: {exc.message.split(': ', 1)[-1]}",
            "check --model (a path, https:// URL or hf: source) and --name",
        ) from None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "GPUXfile"
    path.write_text(text, "utf-8")
    return path
