"""Request counts, a latency histogram and service gauges for GET /metrics, through ``prometheus_client``.

Each app gets its own ``CollectorRegistry`` (not the process-wide default), so several services in one process
(tests, benchmarks) never share or double-register series. Labels are the route *template*
(``/items/{item_id}/similar``), never the raw path, so a scan of random URLs cannot grow the label set without
bound; requests that match no route are counted under ``<unmatched>``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "clip4rec"

# name -> help; the values are read from the service at scrape time (see `Metrics.gauges`)
Gauges = dict[str, tuple[str, Callable[[], float]]]


class _ScrapeTimeGauges(Collector):
    """Gauges whose values are computed when /metrics is read (catalog size, batcher counts, uptime)."""

    def __init__(self, gauges: Gauges) -> None:
        self.gauges = gauges

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (help_, read) in self.gauges.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_, value=float(read()))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP requests by method, route and status code.",
                                ("method", "path", "status"), registry=self.registry)
        self.duration = Histogram(f"{PREFIX}_http_request_duration_seconds",
                                  "Time from request start to last response byte.", ("method", "path"),
                                  buckets=BUCKETS, registry=self.registry)
        self.started = time.time()

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        self.requests.labels(method, path, str(status)).inc()
        self.duration.labels(method, path).observe(seconds)

    def gauges(self, gauges: Gauges) -> None:
        """Register gauges read at scrape time; uptime is always one of them."""
        self.registry.register(_ScrapeTimeGauges(
            {**gauges, "uptime_seconds": ("Seconds since the service started.", lambda: time.time() - self.started)}))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task switching): times every HTTP request and counts its status."""

    def __init__(self, app: Callable, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe(scope.get("method", "?"), path, status["code"], time.perf_counter() - start)
