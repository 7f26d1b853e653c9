"""Image references: ``[registry/][namespace/]name[:tag][@sha256:...]``."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gpux.errors import UsageError
from gpux.store.reference import Reference, parse

DIGEST = "sha256:" + hashlib.sha256(b"manifest").hexdigest()


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest"),
    [
        ("sentiment", "sentiment", "latest", None),
        ("sentiment:1.0", "sentiment", "1.0", None),
        ("  sentiment:1.0 ", "sentiment", "1.0", None),
        ("team/resnet-50:v2", "team/resnet-50", "v2", None),
        ("a.b_c__d--e", "a.b_c__d--e", "latest", None),
        ("localhost/minilm", "localhost/minilm", "latest", None),
        ("localhost:5000/team/minilm:int8", "localhost:5000/team/minilm", "int8", None),
        ("registry.example.com/ns/name:tag", "registry.example.com/ns/name", "tag", None),
        ("Registry.Example.com:443/ns/name:T_1", "Registry.Example.com:443/ns/name", "T_1", None),
        ("[::1]:5000/name:1", "[::1]:5000/name", "1", None),
        (f"minilm@{DIGEST}", "minilm", "latest", DIGEST),
        (f"minilm:int8@{DIGEST}", "minilm", "int8", DIGEST),
        (f"localhost:5000/minilm:int8@{DIGEST}", "localhost:5000/minilm", "int8", DIGEST),
    ],
)
def test_parse_valid_references(text: str, repository: str, tag: str, digest: str | None) -> None:
    reference = parse(text)
    assert reference == Reference(repository, tag, digest)
    assert reference.name == f"{repository}:{tag}"
    expected = f"{repository}:{tag}" + (f"@{digest}" if digest else "")
    assert str(reference) == expected


def test_bare_name_gets_latest() -> None:
    assert str(parse("resnet")) == "resnet:latest"
    assert parse("resnet").name == "resnet:latest"


NAME_FORM = "names use lowercase letters"
TAG_FORM = "may hold letters, digits"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Sentiment", NAME_FORM),
        ("team/ResNet", NAME_FORM),
        ("my model", NAME_FORM),
        ("model name:1.0", NAME_FORM),
        ("", NAME_FORM),
        ("   ", NAME_FORM),
        ("-model", NAME_FORM),
        ("model-", NAME_FORM),
        ("model..x", NAME_FORM),
        ("team//model", NAME_FORM),
        ("/model", NAME_FORM),
        ("model/", NAME_FORM),
        ("model\n:1.0", NAME_FORM),
        ("model:", TAG_FORM),
        ("model:bad tag", TAG_FORM),
        ("model:.hidden", TAG_FORM),
        ("model:-x", TAG_FORM),
        ("model:a/b", "registry 'model:a'"),
        ("model:" + "t" * 129, TAG_FORM),
        ("model:1.0\n@" + DIGEST, TAG_FORM),
        ("model@sha256:abc", "sha256: and 64 hex"),
        ("model@md5:" + "a" * 32, "sha256: and 64 hex"),
        ("model@" + DIGEST.upper(), "sha256: and 64 hex"),
        ("bad_host.com/model", "registry 'bad_host.com'"),
        ("host.com:port/model", "registry 'host.com:port'"),
        ("host.com\n/model", "registry 'host.com\\n'"),
    ],
)
def test_invalid_references_explain_the_expected_form(text: str, why: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text)
    error = info.value
    assert error.exit_code == 2
    assert repr(text) in error.message
    assert why in error.message
    assert error.hint == "example: gpux build -t sentiment:1.0"


def test_longest_tag_is_accepted() -> None:
    assert parse("model:" + "t" * 128).tag == "t" * 128


# -- property: generated valid references round-trip -----------------------------------------

_ALNUM = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_SEPARATOR = st.sampled_from([".", "_", "__", "-", "--", "---"])
_NO_DOT_SEPARATOR = st.sampled_from(["_", "__", "-", "--"])


def _component(separators: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A path component: alphanumeric runs joined by separators (Docker's grammar)."""
    return st.tuples(_ALNUM, st.lists(st.tuples(separators, _ALNUM), max_size=3)).map(
        lambda parts: parts[0] + "".join(sep + run for sep, run in parts[1])
    )


_HOST_LABEL = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9-]{0,8}", fullmatch=True)
_REGISTRY = st.one_of(
    st.just("localhost"),
    st.tuples(
        st.lists(_HOST_LABEL, min_size=2, max_size=3).map(".".join),
        st.one_of(st.just(""), st.integers(1, 65535).map(lambda port: f":{port}")),
    ).map("".join),
    st.tuples(_HOST_LABEL, st.integers(1, 65535)).map(lambda hp: f"{hp[0]}:{hp[1]}"),
)


@st.composite
def registry_and_path(draw: st.DrawFn) -> tuple[str | None, str]:
    # Without a registry, a first component holding '.' would be read as a host (as in Docker),
    # so namespaces use no dots; the final name may.
    namespaces = draw(st.lists(_component(_NO_DOT_SEPARATOR), max_size=2))
    name = draw(_component(_SEPARATOR))
    registry = draw(st.one_of(st.none(), _REGISTRY))
    return registry, "/".join([*namespaces, name])


def _join(registry: str | None, path: str) -> str:
    return f"{registry}/{path}" if registry else path


def repositories() -> st.SearchStrategy[str]:
    return registry_and_path().map(lambda parts: _join(*parts))


TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
DIGESTS = st.binary(min_size=1, max_size=8).map(
    lambda data: "sha256:" + hashlib.sha256(data).hexdigest()
)


@settings(deadline=None)  # slow CI machines must not fail on timing
@given(repository=repositories(), tag=TAGS, digest=st.one_of(st.none(), DIGESTS))
def test_generated_references_round_trip(repository: str, tag: str, digest: str | None) -> None:
    text = f"{repository}:{tag}" + (f"@{digest}" if digest else "")
    reference = parse(text)
    assert str(reference) == text
    assert (reference.repository, reference.tag, reference.digest) == (repository, tag, digest)
    assert parse(str(reference)) == reference


@settings(deadline=None)  # slow CI machines must not fail on timing
@given(repository=repositories())
def test_generated_bare_names_get_latest(repository: str) -> None:
    reference = parse(repository)
    assert str(reference) == f"{repository}:latest"
    assert parse(str(reference)) == reference


@settings(deadline=None)  # slow CI machines must not fail on timing
@given(parts=registry_and_path(), tag=TAGS, position=st.integers(min_value=0))
def test_uppercase_in_a_name_is_rejected(
    parts: tuple[str | None, str], tag: str, position: int
) -> None:
    registry, path = parts
    letters = [i for i, ch in enumerate(path) if ch.isalpha()]
    assume(letters)
    index = letters[position % len(letters)]
    broken = path[:index] + path[index].upper() + path[index + 1 :]
    with pytest.raises(UsageError, match="names use lowercase letters"):
        parse(f"{_join(registry, broken)}:{tag}")
