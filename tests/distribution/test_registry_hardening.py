"""The registry client against registries that lie or fail, through proxies, and with Docker's
conventions (issue #12: item 7, and "Registry client: the conventions of Docker").

Everything is real and on loopback: ``gpux`` as a subprocess, Debian's docker-registry (plain
and TLS), a misbehaving registry (fault_registry.py), a token gate and an HTTP proxy.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import Result, make_project
from tests.distribution.fault_registry import TOKEN, FaultRegistry, fault_registry
from tests.distribution.proxy_server import running_proxy
from tests.distribution.registry_server import Registry, certificate, running_registry
from tests.distribution.token_gate import token_gate

pytestmark = [pytest.mark.slow]

HUGE = 128 << 20  # what a hostile registry offers
SLACK = 24 << 20  # what the kernel's socket buffers take in before the client's close is seen
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
IMAGE = "hard:1.0"


@dataclass
class CLI(BoundCLI):
    """``gpux`` on one store, with Docker's config in a folder of its own and no proxy unless
    a test names one."""

    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, **kwargs: Any) -> Result:
        kwargs["env"] = {
            **{name: "" for name in PROXY_VARIABLES},
            "DOCKER_CONFIG": str(self.home.parent / "docker"),
            **self.env,
            **kwargs.get("env", {}),
        }
        return super().__call__(*args, **kwargs)


@pytest.fixture(scope="module")
def pusher(tmp_path_factory: pytest.TempPathFactory) -> CLI:
    """The store that holds the built image."""
    root = tmp_path_factory.mktemp("pusher")
    gpux = CLI(root / "home")
    model = generated_models.linear(root / "m" / "linear.onnx")
    make_project(root / "p", model, "name: hard\nversion: '1.0'\nmodel: ./linear.onnx\n")
    gpux.ok("build", str(root / "p"), "-q")
    return gpux


@pytest.fixture
def puller(tmp_path: Path) -> CLI:
    """An empty store, so that a pull downloads everything."""
    return CLI(tmp_path / "home")


@pytest.fixture(scope="module")
def seeded(pusher: CLI) -> Iterator[FaultRegistry]:
    with fault_registry() as server:
        pusher.ok("push", IMAGE, f"{server.host}/team/hard:1.0", "--insecure")
        yield server


@pytest.fixture
def fault(seeded: FaultRegistry) -> FaultRegistry:
    seeded.reset()
    return seeded


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


def _nothing_left(gpux: CLI) -> None:
    """No image, and no partial download behind."""
    assert gpux.names() == []
    partial = gpux.home / "tmp"
    assert not (partial.is_dir() and list(partial.glob("*.partial"))), list(partial.iterdir())


# -- item 7: gpux pull trusts sizes ------------------------------------------------------------


def test_a_manifest_over_4_mib_is_refused_once_4_mib_are_read(
    fault: FaultRegistry, puller: CLI
) -> None:
    fault.faults.manifest_padding = HUGE  # valid JSON: whitespace, then the manifest
    remote = f"{fault.host}/team/hard:1.0"
    assert_failure(
        puller("pull", remote, "--insecure"),
        9,
        f"a manifest from http://{fault.host}/v2/team/hard/manifests/1.0",
        "larger than the 4 MiB limit (over 4,194,304 bytes sent)",
    )
    assert fault.sent < (4 << 20) + SLACK, fault.sent
    _nothing_left(puller)


def test_a_token_reply_over_1_mib_is_refused_unread(fault: FaultRegistry, puller: CLI) -> None:
    fault.faults.token_padding = HUGE  # a valid token, after 128 MiB of whitespace
    assert_failure(
        puller("pull", f"{fault.host}/team/hard:1.0", "--insecure"),
        9,
        f"a token reply from http://{fault.host}/token",
        f"larger than the 1 MiB limit ({HUGE + len(json.dumps({'token': TOKEN})):,} bytes declared)",
    )
    assert fault.sent < (1 << 20) + SLACK, fault.sent
    _nothing_left(puller)


def test_an_error_reply_is_read_only_to_its_limit(fault: FaultRegistry, puller: CLI) -> None:
    fault.faults.error_padding = HUGE
    assert_failure(puller("pull", f"{fault.host}/team/hard:1.0", "--insecure"), 9, "HTTP 400")
    assert fault.sent < (4 << 20) + SLACK, fault.sent


@pytest.mark.parametrize("declared", [False, True], ids=["until-close", "lying-length"])
def test_a_blob_longer_than_declared_is_refused_at_its_size(
    fault: FaultRegistry, puller: CLI, declared: bool
) -> None:
    if declared:
        fault.faults.blob_length_lie = HUGE  # Content-Length says so, and the bytes come
    else:
        fault.faults.blob_extra = HUGE  # no Content-Length: the body ends when the socket does
    result = puller("pull", f"{fault.host}/team/hard:1.0", "--insecure")
    assert_failure(
        result, 9, "bytes the manifest declares" if not declared else "whose manifest declares"
    )
    blobs = sum(len(b) for b in fault.blobs.values())
    gets = len(fault.of_kind("blob"))
    assert fault.sent < blobs + (4 << 20) + gets * SLACK, fault.sent
    _nothing_left(puller)


# -- retries and resumes -------------------------------------------------------------------------


def test_429_and_503_are_retried_waiting_what_retry_after_says(
    fault: FaultRegistry, puller: CLI, pusher: CLI, tmp_path: Path
) -> None:
    remote = f"{fault.host}/team/hard:1.0"
    fault.faults.throttle = {"manifest": 2}
    fault.faults.retry_after = "1"
    assert puller.json("pull", remote, "--insecure", "--json")["name"] == remote
    tries = fault.of_kind("manifest")
    assert len(tries) == 3
    assert all(b.at - a.at >= 0.95 for a, b in itertools.pairwise(tries)), tries

    # Retry-After as an HTTP date, on a blob download
    fault.reset()
    fault.faults.unavailable = {"blob": 1}
    fault.faults.retry_after_date = 2  # whole seconds in the header: 1 to 2 s of waiting
    again = CLI(tmp_path / "home2")
    assert again.json("pull", remote, "--insecure", "--json")["name"] == remote
    by_path: dict[str, list[float]] = {}
    for seen in fault.of_kind("blob"):
        by_path.setdefault(seen.path, []).append(seen.at)
    retried = [times for times in by_path.values() if len(times) == 2]
    assert len(retried) == 1 and retried[0][1] - retried[0][0] >= 0.95, by_path

    # 503 without Retry-After on a push: backoff, then success
    fault.reset()
    fault.faults.unavailable = {"manifest": 2}
    pushed = pusher.json("push", IMAGE, f"{fault.host}/team/again:1.0", "--insecure", "--json")
    assert pushed["digest"] == puller.json("inspect", remote, "--json")["digest"]
    assert len(fault.of_kind("manifest", "PUT")) == 3


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "range-ignored"])
def test_a_download_cut_midway_resumes_where_it_stopped(
    fault: FaultRegistry, puller: CLI, ranges: bool
) -> None:
    biggest = max(fault.blobs.values(), key=len)
    fault.faults.cut_blob_at = len(biggest) // 2
    fault.faults.ranges = ranges
    remote = f"{fault.host}/team/hard:1.0"
    pulled = puller.json("pull", remote, "--insecure", "--json")
    assert pulled["name"] == remote and puller.names() == [remote]
    cut = [s for s in fault.of_kind("blob") if s.path.endswith(sorted(fault.cut)[0])]
    assert len(cut) == 2 and "Range" not in cut[0].headers
    assert cut[1].headers.get("Range") == f"bytes={len(biggest) // 2}-"
    if ranges:  # the second half only: every byte crossed the wire once
        manifest = len(fault.manifests["team/hard:1.0"][0])
        assert fault.sent == manifest + sum(len(b) for b in fault.blobs.values())


def test_a_dead_registry_shows_the_socket_error_under_debug(pusher: CLI) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    target = f"127.0.0.1:{port}/team/hard:1.0"
    assert_failure(
        pusher("push", IMAGE, target, "--insecure"), 9, f"cannot reach registry 127.0.0.1:{port}"
    )
    debug = pusher("--debug", "push", IMAGE, target, "--insecure")
    assert debug.code == 9
    assert "ConnectionRefusedError" in debug.stderr, debug.stderr
    assert "direct cause of the following exception" in debug.stderr


# -- Docker's conventions ------------------------------------------------------------------------


def test_a_loopback_registry_gets_plain_http_without_insecure(
    registry: Registry, pusher: CLI, puller: CLI, tmp_path: Path
) -> None:
    port = registry.host.rsplit(":", 1)[1]
    pushed = pusher.json("push", IMAGE, f"127.0.0.1:{port}/loop/hard:1.0", "--json")
    pulled = puller.json("pull", f"localhost:{port}/loop/hard:1.0", "--json")
    assert pulled["digest"] == pushed["digest"]
    # a loopback registry that speaks TLS keeps TLS (and its certificate is checked)
    cert, key = certificate(tmp_path / "tls", ["localhost", "127.0.0.1"])
    with running_registry(tmp_path / "tls-registry", tls=(cert, key)) as secure:
        tls_port = secure.host.rsplit(":", 1)[1]
        untrusted = pusher("push", IMAGE, f"localhost:{tls_port}/loop/hard:1.0")
        assert_failure(untrusted, 9, "CERTIFICATE_VERIFY_FAILED", "SSL_CERT_FILE")
        trusted = pusher.json(
            "push",
            IMAGE,
            f"localhost:{tls_port}/loop/hard:1.0",
            "--json",
            env={"SSL_CERT_FILE": str(cert)},
        )
        assert trusted["digest"] == pushed["digest"]


def test_https_proxy_tunnels_and_no_proxy_goes_direct(
    pusher: CLI, puller: CLI, fault: FaultRegistry, tmp_path: Path
) -> None:
    name = "registry.gpux.test"  # known to the proxy only, not to DNS
    cert, key = certificate(tmp_path / "tls", [name])
    with (
        running_registry(tmp_path / "registry", tls=(cert, key)) as secure,
        running_proxy({name: "127.0.0.1"}) as proxy,
    ):
        port = secure.host.rsplit(":", 1)[1]
        remote = f"{name}:{port}/team/hard:1.0"
        proxy_url = proxy.url.replace("http://", "http://ann:p%40ss@")
        env = {"HTTPS_PROXY": proxy_url, "SSL_CERT_FILE": str(cert)}
        pushed = pusher.json("push", IMAGE, remote, "--json", env=env)
        pulled = puller.json("pull", remote, "--json", env=env)
        assert pulled["digest"] == pushed["digest"]
        assert proxy.tunnels and set(proxy.tunnels) == {f"{name}:{port}"}
        expected = "Basic " + base64.b64encode(b"ann:p@ss").decode()
        assert set(proxy.authorization) == {expected}
        assert proxy.requests == []

        tunnels = len(proxy.tunnels)
        direct = puller("pull", remote, env={**env, "no_proxy": "example.com, .gpux.test"})
        assert_failure(direct, 9, f"cannot reach registry {name}:{port}")
        # a loopback registry is never proxied
        loopback = pusher("push", IMAGE, f"{fault.host}/team/direct:1.0", env=env)
        assert loopback.code == 0, loopback.output
        assert len(proxy.tunnels) == tunnels and proxy.requests == []


def test_http_proxy_gets_requests_in_absolute_form(
    registry: Registry, pusher: CLI, puller: CLI
) -> None:
    name = "plain.gpux.test"
    port = registry.host.rsplit(":", 1)[1]
    remote = f"{name}:{port}/proxied/hard:1.0"
    with running_proxy({name: "127.0.0.1"}) as proxy:
        env = {"http_proxy": proxy.url}
        flags = ("--insecure", "--allow-http", "--json")
        pushed = pusher.json("push", IMAGE, remote, *flags, env=env)
        pulled = puller.json("pull", remote, *flags, env=env)
        assert pulled["digest"] == pushed["digest"]
        assert proxy.requests and proxy.tunnels == []
        assert all(r.split()[1].startswith(f"http://{name}:{port}/v2/") for r in proxy.requests)


def test_identity_tokens_are_traded_as_oauth2_refresh_tokens(
    registry: Registry, pusher: CLI, puller: CLI, tmp_path: Path
) -> None:
    with token_gate(registry.host, {}, refresh_tokens={"rt-s3cret": "bob"}) as gate:
        remote = f"{gate.host}/bob/hard:1.0"
        docker = pusher.home.parent / "docker"
        docker.mkdir(exist_ok=True)
        auth = base64.b64encode(b"bob:").decode()

        def config(token: str) -> None:
            entry = {"auth": auth, "identitytoken": token}
            (docker / "config.json").write_text(json.dumps({"auths": {gate.host: entry}}))

        config("not-it")
        assert_failure(
            pusher("push", IMAGE, remote, "--insecure"),
            9,
            "refused the credentials of 'bob'",
            "token service refused",
        )
        config("rt-s3cret")
        pushed = pusher.json("push", IMAGE, remote, "--insecure", "--json")
        grants = [r for r in gate.token_requests if r.get("grant_type")]
        assert grants and all(r["client_id"] == "gpux" for r in grants)
        assert all(r["authorization"] is None for r in grants)  # the token is in the form
        (docker / "config.json").unlink()

        # a credential helper answering the user name "<token>" gives an identity token
        helpers = tmp_path / "bin"
        helpers.mkdir()
        helper = helpers / "docker-credential-gpuxtest"
        helper.write_text(
            "#!/bin/sh\ncat >/dev/null\n"
            'echo \'{"ServerURL":"x","Username":"<token>","Secret":"rt-s3cret"}\'\n'
        )
        helper.chmod(0o755)
        pulling = puller.home.parent / "docker"
        pulling.mkdir(exist_ok=True)
        (pulling / "config.json").write_text(json.dumps({"credsStore": "gpuxtest"}))
        env = {"PATH": f"{helpers}{os.pathsep}{os.environ['PATH']}"}
        pulled = puller.json("pull", remote, "--insecure", "--json", env=env)
        assert pulled["digest"] == pushed["digest"]


# -- the rules, in-process -----------------------------------------------------------------------


def test_no_proxy_and_retry_after_follow_the_conventions() -> None:
    from gpux.distribution.http import bypassed, proxy_for, retry_after

    assert bypassed("registry.corp.example", 443, "corp.example")
    assert bypassed("corp.example", 443, "corp.example")
    assert not bypassed("corp.example", 443, ".corp.example")  # subdomains only
    assert bypassed("a.corp.example", 443, ".corp.example")
    assert not bypassed("notcorp.example", 443, "corp.example")
    assert bypassed("10.1.2.3", 5000, "10.0.0.0/8")
    assert bypassed("ghcr.io", 443, "ghcr.io:443") and not bypassed("ghcr.io", 443, "ghcr.io:80")
    assert bypassed("anything", 1, " * ")
    environ = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "internal"}
    assert proxy_for("https", "ghcr.io", environ) is not None
    assert proxy_for("https", "registry.internal:5000", environ) is None
    assert proxy_for("https", "127.0.0.5:5000", environ) is None  # loopback: always direct
    assert proxy_for("https", "[::1]:5000", environ) is None
    assert proxy_for("http", "ghcr.io", environ) is None  # HTTP_PROXY is not set
    assert retry_after("7") == 7
    assert retry_after("100000") == 60  # capped
    assert retry_after("²") is None  # a digit to str.isdigit, not a number of seconds
    now = 1_700_000_000.0
    assert retry_after(formatdate(now + 30, usegmt=True), now=now) == 30
    assert retry_after(formatdate(now - 30, usegmt=True), now=now) == 0
    assert retry_after("soon") is None
