"""What runs inside a Ray Serve replica: GPUX's own server app, unchanged, behind Ray's HTTP proxy.

A replica loads its images with the code ``gpux serve`` uses (gpux/serve/load.py) and answers
with the app ``gpux serve`` runs (gpux/serve/app.py): the Open Inference Protocol, ``/predict``,
health, metrics, and GPUX's own batcher, which groups the requests that reach this replica
(benchmarks/scale.py, MiniLM at c=32 on 2 busy vCPUs: 34.2 rows/s batched vs 15.2 unbatched
behind Ray's proxy; Ray's ``@serve.batch`` in its place: 54.2 rows/s against 119.0, one noisy
run, and it would lose the padding and per-request failure isolation that GPUX's batcher has).
Ray's ingress takes a plain ASGI app, built on the replica after the constructor
(``__serve_build_asgi_app__``), so nothing loaded is ever pickled.

Every answer carries a ``GPUX-Replica`` header naming the replica and its process, and
``GET /gpux/replica`` tells where each of the replica's models really runs (GPUX's placement:
backend, providers, device) next to the GPUs Ray gave it. A multiplexed replica
(:func:`multiplexed_replica`) loads the image a request names in Ray's
``serve_multiplexed_model_id`` header, keeps the most recent few, and routes the request to
that image's app.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson
from ray import serve

from gpux.ray.spec import ReplicaSettings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from gpux.serve.app import ServedModel

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REPLICA_HEADER = "gpux-replica"
REPLICA_ROUTE = "/gpux/replica"
MODEL_ID_HEADER = "serve_multiplexed_model_id"


def served_app(names: list[str], settings: ReplicaSettings) -> tuple[Starlette, list[ServedModel]]:
    """The images loaded and the app that serves them, exactly as ``gpux serve`` makes them."""
    from gpux.serve.app import create_app
    from gpux.serve.load import load_served
    from gpux.serve.policy import RequestPolicy

    served = load_served(names, settings.backend, overrides=settings.overrides)
    policy = RequestPolicy(check_host=settings.check_host, allowed_hosts=settings.allowed_hosts)
    return create_app(served, token=settings.token, policy=policy), served


def identity() -> dict[str, Any]:
    """This replica as Ray knows it, and the process that answers."""
    import ray

    context = serve.get_replica_context()
    return {
        "replica": context.replica_id.unique_id,
        "deployment": context.deployment,
        "pid": os.getpid(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def placements(served: list[ServedModel]) -> dict[str, Any]:
    return {f"{m.name}:{m.version}": m.model.placement.to_json() for m in served}


def route_path(scope: Scope) -> str:
    """The path below Ray's route prefix (the proxy puts the prefix in ``root_path``)."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root) :] or "/" if root and path.startswith(root) else path


async def send_json(send: Send, status: int, body: dict[str, Any], tag: bytes) -> None:
    content = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (REPLICA_HEADER.encode(), tag),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def stamped(send: Send, tag: bytes) -> Send:
    """``send`` that adds the replica's header to the answer."""

    async def stamp(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (REPLICA_HEADER.encode(), tag)]
        await send(message)

    return stamp


class ReplicaApp:
    """GPUX's app for one or more images, with the replica's header on every answer and its
    placement route; lifespan messages go to GPUX's app (warm-up starts there)."""

    def __init__(self, app: Starlette, served: list[ServedModel]) -> None:
        self.app = app
        self.served = served
        self.about = {**identity(), "models": placements(served)}
        self.tag = f"{self.about['replica']} pid={self.about['pid']}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif route_path(scope) == REPLICA_ROUTE:
            await send_json(send, 200, self.about, self.tag)
        else:
            await self.app(scope, receive, stamped(send, self.tag))


