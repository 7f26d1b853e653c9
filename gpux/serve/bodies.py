"""Request bodies in, answers out: content types, gzip both ways, bounded multipart forms, and the
heavy parts (JSON parsing, tensor decoding, encoding large answers) off the event loop.

The event loop answers health checks and reads every other request; a 60 MB body parsed on it
stalled ``/v2/health/live`` for seconds. Work on bodies over :data:`OFF_LOOP_BYTES` runs on
Starlette's thread pool instead (not a model's inference executor, which may be busy).
"""

from __future__ import annotations

import traceback
import zlib
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gpux.errors import InputError
from gpux.pipeline.runner import Pipeline
from gpux.serve import protocol
from gpux.serve.guards import HTTPError, RequestPolicy, too_large

T = TypeVar("T")

# Below this a thread hop (tens of microseconds) costs more than the work it moves.
OFF_LOOP_BYTES = 256 << 10

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
FORM = "multipart/form-data"


async def off_loop(size: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on a worker thread when ``size`` bytes make it heavy, else right here.

    A failure comes back as a value, not raised through the thread pool: an exception raised
    through it forms a reference cycle (exception -> traceback -> the awaiting frame -> its
    future -> exception) that keeps the worker's frames, and with them the whole parsed body,
    alive until the cyclic collector runs, which large lists of small ints do not trigger.
    RSS grew by the body's size at each bad 60 MB request."""
    if size < OFF_LOOP_BYTES:
        return work(*args)
    outcome = await run_in_threadpool(_capture, work, *args)
    if isinstance(outcome, _Failure):
        error = outcome.error
        del outcome
        try:
            raise error
        finally:
            del error  # this frame is in the traceback: it must not hold the exception too
    return outcome


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _capture(work: Callable[..., T], *args: Any) -> T | _Failure:
    try:
        return work(*args)
    except Exception as exc:
        # The worker's frames are done: drop their locals (the parsed body) now. Chained
        # causes carry frames of their own.
        seen: BaseException | None = exc
        for _ in range(16):  # a chain is short; a cycle in one must not loop forever
            if seen is None:
                break
            traceback.clear_frames(seen.__traceback__)
            seen = seen.__cause__ or seen.__context__
        return _Failure(exc)


def media_type(request: Request) -> str:
    return media_of(request.headers.get("content-type", ""))


def media_of(content_type: str) -> str:
    """The media type of a Content-Type value, without its parameters, lower case."""
    return content_type.partition(";")[0].strip().lower()


def require_media(request: Request, accepted: Collection[str], hint: str) -> str:
    """The request's media type, when it is one of ``accepted`` (any ``+json`` counts as JSON).

    A missing Content-Type is accepted (tritonclient and many scripts send none); what a browser
    can send cross-site without asking first (``text/plain``, forms) is refused, so a page on
    another site cannot post to this server through its visitor's browser. Browsers that send a
    body without a type are stopped by the ``Origin`` check (gpux/serve/guards.py)."""
    return accepted_media(media_type(request), accepted, hint)


def accepted_media(media: str, accepted: Collection[str], hint: str) -> str:
    """:func:`require_media` on a media type already read (:func:`media_of`)."""
    if not media or media in accepted or (JSON in accepted and media.endswith("+json")):
        return media
    raise HTTPError(415, f"this endpoint does not accept Content-Type '{media}'", hint)


async def read_body(request: Request, policy: RequestPolicy) -> bytes:
    """The whole body, inflated when gzip. Its size and arrival time are bounded by
    :class:`~gpux.serve.guards.Guards` as it is read; the inflated size here."""
    # Empty chunks dropped: Starlette's stream ends with b"", and a body that came whole
    # (gpux/serve/connection_httptools.py) is then the one chunk itself, not a copy of it.
    chunks = [chunk async for chunk in request.stream() if chunk]
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    del chunks
    return await inflated(body, request.headers.get("content-encoding", ""), policy)


async def inflated(body: bytes, content_encoding: str, policy: RequestPolicy) -> bytes:
    """``body`` inflated when its Content-Encoding is gzip, within the body limit."""
    if content_encoding.lower() == "gzip":
        return await off_loop(len(body), _inflate, body, policy.max_body_bytes)
    return body


def _inflate(body: bytes, limit: int) -> bytes:
    # Bounded: a small gzip bomb must not expand into all of memory.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, f"the body is not valid gzip: {exc}", "compress it again") from exc
    if len(inflated) > limit:
        raise too_large(limit)
    return inflated


def compressed(request: Request, response: Response, min_bytes: int) -> Response:
    """An inference answer in gzip when the client accepts it and it has at least ``min_bytes``
    (``--gzip-min-kb``; 0: never).

    Compressing costs more than it saves on a fast link, so it is off unless asked for: level 1
    (the fastest) took 2.4 ms for a 127 KB MiniLM JSON answer and halved it, 0.5 ms saved at
    1 Gbit/s, while the server's whole work for that request was 1.0 ms; clients that accept
    gzip (aiohttp, httpx and requests do by default) then got 320 instead of 807 answers/s at
    c=32 (benchmarks/request_path.py). On slower links it pays from a few KiB up.

    Only inference answers (Starlette's GZipMiddleware also compressed the web pages, and
    Chromium then never fired the playground's load event in the browser tests). The header
    length of a binary answer counts uncompressed bytes, which clients read after inflating."""
    if wants_gzip(request.headers.get("accept-encoding", ""), len(response.body), min_bytes):
        return gzipped(response)
    return response


def wants_gzip(accept_encoding: str, size: int, min_bytes: int) -> bool:
    """Whether an answer of ``size`` bytes goes out compressed (:func:`compressed`)."""
    return bool(min_bytes) and size >= min_bytes and "gzip" in accept_encoding.lower()


def gzipped(response: Response) -> Response:
    """``response`` with its body compressed (level 1) and the headers that say so."""
    packed = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    response.body = packed.compress(response.body) + packed.flush()
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Content-Length"] = str(len(response.body))
    return response


async def predict_items(
    request: Request, pipeline: Pipeline, policy: RequestPolicy
) -> tuple[list[dict[str, Any]], bool]:
    """The items of a predict request: JSON (an object, or a list for a batch) or multipart."""
    item_hint = 'send {"' + '": ..., "'.join(pipeline.input_names) + '": ...}'
    media = require_media(
        request, (JSON, FORM), f"{item_hint} as application/json, or the inputs as {FORM}"
    )
    if media == FORM:
        item = await _form_item(request, policy)
        size = sum(len(v) for v in item.values())
        return [await off_loop(size, pipeline.item, item)], False
    body = await read_body(request, policy)
    return await off_loop(len(body), _json_items, body, pipeline, item_hint)


async def _form_item(request: Request, policy: RequestPolicy) -> dict[str, Any]:
    """One item from form fields; file parts spool to disk past 1 MiB while they arrive, and
    the whole body stays under the body limit (counted by Guards as it is read)."""
    limit = policy.max_form_parts
    try:
        async with request.form(
            max_files=limit, max_fields=limit, max_part_size=policy.max_body_bytes
        ) as form:
            item: dict[str, Any] = {}
            for key, value in form.multi_items():
                item[key] = await value.read() if isinstance(value, UploadFile) else str(value)
            return item
    except HTTPException as exc:  # Starlette's answer to a malformed or oversized form
        if exc.detail.startswith(("Too many", "Part exceeded", "Field exceeded")):
            raise HTTPError(
                413,
                f"the form is too large: {exc.detail}",
                f"send one item per request, at most {limit} fields and {limit} files "
                "(gpux serve --max-form-parts)",
            ) from exc
        raise HTTPError(
            400, f"the multipart body is malformed: {exc.detail}", "send it again"
        ) from exc


def _json_items(body: bytes, pipeline: Pipeline, hint: str) -> tuple[list[dict[str, Any]], bool]:
    try:
        value = protocol.decode_json(body)
    except InputError as exc:
        raise InputError(exc.message, hint) from exc
    if isinstance(value, list):
        if not value:
            raise InputError("the request holds an empty list", "send at least one item")
        return [pipeline.item(v) for v in value], True
    return [pipeline.item(value)], False
