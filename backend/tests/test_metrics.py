"""Prometheus metrics: scraped from GET /metrics (or METRICS_PORT), the counters move for
requests, storage operations, the pool, LLM calls, auth failures, compactions, embeddings and
recalls; no token or user id in any label; several workers add up (multiprocess mode)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from config import BACKEND_DIR
from models import MemoryField, User
from repositories.postgres import PostgresMemoryRepository
from services.observability.metrics import count_recall, observe_embeddings_call
from services.observability.storage import timed_repository
from services.storage.database import create_pool
from tests.conftest import CHAT_LLM_BASE_URL, asgi_client, make_settings, running_app
from tests.llm_stand_in import LLMStandIn
from tests.tokens import TEST_JWT_SECRET, bearer, supabase_claims, user_token

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class TestRequestsAndStorage:
    async def test_requests_by_route_template_method_and_status(
        self, client: httpx.AsyncClient
    ) -> None:
        user_id = uuid.uuid4()
        token = user_token(user_id)
        before = await scrape(client)
        for field in ("identity", "episodic_memory"):
            assert (await client.get(f"/api/memory/{field}", headers=bearer(token))).is_success
        assert (await client.get("/api/memory/nope", headers=bearer(token))).status_code == 404
        after_response = await client.get("/metrics")
        after = parse(after_response.text)

        route = {"route": "/api/memory/{field}", "method": "GET"}
        assert moved(before, after, "memory_http_requests_total", **route, status="200") == 2
        assert moved(before, after, "memory_http_requests_total", **route, status="404") == 1
        assert (
            moved(
                before,
                after,
                "memory_http_request_duration_seconds_count",
                **route,
                status="200",
            )
            == 2
        )
        # Labels hold templates, never the user's id, the token or a raw path.
        assert str(user_id) not in after_response.text
        assert token not in after_response.text
        assert "/api/memory/identity" not in after_response.text

    async def test_unknown_paths_share_one_label(self, client: httpx.AsyncClient) -> None:
        before = await scrape(client)
        await client.get(f"/no/such/{uuid.uuid4()}")
        after = await scrape(client)
        labels = {"route": "unmatched", "method": "GET", "status": "404"}
        assert moved(before, after, "memory_http_requests_total", **labels) == 1

    async def test_storage_operations_by_operation_backend_and_outcome(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = bearer(user_token(uuid.uuid4()))
        before = await scrape(client)
        await client.get("/api/memory", headers=auth)
        stale = {**auth, "If-Match": '"12345"'}
        assert (
            await client.put("/api/memory/identity", json={"a": 1}, headers=stale)
        ).status_code == 412
        after = await scrape(client)
        name = "memory_storage_operation_duration_seconds_count"
        read = {"operation": "read_document", "backend": "embedded", "outcome": "ok"}
        assert moved(before, after, name, **read) == 1
        write = {"operation": "set_field", "backend": "embedded", "outcome": "412"}
        assert moved(before, after, name, **write) == 1

    async def test_auth_failures_by_reason(self, client: httpx.AsyncClient) -> None:
        before = await scrape(client)
        assert (await client.get("/api/me")).status_code == 401
        assert (await client.get("/api/me", headers=bearer("a.b.c"))).status_code == 401
        after = await scrape(client)
        assert moved(before, after, "memory_auth_failures_total", reason="missing") == 1
        assert moved(before, after, "memory_auth_failures_total", reason="malformed") == 1


class TestPool:
    async def test_waiters_are_counted_and_gauges_follow_operations(
        self, database_dsn: str
    ) -> None:
        """Two slots held: three operations queue on the FIFO semaphore, counted exactly;
        after each operation the gauges hold the pool's state."""
        settings = make_settings()
        pool = await create_pool(database_dsn, settings, min_size=0, max_size=2)
        try:
            repository = PostgresMemoryRepository(pool, settings)
            user_id = uuid.uuid4()
            user = User(id=user_id, claims=supabase_claims(user_id), token=user_token(user_id))
            turns = repository._turns
            await turns.__aenter__()
            await turns.__aenter__()
            waiting = [asyncio.create_task(repository.read_document(user)) for _ in range(3)]
            await asyncio.sleep(0)  # each task runs up to the semaphore, where it queues
            assert repository.pool_waiters() == 3
            await turns.__aexit__(None, None, None)
            await turns.__aexit__(None, None, None)
            await asyncio.gather(*waiting)
            assert repository.pool_waiters() == 0

            timed = timed_repository(repository, "postgres")
            async with pool.acquire():  # one connection held elsewhere
                assert repository.pool_in_use() == 1
                await timed.read_field(user, MemoryField.IDENTITY)
                assert REGISTRY.get_sample_value("memory_db_pool_connections_in_use") == 1
                assert REGISTRY.get_sample_value("memory_db_pool_waiting_requests") == 0
        finally:
            await pool.close()


