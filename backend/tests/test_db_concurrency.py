"""Concurrent writes through the SQL functions lose nothing: each call is its own impersonated
transaction on its own pooled connection, as concurrent API requests would be."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import asyncpg

from tests.conftest import create_auth_user
from tests.db_helpers import call_as, memory_row

USERS = 12
APPENDS_PER_USER = 50  # 600 appends in all
APPEND = "select public.memory_append_items('episodic_memory', $1::jsonb, $2)"


async def _users(pool: asyncpg.Pool, count: int) -> list[uuid.UUID]:
    return [await create_auth_user(pool) for _ in range(count)]


async def test_parallel_appends_with_server_ids_lose_none(admin_pool: asyncpg.Pool) -> None:
    """Items without ids take the function's one-upsert path (no id can collide): racing
    first appends create each row once and no append is lost."""
    users = await _users(admin_pool, USERS)
    jobs = [(user, f"{user}-{n}") for n in range(APPENDS_PER_USER) for user in users]
    results = await asyncio.gather(
        *(call_as(admin_pool, user, APPEND, [{"text": text}], 1000) for user, text in jobs)
    )
    assert len(results) == USERS * APPENDS_PER_USER >= 500
    returned: dict[uuid.UUID, list[str]] = {user: [] for user in users}
    for (user, text), result in zip(jobs, results, strict=True):
        [item] = result["items"]
        assert item["text"] == text and item["id"] and item["created_at"]
        returned[user].append(item["id"])
    for user in users:
        row = await memory_row(admin_pool, user)
        assert row is not None
        stored = row["episodic_memory"]
        assert sorted(item["text"] for item in stored) == sorted(
            f"{user}-{n}" for n in range(APPENDS_PER_USER)
        )
        assert sorted(item["id"] for item in stored) == sorted(returned[user])


async def test_parallel_appends_lose_none(admin_pool: asyncpg.Pool) -> None:
    users = await _users(admin_pool, USERS)  # no rows yet: the first appends race to create them
    jobs = [(user, f"{user}-{n}") for n in range(APPENDS_PER_USER) for user in users]

    async def append(user: uuid.UUID, item_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await call_as(
            admin_pool, user, APPEND, [{"id": item_id, "text": item_id}], 1000
        )
        return result

    results = await asyncio.gather(*(append(user, item_id) for user, item_id in jobs))

    assert len(results) == USERS * APPENDS_PER_USER >= 500
    versions: dict[uuid.UUID, list[int]] = {user: [] for user in users}
    for (user, item_id), result in zip(jobs, results, strict=True):
        assert [item["id"] for item in result["items"]] == [item_id]
        versions[user].append(result["version"])
    for user in users:
        row = await memory_row(admin_pool, user)
        assert row is not None
        stored_ids = [item["id"] for item in row["episodic_memory"]]
        assert len(stored_ids) == APPENDS_PER_USER
        assert set(stored_ids) == {f"{user}-{n}" for n in range(APPENDS_PER_USER)}
        # Each append was its own serialized write: no two saw the same version.
        assert len(set(versions[user])) == APPENDS_PER_USER
        assert row["version"] == max(versions[user])


async def test_parallel_appends_over_the_cap_keep_the_newest(admin_pool: asyncpg.Pool) -> None:
    (user,) = await _users(admin_pool, 1)
    cap = 10
    results = await asyncio.gather(
        *(call_as(admin_pool, user, APPEND, [{"n": n}], cap) for n in range(60))
    )
    row = await memory_row(admin_pool, user)
    assert row is not None
    stored = row["episodic_memory"]
    assert len(stored) == cap
    # The survivors are the last `cap` appends in commit order (= version order).
    by_version = sorted(results, key=lambda r: r["version"])
    assert [i["id"] for i in stored] == [r["items"][0]["id"] for r in by_version[-cap:]]


async def test_parallel_retries_of_one_item_store_it_once(admin_pool: asyncpg.Pool) -> None:
    (user,) = await _users(admin_pool, 1)
    item = {"id": "retry-me", "text": "hello"}
    results = await asyncio.gather(
        *(call_as(admin_pool, user, APPEND, [item], 100) for _ in range(30))
    )
    row = await memory_row(admin_pool, user)
    assert row is not None
    assert [i["id"] for i in row["episodic_memory"]] == ["retry-me"]
    # Every caller got the one stored copy back.
    assert len({r["items"][0]["created_at"] for r in results}) == 1


async def test_parallel_retries_with_one_idempotency_key_store_the_batch_once(
    admin_pool: asyncpg.Pool,
) -> None:
    (user,) = await _users(admin_pool, 1)
    keyed = "select public.memory_append_items('episodic_memory', $1::jsonb, 100, $2)"
    batch = [{"text": "hi"}, {"text": "hello"}]
    results = await asyncio.gather(
        *(call_as(admin_pool, user, keyed, batch, "turn-1") for _ in range(30))
    )
    row = await memory_row(admin_pool, user)
    assert row is not None
    assert row["episodic_memory"] == results[0]["items"]
    assert [i["text"] for i in row["episodic_memory"]] == ["hi", "hello"]
    assert all(r == results[0] for r in results)  # one write; every caller got its items


async def test_parallel_merges_of_distinct_keys_lose_none(admin_pool: asyncpg.Pool) -> None:
    (user,) = await _users(admin_pool, 1)
    merge = "select public.memory_merge_field('current_state', $1::jsonb, null)"
    results = await asyncio.gather(
        *(call_as(admin_pool, user, merge, {f"k{n}": n}) for n in range(80))
    )
    row = await memory_row(admin_pool, user)
    assert row is not None
    assert row["current_state"] == {f"k{n}": n for n in range(80)}
    # One insert, then 79 updates one after the other: consecutive versions, none shared.
    first = min(r["version"] for r in results)
    assert sorted(r["version"] for r in results) == list(range(first, first + 80))
    assert row["version"] == first + 79


async def test_if_match_lets_exactly_one_racer_win(admin_pool: asyncpg.Pool) -> None:
    (user,) = await _users(admin_pool, 1)
    set_sql = "select public.memory_set_field('identity', $1::jsonb, $2)"
    current = (await call_as(admin_pool, user, set_sql, {"n": -1}, None))["version"]

    async def racer(n: int) -> str:
        try:
            await call_as(admin_pool, user, set_sql, {"n": n}, current)
        except asyncpg.PostgresError as exc:
            return str(exc.sqlstate)
        return "ok"

    outcomes = Counter(await asyncio.gather(*(racer(n) for n in range(20))))
    assert outcomes == Counter({"ok": 1, "PT412": 19})
    row = await memory_row(admin_pool, user)
    assert row is not None and row["version"] == current + 1 and row["identity"]["n"] >= 0
