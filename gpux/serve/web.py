"""The server's own web pages: a playground at ``/``, an OpenAPI 3.1 document at
``/openapi.json`` and API docs at ``/docs`` that render it.

Everything is self-contained (no CDN, works offline): each page is one HTML document with its
CSS and script (``static/``) inline, allowed by a Content-Security-Policy that names their
hashes, so no other script can run on the page. The scripts put user and server data into the
DOM through ``textContent`` only. The pages need no token: the playground sends the one typed
into it with each request.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gpux.serve.app import ServedModel
from gpux.serve.openapi import (
    model_description,
    openapi_document,
    pipeline_inputs,
    static_text,
)


def web_routes(models: list[ServedModel], *, token_required: bool = False) -> list[Route]:
    """``GET /``, ``GET /docs`` and ``GET /openapi.json`` for ``models``; register them
    outside the token guard (the pages are public; the playground sends the token itself)."""
    playground = _page(
        "GPUX playground",
        _PLAYGROUND_BODY,
        static_text("playground.js"),
        _page_data(models, token_required),
    )
    docs = _page("GPUX API", _DOCS_BODY, static_text("docs.js"))
    document = openapi_document(models, token_required=token_required)

    async def index(request: Request) -> Response:
        return playground

    async def docs_page(request: Request) -> Response:
        return docs

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return [
        Route("/", index, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


# --------------------------------------------------------------------------------- page data
def _page_data(models: list[ServedModel], token_required: bool) -> dict[str, Any]:
    return {
        "token_required": token_required,
        "models": [
            {
                "name": m.name,
                "version": m.version,
                "backend": m.model.placement.backend,
                "description": model_description(m),
                "inputs": pipeline_inputs(m),
            }
            for m in models
        ],
    }


def _page(title: str, body: str, script: str, data: Any = None) -> HTMLResponse:
    """One self-contained page; the policy allows exactly its own style and script."""
    style = static_text("web.css")
    embedded = ""
    if data is not None:
        # Inside <script type="application/json">: no "<" may end the element early.
        text = (
            json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        )
        embedded = f'<script id="data" type="application/json">{text}</script>\n'
    html = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{title}</title>\n<link rel="icon" href="data:,">\n'
        f"<style>{style}</style></head>\n<body>\n{body}\n"
        f"{embedded}<script>{script}</script>\n</body></html>\n"
    )
    policy = (
        "default-src 'none'; "
        f"script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return HTMLResponse(html, headers=headers)


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


_HEADER = """<header><h1>GPUX</h1><nav><a href="./">Playground</a><a href="docs">API docs</a>
<a href="openapi.json">openapi.json</a></nav></header>"""

_PLAYGROUND_BODY = (
    _HEADER
    + """
<main>
<section id="models" aria-label="Served models"></section>
<form id="form">
  <h2 id="title"></h2><p id="description"></p>
  <div id="fields"></div>
  <label id="token-field" hidden><span>Bearer token</span>
    <input id="token" type="password" autocomplete="off"></label>
  <label><input id="raw" type="checkbox"> add raw output tensors</label>
  <button id="run" type="submit">Run</button> <span id="status" role="status"></span>
</form>
<section id="output" hidden>
  <p id="meta"></p><p id="error" role="alert"></p><p id="hint"></p>
  <ul id="summary"></ul><pre id="json"></pre>
</section>
</main>"""
)

_DOCS_BODY = (
    _HEADER
    + """
<main><h2 id="title">Loading openapi.json…</h2><p id="description"></p><div id="operations"></div></main>"""
)