class TestChatMetrics:
    @pytest.fixture
    def llm(self, chat_app: FastAPI) -> Iterator[LLMStandIn]:
        with respx.mock(base_url=CHAT_LLM_BASE_URL, assert_all_called=False) as router:
            yield LLMStandIn(router)

    async def test_llm_calls_tokens_errors_and_compactions(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = bearer(user_token(uuid.uuid4()))
        before = await scrape(chat_client)
        for n in range(3):  # 6 episodes: at the soft cap
            await chat_client.post("/api/chat", json={"message": f"m{n}"}, headers=auth)
        streamed = await chat_client.post(
            "/api/chat", json={"message": "m3", "stream": True}, headers=auth
        )
        assert "event: done" in streamed.text  # 8 episodes: this turn compacted
        llm.route.side_effect = [httpx.Response(500, json={"error": "boom"})]
        failed = await chat_client.post("/api/chat", json={"message": "m4"}, headers=auth)
        assert failed.status_code == 502
        after = await scrape(chat_client)

        calls = "memory_llm_calls_total"
        # three turns and the summary: complete; the fourth turn: a stream
        assert moved(before, after, calls, mode="complete", outcome="ok") == 4
        assert moved(before, after, calls, mode="stream", outcome="ok") == 1
        assert moved(before, after, calls, mode="complete", outcome="upstream_error") == 1
        # the stand-in reports usage 10 + 3 in each whole completion
        tokens = "memory_llm_tokens_total"
        assert moved(before, after, tokens, mode="complete", kind="prompt") == 40
        assert moved(before, after, tokens, mode="complete", kind="completion") == 12
        duration = "memory_llm_call_duration_seconds_count"
        assert moved(before, after, duration, mode="stream", outcome="ok") == 1
        assert moved(before, after, "memory_compactions_total", outcome="compacted") == 1


class TestRecallHooks:
    async def test_embeddings_and_recalls(self, client: httpx.AsyncClient) -> None:
        before = await scrape(client)
        observe_embeddings_call(0.2, "ok", 12)
        observe_embeddings_call(5.0, "timeout", None)
        observe_embeddings_call(0.1, "Bearer sk-secret", None)  # not a code: counted as error
        count_recall(3)
        count_recall(0)
        after = await scrape(client)
        assert moved(before, after, "memory_embeddings_calls_total", outcome="ok") == 1
        assert moved(before, after, "memory_embeddings_calls_total", outcome="timeout") == 1
        assert moved(before, after, "memory_embeddings_calls_total", outcome="error") == 1
        assert moved(before, after, "memory_embeddings_tokens_total") == 12
        assert moved(before, after, "memory_recalls_total") == 2
        assert moved(before, after, "memory_recalled_episodes_total") == 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def postgres_settings(database_dsn: str) -> AsyncIterator[dict[str, str]]:
    yield {
        "memory_backend": "postgres",
        "database_url": database_dsn,
        "supabase_jwt_secret": TEST_JWT_SECRET,
    }


class TestSettings:
    async def test_metrics_disabled(self, postgres_settings: dict[str, str]) -> None:
        settings = make_settings(metrics_enabled=False, **postgres_settings)
        async with running_app(settings) as app, asgi_client(app) as client:
            assert (await client.get("/metrics")).status_code == 404
            assert isinstance(app.state.services.repository, PostgresMemoryRepository)

    async def test_separate_listener_with_metrics_port(
        self, postgres_settings: dict[str, str]
    ) -> None:
        port = free_port()
        settings = make_settings(metrics_port=port, **postgres_settings)
        async with running_app(settings) as app, asgi_client(app) as client:
            assert (await client.get("/metrics")).status_code == 404  # not on the app
            await client.get("/healthz")
            async with httpx.AsyncClient() as outside:
                response = await outside.get(f"http://127.0.0.1:{port}/metrics")
            assert response.status_code == 200
            assert 'memory_http_requests_total{method="GET",route="/healthz"' in response.text
        with pytest.raises(httpx.ConnectError):  # stopped with the app
            async with httpx.AsyncClient() as outside:
                await outside.get(f"http://127.0.0.1:{port}/metrics")


class TestMultiprocess:
    async def test_two_workers_add_up(self, database_dsn: str, tmp_path: Path) -> None:
        """uvicorn --workers 2 with PROMETHEUS_MULTIPROC_DIR: whichever worker answers the
        scrape, it counts the requests of both."""
        multiproc = tmp_path / "metrics"
        multiproc.mkdir()
        port = free_port()
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "MEMORY_BACKEND": "postgres",
            "DATABASE_URL": database_dsn,
            "SUPABASE_JWT_SECRET": TEST_JWT_SECRET,
            "DB_POOL_MIN_SIZE": "0",
        }
        command = [sys.executable, "-m", "uvicorn", "main:create_app", "--factory"]
        command += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
        process = await asyncio.create_subprocess_exec(*command, cwd=BACKEND_DIR, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            async with asyncio.timeout(60):
                while True:
                    try:
                        async with httpx.AsyncClient() as probe:
                            if (await probe.get(f"{url}/readyz")).status_code == 200:
                                break
                    except httpx.TransportError:
                        await asyncio.sleep(0.2)
            before = {await _healthz_count(url) for _ in range(4)}
            assert len(before) == 1
            sent = 0
            # A new connection per request, until both workers have answered some (the kernel
            # picks the worker; each worker's own file says how many it counted).
            while sent < 400 and min(_per_worker_healthz(multiproc), default=0) == 0:
                for _ in range(10):
                    async with httpx.AsyncClient() as one:
                        assert (await one.get(f"{url}/healthz")).status_code == 200
                sent += 10
            per_worker = _per_worker_healthz(multiproc)
            assert len(per_worker) == 2 and min(per_worker) > 0, per_worker
            # Whichever worker answers the scrape, it counts both workers' requests.
            after = {await _healthz_count(url) for _ in range(4)}
            assert after == {before.pop() + sent}
        finally:
            process.terminate()
            async with asyncio.timeout(30):
                await process.wait()


def _per_worker_healthz(multiproc: Path) -> list[float]:
    """/healthz requests counted by each worker, from its own file."""
    counts = []
    for path in sorted(multiproc.glob("counter_*.db")):
        metrics = MultiProcessCollector.merge([str(path)], accumulate=False)  # type: ignore[no-untyped-call]
        counts.append(
            sum(
                sample.value
                for metric in metrics
                for sample in metric.samples
                if sample.name == "memory_http_requests_total"
                and sample.labels.get("route") == "/healthz"
            )
        )
    return counts


async def _healthz_count(url: str) -> float:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    samples = parse(response.text)
    labels = {"route": "/healthz", "method": "GET", "status": "200"}
    return value(samples, "memory_http_requests_total", **labels)
