"""Runs a document's commands as a reader at a terminal would, one after the other, in a work
folder with its own GPUX_HOME, and says how each one ended.

What differs from typing them, and why (everything else runs as printed, through bash with
``pipefail`` so a failing ``gpux`` in a pipe is seen):

- ``gpux`` is this checkout's CLI (a shim on PATH), and stdin is a terminal on which nothing is
  typed but end-of-input, so ``--interactive`` ends and ``gpux run NAME`` with nothing piped
  meets a terminal, as in the documents;
- nothing leaves the machine: registry hosts (``ghcr.io``) in push, pull, login and logout
  become a local docker-registry; the documents' port 8080 becomes a free port and
  ``localhost:8080`` ``127.0.0.1:PORT``; ``gpux serve`` without ``--port`` gets that port; every
  other request goes to a proxy that refuses it (and records it: the test fails on any);
- ``curl`` gets ``--fail-with-body``, so an HTTP error is a failing command;
- a foreground ``gpux serve`` runs in the background until ``/v2/health/ready`` answers; the
  commands that name its port are its clients, and the first other command stops it (SIGTERM:
  it must exit 0), as a reader would press Ctrl-C before typing on;
- a digest the document printed for an image (``gpux rm 3c11a0``) becomes that image's real
  digest, cut to the same length: digests change with every build.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.docs.doc_commands import Command
from tests.docs.doc_world import PREREQUISITES, REPO

DOC_PORT = "8080"
REGISTRY_HOST = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?(?=/|$)")
DOC_DIGEST = re.compile(r"(\S+:\S+)\s+([0-9a-f]{12,64})\b")
DIGEST_TOKEN = re.compile(r"^(sha256:)?([0-9a-f]{6,64})$")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    ran: str  # the command after the rewrites


@dataclass
class Session:
    """One document's run: its work folder, store, local registry and servers."""

    doc: str
    work: Path
    home: Path
    scratch: Path  # outside the work folder: shim, logs, client configs
    registry: str  # 127.0.0.1:PORT
    proxy: str  # http://127.0.0.1:PORT, refusing every host
    port: str
    shown_digests: dict[str, str]  # hex shown in the document -> the image it named
    built: set[str] = field(default_factory=set)
    server: subprocess.Popen[bytes] | None = None
    server_command: Command | None = None

    @property
    def env(self) -> dict[str, str]:
        shim = self.scratch / "bin"
        if not shim.is_dir():
            shim.mkdir(parents=True)
            (shim / "gpux").write_text(
                f'#!/bin/sh\nexec "{sys.executable}" -m gpux.cli.main "$@"\n'
            )
            (shim / "gpux").chmod(0o755)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("GPUX_")}
        proxies = {k: self.proxy for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
        loopback = "127.0.0.1,localhost,::1"
        return {
            **inherited,
            **proxies,
            **{k.lower(): v for k, v in proxies.items()},
            "NO_PROXY": loopback,
            "no_proxy": loopback,
            "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
            "GPUX_HOME": str(self.home),
            "DOCKER_CONFIG": str(self.scratch / "docker"),
            "HF_HOME": str(self.scratch / "hf"),
            "HF_HUB_OFFLINE": "1",
        }

    def shell(self, command: str, timeout: float = 300) -> Outcome:
        """``command`` through bash at a terminal where only end-of-input is typed."""
        master, terminal = pty.openpty()
        try:
            os.write(master, b"\x04")
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                cwd=self.work,
                env=self.env,
                stdin=terminal,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as hung:
            printed = (hung.stderr or b"").decode(errors="replace")
            return Outcome(124, "", f"still running after {timeout:.0f} s\n{printed}", command)
        finally:
            os.close(terminal)
            os.close(master)
        out, err = (s.decode(errors="replace") for s in (done.stdout, done.stderr))
        return Outcome(done.returncode, out, err, command)

    def images(self) -> list[dict[str, object]]:
        listed = self.shell("gpux images --json")
        assert listed.code == 0, listed.stderr
        images: list[dict[str, object]] = json.loads(listed.stdout)
        return images

    def digest_of(self, name: str) -> str:
        for image in self.images():
            names = image["names"]
            assert isinstance(names, list)
            if name in names or f"{name}:latest" in names:
                return str(image["digest"])
        raise AssertionError(f"{self.doc}: no image {name} in the store")

    # -- before a command ---------------------------------------------------------------------

    def ensure_images(self, command: Command) -> None:
        """Build the images the command names that the document never builds (PREREQUISITES)."""
        words = set(_words(command.text))
        for name, project in PREREQUISITES[self.doc].items():
            named = name in words or (
                ":" not in name and any(w.startswith(f"{name}:") for w in words)
            )
            if named and name not in self.built:
                built = self.shell(f"gpux build -q {shlex.quote(project)}")
                assert built.code == 0, f"building {project} for {command.where}:\n{built.stderr}"
                self.built.add(name)

    def rewrite(self, command: Command) -> str:
        words = _words(command.text)
        text = command.text.replace(f"localhost:{DOC_PORT}", f"127.0.0.1:{DOC_PORT}")
        text = text.replace(DOC_PORT, self.port)
        if words[:2] == ["gpux", "serve"] and "--port" not in words:
            text += f" --port {self.port}"
        if words[:2] in (["gpux", w] for w in ("push", "pull", "login", "logout")):
            text = shlex.join(REGISTRY_HOST.sub(self.registry, w) for w in shlex.split(text))
        if words[:1] == ["curl"]:
            text = "curl --fail-with-body" + text[len("curl") :]
        for word in words:
            digest = DIGEST_TOKEN.match(word)
            shown = [h for h in self.shown_digests if digest and h.startswith(digest.group(2))]
            if digest and shown:
                real = self.digest_of(self.shown_digests[shown[0]]).split(":", 1)[1]
                text = text.replace(word, (digest.group(1) or "") + real[: len(digest.group(2))])
        _refuse_outside(command, text)
        return text

    def run(self, command: Command) -> list[tuple[Command, Outcome]]:
        """Run one command (after its images and rewrites): its outcome, preceded by the
        foreground server's when the command is not its client and so stops it first."""
        self.ensure_images(command)
        text = self.rewrite(command)
        words = _words(command.text)
        serves = words[:2] == ["gpux", "serve"]
        outcomes: list[tuple[Command, Outcome]] = []
        if self.server is not None and (serves or self.port not in text):
            assert self.server_command is not None
            served = self.server_command
            outcomes.append((served, self.stop_server()))
        if serves and not {"-d", "--detach"} & set(words):
            outcomes.append((command, self.start_server(command, text)))
        else:
            outcomes.append((command, self.shell(text)))
        return outcomes

    # -- foreground servers ---------------------------------------------------------------------

    def start_server(self, command: Command, text: str) -> Outcome:
        log = (self.scratch / f"serve-{command.line}.log").open("wb")
        self.server = subprocess.Popen(
            ["bash", "-c", f"exec {text}"],
            cwd=self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.server_command = command
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                return Outcome(self.server.returncode, "", self.server_log(), text)
            try:
                url = f"http://127.0.0.1:{self.port}/v2/health/ready"
                if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                    return Outcome(0, "", "", text)
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        return Outcome(124, "", "not ready in 120 s\n" + self.server_log(), text)

    def server_log(self) -> str:
        assert self.server_command is not None
        return (self.scratch / f"serve-{self.server_command.line}.log").read_text(errors="replace")

    def stop_server(self) -> Outcome:
        """SIGTERM the foreground server: its outcome (it drains, then exits 0)."""
        assert self.server is not None
        self.server.send_signal(signal.SIGTERM)
        try:
            code = self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.server.kill()
            code = self.server.wait()
        outcome = Outcome(code, "", self.server_log(), "SIGTERM")
        self.server = None
        return outcome

    def close(self) -> None:
        if self.server is not None:
            self.stop_server()
        self.shell("gpux stop --all", timeout=90)


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _refuse_outside(command: Command, text: str) -> None:
    """A command still naming a place off this machine needs a rewrite above."""
    outside = re.search(r"https?://(?!127\.0\.0\.1|localhost)\S+|\bhf:\S+", text)
    assert not outside, f"{command.where}: `{command.text}` reaches {outside.group(0)}: redirect it"


def shown_digests(commands: list[Command]) -> dict[str, str]:
    """Digests the document printed beside an image name (``built scale:latest b15f8609e547``)."""
    found: dict[str, str] = {}
    for command in commands:
        for line in command.shown.splitlines():
            for name, digest in DOC_DIGEST.findall(line):
                found.setdefault(digest, name)
    return found
