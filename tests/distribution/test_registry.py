"""push / pull / login against a real registry (Debian's docker-registry) on loopback."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project
from tests.distribution.registry_server import Registry, running_registry
from tests.distribution.token_gate import token_gate

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture
def gpux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BoundCLI:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # never the user's own
    return BoundCLI(tmp_path / "home")


def built(gpux: BoundCLI, folder: Path, model: Path, name: str) -> str:
    make_project(folder, model, f"name: {name}\nversion: '1.0'\nmodel: ./{model.name}\n")
    gpux.ok("build", str(folder), "-q")
    return f"{name}:1.0"


def outputs(gpux: BoundCLI, name: str, tmp_path: Path) -> dict[str, np.ndarray]:
    out = tmp_path / f"{name.replace('/', '_').replace(':', '_')}.npz"
    gpux.ok("run", name, "--input", "x=[[1.0, 2.0, 3.0, 4.0]]", "--backend", "cpu", "-o", str(out))
    return dict(np.load(out))


def test_push_delete_pull_run_gives_the_same_image(
    gpux: BoundCLI, registry: Registry, tmp_path: Path
) -> None:
    local = built(
        gpux, tmp_path / "linear", generated_models.linear(tmp_path / "m" / "linear.onnx"), "linear"
    )
    inspected = gpux.json("inspect", local, "--json")
    digest, blobs = inspected["digest"], len(inspected["layers"]) + 1  # + the config
    expected = outputs(gpux, local, tmp_path)
    remote = f"{registry.host}/team/linear:1.0"

    first = gpux.json("push", local, remote, "--insecure", "--json")
    assert first["digest"] == digest and first["transferred"] == blobs and first["skipped"] == 0
    again = gpux.json("push", local, remote, "--insecure", "--json")
    assert again["transferred"] == 0 and again["skipped"] == blobs  # a second push: nothing

    gpux.ok("rm", local)
    gpux.ok("prune")
    pulled = gpux.json("pull", remote, "--insecure", "--json")
    assert pulled["name"] == remote and pulled["digest"] == digest
    assert gpux.json("inspect", remote, "--json")["digest"] == digest
    got = outputs(gpux, remote, tmp_path)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    by_digest = gpux.json("pull", f"{registry.host}/team/linear@{digest}", "--insecure", "--json")
    assert by_digest["transferred"] == 0  # everything is already here


def test_oras_lists_and_pulls_a_gpux_image(
    gpux: BoundCLI, registry: Registry, tmp_path: Path
) -> None:
    import oras.client

    model = generated_models.linear(tmp_path / "m" / "linear.onnx")
    local = built(gpux, tmp_path / "orasproj", model, "for-oras")
    gpux.ok("push", local, f"{registry.host}/oras/linear:1.0", "--insecure")
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    assert "1.0" in client.get_tags(f"{registry.host}/oras/linear")
    files = client.pull(target=f"{registry.host}/oras/linear:1.0", outdir=str(tmp_path / "oras"))
    by_name = {Path(f).name: Path(f) for f in files}
    assert by_name["linear.onnx"].read_bytes() == model.read_bytes()


def test_insecure_is_refused_for_a_remote_host(gpux: BoundCLI, tmp_path: Path) -> None:
    local = built(gpux, tmp_path / "p", generated_models.linear(tmp_path / "m" / "l.onnx"), "lin")
    assert_failure(
        gpux("push", local, "registry.example.com/team/lin:1.0", "--insecure"),
        2,
        "plain HTTP",
        "registry.example.com",
    )
    assert_failure(gpux("push", local, "lin:2.0"), 2, "names no registry")


def test_login_is_required_and_stored_like_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    gpux = BoundCLI(tmp_path / "home")
    local = built(
        gpux, tmp_path / "p", generated_models.linear(tmp_path / "m" / "l.onnx"), "private"
    )
    with running_registry(tmp_path / "auth-registry", users={"alice": "s3cret-pw"}) as registry:
        remote = f"{registry.host}/alice/private:1.0"
        assert_failure(
            gpux("push", local, remote, "--insecure"), 9, "refused", f"gpux login {registry.host}"
        )
        wrong = gpux(
            "login", registry.host, "-u", "alice", "--password-stdin", "--insecure", stdin="nope\n"
        )
        assert_failure(wrong, 9, "refused the credentials of 'alice'")
        good = gpux(
            "login",
            registry.host,
            "-u",
            "alice",
            "--password-stdin",
            "--insecure",
            stdin="s3cret-pw\n",
        )
        assert good.code == 0, good.output
        config = docker / "config.json"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert registry.host in json.loads(config.read_text())["auths"]
        pushed = gpux("push", local, remote, "--insecure")
        assert pushed.code == 0, pushed.output
        for result in (wrong, good, pushed):
            assert "s3cret-pw" not in result.output
        gpux.ok("logout", registry.host)
        assert registry.host not in json.loads(config.read_text()).get("auths", {})
        assert_failure(gpux("pull", remote, "--insecure"), 9, "log in first")


def test_token_auth_and_blob_redirects(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bearer tokens from the realm the challenge names (Docker Hub, GHCR, Harbor), traded for
    the stored login; blobs fetched where the registry redirects them, without its token."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    gpux = BoundCLI(tmp_path / "home")
    local = built(gpux, tmp_path / "p", generated_models.linear(tmp_path / "m" / "l.onnx"), "tok")
    expected = outputs(gpux, local, tmp_path)
    blobs = len(gpux.json("inspect", local, "--json")["layers"]) + 1  # + the config
    with token_gate(registry.host, {"bob": "t0ken-pw"}) as gate:
        remote = f"{gate.host}/bob/tok:1.0"
        # anonymous: the token service is asked without credentials and refuses
        assert_failure(
            gpux("push", local, remote, "--insecure"), 9, "token service refused", "gpux login"
        )
        assert gate.token_requests[-1] == {
            "scope": "repository:bob/tok:pull",
            "authorization": None,
        }
        login = gpux(
            "login", gate.host, "-u", "bob", "--password-stdin", "--insecure", stdin="t0ken-pw\n"
        )
        assert login.code == 0, login.output
        pushed = gpux.json("push", local, remote, "--insecure", "--json")
        assert pushed["transferred"] == blobs
        gpux.ok("rm", local)
        gpux.ok("prune")
        pulled = gpux.json("pull", remote, "--insecure", "--json")
        assert pulled["transferred"] == blobs and pulled["digest"] == pushed["digest"]
        got = outputs(gpux, remote, tmp_path)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
        # the Basic login was traded for a token of each scope the challenges named, and the storage service got the blobs' GETs without a token
        granted = [r for r in gate.token_requests if r["authorization"]]
        assert {r["scope"] for r in granted} == {
            "registry:catalog:*",
            "repository:bob/tok:pull,push",
            "repository:bob/tok:pull",
        }
        assert all(r["authorization"].startswith("Basic ") for r in granted)  # type: ignore[union-attr]
        assert gate.storage_authorization == [None] * blobs


def test_a_blob_altered_on_the_registry_is_refused(
    gpux: BoundCLI, registry: Registry, tmp_path: Path
) -> None:
    local = built(
        gpux, tmp_path / "p", generated_models.linear(tmp_path / "m" / "l.onnx"), "victim"
    )
    remote = f"{registry.host}/team/victim:1.0"
    gpux.ok("push", local, remote, "--insecure")
    manifest = gpux.json("inspect", local, "--json")
    layer = next(x for x in manifest["layers"] if x["title"] == "l.onnx")
    gpux.ok("rm", local)
    gpux.ok("prune")
    before = sorted((gpux.home / "blobs" / "sha256").iterdir())
    data = registry.blob_file(layer["digest"])
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    data.write_bytes(bytes(damaged))
    assert_failure(gpux("pull", remote, "--insecure"), 8, "does not match its digest")
    assert gpux.ok("images", "-q").stdout.strip() == ""
    after = sorted((gpux.home / "blobs" / "sha256").iterdir())
    extra = [p for p in after if p not in before]
    assert after == before, [(p.name[:12], p.read_bytes()[:80]) for p in extra]  # store unchanged


def test_a_pull_killed_halfway_then_rerun_succeeds(
    gpux: BoundCLI, registry: Registry, tmp_path: Path
) -> None:
    model = generated_models.big(tmp_path / "m" / "big.onnx", megabytes=96)
    folder = make_project(
        tmp_path / "big",
        model,
        "name: big\nversion: '1.0'\nmodel: ./big.onnx\ninputs:\n  - name: x\n",
    )
    gpux.ok("build", str(folder), "-q", "--no-optimize")
    remote = f"{registry.host}/team/big:1.0"
    gpux.ok("push", "big:1.0", remote, "--insecure")
    gpux.ok("rm", "big:1.0")
    gpux.ok("prune")
    env = {**os.environ, "GPUX_HOME": str(gpux.home), "GPUX_NO_PROGRESS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gpux.cli.main", "pull", remote, "--insecure"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = gpux.home / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once a blob is half-written
        files = list(partial.glob("*.partial")) if partial.is_dir() else []
        if any(_size(f) > (8 << 20) for f in files):
            break
        assert process.poll() is None, "the pull finished before it could be interrupted"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert gpux.ok("images", "-q").stdout.strip() == ""  # no half image
    pulled = gpux.json("pull", remote, "--insecure", "--json")
    assert pulled["name"] == remote
    assert gpux.ok("images", "-q").stdout.split() == [remote]


def _size(path: Path) -> int:
    """A partial blob's size; 0 once it is gone (finished and renamed into the store)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
