"""The command line's layering, checked on the source with ``ast`` (a late import inside a
function counts too): a command's code lives in its own module or package and no other command
imports it; what several commands share sits in a shared module (``gpux.cli.options``,
``gpux.cli.inputs``, ``gpux.cli.console``, ``gpux.cli.progress``); and no module under
``gpux`` takes a private (``_name``) name from another module."""

from __future__ import annotations

import ast
from pathlib import Path

GPUX = Path(__file__).resolve().parents[2] / "gpux"
CLI = GPUX / "cli"
SHARED = {"console", "progress", "options", "inputs", "templates"}


def commands() -> set[str]:
    """The modules ``gpux.cli.main`` registers, read from its source."""
    tree = ast.parse((CLI / "main.py").read_text())
    loop = next(node for node in ast.walk(tree) if isinstance(node, ast.For))
    assert isinstance(loop.iter, ast.Tuple)
    return {element.id for element in loop.iter.elts if isinstance(element, ast.Name)}


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for each ``from module import name``; (module, "") for ``import module``."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def owner(path: Path) -> str:
    """The command (or shared module) a file under gpux/cli belongs to: its top-level name."""
    return path.relative_to(CLI).parts[0].removesuffix(".py")


def test_the_command_list_is_read() -> None:
    assert {"init", "build", "run", "bench", "serve"} <= commands()
    assert not (CLI / "predict.py").exists()  # gpux run's code is one package
    assert (CLI / "run" / "__init__.py").is_file()


def test_no_command_imports_another_commands_code() -> None:
    names = commands()
    crossing: dict[str, list[str]] = {}
    for path in sorted(CLI.rglob("*.py")):
        if path.name == "main.py" and path.parent == CLI:
            continue  # main registers every command
        mine = owner(path)
        for module, name in imports(path):
            target = module.split(".")
            if target[:2] != ["gpux", "cli"]:
                continue
            used = target[2] if len(target) > 2 else name  # from gpux.cli import run
            if used in names and used != mine:
                crossing.setdefault(str(path.relative_to(GPUX.parent)), []).append(module)
    assert crossing == {}


def test_no_private_name_crosses_a_module() -> None:
    taken: dict[str, list[str]] = {}
    for path in sorted(GPUX.rglob("*.py")):  # every package, not only the CLI
        for module, name in imports(path):
            if module.startswith("gpux") and name.startswith("_") and not name.startswith("__"):
                taken.setdefault(str(path.relative_to(GPUX.parent)), []).append(f"{module}.{name}")
    assert taken == {}


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from gpux.cli.run import _x\n    import gpux.cli.build\n")
    assert imports(module) == [("gpux.cli.run", "_x"), ("gpux.cli.build", "")]
