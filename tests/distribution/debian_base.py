"""A base container image for ``gpux containerize`` tests, made from this machine's own Debian
packages: Docker Hub is out of reach and tests stay on loopback, so the files that ``dpkg -L``
lists for Debian's Python 3 and everything it depends on (the C library, libstdc++ that ONNX
Runtime needs ...) become one layer, in an OCI layout that skopeo copies to the test registry."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

ROOTS = ("python3-minimal", "libpython3.11-stdlib", "libstdc++6")
SKIPPED = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/locale/", "/usr/share/info/")
MERGED = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}


def _installed(package: str) -> bool:
    return subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0


def closure(roots: tuple[str, ...] = ROOTS) -> list[str]:
    """The installed packages ``roots`` need, by their Depends and Pre-Depends."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        package = todo.pop()
        if package in seen:
            continue
        seen.add(package)
        fields = subprocess.run(
            ["dpkg-query", "-W", "-f=${Pre-Depends}, ${Depends}", package],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for part in filter(None, (p.strip() for p in fields.split(","))):
            names = [re.sub(r"\(.*?\)", "", a).strip().split(":")[0] for a in part.split("|")]
            todo.extend(next(([n] for n in names if _installed(n)), []))
    return sorted(seen)


def _files(packages: list[str]) -> dict[str, str]:
    """Path in the image -> path here, for every regular file and symbolic link."""
    listed = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True, check=True)
    found: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        if not line.startswith("/") or line.startswith(SKIPPED):
            continue
        if os.path.isdir(line) and not os.path.islink(line):
            continue
        if not os.path.lexists(line):
            continue
        real_parent = os.path.realpath(os.path.dirname(line))  # merged /usr: /lib is usr/lib
        name = os.path.join(real_parent, os.path.basename(line)).lstrip("/")
        if name not in MERGED:  # /bin, /lib ...: the links written first
            found[name] = line
    return found


def write_layer(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        folders: set[str] = set()

        def folder(name: str) -> None:
            if name in folders or not name:
                return
            folder(os.path.dirname(name))
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
            folders.add(name)

        for name in ("tmp", "usr/bin", "usr/lib", "usr/lib64", "usr/sbin", "etc"):
            folder(name)
        for link, to in MERGED.items():
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, to
            tar.addfile(info)
        for name, source in sorted(_files(closure()).items()):
            folder(os.path.dirname(name))
            tar.add(source, arcname=name, recursive=False)


def write_layout(folder: Path, tag: str = "base") -> Path:
    """An OCI image layout at ``folder`` holding the base as ``tag``."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    layer_path = folder / "layer.tar"
    write_layer(layer_path)
    layer_digest = _put(blobs, layer_path.read_bytes())
    layer_path.unlink()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/usr/bin/python3"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": f"tests: Debian packages {' '.join(ROOTS)} and their needs"}],
    }
    config_bytes = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _put(blobs, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": (blobs / layer_digest[7:]).stat().st_size,
            }
        ],
    }
    manifest_bytes = json.dumps(manifest).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": manifest["mediaType"],
                "digest": _put(blobs, manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return folder


def _put(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}"
