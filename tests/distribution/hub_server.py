"""A stand-in for the Hugging Face Hub on 127.0.0.1: enough of it that huggingface_hub (2.x)
downloads files and snapshots from it unchanged, pointed there by ``HF_ENDPOINT``.

What huggingface_hub calls, and what it gets here:

* ``GET /api/models/{org}/{name}[/revision/{rev}]`` (``model_info``, ``repo_info``): the commit
  (``sha``) and the files (``siblings``, with sizes when asked ``?blobs=true``);
* ``GET /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=...`` (``list_repo_tree``, which
  ``snapshot_download`` uses): one page of files and folders;
* ``HEAD`` / ``GET /{org}/{name}/resolve/{rev}/{path}`` (``hf_hub_download``): ``X-Repo-Commit``
  and ``ETag``; small files are answered there, .onnx files are "LFS" files as on the Hub: a 302
  to a CDN (a second server, so another origin) with ``X-Linked-Etag`` and ``X-Linked-Size``.
  huggingface_hub stops at a redirect off the Hub's origin and leaves its token behind.

Errors as the Hub sends them: ``X-Error-Code`` RepoNotFound, RevisionNotFound, EntryNotFound. A
repository that needs a token answers 401 RepoNotFound without one (as the Hub does for private
repositories) and 401 "Invalid credentials in Authorization header" with a wrong one.

Every request is logged with its Authorization header, so tests can check where a token went
and count downloads; all but ``GET /api/agent-harnesses`` (huggingface_hub's registry of coding
agents, fetched once a day for its User-Agent header), which gets an empty registry.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".onnx",)


@dataclass
class Logged:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    authorization: str | None
    served: str | None = None  # the repository file whose bytes went out


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    token: str | None = None  # required as "Authorization: Bearer <token>" when set


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """``HubServer()`` serves until ``stop()``; ``add_repo`` and ``commit`` change what it holds."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Logged] = []
        self._blobs: dict[str, tuple[str, bytes]] = {}  # sha256 -> (file name, bytes), for the CDN
        self._lock = threading.Lock()
        self._hub = self._serve("hub")
        self._cdn = self._serve("cdn")
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self.running = True

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, token: str | None = None) -> str:
        """A repository whose ``main`` holds ``files``; returns the commit."""
        self.repos[repo_id] = Repo(token=token)
        return self.commit(repo_id, files)

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit holding exactly ``files``, and ``branch`` moved to it."""
        repo = self.repos[repo_id]
        material = hashlib.sha1(f"{repo_id}\n{repo.refs.get(branch)}\n".encode())
        for name in sorted(files):
            material.update(f"{name} {git_blob_id(files[name])}\n".encode())
        commit = material.hexdigest()
        with self._lock:
            repo.commits[commit] = dict(files)
            repo.refs[branch] = commit
            for name, data in files.items():
                self._blobs[hashlib.sha256(data).hexdigest()] = (name, data)
        return commit

    def downloads(self, name: str) -> int:
        """How many times the bytes of the file ``name`` were sent (from any repository)."""
        return sum(1 for entry in self.requests if entry.served == name)

    def stop(self) -> None:
        if self.running:
            for server in (self._hub, self._cdn):
                server.shutdown()
                server.server_close()
            self.running = False

    def _serve(self, role: str) -> http.server.ThreadingHTTPServer:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub._answer(self, role, "GET")

            def do_HEAD(self) -> None:
                hub._answer(self, role, "HEAD")

            def log_message(self, format: str, *args: object) -> None:
                pass  # the request log is hub.requests

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    # --- answers ---------------------------------------------------------------------------

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, role: str, method: str) -> None:
        if handler.path == "/api/agent-harnesses":  # fetched once a day to fill the User-Agent
            return Reply(handler, method).send_json({"standardEnvVars": [], "harnesses": {}})
        entry = Logged(role, method, handler.path, handler.headers.get("Authorization"))
        with self._lock:
            self.requests.append(entry)
        url = urlsplit(handler.path)
        parts = [unquote(part) for part in url.path.split("/")[1:]]
        reply = Reply(handler, method)
        if role == "cdn":
            blob = self._blobs.get(parts[0]) if parts else None
            if blob is None:
                return reply.send(404)
            entry.served = blob[0] if method == "GET" else None
            return reply.send(200, blob[1])
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            query = parse_qs(url.query)
            if not rest:
                return self._model_info(reply, repo_id, "main", query)
            if rest[0] == "revision" and len(rest) == 2:
                return self._model_info(reply, repo_id, rest[1], query)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(reply, repo_id, rest[1], "/".join(rest[2:]), query)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(
                reply, entry, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            )
        reply.send(404)

    def _lookup(
        self, reply: Reply, repo_id: str, revision: str
    ) -> tuple[str, dict[str, bytes]] | None:
        """The commit and files a revision names, or None once an error has been sent."""
        authorization = reply.handler.headers.get("Authorization")
        repo = self.repos.get(repo_id)
        wrong = repo is not None and authorization not in (None, f"Bearer {repo.token}")
        if repo is not None and repo.token is not None and wrong:
            reply.send(
                401, headers={"X-Error-Message": "Invalid credentials in Authorization header"}
            )
            return None
        if repo is None or (repo.token is not None and authorization is None):
            # The Hub does not tell a missing repository from one the caller may not see.
            status = 401 if authorization is None else 404
            reply.send(
                status,
                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
            return None
        commit = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            reply.send(
                404,
                headers={"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"},
            )
            return None
        return commit, repo.commits[commit]

    def _model_info(
        self, reply: Reply, repo_id: str, revision: str, query: dict[str, list[str]]
    ) -> None:
        found = self._lookup(reply, repo_id, revision)
        if found is None:
            return
        commit, files = found
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for name in sorted(files):
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                sibling.update(size=len(files[name]), blobId=git_blob_id(files[name]))
                if name.endswith(LFS_SUFFIXES):
                    sha256 = hashlib.sha256(files[name]).hexdigest()
                    sibling["lfs"] = {
                        "sha256": sha256,
                        "size": len(files[name]),
                        "pointerSize": 134,
                    }
            siblings.append(sibling)
        repo = self.repos[repo_id]
        info = {
            "_id": commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit,
            "private": repo.token is not None,
            "siblings": siblings,
        }
        reply.send_json(info)

    def _tree(
        self, reply: Reply, repo_id: str, revision: str, folder: str, query: dict[str, list[str]]
    ) -> None:
        found = self._lookup(reply, repo_id, revision)
        if found is None:
            return
        _, files = found
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict[str, Any]] = {}
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                path = prefix + "/".join(rest[:depth])
                entries.setdefault(
                    path, {"type": "directory", "oid": git_blob_id(path.encode()), "path": path}
                )
                if not recursive:
                    break
            if len(rest) > 1 and not recursive:
                continue
            data = files[name]
            item: dict[str, Any] = {
                "type": "file",
                "oid": git_blob_id(data),
                "size": len(data),
                "path": name,
            }
            if name.endswith(LFS_SUFFIXES):
                item["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries[name] = item
        reply.send_json(list(entries.values()))

    def _resolve(
        self, reply: Reply, entry: Logged, repo_id: str, revision: str, filename: str
    ) -> None:
        found = self._lookup(reply, repo_id, revision)
        if found is None:
            return
        commit, files = found
        data = files.get(filename)
        if data is None:
            reply.send(
                404,
                headers={
                    "X-Error-Code": "EntryNotFound",
                    "X-Error-Message": "Entry not found",
                    "X-Repo-Commit": commit,
                },
            )
            return
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            reply.send(
                302,
                headers={
                    "Location": f"{self.cdn_url}/{sha256}",
                    "X-Repo-Commit": commit,
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{git_blob_id(sha256.encode())}"',
                },
            )
            return
        entry.served = filename if reply.method == "GET" else None
        reply.send(200, data, headers={"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"'})


@dataclass
class Reply:
    handler: http.server.BaseHTTPRequestHandler
    method: str

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.handler.send_response(status)
        for name, value in (headers or {}).items():
            self.handler.send_header(name, value)
        self.handler.send_header("Content-Length", str(len(body)))
        self.handler.end_headers()
        if self.method == "GET" and body:
            self.handler.wfile.write(body)

    def send_json(self, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send(200, body, headers={"Content-Type": "application/json"})
