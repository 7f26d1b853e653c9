"""Model sources that are fetched: an http(s) URL with a pinned sha256 (served here by a real
``http.server`` on 127.0.0.1) and a Hugging Face Hub file (pointed at an endpoint that is down)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure, hint_of

SOURCE = 9


class ModelServer:
    """Serves a folder over HTTP in a thread until stopped; counts the requests it answered."""

    def __init__(self, folder: Path) -> None:
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
                server.requests.append(self.path)

        self.requests: list[str] = []
        handler = functools.partial(Handler, directory=str(folder))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self.running = False


@pytest.fixture(scope="module")
def served(workdir: Path) -> Path:
    folder = workdir / "served"
    generated_models.linear(folder / "m.onnx")
    return folder


@pytest.fixture
def server(served: Path) -> Iterator[ModelServer]:
    running = ModelServer(served)
    yield running
    running.stop()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def url_project(folder: Path, url: str, sha256: str, name: str = "remote") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "GPUXfile").write_text(f"name: {name}\nmodel:\n  source: {url}\n  sha256: {sha256}\n")
    return folder


def test_url_source_builds_runs_and_is_cached(
    gpux: BoundCLI, server: ModelServer, served: Path, workdir: Path
) -> None:
    digest = sha256_of(served / "m.onnx")
    url = f"{server.url}/m.onnx"
    project = url_project(workdir / "remote", url, digest)

    first = gpux.json("build", str(project), "--json")
    assert first["cached"] is False
    assert server.requests == ["/m.onnx"]
    resolve = next(step for step in first["steps"] if step["step"] == "resolve model")
    assert resolve["detail"] == f"url {digest[:12]}"
    info = gpux.json("inspect", "remote", "--json")
    assert info["source"] == {"kind": "url", "origin": url, "sha256": digest, "revision": None}
    model_layer = next(layer for layer in info["layers"] if layer["mediaType"].endswith("onnx.v1"))
    assert model_layer["digest"] == f"sha256:{digest}"
    result = gpux.json("run", "remote", "--input", "x=[[1, 2, 3, 4]]")
    assert result["outputs"]["y"]["data"] == [[7.0, 6.0, 8.5]]

    server.stop()
    # Unchanged: a no-op that needs no network at all.
    again = gpux.json("build", str(project), "--json")
    assert again["cached"] is True
    assert again["digest"] == first["digest"]
    # A real rebuild, and a second project with the same URL, use the verified download cache.
    forced = gpux.json("build", str(project), "--json", "--force")
    assert forced["cached"] is False
    other = url_project(workdir / "remote-two", url, digest, name="remote-two")
    assert gpux.ok("build", str(other), "-q").stdout == "remote-two:latest\n"
    assert server.requests == ["/m.onnx"]  # downloaded exactly once
    assert "remote-two:latest" in gpux.names()


def test_url_source_with_wrong_sha256(
    gpux: BoundCLI, server: ModelServer, served: Path, workdir: Path
) -> None:
    actual = sha256_of(served / "m.onnx")
    wrong = hashlib.sha256(b"some other model").hexdigest()
    project = url_project(workdir / "wrong-sha", f"{server.url}/m.onnx", wrong, "wrong-sha")
    result = gpux("build", str(project))
    assert_failure(result, SOURCE, f"has sha256 {actual}", f"expects {wrong}")
    assert "model.sha256" in hint_of(result)
    assert "wrong-sha:latest" not in gpux.names()
    # Nothing unverified was kept in the download cache.
    downloads = gpux.home / "cache" / "downloads"
    assert not (downloads / wrong).exists()
    assert not [p.name for p in downloads.iterdir() if p.name.endswith(".partial")]


def test_url_source_not_found(gpux: BoundCLI, server: ModelServer, workdir: Path) -> None:
    missing = hashlib.sha256(b"missing").hexdigest()
    project = url_project(workdir / "missing", f"{server.url}/missing.onnx", missing, "missing")
    result = gpux("build", str(project))
    assert_failure(result, SOURCE, f"cannot download {server.url}/missing.onnx: HTTP 404")
    assert "check the URL" in hint_of(result)


def test_url_source_server_down(gpux: BoundCLI, served: Path, workdir: Path) -> None:
    stopped = ModelServer(served)
    stopped.stop()  # the port is closed now: connection refused
    never = hashlib.sha256(b"never fetched").hexdigest()
    project = url_project(workdir / "down", f"{stopped.url}/m.onnx", never, "down")
    result = gpux("build", str(project))
    assert_failure(result, SOURCE, f"cannot download {stopped.url}/m.onnx")
    assert "network" in hint_of(result)


def test_plain_http_is_refused_off_loopback(gpux: BoundCLI, workdir: Path) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    project = url_project(workdir / "plain", "http://example.invalid/m.onnx", digest, "plain")
    result = gpux("build", str(project))
    assert_failure(result, SOURCE, "refusing to download over plain http")
    assert "https://" in hint_of(result)


def test_hugging_face_source_unreachable(gpux: BoundCLI, workdir: Path, tmp_path: Path) -> None:
    folder = workdir / "hub"
    folder.mkdir()
    (folder / "GPUXfile").write_text("model: hf:someone/some-model/onnx/model.onnx@main\n")
    env = {
        "HF_ENDPOINT": "http://127.0.0.1:1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "2",
        "HF_HUB_OFFLINE": "0",
    }
    result = gpux("build", str(folder), env=env)
    assert_failure(
        result,
        SOURCE,
        "cannot fetch hf:someone/some-model/onnx/model.onnx@main",
        "http://127.0.0.1:1 cannot be reached",
    )
    assert "not found in" not in result.stderr  # it is unreachable, not missing
    assert "HF_ENDPOINT" in hint_of(result)


def test_hugging_face_source_offline_and_not_cached(
    gpux: BoundCLI, workdir: Path, tmp_path: Path
) -> None:
    folder = workdir / "hub-offline"
    folder.mkdir()
    (folder / "GPUXfile").write_text("model: hf:someone/some-model/model.onnx\n")
    env = {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    result = gpux("build", str(folder), env=env)
    assert_failure(result, SOURCE, "HF_HUB_OFFLINE is set", "not in the Hugging Face cache")
    assert "unset HF_HUB_OFFLINE" in hint_of(result)


def test_hugging_face_source_malformed(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "hub-malformed"
    folder.mkdir()
    (folder / "GPUXfile").write_text("model: hf:just-a-name\n")
    result = gpux("build", str(folder))
    assert_failure(result, SOURCE, "invalid Hugging Face source 'hf:just-a-name'")
    assert "hf:org/repo/path/to/model.onnx@revision" in hint_of(result)
