"""Image references: ``[registry/][namespace/]name[:tag][@sha256:...]``.

A bare name gets the tag ``latest``. Local images are stored under their full reference text
(``name:tag``), so ``gpux images`` shows exactly what the user typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpux.errors import UsageError

DEFAULT_TAG = "latest"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)"
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    repository: str  # e.g. "minilm" or "localhost:5000/team/minilm"
    tag: str = DEFAULT_TAG
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.repository}:{self.tag}"
        return f"{text}@{self.digest}" if self.digest else text

    @property
    def name(self) -> str:
        """``repository:tag``: the key of the image in the local index."""
        return f"{self.repository}:{self.tag}"


def parse(text: str) -> Reference:
    """Parse an image reference, raising a UsageError that explains the expected form."""
    original = text
    text = text.strip()
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise _invalid(original, "the part after '@' must be sha256: and 64 hex digits")
    tag = DEFAULT_TAG
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise _invalid(original, f"tag {tag!r} may hold letters, digits, '_', '.', '-'")
    repository = text
    first, _, rest = repository.partition("/")
    if rest and (("." in first or ":" in first or first == "localhost") or first.startswith("[")):
        if not re.fullmatch(_REGISTRY, first):
            raise _invalid(original, f"registry {first!r} is not a valid host[:port]")
        path = rest
    else:
        path = repository
    if not path or not _REPOSITORY.fullmatch(path):
        raise _invalid(
            original,
            "names use lowercase letters, digits and separators '.', '_', '-', '/' "
            "(like 'sentiment' or 'team/resnet-50')",
        )
    return Reference(repository=repository, tag=tag, digest=digest)


def _invalid(text: str, why: str) -> UsageError:
    return UsageError(f"invalid image name {text!r}: {why}", "example: gpux build -t sentiment:1.0")
