"""Hugging Face Hub sources (``model: hf:org/repo/file@revision``) and ``gpux pull hf:org/repo``,
against a stand-in Hub on 127.0.0.1 (tests/distribution/hub_server.py) that the real
huggingface_hub talks to unchanged through ``HF_ENDPOINT``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from gpux.errors import ConfigValidationError, GPUXError, SourceError
from gpux.store import Store
from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure, hint_of
from tests.distribution.hub_server import HubServer

SOURCE = 9  # SourceError's exit code
LINEAR_OUT = [[7.0, 6.0, 8.5]]  # generated_models.linear for x = [[1, 2, 3, 4]]


@pytest.fixture(scope="module")
def linear(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return generated_models.linear(tmp_path_factory.mktemp("models") / "linear.onnx").read_bytes()


@pytest.fixture(scope="module")
def linear_doubled(linear: bytes) -> bytes:
    """The linear model with W and b doubled: a new version of it."""
    model = onnx.load_from_string(linear)
    for index, tensor in enumerate(model.graph.initializer):
        doubled = numpy_helper.to_array(tensor) * np.float32(2)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(doubled, tensor.name))
    return model.SerializeToString()


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer()
    yield server
    server.stop()


@pytest.fixture
def gpux(tmp_path: Path) -> BoundCLI:
    return BoundCLI(tmp_path / "gpux-home")


def hub_env(hub: HubServer, hf_home: Path, token: str = "") -> dict[str, str]:
    """The environment that points huggingface_hub at the stand-in, with its cache in hf_home."""
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_home),
        "HF_TOKEN": token,  # empty: no token (and none from the developer's environment)
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }


@pytest.fixture
def env(hub: HubServer, tmp_path: Path) -> dict[str, str]:
    return hub_env(hub, tmp_path / "hf-home")


@pytest.fixture
def store(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """An empty store, and huggingface_hub in this process pointed at the stand-in. It reads
    HF_ENDPOINT and HF_HOME once, when imported, so its constants are set here too."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf-home"
    for name, value in hub_env(hub, hf_home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GPUX_HOME", str(tmp_path / "gpux-home"))
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return Store(tmp_path / "gpux-home")


def project(folder: Path, gpuxfile: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "GPUXfile").write_text(gpuxfile)
    return folder


def run_linear(gpux: BoundCLI, name: str) -> object:
    return gpux.json("run", name, "--input", "x=[[1, 2, 3, 4]]")["outputs"]["y"]["data"]


# --- model: hf:... in a GPUXfile --------------------------------------------------------------


def test_hub_file_builds_runs_and_records_its_commit(
    gpux: BoundCLI, hub: HubServer, env: dict[str, str], linear: bytes, tmp_path: Path
) -> None:
    commit = hub.add_repo("acme/linear", {"model.onnx": linear, "README.md": b"# linear\n"})
    folder = project(tmp_path / "p", "name: linear\nmodel: hf:acme/linear/model.onnx@main\n")

    first = gpux.json("build", str(folder), "--json", env=env)
    assert first["cached"] is False
    info = gpux.json("inspect", "linear", "--json")
    assert info["source"] == {
        "kind": "hf",
        "origin": "hf:acme/linear/model.onnx@main",
        "sha256": hashlib.sha256(linear).hexdigest(),
        "revision": commit,
    }
    assert run_linear(gpux, "linear") == LINEAR_OUT
    assert hub.downloads("model.onnx") == 1

    # The branch has not moved: a no-op that asks the Hub, but downloads nothing.
    assert gpux.json("build", str(folder), "--json", env=env)["cached"] is True
    assert hub.downloads("model.onnx") == 1

    # Pinned to the commit: the cached file is used without a single request...
    pinned = project(
        tmp_path / "pinned", f"name: linear-pinned\nmodel: hf:acme/linear/model.onnx@{commit}\n"
    )
    asked = len(hub.requests)
    assert gpux.ok("build", str(pinned), "-q", env=env).stdout == "linear-pinned:latest\n"
    assert len(hub.requests) == asked
    # ...so with the Hub gone, rebuilding is still a no-op.
    hub.stop()
    again = gpux.json("build", str(pinned), "--json", env=env)
    assert again["cached"] is True
    assert gpux.json("inspect", "linear-pinned", "--json")["source"]["revision"] == commit


def test_a_moved_branch_rebuilds_and_an_unreachable_hub_falls_back_to_the_cache(
    gpux: BoundCLI,
    hub: HubServer,
    env: dict[str, str],
    linear: bytes,
    linear_doubled: bytes,
    tmp_path: Path,
) -> None:
    first = hub.add_repo("acme/linear", {"model.onnx": linear})
    folder = project(tmp_path / "p", "name: linear\nmodel: hf:acme/linear/model.onnx@main\n")
    gpux.ok("build", str(folder), "-q", env=env)

    second = hub.commit("acme/linear", {"model.onnx": linear_doubled})
    rebuilt = gpux.json("build", str(folder), "--json", env=env)
    assert rebuilt["cached"] is False
    assert gpux.json("inspect", "linear", "--json")["source"]["revision"] == second != first
    assert run_linear(gpux, "linear") == [[14.0, 12.0, 17.0]]

    hub.stop()
    offline = gpux.json("build", str(folder), "--json", env=env)
    assert offline["cached"] is True  # the cached copy of main is the model built last
    assert gpux.json("inspect", "linear", "--json")["source"]["revision"] == second


def test_unreachable_hub_warns_that_the_cached_branch_may_be_stale(
    store: Store, hub: HubServer, linear: bytes, tmp_path: Path
) -> None:
    from gpux.builder import sources
    from gpux.config.common import FileSource

    commit = hub.add_repo("acme/linear", {"model.onnx": linear})
    spec = FileSource(source="hf:acme/linear/model.onnx@main")
    online = sources.resolve_file(tmp_path, spec, "model")
    assert (online.revision, online.warnings) == (commit, [])
    hub.stop()
    offline = sources.resolve_file(tmp_path, spec, "model")
    assert offline.path == online.path
    assert offline.revision == commit
    (warning,) = offline.warnings
    assert f"{hub.url} cannot be reached" in warning
    assert f"commit {commit[:12]}" in warning
    assert "out of date" in warning
    # A commit cannot be out of date: no warning.
    pinned = sources.resolve_file(tmp_path, FileSource(source=f"hf:acme/linear@{commit}"), "model")
    assert (pinned.path, pinned.warnings) == (online.path, [])


def test_without_a_path_the_repositorys_one_onnx_is_the_model(
    gpux: BoundCLI, hub: HubServer, env: dict[str, str], linear: bytes, tmp_path: Path
) -> None:
    commit = hub.add_repo(
        "acme/single", {"onnx/model.onnx": linear, "config.json": b"{}", "README.md": b"hi"}
    )
    folder = project(tmp_path / "p", "name: single\nmodel: hf:acme/single\n")
    gpux.ok("build", str(folder), "-q", env=env)
    info = gpux.json("inspect", "single", "--json")
    assert info["source"]["revision"] == commit
    assert run_linear(gpux, "single") == LINEAR_OUT


def test_without_a_path_two_onnx_files_are_an_error_that_lists_them(
    gpux: BoundCLI, hub: HubServer, env: dict[str, str], linear: bytes, tmp_path: Path
) -> None:
    hub.add_repo("acme/two", {"model.onnx": linear, "onnx/model_fp16.onnx": linear})
    folder = project(tmp_path / "p", "model: hf:acme/two@main\n")
    result = gpux("build", str(folder), env=env)
    assert_failure(
        result, SOURCE, "'acme/two' at main holds 2 .onnx files (model.onnx, onnx/model_fp16.onnx)"
    )
    assert "hf:acme/two/model.onnx@main" in hint_of(result)


@pytest.mark.zoo
def test_model_and_tokenizer_from_the_hub(
    gpux: BoundCLI,
    hub: HubServer,
    env: dict[str, str],
    tmp_path: Path,
    zoo_file: Callable[[str], Path],
) -> None:
    commit = hub.add_repo(
        "acme/minilm",
        {
            "onnx/model.onnx": zoo_file("minilm").read_bytes(),
            "tokenizer.json": zoo_file("minilm-tokenizer").read_bytes(),
        },
    )
    gpuxfile = """\
name: minilm
model: hf:acme/minilm/onnx/model.onnx@main
preprocess:
  - text:
      tokenizer: hf:acme/minilm/tokenizer.json@main
postprocess:
  - name: embedding
    from: last_hidden_state
    steps: [mean_pool, l2_normalize]
"""
    gpux.ok("build", str(project(tmp_path / "p", gpuxfile)), "-q", env=env)
    embedding = gpux.json("run", "minilm", "--input", "I love this product")["result"]["embedding"]
    assert len(embedding) == 384
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-4
    assert gpux.json("inspect", "minilm", "--json")["source"]["revision"] == commit
    assert hub.downloads("tokenizer.json") == 1


def test_private_repository_needs_hf_token_which_stays_secret(
    gpux: BoundCLI, hub: HubServer, env: dict[str, str], linear: bytes, tmp_path: Path
) -> None:
    token = "hf_StandInSecret0123456789abcdef"
    hub.add_repo("acme/secret", {"model.onnx": linear}, token=token)
    folder = project(tmp_path / "p", "name: secret\nmodel: hf:acme/secret/model.onnx@main\n")

    denied = gpux("build", str(folder), env=env)
    assert_failure(
        denied, SOURCE, "'acme/secret' not found, or it is private and HF_TOKEN is not set"
    )
    assert "set HF_TOKEN" in hint_of(denied)

    wrong = gpux("build", str(folder), env={**env, "HF_TOKEN": "hf_NotTheRightOne"})
    assert_failure(wrong, SOURCE, "rejected the token in HF_TOKEN")
    assert "hf_NotTheRightOne" not in wrong.output

    asked = len(hub.requests)
    built = gpux.ok("build", str(folder), "--json", env={**env, "HF_TOKEN": token})
    assert token not in built.output
    assert run_linear(gpux, "secret") == LINEAR_OUT
    sent = hub.requests[asked:]
    assert {entry.authorization for entry in sent if entry.server == "hub"} == {f"Bearer {token}"}
    # The file itself comes from the CDN, which must never see the token.
    assert [entry.authorization for entry in sent if entry.server == "cdn"] == [None]
    assert token not in gpux("inspect", "secret", "--json").output
    for stored in (gpux.home).rglob("*"):
        if stored.is_file():
            assert token.encode() not in stored.read_bytes(), stored


@pytest.mark.parametrize(
    ("source", "fragment", "hint"),
    [
        (
            "hf:acme/nobody/model.onnx@main",
            "Hugging Face repository 'acme/nobody' not found",
            "check the name",
        ),
        ("hf:acme/linear/model.onnx@v9", "revision 'v9' not found in 'acme/linear'", "branch, tag"),
        (
            "hf:acme/linear/modle.onnx@main",
            "file 'modle.onnx' not found in 'acme/linear' at main",
            "the .onnx files there: model.onnx, onnx/extra.onnx",
        ),
    ],
    ids=["repository", "revision", "file"],
)
def test_hub_errors_say_what_is_missing(
    gpux: BoundCLI,
    hub: HubServer,
    env: dict[str, str],
    linear: bytes,
    tmp_path: Path,
    source: str,
    fragment: str,
    hint: str,
) -> None:
    hub.add_repo("acme/linear", {"model.onnx": linear, "onnx/extra.onnx": linear})
    result = gpux("build", str(project(tmp_path / "p", f"model: {source}\n")), env=env)
    assert_failure(result, SOURCE, fragment)
    assert hint in hint_of(result)


def test_hub_down_and_nothing_cached(
    gpux: BoundCLI, hub: HubServer, env: dict[str, str], tmp_path: Path
) -> None:
    hub.stop()
    result = gpux("build", str(project(tmp_path / "p", "model: hf:acme/linear@main\n")), env=env)
    assert_failure(
        result,
        SOURCE,
        "cannot fetch hf:acme/linear@main",
        f"{hub.url} cannot be reached and the repository is not in the local cache",
    )
    assert "HF_ENDPOINT" in hint_of(result)


# --- gpux pull hf:org/repo --------------------------------------------------------------------


def test_pull_a_repository_with_a_gpuxfile(
    store: Store, hub: HubServer, linear: bytes, linear_doubled: bytes
) -> None:
    import gpux
    from gpux.distribution.hub import pull

    gpuxfile = b"name: tiny\nmodel: ./onnx/model.onnx\nlabels: ./labels.txt\n"
    commit = hub.add_repo(
        "acme/Tiny_Linear",
        {
            "GPUXfile": gpuxfile,
            "onnx/model.onnx": linear,
            "onnx/model_fp16.onnx": linear_doubled,  # a variant the GPUXfile does not name
            "labels.txt": b"a\nb\nc\n",
            "README.md": b"# tiny\n",
        },
    )
    result = pull("hf:acme/Tiny_Linear", store)
    assert (result.reference.name, result.cached) == ("tiny-linear:latest", False)
    assert hub.downloads("onnx/model.onnx") == 1
    assert hub.downloads("onnx/model_fp16.onnx") == hub.downloads("README.md") == 0
    fetch = next(step for step in result.reporter.steps if step.title == "fetch from Hugging Face")
    assert fetch.detail == f"acme/Tiny_Linear {commit[:12]}, 3 files"
    model = gpux.load("tiny-linear:latest", store=store, backend="cpu")
    assert model.run({"x": [[1, 2, 3, 4]]})["y"].tolist() == LINEAR_OUT
    assert model.labels == ["a", "b", "c"]

    # Pulled again: nothing new to download or build; with the Hub gone, from the cache.
    assert pull("hf:acme/Tiny_Linear", store).cached is True
    hub.stop()
    offline = pull("hf:acme/Tiny_Linear@main", store)
    assert offline.cached is True
    (warning,) = offline.reporter.warnings
    assert (
        f"building acme/Tiny_Linear@main from the copy cached from commit {commit[:12]}" in warning
    )
    assert hub.downloads("onnx/model.onnx") == 1


def test_pull_a_repository_with_one_onnx(store: Store, hub: HubServer, linear: bytes) -> None:
    import gpux
    from gpux.distribution.hub import pull

    commit = hub.add_repo("acme/linear", {"model.onnx": linear, "config.json": b"{}"})
    result = pull(f"hf:acme/linear@{commit}", store)
    assert result.reference.name == f"linear:{commit}"
    config = result.image.config
    assert config["gpuxfile"]["model"]["source"] == f"hf:acme/linear/model.onnx@{commit}"
    assert config["source"]["revision"] == commit
    model = gpux.load(f"linear:{commit}", store=store, backend="cpu")
    assert model.run({"x": [[1, 2, 3, 4]]})["y"].tolist() == LINEAR_OUT

    tagged = pull("hf:acme/linear", store, tag="mine:1.0")
    assert (tagged.reference.name, tagged.image.digest) == ("mine:1.0", result.image.digest)
    assert hub.downloads("model.onnx") == 1


@pytest.mark.parametrize(
    ("files", "source", "error", "fragment"),
    [
        (
            {"a.onnx": b"1", "b/c.onnx": b"2"},
            "hf:acme/many",
            SourceError,
            "holds 2 .onnx files (a.onnx, b/c.onnx)",
        ),
        ({"README.md": b"hi"}, "hf:acme/many", SourceError, "holds no .onnx file"),
        (
            {"GPUXfile": b"model: ./model.onnx\nlabels: labels.txt\n", "model.onnx": b"1"},
            "hf:acme/many",
            SourceError,
            "names labels.txt, which the repository does not hold",
        ),
        (
            {"GPUXfile": b"model: ../model.onnx\n"},
            "hf:acme/many",
            SourceError,
            "names model '../model.onnx', outside the repository",
        ),
        (
            {"GPUXfile": b"model: a.onnx\n", "gpux.yaml": b"model: b.onnx\n"},
            "hf:acme/many",
            ConfigValidationError,
            "holds both GPUXfile and gpux.yaml",
        ),
        ({"a.json": b"{}"}, "hf:acme/many/a.json", SourceError, "a repository, or an .onnx file"),
    ],
    ids=["two-onnx", "no-onnx", "missing-file", "outside", "two-gpuxfiles", "not-onnx"],
)
def test_pull_refuses_what_it_cannot_build(
    store: Store,
    hub: HubServer,
    files: dict[str, bytes],
    source: str,
    error: type[GPUXError],
    fragment: str,
) -> None:
    from gpux.distribution.hub import pull

    hub.add_repo("acme/many", files)
    with pytest.raises(error) as caught:
        pull(source, store)
    assert fragment in caught.value.message
    assert caught.value.hint
    assert store.images() == []


def test_pull_refuses_more_than_it_should_download(
    store: Store, hub: HubServer, linear: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpux.distribution import hub as hub_module

    monkeypatch.setattr(hub_module, "MAX_PULL_BYTES", 100)
    hub.add_repo("acme/linear", {"model.onnx": linear})
    with pytest.raises(SourceError, match="more than GPUX pulls"):
        hub_module.pull("hf:acme/linear", store)
    assert hub.downloads("model.onnx") == 0


def test_gpux_pull_hf_on_the_command_line(
    gpux: BoundCLI, hub: HubServer, env: dict[str, str], linear: bytes
) -> None:
    hub.add_repo("acme/linear", {"model.onnx": linear})
    assert gpux.ok("pull", "hf:acme/linear@main", env=env).stdout == "linear:latest\n"
    assert run_linear(gpux, "linear:latest") == LINEAR_OUT
    assert json.loads(gpux.ok("pull", "hf:acme/linear", "--json", env=env).stdout)["cached"]


# --- the spellings of a Hub source (issue #12) ------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "hf://acme/linear",
        "hf.co/acme/linear",
        "huggingface.co/acme/linear",
        "huggingface.co/acme/linear/tree/main",
    ],
)
def test_pull_takes_every_spelling_of_a_repository(
    store: Store, hub: HubServer, linear: bytes, spelling: str
) -> None:
    from gpux.distribution.hub import pull

    commit = hub.add_repo("acme/linear", {"model.onnx": linear})
    result = pull(spelling, store)
    assert result.reference.name == "linear:latest"
    assert result.image.config["source"]["revision"] == commit


