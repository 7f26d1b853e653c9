"""Registry credentials, kept the way Docker keeps them, so `docker login` and `gpux login` share.

Lookup order for a registry host: ``GPUX_REGISTRY_USERNAME``/``GPUX_REGISTRY_PASSWORD``, then
Docker's config (``$DOCKER_CONFIG/config.json``, default ``~/.docker/config.json``): a
credential helper named in ``credHelpers``/``credsStore`` (``docker-credential-NAME get``), else
the base64 ``auths`` entry. Docker's identity-token convention holds: a helper answering the
user name ``<token>``, or an ``auths`` entry with ``identitytoken``, gives an OAuth2 refresh
token, which the registry client trades for access tokens. ``gpux login`` writes through the configured helper when there is
one, else into ``auths`` (file mode 0600, as Docker does). Secrets never reach messages.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpux.errors import UsageError
from gpux.store.atomic import atomic_file

IDENTITY_TOKEN_USER = "<token>"
"""The user name with which Docker's credential helpers say "the secret is an identity token"."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str  # where they came from, for messages ("environment", "~/.docker/config.json")
    identity_token: str | None = None
    """An OAuth2 refresh token (``docker login`` keeps one for registries that issue them)."""

    def __repr__(self) -> str:  # never print the password, even in a traceback
        return f"Credentials(username={self.username!r}, source={self.source!r})"

    @property
    def who(self) -> str:
        """Whose credentials, for messages."""
        if self.identity_token and self.username in ("", IDENTITY_TOKEN_USER):
            return "an identity token"
        return f"'{self.username}'"


def _from_pair(username: str, secret: str, source: str) -> Credentials:
    if username == IDENTITY_TOKEN_USER:
        return Credentials(username, "", source, identity_token=secret)
    return Credentials(username, secret, source)


def config_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def _read_config() -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read {path}: {exc}", "fix or remove the file (Docker's config)"
        ) from exc
    return data if isinstance(data, dict) else {}


def _keys(host: str) -> list[str]:
    """Docker Hub is stored under its historical key."""
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        return ["https://index.docker.io/v1/", host]
    return [host, f"https://{host}", f"http://{host}"]


def _helper(config: dict[str, Any], host: str) -> str | None:
    helpers = config.get("credHelpers") or {}
    for key in _keys(host):
        if key in helpers:
            return str(helpers[key])
    store = config.get("credsStore")
    return str(store) if store else None


def lookup(host: str) -> Credentials | None:
    username = os.environ.get("GPUX_REGISTRY_USERNAME")
    password = os.environ.get("GPUX_REGISTRY_PASSWORD")
    if username and password:
        return _from_pair(username, password, "GPUX_REGISTRY_USERNAME/PASSWORD")
    config = _read_config()
    helper = _helper(config, host)
    if helper and shutil.which(f"docker-credential-{helper}"):
        found = _run_helper(helper, "get", host)
        if found:
            source = f"docker-credential-{helper}"
            try:
                data = json.loads(found)
            except ValueError as exc:
                raise UsageError(
                    f"{source} get answered something that is not JSON",
                    "check the credential helper named in Docker's config",
                ) from exc
            if isinstance(data, dict):
                return _from_pair(
                    str(data.get("Username", "")), str(data.get("Secret", "")), source
                )
    auths = config.get("auths") or {}
    for key in _keys(host):
        entry = auths.get(key) if isinstance(auths, dict) else None
        if not isinstance(entry, dict):
            continue
        user, secret = "", ""
        if entry.get("auth"):
            try:
                user, _, secret = base64.b64decode(str(entry["auth"])).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
        token = entry.get("identitytoken")
        if isinstance(token, str) and token:
            return Credentials(user, secret, str(config_path()), identity_token=token)
        if user or secret:
            return _from_pair(user, secret, str(config_path()))
    return None


def store(host: str, username: str, password: str) -> str:
    """Save credentials for ``host``; returns where they went."""
    config = _read_config()
    helper = _helper(config, host)
    if helper and shutil.which(f"docker-credential-{helper}"):
        payload = json.dumps({"ServerURL": host, "Username": username, "Secret": password})
        _run_helper(helper, "store", payload)
        return f"docker-credential-{helper}"
    auths = config.setdefault("auths", {})
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[_keys(host)[0]] = {"auth": token}
    _write_config(config)
    return str(config_path())


def remove(host: str) -> bool:
    """Forget ``host``'s credentials; False when there were none."""
    config = _read_config()
    helper = _helper(config, host)
    if helper and shutil.which(f"docker-credential-{helper}"):
        _run_helper(helper, "erase", host)
    auths = config.get("auths") or {}
    removed = [key for key in _keys(host) if auths.pop(key, None) is not None]
    if removed:
        _write_config(config)
    return bool(removed)


def _write_config(config: dict[str, Any]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_file(path, readable=False) as out:  # 0600, as Docker writes it
        out.write(json.dumps(config, indent="\t").encode())


def _run_helper(helper: str, action: str, payload: str) -> str:
    result = subprocess.run(
        [f"docker-credential-{helper}", action],
        input=payload,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        if action == "get":
            return ""
        raise UsageError(
            f"docker-credential-{helper} {action} failed: {result.stdout.strip() or result.stderr.strip()}",
            "check the credential helper named in Docker's config",
        )
    return result.stdout
