"""Request counts and a latency histogram in the Prometheus text exposition format (0.0.4), no dependency.

Labels are the route *template* (``/items/{item_id}/similar``), never the raw path, so a scan of random URLs
cannot grow the label set without bound; requests that match no route are counted under ``<unmatched>``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any, Callable

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self, prefix: str = "clip4rec") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self.started = time.time()

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[(method, path, str(status))] += 1
            key = (method, path)
            buckets = self._buckets.setdefault(key, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
                    break
            else:
                buckets[-1] += 1
            self._sums[key] += seconds

    def count(self, path: str, status: int | None = None) -> int:
        with self._lock:
            return sum(n for (_, p, s), n in self._counts.items() if p == path and (status is None or s == str(status)))

    def render(self, gauges: dict[str, tuple[str, float]] | None = None) -> str:
        p = self.prefix
        lines = [f"# HELP {p}_http_requests_total HTTP requests by method, route and status code.",
                 f"# TYPE {p}_http_requests_total counter"]
        with self._lock:
            counts = dict(self._counts)
            buckets = {k: list(v) for k, v in self._buckets.items()}
            sums = dict(self._sums)
        for (method, path, status), n in sorted(counts.items()):
            lines.append(f'{p}_http_requests_total{{method="{_label(method)}",path="{_label(path)}",'
                         f'status="{status}"}} {n}')
        lines += [f"# HELP {p}_http_request_duration_seconds Time from request start to last response byte.",
                  f"# TYPE {p}_http_request_duration_seconds histogram"]
        for (method, path), counts_ in sorted(buckets.items()):
            labels = f'method="{_label(method)}",path="{_label(path)}"'
            cumulative = 0
            for bound, n in zip(BUCKETS, counts_):
                cumulative += n
                lines.append(f'{p}_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {cumulative}')
            cumulative += counts_[-1]
            lines.append(f'{p}_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {cumulative}')
            lines.append(f"{p}_http_request_duration_seconds_sum{{{labels}}} {sums[(method, path)]:.6f}")
            lines.append(f"{p}_http_request_duration_seconds_count{{{labels}}} {cumulative}")
        for name, (help_, value) in (gauges or {}).items():
            lines += [f"# HELP {p}_{name} {help_}", f"# TYPE {p}_{name} gauge", f"{p}_{name} {value:g}"]
        return "\n".join(lines) + "\n"


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
