"""Prometheus metrics per model, in a registry of the server's own (not the process global).

Labels come from a closed set: the served models' names (fixed at start), the endpoint kinds and
the HTTP statuses. A name taken from a URL never becomes a label: requests for models that are
not served count under ``model=""``, so a client cannot grow ``/metrics`` one series per name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


UNSERVED = ""


class Metrics:
    def __init__(self, served: Iterable[str] = ()) -> None:
        self.served = frozenset(served)
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._inflight_series: dict[str, Gauge] = {}
        self._batch_series: dict[str, tuple[Histogram, Histogram]] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gpux_requests",
            "Requests by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gpux_request_seconds",
            "Request latency, from the first byte read to the response.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # multiprocess_mode: how worker processes' values add up (gpux/serve/workers.py);
        # ignored in a single process.
        self.inflight = Gauge(
            "gpux_inflight_requests",
            "Requests being run.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.backend = Gauge(
            "gpux_model_backend",
            "1 for the backend each model runs on.",
            ["model", "backend"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.batch_size = Histogram(
            "gpux_batch_size",
            "Rows (or items) per model call formed by dynamic batching, padding included.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.padding_rows = Counter(
            "gpux_batch_padding_rows",
            "Rows added to batches to reach a preferred batch size (cut off before answering).",
            ["model"],
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "gpux_queue_seconds",
            "Time the oldest request of each model call waited in the queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Generation (the OpenAI routes, gpux/serve/generation.py).
        self.tokens_in = Counter(
            "gpux_prompt_tokens",
            "Prompt tokens read by generations (and texts embedded through /v1/embeddings).",
            ["model"],
            registry=self.registry,
        )
        self.tokens_out = Counter(
            "gpux_generated_tokens",
            "Tokens generated, counted as they are decoded.",
            ["model"],
            registry=self.registry,
        )
        self.generations = Counter(
            "gpux_generations",
            "Generations by how they ended: stop, length, cancelled (the client went away or "
            "timed out) or error.",
            ["model", "finish"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "gpux_time_to_first_token_seconds",
            "From a generation's arrival (queue included) to its first generated token.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inter_token = Histogram(
            "gpux_inter_token_seconds",
            "Between two tokens of one generation (the decoding of every other generation "
            "interleaved with it included).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generation_batch_rows = Histogram(
            "gpux_generation_batch_rows",
            "Rows each onnxruntime-genai generator started with: text generations that arrived "
            "together with the same search options, decoded as one batch (1: alone).",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.load_seconds = Gauge(
            "gpux_model_load_seconds",
            "Time to load each model.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="max",
        )

        # Per instance of a model on several devices (--gpus, gpux/runtime/instances.py).
        self.instance_calls = Counter(
            "gpux_instance_calls",
            "Model calls (formed batches) by model, instance and its device (backend:index).",
            ["model", "instance", "device"],
            registry=self.registry,
        )
        self.instance_rows = Counter(
            "gpux_instance_rows",
            "Rows run by model and instance (padding included).",
            ["model", "instance", "device"],
            registry=self.registry,
        )
        self.instance_busy = Counter(
            "gpux_instance_busy_seconds",
            "Time each instance spent running calls.",
            ["model", "instance", "device"],
            registry=self.registry,
        )

    def instance_call(self, model: str, index: int, device: str, rows: int, seconds: float) -> None:
        labels = (model, str(index), device)
        self.instance_calls.labels(*labels).inc()
        self.instance_rows.labels(*labels).inc(rows)
        self.instance_busy.labels(*labels).inc(seconds)

    def batch(self, model: str, rows: int, waited: float) -> None:
        series = self._batch_series.get(model)
        if series is None:  # once per served model, as for requests
            series = self._batch_series[model] = (
                self.batch_size.labels(model),
                self.queue_seconds.labels(model),
            )
        series[0].observe(rows)
        series[1].observe(waited)

    def padding(self, model: str, rows: int) -> None:
        self.padding_rows.labels(model).inc(rows)

    def loaded(self, model: str, backend: str, seconds: float) -> None:
        self.backend.labels(model, backend).set(1)
        self.load_seconds.labels(model).set(seconds)

    def request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        model = model if model in self.served else UNSERVED
        key = (model, endpoint, status)
        series = self._request_series.get(key)
        if series is None:  # labels() costs ~6 us a call: once per closed-set label tuple
            series = (
                self.requests.labels(model, endpoint, str(status)),
                self.latency.labels(model, endpoint),
            )
            self._request_series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    @contextlib.contextmanager
    def in_flight(self, model: str) -> Iterator[None]:
        gauge = self.in_flight_gauge(model)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def in_flight_gauge(self, model: str) -> Gauge:
        """The in-flight series of a served model (the ``infer`` route counts with it itself:
        a generator context manager cost ~3% of its event loop time)."""
        gauge = self._inflight_series.get(model)
        if gauge is None:  # labels() costs ~6 us a call: once per served model
            gauge = self._inflight_series[model] = self.inflight.labels(model)
        return gauge

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # workers: everyone's values, summed
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
