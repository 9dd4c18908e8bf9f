"""The process's Prometheus metrics, and how they are rendered for a scrape.

Labels are bounded sets only (route templates, methods, statuses, operation names, outcome
codes): never a token, a user id, a raw path or a message. With several workers, set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory shared by them (before they start): every
worker then writes its values there and a scrape of any worker adds them all up
(prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from errors import ServiceError

logger = logging.getLogger(__name__)

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)

HTTP_REQUESTS = Counter(
    "memory_http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "memory_http_request_duration_seconds",
    "HTTP request latency until the last byte of the reply (a whole stream for SSE)",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
STORAGE_DURATION = Histogram(
    "memory_storage_operation_duration_seconds",
    "Storage operation latency by operation, backend and outcome (ok, or the HTTP status"
    " of the domain error it raised)",
    ["operation", "backend", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
POOL_IN_USE = Gauge(
    "memory_db_pool_connections_in_use",
    "Database pool connections held by a request (postgres/embedded backends)",
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "memory_db_pool_waiting_requests",
    "Requests queued for a database pool connection (postgres/embedded backends)",
    multiprocess_mode="livesum",
)
LLM_CALLS = Counter(
    "memory_llm_calls_total",
    "Chat-completion calls by mode (complete, stream) and outcome (ok, timeout,"
    " upstream_error, cancelled, error)",
    ["mode", "outcome"],
)
LLM_DURATION = Histogram(
    "memory_llm_call_duration_seconds",
    "Chat-completion call latency (a stream: until its last chunk)",
    ["mode", "outcome"],
    buckets=_UPSTREAM_BUCKETS,
)
LLM_TOKENS = Counter(
    "memory_llm_tokens_total",
    "Tokens the chat-completions API reported (usage), by kind (prompt, completion)",
    ["mode", "kind"],
)
EMBEDDINGS_CALLS = Counter(
    "memory_embeddings_calls_total", "Embeddings API calls by outcome", ["outcome"]
)
EMBEDDINGS_DURATION = Histogram(
    "memory_embeddings_call_duration_seconds",
    "Embeddings API call latency",
    ["outcome"],
    buckets=_UPSTREAM_BUCKETS,
)
EMBEDDINGS_TOKENS = Counter(
    "memory_embeddings_tokens_total", "Tokens the embeddings API reported (usage)"
)
AUTH_FAILURES = Counter(
    "memory_auth_failures_total", "Refused bearer tokens by reason (a short code)", ["reason"]
)
COMPACTIONS = Counter(
    "memory_compactions_total",
    "Episode compactions by outcome (compacted, skipped, failed)",
    ["outcome"],
)
RECALLS = Counter("memory_recalls_total", "Recalls of past episodes into a chat prompt")
RECALLED_EPISODES = Counter(
    "memory_recalled_episodes_total", "Episodes recalls added to chat prompts"
)

_OUTCOME = re.compile(r"^[a-z_]{1,32}$")


def bounded_code(value: object, default: str) -> str:
    """`value` when it is a short lower-case code, else `default`: a label never carries
    arbitrary text (so never a token, an id or a message)."""
    return value if isinstance(value, str) and _OUTCOME.match(value) else default


def outcome_of(exc: BaseException) -> str:
    """A failed call's outcome label: the domain error's HTTP status, `cancelled`, else
    `error`."""
    if isinstance(exc, ServiceError):
        return str(exc.status_code)
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"


# --- functions other modules call ---------------------------------------------------------


# A series' child looked up once (`labels()` takes a lock and hashes every call: about three
# times the cost of the update itself). Label values are bounded sets, so is this cache.
@functools.lru_cache(maxsize=4096)
def _request_series(route: str, method: str, status: str) -> tuple[Any, Any]:
    return HTTP_REQUESTS.labels(route, method, status), HTTP_DURATION.labels(route, method, status)


@functools.lru_cache(maxsize=1024)
def _storage_series(operation: str, backend: str, outcome: str) -> Any:
    return STORAGE_DURATION.labels(operation, backend, outcome)


def observe_request(route: str, method: str, status: str, seconds: float) -> None:
    requests, duration = _request_series(route, method, status)
    requests.inc()
    duration.observe(seconds)


def observe_storage_operation(operation: str, backend: str, seconds: float, outcome: str) -> None:
    _storage_series(operation, backend, outcome).observe(seconds)


def set_pool_usage(in_use: int, waiting: int) -> None:
    POOL_IN_USE.set(in_use)
    POOL_WAITING.set(waiting)


def observe_embeddings_call(seconds: float, outcome: str, tokens: int | None) -> None:
    """One embeddings API call: its latency, `outcome` (`ok`, or a short error code such as
    `timeout`, `upstream_error`) and the tokens its usage reported (None: not reported)."""
    label = bounded_code(outcome, "error")
    EMBEDDINGS_CALLS.labels(label).inc()
    EMBEDDINGS_DURATION.labels(label).observe(seconds)
    if tokens:
        EMBEDDINGS_TOKENS.inc(tokens)


def count_recall(episodes: int) -> None:
    """One recall that added `episodes` past episodes to a chat prompt (0 counts too)."""
    RECALLS.inc()
    if episodes > 0:
        RECALLED_EPISODES.inc(episodes)


def count_auth_failure(reason: str) -> None:
    AUTH_FAILURES.labels(bounded_code(reason, "invalid_token")).inc()


def count_compaction(outcome: str) -> None:
    COMPACTIONS.labels(bounded_code(outcome, "failed")).inc()


# --- exposition ---------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: this process's registry, or in multiprocess mode every worker's
    files (read anew at each scrape)."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def render() -> bytes:
    """The text exposition format of all metrics (blocking file reads in multiprocess mode:
    call it from a thread)."""
    return generate_latest(scrape_registry())


def start_listener(host: str, port: int) -> Callable[[], None] | None:
    """Serve /metrics on its own port (a thread of this process); returns how to stop it. In
    multiprocess mode a scrape of any worker sees all, so when another worker holds the port
    already this one serves none (None)."""
    try:
        server, thread = start_http_server(port, addr=host, registry=scrape_registry())
    except OSError:
        if multiprocess_dir() is None:
            raise
        logger.info("metrics port %s is served by another worker", port)
        return None
    logger.info("metrics on http://%s:%s/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


def process_exited() -> None:
    """Drop this process's live gauges (pool usage) from the multiprocess directory."""
    if multiprocess_dir() is not None:
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
