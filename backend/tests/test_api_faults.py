"""Storage faults: the database goes away, or hangs, under the running app.

These use an app with its own embedded PostgreSQL, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.container import Services
from tests.conftest import asgi_client, make_settings, running_app
from tests.tokens import TEST_JWT_SECRET, bearer, user_token


@pytest.fixture(scope="module")
async def fault_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        memory_backend="embedded",
        data_dir=Path(tmp_path_factory.mktemp("faults")),
        supabase_jwt_secret=TEST_JWT_SECRET,
        storage_timeout_seconds=1.0,
    )
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def fault_client(fault_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(fault_app) as http:
        yield http


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


async def test_database_down_gives_503_then_recovers_without_restart(
    fault_app: FastAPI, fault_client: httpx.AsyncClient
) -> None:
    embedded = services_of(fault_app).embedded
    assert embedded is not None
    auth = bearer(user_token(uuid.uuid4()))
    assert (
        await fault_client.put("/api/memory/identity", json={"name": "Robo"}, headers=auth)
    ).status_code == 200

    await asyncio.to_thread(embedded.pause)
    try:
        for method, path, body in [
            ("GET", "/api/memory", None),
            ("GET", "/api/memory/identity", None),
            ("PUT", "/api/memory/identity", {"name": "lost?"}),
            ("POST", "/api/memory/episodic_memory", {"text": "lost?"}),
            ("DELETE", "/api/memory", None),
            ("GET", "/readyz", None),
        ]:
            response = await fault_client.request(method, path, json=body, headers=auth)
            assert response.status_code == 503, (method, path, response.text)
            assert int(response.headers["retry-after"]) >= 1
            assert "detail" in response.json()
    finally:
        await asyncio.to_thread(embedded.resume)

    assert (await fault_client.get("/readyz")).status_code == 200
    document = (await fault_client.get("/api/memory", headers=auth)).json()
    assert document["identity"] == {"name": "Robo"}
    assert document["episodic_memory"] == []


async def test_storage_timeout_gives_503_and_writes_nothing(
    fault_app: FastAPI, fault_client: httpx.AsyncClient
) -> None:
    user_id = uuid.uuid4()
    auth = bearer(user_token(user_id))
    assert (
        await fault_client.post("/api/memory/rewards", json={"n": 1}, headers=auth)
    ).status_code == 201
    embedded = services_of(fault_app).embedded
    assert embedded is not None

    import asyncpg

    blocker = await asyncpg.connect(embedded.dsn)
    try:
        # Hold the user's row lock: the next append must wait, and give up at the timeout.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(
            "select 1 from public.memories where user_id = $1 for update", user_id
        )
        response = await fault_client.post("/api/memory/rewards", json={"n": 2}, headers=auth)
        assert response.status_code == 503
        assert "retry-after" in response.headers
        await transaction.rollback()
    finally:
        await blocker.close()

    rewards = (await fault_client.get("/api/memory/rewards", headers=auth)).json()
    assert [r["n"] for r in rewards] == [1]