@serve.ingress()
class ImageReplica:
    """A replica serving a fixed set of images, as one ``gpux serve NAME..`` would."""

    def __init__(self, names: list[str], settings: ReplicaSettings) -> None:
        self.names = names
        self.settings = settings

    def __serve_build_asgi_app__(self) -> ReplicaApp:
        app, served = served_app(self.names, self.settings)
        return ReplicaApp(app, served)


class LoadedImage:
    """One image's app on a multiplexed replica, its lifespan (warm-up) running until Ray evicts
    it; Ray calls ``__del__`` on eviction, from a worker thread."""

    def __init__(self, app: Starlette, served: list[ServedModel]) -> None:
        self.app = app
        self.served = served
        self._stack = contextlib.AsyncExitStack()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.evicted = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))

    def __del__(self) -> None:
        self.evicted = True
        loop = self._loop
        self._loop = None
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                asyncio.run_coroutine_threadsafe(self._stack.aclose(), loop)
        for served in self.served:
            served.executor.shutdown(wait=False)


class MultiplexedApp:
    """The ASGI app of a multiplexed replica: each request goes to the app of the image named
    in ``serve_multiplexed_model_id``, loaded on first use."""

    def __init__(self, load: Callable[[str], Awaitable[LoadedImage]], names: list[str]) -> None:
        self.load = load
        self.names = names
        self.about = identity()
        self.tag = f"{self.about['replica']} pid={self.about['pid']}".encode()
        self.loaded: dict[str, LoadedImage] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_accepted(receive, send)
            return
        if scope["type"] != "http":
            return
        if route_path(scope) == REPLICA_ROUTE:
            self.loaded = {k: v for k, v in self.loaded.items() if not v.evicted}
            models: dict[str, Any] = {}
            for image in self.loaded.values():
                models.update(placements(image.served))
            await send_json(send, 200, {**self.about, "models": models}, self.tag)
            return
        name = serve.get_multiplexed_model_id()
        if name not in self.names:
            await self.refuse(send, name)
            return
        from gpux.errors import GPUXError
        from gpux.serve.inference import STATUS_OF

        try:
            image = await self.load(name)
        except GPUXError as exc:
            status = next((s for t, s in STATUS_OF.items() if isinstance(exc, t)), 500)
            await send_json(send, status, {"error": exc.message, "hint": exc.hint}, self.tag)
            return
        self.loaded[name] = image
        await image.app(scope, receive, stamped(send, self.tag))

    async def refuse(self, send: Send, name: str) -> None:
        served = ", ".join(self.names)
        if not name:
            error = f"this deployment serves several images; name one in '{MODEL_ID_HEADER}'"
        else:
            error = f"this deployment does not serve '{name}'"
        hint = f"send the header '{MODEL_ID_HEADER}: NAME' with one of: {served}"
        await send_json(send, 400 if not name else 404, {"error": error, "hint": hint}, self.tag)


async def lifespan_accepted(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def multiplexed_replica(max_models: int) -> type:
    """A replica class that serves any of its images, at most ``max_models`` loaded at once
    (Ray evicts the least recently used; its proxy sends a model's requests to the replicas that
    have it loaded). A class per deployment: Ray's decorator takes the limit at definition."""

    @serve.ingress()
    class MultiplexedReplica:
        def __init__(self, names: list[str], settings: ReplicaSettings) -> None:
            self.names = names
            self.settings = settings
            # Not ``self.app``: Ray's ingress wrapper has a read-only property of that name.
            self.dispatcher: MultiplexedApp | None = None

        @serve.multiplexed(max_num_models_per_replica=max_models)  # type: ignore[untyped-decorator]
        async def image(self, name: str) -> LoadedImage:
            app, served = await asyncio.to_thread(served_app, [name], self.settings)
            loaded = LoadedImage(app, served)
            await loaded.start()
            return loaded

        def __serve_build_asgi_app__(self) -> MultiplexedApp:
            self.dispatcher = MultiplexedApp(self.image, self.names)
            return self.dispatcher

    return MultiplexedReplica
