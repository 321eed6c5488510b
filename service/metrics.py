"""Prometheus metrics, counted across every gunicorn worker.

Under gunicorn, ``service.gunicorn_conf`` points prometheus_client's
multiprocess mode at a folder in the state directory before any worker
imports this module, and ``GET /metrics`` sums every worker's files. Outside
gunicorn (tests, the CLI) the process's own registry is served.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

REQUESTS = Counter("lineup_http_requests_total", "HTTP requests answered",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("lineup_http_request_duration_seconds",
                    "Time to answer a request; strategy is empty except for recommendations",
                    ["endpoint", "strategy"],
                    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
RECOMMENDATIONS = Counter("lineup_recommendations_total", "Recommendation lists served",
                          ["strategy"])
SWAPS = Counter("lineup_model_swaps_total", "Models swapped into a worker's slot")
REJECTIONS = Counter("lineup_candidate_rejections_total", "Candidate runs rejected, by check",
                     ["check"])
SERVING_RUN = Gauge("lineup_serving_run_info", "1 for the run a live worker serves",
                    ["run_id"], multiprocess_mode="livemax")
MODEL_AGE = Gauge("lineup_model_age_seconds", "Age of the serving model's run",
                  multiprocess_mode="livemax")
SELECTION_SECONDS = Histogram("lineup_selection_duration_seconds", "Time one selection took",
                              buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))
CHECK_SECONDS = Histogram("lineup_check_duration_seconds", "Time one sanity check took",
                          ["check"], buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 30, 120))


@functools.cache
def recommendations_counted(strategy: str) -> Any:
    """Return the RECOMMENDATIONS counter of one strategy, looked up once, not per request."""
    return RECOMMENDATIONS.labels(strategy)


def count_recommendation(strategy: str) -> None:
    """Count one list served, and label this request's latency with its strategy."""
    recommendations_counted(strategy).inc()
    g.lineup_strategy = strategy


def _registry() -> CollectorRegistry:
    # prometheus_client picks its value class at import, from PROMETHEUS_MULTIPROC_DIR.
    if values.ValueClass is values.MutexValue:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def init_app(app: Flask) -> None:
    """Time and count every request, and serve ``GET /metrics``."""

    @app.before_request
    def start_timer() -> None:
        g.lineup_started = time.perf_counter()

    # Labelled children, looked up once per (endpoint, method, status, strategy), not per request.
    children: dict[tuple[str, str, int, str], tuple[Any, Any]] = {}

    @app.after_request
    def count(response: Response) -> Response:
        rule = request.url_rule
        key = (rule.rule if rule else "unmatched", request.method, response.status_code,
               g.get("lineup_strategy", ""))
        child = children.get(key)
        if child is None:
            child = children[key] = (REQUESTS.labels(key[0], key[1], str(key[2])),
                                     LATENCY.labels(key[0], key[3]))
        child[0].inc()
        started = g.get("lineup_started")
        if started is not None:
            child[1].observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        """Serve the metrics in Prometheus text format."""
        return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
