"""``gpux serve``, in the foreground or detached (``-d``: see gpux/serve/daemon.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from gpux.cli.options import BACKENDS, GPUS_HELP, check_backend, check_gpus
from gpux.serve.policy import MIB, RequestPolicy, host_name, is_loopback

if TYPE_CHECKING:
    from gpux.serve.app import ServedModel
    from gpux.serve.grpc_service import GRPCOptions
    from gpux.serve.server import ServerSpec

DEFAULT_PORT = 8080
TRITON_GRPC_PORT = 8001  # the port Triton's clients expect; gRPC is off unless asked for
DEFAULT_POLICY = RequestPolicy()


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        names: list[str] = typer.Argument(
            ...,
            help="Images to serve (name[:tag]), one or more; or model folders as KServe mounts "
            "them (/mnt/models: a modelcar from gpux push --format modelcar).",
        ),
        host: str | None = typer.Option(
            None,
            "--host",
            help="Address to listen on (default 127.0.0.1; an image's serving.host is not used).",
        ),
        port: int | None = typer.Option(
            None, "--port", help="TCP port (default: the GPUXfile's serving.port, else 8080)."
        ),
        grpc_port: int = typer.Option(
            0,
            "--grpc-port",
            min=0,
            max=65535,
            help=f"Also serve the Open Inference Protocol over gRPC on this port, same --host "
            f"(Triton's is {TRITON_GRPC_PORT}; default 0: no gRPC).",
        ),
        grpc_tls_cert: Path | None = typer.Option(
            None, "--grpc-tls-cert", help="gRPC over TLS: the server's certificate (PEM file)."
        ),
        grpc_tls_key: Path | None = typer.Option(
            None, "--grpc-tls-key", help="gRPC over TLS: the certificate's private key (PEM file)."
        ),
        backend: str | None = typer.Option(None, "--backend", help=f"Override ({BACKENDS})."),
        gpus: str | None = typer.Option(None, "--gpus", help=GPUS_HELP),
        token: str | None = typer.Option(
            None,
            "--token",
            help="Require 'Authorization: Bearer TOKEN' (default: $GPUX_TOKEN when set).",
        ),
        max_batch_size: int | None = typer.Option(
            None, "--max-batch-size", min=1, help="Dynamic batching: most rows per model call."
        ),
        max_batch_delay_ms: float | None = typer.Option(
            None, "--max-batch-delay-ms", min=0, help="Longest wait for batch-mates (ms)."
        ),
        timeout: float | None = typer.Option(
            None, "--timeout", min=0.001, help="Seconds a request may wait for its answer (504)."
        ),
        max_queue: int | None = typer.Option(
            None, "--max-queue", min=1, help="Requests waiting beyond this get 503."
        ),
        preferred_batch_sizes: str | None = typer.Option(
            None,
            "--preferred-batch-sizes",
            help="Batch sizes the model runs, e.g. 1,8,32: batches are padded up to the next "
            "and each is warmed before the server is ready; 'none': no padding. Default: "
            "powers of two up to --max-batch-size on cuda/tensorrt, none on the CPU.",
        ),
        max_tokens: int | None = typer.Option(
            None,
            "--max-tokens",
            min=1,
            help="Generative models: most tokens one OpenAI API request may generate "
            "(max_tokens above it: 400). Default: serving.max_tokens, else the context length.",
        ),
        max_body_mb: float = typer.Option(
            DEFAULT_POLICY.max_body_bytes / MIB,
            "--max-body-mb",
            min=0.001,
            help="Largest request body in MiB, on every route, also after gzip (413).",
        ),
        max_form_parts: int = typer.Option(
            DEFAULT_POLICY.max_form_parts,
            "--max-form-parts",
            min=1,
            help="Most fields and most files in one multipart request (413).",
        ),
        header_timeout: float = typer.Option(
            DEFAULT_POLICY.header_timeout,
            "--header-timeout",
            min=0.1,
            help="Seconds a client may take to send a request's headers (408, then closed).",
        ),
        body_timeout: float = typer.Option(
            DEFAULT_POLICY.body_timeout,
            "--body-timeout",
            min=0.1,
            help="Seconds a client may take to send a request's body (408, then closed).",
        ),
        gzip_min_kb: float = typer.Option(
            DEFAULT_POLICY.gzip_min_bytes / 1024,
            "--gzip-min-kb",
            min=0,
            help="Compress inference answers of at least this many KiB for clients that accept "
            "gzip (e.g. 64 for clients on slow links); 0: never, fastest on fast links.",
        ),
        allowed_hosts: list[str] = typer.Option(
            [],
            "--allowed-host",
            help="Also answer to this Host name (repeatable; '*' for any). Without it, a "
            "loopback server answers only to localhost, 127.x and [::1] (DNS rebinding).",
        ),
        cors_origins: list[str] = typer.Option(
            [],
            "--cors-origin",
            help="Let pages of this origin (https://app.example.com) call the API (repeatable; "
            "'*' for any). Default: no CORS, and cross-site requests are refused.",
        ),
        workers: int = typer.Option(
            1,
            "--workers",
            min=1,
            max=64,
            help="Server processes sharing the port, each with its own copy of the models: "
            "for request rates one Python process cannot answer (a GPU fed by one process "
            "waits on it). /metrics and /stats add up every worker.",
        ),
        shared_engine: bool = typer.Option(
            False,
            "--shared-engine",
            help="With --workers: one more process loads each model once and runs every "
            "worker's calls, batched together; the workers parse, pre-process and answer. "
            "One copy of the weights, one CUDA context, full batches (docs/cli.md, serve).",
        ),
        detach: bool = typer.Option(
            False,
            "-d",
            "--detach",
            help="Run in the background once ready; print its id (see gpux ps, logs, stop).",
        ),
        name: str | None = typer.Option(
            None,
            "--name",
            help="Id of a detached server (default: the first image's name, made unique).",
        ),
        trust_code: bool = typer.Option(
            False,
            "--trust-code",
            help="Run the handler code of images not built on this machine (pulled, loaded).",
        ),
    ) -> None:
        """Serve images over HTTP: Open Inference Protocol v2, /predict, /metrics."""
        backend = check_backend(backend)
        gpus = check_gpus(gpus)
        from gpux.errors import UsageError
        from gpux.serve.daemon import check_id, check_port
        from gpux.store import Store, parse

        if name is not None and not detach:
            raise UsageError("--name is for detached servers", "add -d (--detach), or drop --name")
        from gpux.store.folder import absolute
        from gpux.store.folder import images as named_images

        names = [absolute(text) for text in names]  # a detached server runs in another folder
        images = named_images(names, Store())  # a missing image fails before any work
        from gpux.pipeline.loading import refuse_untrusted

        for image in images:  # in the foreground, also for -d: the user is here to answer
            refuse_untrusted(image, trust_code)
        configured = _configured_port(images[0].config)
        host = _listen_address(host, images[0])
        chosen_port = port or configured or DEFAULT_PORT
        origin = (
            ""
            if port
            else f"serving.port in the GPUXfile of {images[0].name}"
            if configured
            else "the default port"
        )
        check_port(host, chosen_port, origin)
        grpc = _grpc_options(host, chosen_port, grpc_port, grpc_tls_cert, grpc_tls_key)
        overrides = {
            "max_batch_size": max_batch_size,
            "max_batch_delay_ms": max_batch_delay_ms,
            "timeout": timeout,
            "max_queue": max_queue,
            "preferred_batch_sizes": _batch_sizes(preferred_batch_sizes),
            "max_tokens": max_tokens,
        }
        token = token or os.environ.get("GPUX_TOKEN") or None
        policy = _policy(
            host,
            max_body_mb=max_body_mb,
            max_form_parts=max_form_parts,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            gzip_min_kb=gzip_min_kb,
            allowed_hosts=allowed_hosts,
            cors_origins=cors_origins,
        )
        if token is None and not is_loopback(host):
            from gpux.cli.console import stderr

            stderr().print(
                f"[yellow]warning:[/yellow] listening on {host} without a token: anyone who can "
                "reach this machine can run the models; set --token or $GPUX_TOKEN"
            )
        if detach:
            from gpux.cli.console import stderr
            from gpux.serve import daemon

            options = [f"--{key.replace('_', '-')}={value}" for key, value in overrides.items()]
            options = [option for option in options if not option.endswith("=None")]
            options += _policy_options(policy, max_body_mb) + _grpc_flags(grpc)
            options += [f"--workers={workers}"] if workers > 1 else []
            options += ["--shared-engine"] if shared_engine else []
            options += [f"--gpus={gpus}"] if gpus is not None else []
            server = daemon.start(
                names,
                ([f"--backend={backend}"] if backend else [])
                + (["--trust-code"] if trust_code else [])
                + options,
                host=host,
                port=chosen_port,
                models=[image.name for image in images],
                name=check_id(name or parse(images[0].name).repository.rsplit("/", 1)[-1]),
                name_given=name is not None,
                token=token,
            )
            typer.echo(server.id)
            stderr().print(
                f"serving {', '.join(server.models)} at {server.url}"
                f"{f', gRPC{_grpc_text(grpc)}' if grpc else ''} "
                f"(pid {server.pid}); gpux logs {server.id}, gpux stop {server.id}"
            )
            return
        from gpux.serve.server import ServerSpec

        spec = ServerSpec(
            tuple(names),
            backend,
            host,
            chosen_port,
            token,
            overrides,
            policy,
            trust_code,
            grpc,
            workers,
            gpus,
            shared_engine,
        )
        _serve_foreground(spec)


def _grpc_options(
    host: str, http_port: int, port: int, cert: Path | None, key: Path | None
) -> GRPCOptions | None:
    """``--grpc-port`` and its TLS files, checked before anything loads; None for no gRPC."""
    from gpux.errors import UsageError
    from gpux.serve.daemon import check_port

    if not port:
        if cert or key:
            raise UsageError(
                "--grpc-tls-cert and --grpc-tls-key are for the gRPC port",
                f"add --grpc-port (e.g. --grpc-port {TRITON_GRPC_PORT})",
            )
        return None
    if port == http_port:
        raise UsageError(
            f"--grpc-port {port} is also the HTTP port", "give gRPC and HTTP different ports"
        )
    if (cert is None) != (key is None):
        raise UsageError(
            "gRPC over TLS needs both --grpc-tls-cert and --grpc-tls-key",
            "give the certificate and its private key, each a PEM file",
        )
    for flag, path in (("--grpc-tls-cert", cert), ("--grpc-tls-key", key)):
        if path is not None and not path.is_file():
            raise UsageError(f"{flag} {path} is not a file", "give the path of a PEM file")
    try:
        check_port(host, port, "")
    except UsageError as exc:
        raise UsageError(
            exc.message.replace("port", "--grpc-port", 1),
            "choose another --grpc-port; 'gpux ps' lists the servers gpux started",
        ) from exc
    from gpux.serve.grpc_service import GRPCOptions, credentials

    options = GRPCOptions(
        port, host, cert.resolve() if cert else None, key.resolve() if key else None
    )
    credentials(options)  # a broken certificate or key fails now, not once models are loaded
    return options


def _grpc_flags(grpc: GRPCOptions | None) -> list[str]:
    """The flags that give a detached server the same gRPC service."""
    if grpc is None:
        return []
    flags = [f"--grpc-port={grpc.port}"]
    if grpc.tls_cert is not None:
        flags += [f"--grpc-tls-cert={grpc.tls_cert}", f"--grpc-tls-key={grpc.tls_key}"]
    return flags


def _grpc_text(grpc: GRPCOptions | None) -> str:
    if grpc is None:
        return ""
    return f"{' (TLS)' if grpc.tls_cert else ''} at {grpc.address}"


def _batch_sizes(text: str | None) -> str | None:
    """``--preferred-batch-sizes`` checked here, kept as text (a detached server gets it so)."""
    if text is None or text.strip().lower() == "none":
        return None if text is None else "none"
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        from gpux.errors import UsageError

        raise UsageError(
            f"--preferred-batch-sizes '{text}' is not a list of sizes",
            "give positive integers separated by commas, e.g. 1,8,32, or 'none'",
        )
    return ",".join(str(n) for n in sorted(set(sizes)))


def _configured_port(config: dict[str, Any]) -> int | None:
    configured = config.get("gpuxfile", {}).get("serving", {}).get("port")
    return int(configured) if configured else None


def _listen_address(given: str | None, image: Any) -> str:
    """``--host``, else loopback. An image (pulled or loaded from anywhere) must not open the
    server to the network: its ``serving.host`` is only mentioned when it asks for more."""
    if given:
        return given
    wanted = image.config.get("gpuxfile", {}).get("serving", {}).get("host")
    if wanted and not is_loopback(str(wanted)):
        from gpux.cli.console import stderr

        stderr().print(
            f"note: {image.name} asks for serving.host {wanted}; listening on 127.0.0.1 "
            f"(only --host {wanted} listens there)"
        )
    return "127.0.0.1"


def _policy(
    host: str,
    *,
    max_body_mb: float,
    max_form_parts: int,
    header_timeout: float,
    body_timeout: float,
    gzip_min_kb: float = DEFAULT_POLICY.gzip_min_bytes / 1024,
    allowed_hosts: list[str],
    cors_origins: list[str],
) -> RequestPolicy:
    from gpux.errors import UsageError

    for name in allowed_hosts:
        if name != "*" and ("/" in name or not name.strip("[]")):
            raise UsageError(
                f"--allowed-host '{name}' is not a host name",
                "give the name alone, as clients put it in the URL: --allowed-host gpux.internal",
            )
    for origin in cors_origins:
        parts = urlsplit(origin)
        if origin != "*" and (
            parts.scheme not in ("http", "https") or not parts.netloc or parts.path
        ):
            raise UsageError(
                f"--cors-origin '{origin}' is not an origin",
                "give scheme://host[:port] without a path, e.g. --cors-origin https://app.example.com",
            )
    return RequestPolicy(
        max_body_bytes=int(max_body_mb * MIB),
        max_form_parts=max_form_parts,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        gzip_min_bytes=round(gzip_min_kb * 1024),
        check_host=is_loopback(host) or bool(allowed_hosts),
        allowed_hosts=_answered_hosts(host, allowed_hosts),
        cors_origins=tuple(origin.rstrip("/") for origin in cors_origins),
    )


def _answered_hosts(host: str, allowed_hosts: list[str]) -> tuple[str, ...]:
    """The ``--allowed-host`` names, plus the address listened on when it is a specific one:
    ``--host 10.0.0.5 --allowed-host gpux.internal`` must still answer http://10.0.0.5:PORT
    (``gpux serve -d`` checks readiness there)."""
    names = [host_name(name) if name != "*" else name for name in allowed_hosts]
    specific = host.strip("[]") not in ("", "0.0.0.0", "::")
    if names and specific and not is_loopback(host):
        names.append(host_name(host))
    return tuple(dict.fromkeys(names))


def _policy_options(policy: RequestPolicy, max_body_mb: float) -> list[str]:
    """The flags that give a detached server the same policy (defaults left out). The size
    goes as given: bytes turned back into MiB can fall under the flag's minimum."""
    options = [
        f"--{flag}={value!r}"
        for flag, value, default in (
            ("max-body-mb", max_body_mb, DEFAULT_POLICY.max_body_bytes / MIB),
            ("max-form-parts", policy.max_form_parts, DEFAULT_POLICY.max_form_parts),
            ("header-timeout", policy.header_timeout, DEFAULT_POLICY.header_timeout),
            ("body-timeout", policy.body_timeout, DEFAULT_POLICY.body_timeout),
            ("gzip-min-kb", policy.gzip_min_bytes / 1024, DEFAULT_POLICY.gzip_min_bytes / 1024),
        )
        if value != default
    ]
    options += [f"--allowed-host={name}" for name in policy.allowed_hosts]
    return options + [f"--cors-origin={origin}" for origin in policy.cors_origins]


