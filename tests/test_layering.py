"""The house reads top-down: the loaded model, the pipeline and the builder sit below the public
facade (``gpux.api``), so none of them may import it, not even inside a function. Checked on the
source with ``ast``, so a late import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GPUX = Path(__file__).resolve().parents[1] / "gpux"
LOWER = ("runtime", "pipeline", "builder", "store", "config")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "gpux":
                found.update(f"gpux.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", LOWER)
def test_lower_layers_never_import_the_public_facade(package: str) -> None:
    offenders = {
        str(path.relative_to(GPUX.parent)): sorted(
            m for m in imported_modules(path) if m == "gpux.api" or m.startswith("gpux.api.")
        )
        for path in sorted((GPUX / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_a_late_import(tmp_path: Path) -> None:
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from gpux.api import load\n    from gpux import api\n")
    assert {"gpux.api", "gpux"} <= imported_modules(module)


@pytest.mark.parametrize("package", (*LOWER, "serve"))
def test_only_the_command_line_imports_the_ray_integration(package: str) -> None:
    """gpux/ray/ sits beside serve and uses it; nothing below it may depend on Ray."""
    offenders = {
        str(path.relative_to(GPUX.parent)): sorted(
            m for m in imported_modules(path) if m == "gpux.ray" or m.startswith("gpux.ray.")
        )
        for path in sorted((GPUX / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
