"""Prometheus metrics: request counts and latency histograms by route template and status.

Metrics (``GET /metrics``, Prometheus text format):

- ``basketcast_http_requests_total{method, route, status}``;
- ``basketcast_http_request_duration_seconds{method, route, status}`` (histogram);
- ``basketcast_model_reloads_total{result}``: loaded / reloaded / unchanged / refused;
- ``basketcast_model_info{version}`` = 1 for the version served (per worker ``pid`` when several);
- ``basketcast_model_registry_info{name, alias, registry_version}`` = 1 for the registered version
  served when the server follows a registry alias (``BASKETCAST_MODEL_URI``);
- ``basketcast_recommendations_total{route, strategy}``: users answered by the recommendation
  routes (one per user of a batch), ``ranker`` or ``popular`` (cold start).

``route`` is the route's template (``/v1/users/{user_id}/recommendations``), ``<unmatched>``
for unknown paths, so label values stay few whatever clients send.

Several workers: every uvicorn worker is a process with its own memory, so a plain registry
would answer with the counts of whichever worker the scrape reaches. When
``PROMETHEUS_MULTIPROC_DIR`` is set (``basketcast.serving.server.serve`` sets it, to a fresh folder, whenever
``workers > 1``), prometheus_client's multiprocess mode is used: each worker writes its values to
memory-mapped files in that folder and ``/metrics`` — whichever worker answers — sums all of
them. That mode has no process/GC collectors; a worker that exits cleanly removes its
``model_info`` series (``mark_process_dead``), while counters and histograms of replaced workers
keep counting, as Prometheus expects of totals. The folder must be empty when the server starts
(serve() takes care of it). With one worker (or without the variable), a per-app registry with
the process and GC collectors is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from basketcast.serving.state import ReloadResult

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir() -> str | None:
    """The multiprocess folder if prometheus_client's multiprocess mode is on, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The app's metrics; ``render()`` gives the exposition (body, content type)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        if not self.multiprocess:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        labels = ("method", "route", "status")
        self.requests = Counter("basketcast_http_requests", "HTTP requests answered.", labels, registry=self.registry)
        self.latency = Histogram(
            "basketcast_http_request_duration_seconds",
            "Time to answer an HTTP request, seconds.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "basketcast_model_reloads", "Model (re)load attempts by result.", ("result",), registry=self.registry
        )
        self.model_info = Gauge(
            "basketcast_model_info",
            "1 for the model version served.",
            ("version",),
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self._version: str | None = None
        self.cache = Counter(
            "basketcast_prediction_cache",
            "Prediction cache lookups of the recommendation routes by result (hit/miss).",
            ("result",),
            registry=self.registry,
        )
        self.reads = Counter(
            "basketcast_online_reads",
            "Users answered by where their rows came from: fresh (online store), snapshot, degraded "
            "(online store unavailable, the snapshot answered).",
            ("freshness",),
            registry=self.registry,
        )
        self.orders = Counter(
            "basketcast_orders", "POST /v1/orders outcomes (created/duplicate/conflict/unavailable).", ("status",),
            registry=self.registry,
        )  # fmt: skip
        self.strategies = Counter(
            "basketcast_recommendations",
            "Users answered by the recommendation routes, by route and strategy (ranker: personal; popular: "
            "the cold-start list for a user the model does not know).",
            ("route", "strategy"),
            registry=self.registry,
        )
        self.write_path = Histogram(
            "basketcast_order_write_seconds",
            "POST /v1/orders: recording the order and recomputing the user's rows, seconds.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry_info = Gauge(
            "basketcast_model_registry_info",
            "1 for the registered version the served alias named at its last resolution (BASKETCAST_MODEL_URI).",
            ("name", "alias", "registry_version"),
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self._registry_labels: tuple[str, str, str] | None = None

    def observe_registry(self, info: Mapping[str, Any]) -> None:
        """Keep ``registry_info`` on the version the alias named at the last successful resolution."""
        if info.get("version") is None:
            return
        labels = (str(info["name"]), str(info.get("alias") or ""), str(info["version"]))
        if labels != self._registry_labels:
            if self._registry_labels is not None:
                self.registry_info.labels(*self._registry_labels).set(0)
            self.registry_info.labels(*labels).set(1)
            self._registry_labels = labels

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        method = method if method in METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def observe_strategy(self, route: str, strategy: str, users: int = 1) -> None:
        """Count ``users`` answered on ``route`` (its template) with ``strategy``."""
        self.strategies.labels(route, strategy).inc(users)

    def observe_reload(self, result: ReloadResult) -> None:
        """Count a (re)load and keep ``model_info`` on the version served."""
        self.reloads.labels(result.status).inc()
        if result.model_version != self._version:
            if self._version is not None:
                self.model_info.labels(self._version).set(0)
            if result.model_version is not None:
                self.model_info.labels(result.model_version).set(1)
            self._version = result.model_version

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this process, or of all workers in multiprocess mode.

        Ends with ``basketcast_prediction_cache_hit_ratio``: hits / lookups over every worker
        (computed from the summed counters; NaN before the first lookup).
        """
        registry = self.registry
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        hits = lookups = 0.0
        for family in registry.collect():
            if family.name == "basketcast_prediction_cache":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        lookups += sample.value
                        hits += sample.value if sample.labels.get("result") == "hit" else 0.0
        ratio = hits / lookups if lookups else float("nan")
        extra = (
            "# HELP basketcast_prediction_cache_hit_ratio Prediction cache hits / lookups, all workers.\n"
            "# TYPE basketcast_prediction_cache_hit_ratio gauge\n"
            f"basketcast_prediction_cache_hit_ratio {ratio!r}\n"
        ).replace("nan", "NaN")
        return generate_latest(registry) + extra.encode(), CONTENT_TYPE_LATEST

    def process_exit(self) -> None:
        """At worker shutdown: drop this process's live gauges in multiprocess mode."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request and counting it with its final status.

    It sits inside the server-error middleware: an exception escaping the app is counted as 500.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe_request(scope["method"], route, status, time.perf_counter() - start)