@pytest.mark.parametrize(
    "spelling",
    [
        "hf://acme/linear/model.onnx@main",
        "hf.co/acme/linear/model.onnx",
        "huggingface.co/acme/linear/blob/main/model.onnx",
        "huggingface.co/acme/linear/resolve/main/model.onnx",
    ],
)
def test_a_gpuxfile_source_takes_every_spelling(
    store: Store, hub: HubServer, linear: bytes, tmp_path: Path, spelling: str
) -> None:
    from gpux.builder import sources
    from gpux.config.common import FileSource

    commit = hub.add_repo("acme/linear", {"model.onnx": linear})
    resolved = sources.resolve_file(tmp_path, FileSource(source=spelling), "model")
    assert (resolved.kind, resolved.revision) == ("hf", commit)
    assert resolved.sha256 == hashlib.sha256(linear).hexdigest()


def test_gpux_pull_hf_co_on_the_command_line(
    gpux: BoundCLI, hub: HubServer, env: dict[str, str], linear: bytes
) -> None:
    hub.add_repo("acme/linear", {"model.onnx": linear})
    assert gpux.ok("pull", "hf.co/acme/linear", env=env).stdout == "linear:latest\n"
    assert run_linear(gpux, "linear:latest") == LINEAR_OUT
    # The address of the web page is not a source; the message says which spelling is.
    result = gpux("pull", "https://huggingface.co/acme/linear/", env=env)
    assert_failure(result, 2, "https://huggingface.co/acme/linear/ is a web page")
    assert hint_of(result) == "pull the repository: gpux pull huggingface.co/acme/linear"


