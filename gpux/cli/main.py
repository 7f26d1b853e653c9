"""Entry point: the Typer app, global options, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

# pydantic scans every installed package for plugins on first use (importlib.metadata, ~10 ms
# of each command's start-up); the gpux command line uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer

from gpux import __version__

if TYPE_CHECKING:
    from gpux.errors import GPUXError
from gpux.cli import (
    archive,
    bench,
    build,
    containerize,
    convert,
    daemon,
    distribution,
    doctor,
    images,
    init,
    inspect,
    kube,
    ray_serve,
    run,
    schema,
    serve,
    verify,
)

app = typer.Typer(
    name="gpux",
    help="GPUX: build, run, serve and share ONNX models on any GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpux {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    if debug:
        os.environ["GPUX_DEBUG"] = "1"


for module in (
    init,
    build,
    run,
    inspect,
    images,
    verify,
    bench,
    schema,
    doctor,
    serve,
    daemon,
    distribution,
    archive,
    kube,
    containerize,
    ray_serve,
    convert,
):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; GPUX errors print one message plus the fix and exit with their code."""
    from gpux.errors import GPUXError, MachineError

    if "--debug" in (argv if argv is not None else sys.argv[1:]):
        os.environ["GPUX_DEBUG"] = "1"
    try:
        app(args=argv, prog_name="gpux")
    except GPUXError as exc:
        _exit_with(exc)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        # A full disk or a read-only folder met outside the store's own writes (an archive
        # to stdout, a library writing a file): the machine refused, GPUX is not at fault.
        refused = MachineError.from_os_error(exc)
        if refused is None:
            _internal_error(exc)
        else:
            refused.__cause__ = exc  # --debug shows where the write failed
            _exit_with(refused)
    except Exception as exc:  # a bug in GPUX: say so, without a wall of text
        _internal_error(exc)


def _exit_with(exc: GPUXError) -> NoReturn:
    from gpux import env

    if env.debug():
        import traceback

        traceback.print_exception(exc)
    _print_error(exc.message, exc.hint)
    sys.exit(exc.exit_code)


def _internal_error(exc: Exception) -> NoReturn:
    from gpux import env

    if env.debug():
        raise exc
    _print_error(
        f"internal error: {type(exc).__name__}: {exc}",
        "this is a bug in GPUX; rerun with --debug and report the traceback",
    )
    sys.exit(1)


def _print_error(message: str, hint: str | None) -> None:
    from rich.markup import escape

    from gpux.cli.console import stderr

    console = stderr()
    first, *rest = message.splitlines()
    console.print(f"[bold red]error:[/bold red] {escape(first)}")
    for line in rest:
        console.print(f"       {escape(line)}")
    if hint:
        console.print(f"  [cyan]hint:[/cyan] {escape(hint)}")


if __name__ == "__main__":
    main()
