"""``gpux schema``: the GPUXfile JSON Schema for editors."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("schema")
    def schema() -> None:
        """Print the GPUXfile JSON Schema (point your editor's YAML plugin at it)."""
        from gpux.cli.console import print_json
        from gpux.config.schema import json_schema

        print_json(json_schema())