def test_a_hub_path_that_climbs_is_refused(store: Store, hub: HubServer, linear: bytes) -> None:
    from gpux.distribution.hub import pull

    hub.add_repo("acme/linear", {"model.onnx": linear})
    with pytest.raises(SourceError, match="is not a plain relative path"):
        pull("hf:acme/linear/../../other/model.onnx", store)
    assert len(hub.requests) == 0


# --- a GPUXfile pulled from the Hub gets the checks of a local one (issue #12, item 1) ----------


def zipped(entries: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def test_a_pulled_gpuxfile_may_take_a_member_of_an_archive(
    store: Store, hub: HubServer, linear: bytes
) -> None:
    import gpux
    from gpux.distribution.hub import pull

    gpuxfile = b"name: packed\nmodel:\n  source: ./model.zip\n  member: onnx/linear.onnx\n"
    hub.add_repo(
        "acme/packed", {"GPUXfile": gpuxfile, "model.zip": zipped({"onnx/linear.onnx": linear})}
    )
    result = pull("hf://acme/packed", store)
    model = gpux.load(result.reference.name, store=store, backend="cpu")
    assert model.run({"x": [[1, 2, 3, 4]]})["y"].tolist() == LINEAR_OUT


def test_a_pulled_gpuxfile_whose_member_climbs_out_is_refused(
    store: Store, hub: HubServer, linear: bytes, tmp_path: Path
) -> None:
    from gpux.distribution.hub import pull

    member = "../../../../escape.onnx"  # from $GPUX_HOME/cache/extracted/<sha>: beside it
    gpuxfile = f"model:\n  source: ./model.zip\n  member: '{member}'\n".encode()
    hub.add_repo("acme/evil", {"GPUXfile": gpuxfile, "model.zip": zipped({member: linear})})
    with pytest.raises(GPUXError) as caught:
        pull("hf:acme/evil", store)
    assert "climbs out of the archive with '..'" in caught.value.message
    assert caught.value.exit_code == 3
    assert not (tmp_path / "escape.onnx").exists()
    assert store.images() == []


def test_a_pulled_gpuxfile_reads_no_samples_outside_its_repository(
    store: Store, hub: HubServer, linear: bytes
) -> None:
    from gpux.distribution.hub import pull

    gpuxfile = b"model: ./model.onnx\nbuild:\n  samples: ../../../..\n  optimize: [int8-static]\n"
    hub.add_repo("acme/nosy", {"GPUXfile": gpuxfile, "model.onnx": linear})
    with pytest.raises(ConfigValidationError, match="outside the project folder"):
        pull("hf:acme/nosy", store)
    assert store.images() == []


# --- a generative model's folder on the Hub --------------------------------------------------


def test_a_generative_models_folder_on_the_hub_builds_runs_and_records_its_commit(
    gpux: BoundCLI, hub: HubServer, env: dict[str, str], tiny_llm: Path, tmp_path: Path
) -> None:
    files = {f"onnx/cpu/{path.name}": path.read_bytes() for path in tiny_llm.iterdir()}
    commit = hub.add_repo("acme/tiny-llm", {**files, "README.md": b"# tiny\n"})
    folder = project(
        tmp_path / "llm",
        "name: hub-llm\nmodel:\n  source: hf:acme/tiny-llm/onnx/cpu@main\n  format: genai\n",
    )
    assert gpux.json("build", str(folder), "--json", env=env)["cached"] is False
    image = Store(gpux.home).get("hub-llm")
    assert {layer.title for layer in image.layers} == {path.name for path in tiny_llm.iterdir()}
    assert image.config["source"]["revision"] == commit
    answer = gpux.json("run", "hub-llm", "--input", "Hello", "--json", "--max-new-tokens", "3")
    assert answer["usage"]["completion_tokens"] == 3
    # The branch has not moved: a no-op that downloads nothing again.
    assert gpux.json("build", str(folder), "--json", env=env)["cached"] is True
    assert hub.downloads("onnx/cpu/model.onnx.data") == 1

    wrong = project(
        tmp_path / "wrong",
        "model:\n  source: hf:acme/tiny-llm/onnx@main\n  format: genai\n",
    )
    assert_failure(
        gpux("build", str(wrong), env=env), SOURCE, "onnx@main' has no genai_config.json"
    )
