"""Small mismatches a newcomer met: timestamps in two formats, `/api/memory/` answering 307."""

from __future__ import annotations

import re
from datetime import datetime

import asyncpg
import httpx

from services.storage.database import create_pool
from services.storage.embedded_postgres import EmbeddedPostgres
from tests.conftest import make_settings
from tests.db_helpers import scratch_database
from tests.test_api_memory import new_user

UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


async def test_updated_at_and_created_at_are_both_utc_with_an_offset(
    client: httpx.AsyncClient,
) -> None:
    auth = new_user()
    appended = await client.post(
        "/api/memory/episodic_memory", json={"role": "user", "content": "hi"}, headers=auth
    )
    assert appended.status_code == 201
    document = (await client.get("/api/memory", headers=auth)).json()
    created_at = document["episodic_memory"][0]["created_at"]
    updated_at = document["updated_at"]
    assert UTC_ISO.match(created_at), created_at
    assert UTC_ISO.match(updated_at), updated_at
    assert datetime.fromisoformat(updated_at) >= datetime.fromisoformat(created_at)


async def test_the_pool_works_in_utc_whatever_the_database_default(
    embedded_server: EmbeddedPostgres,
) -> None:
    """Items' created_at is written by SQL in the session's TimeZone: the pool pins UTC."""
    async with scratch_database(embedded_server.dsn) as dsn:
        admin = await asyncpg.connect(dsn)
        try:
            database = await admin.fetchval("select current_database()")
            await admin.execute(f"alter database \"{database}\" set timezone = 'Asia/Kolkata'")
        finally:
            await admin.close()
        pool = await create_pool(dsn, make_settings(), min_size=1, max_size=1)
        try:
            stamp = await pool.fetchval("select to_jsonb(now())::text")
            assert await pool.fetchval("select current_setting('TimeZone')") == "UTC"
        finally:
            await pool.close()
        assert stamp.endswith('+00:00"'), stamp


async def test_a_trailing_slash_is_404_not_a_redirect(client: httpx.AsyncClient) -> None:
    for path in ("/api/memory/", "/api/me/", "/healthz/"):
        response = await client.get(path, headers=new_user())
        assert response.status_code == 404, (path, response.status_code)
        assert "location" not in response.headers