def _serve_foreground(spec: ServerSpec) -> None:
    from gpux.cli.console import stderr
    from gpux.serve import server

    console = stderr()

    def announce(served: list[ServedModel]) -> None:
        for model in served:
            sizes = model.limits.preferred_batch_sizes
            console.print(
                f"serving {model.name} ({model.version}) on {model.model.placement.backend} "
                f"at http://{spec.host}:{spec.port}"
                + (
                    "/v1/chat/completions (OpenAI API)"
                    if model.generative is not None
                    else "/v1/audio/transcriptions (OpenAI API)"
                    if model.speech is not None
                    else f"/v2/models/{model.name}"
                )
                + (
                    f"; warming batch sizes {', '.join(map(str, sizes))}, ready once warm"
                    if sizes
                    else ""
                )
            )
        if spec.grpc is not None:
            console.print(f"serving the Open Inference Protocol over gRPC{_grpc_text(spec.grpc)}")

    if spec.workers > 1:
        console.print(
            f"serving {', '.join(spec.names)} at http://{spec.host}:{spec.port} from "
            f"{spec.workers} worker processes, "
            + (
                "with the models in one shared engine process"
                if spec.shared_engine
                else "each loading the models"
            )
            + (f"; gRPC{_grpc_text(spec.grpc)}" if spec.grpc is not None else "")
        )
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the handler
    # that was there before it: make that one a clean exit, so a drained server exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server.run(spec, announce)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
