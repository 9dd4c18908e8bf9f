"""The schema applies on real PostgreSQL and its basic functions work as the user."""

from __future__ import annotations

import asyncpg

from services.storage.database import apply_schema
from tests.conftest import create_auth_user
from tests.db_helpers import acting_as


async def test_schema_applies_twice(admin_pool: asyncpg.Pool) -> None:
    async with admin_pool.acquire() as conn:
        await apply_schema(conn, bootstrap=True)
        await apply_schema(conn, bootstrap=True)
    count = await admin_pool.fetchval(
        "select count(*) from pg_policies where tablename = 'memories'"
    )
    assert count == 4


async def test_set_merge_append_remove(admin_pool: asyncpg.Pool) -> None:
    uid = await create_auth_user(admin_pool)
    async with acting_as(admin_pool, uid) as conn:
        r = await conn.fetchval("select public.memory_set_field('identity', $1::jsonb)", {"a": 1})
    first = r["version"]
    assert r["value"] == {"a": 1} and first > 0
    async with acting_as(admin_pool, uid) as conn:
        r = await conn.fetchval(
            "select public.memory_merge_field('identity', $1::jsonb)", {"a": None, "b": 2}
        )
    assert r["value"] == {"b": 2} and r["version"] == first + 1
    async with acting_as(admin_pool, uid) as conn:
        r = await conn.fetchval(
            "select public.memory_append_items('rewards', $1::jsonb, 2)",
            [{"star": 1}, {"star": 2}, {"star": 3}],
        )
    assert [i["star"] for i in r["items"]] == [1, 2, 3]
    stored = await admin_pool.fetchval("select rewards from memories where user_id = $1", uid)
    assert [i["star"] for i in stored] == [2, 3]
    async with acting_as(admin_pool, uid) as conn:
        gone = await conn.fetchval(
            "select public.memory_remove_item('rewards', $1)", stored[0]["id"]
        )
        missing = await conn.fetchval("select public.memory_remove_item('rewards', 'nope')")
    assert gone is not None and missing is None
