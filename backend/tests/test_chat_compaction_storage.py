"""Compaction's storage call: `public.memory_compact` on real PostgreSQL, called as the user
exactly as the repository does (exactly the named items go, the summary is merged, appends
racing it survive), and the same call through the Supabase adapter."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from models import MemoryField, User
from repositories.supabase import SupabaseMemoryRepository
from tests.conftest import create_auth_user, make_settings
from tests.db_helpers import call_as, memory_row, sqlstate_as
from tests.tokens import supabase_claims, user_token

APPEND = "select public.memory_append_items('episodic_memory', $1::jsonb, 1000)"
COMPACT = "select public.memory_compact('episodic_memory', $1::text[], 'long_term_summary', $2)"


async def user_with_episodes(pool: asyncpg.Pool, count: int) -> tuple[uuid.UUID, list[str]]:
    user = await create_auth_user(pool)
    items = [{"id": f"e{n}", "role": "user", "content": f"episode {n}"} for n in range(count)]
    await call_as(pool, user, APPEND, items)
    await call_as(
        pool, user, "select public.memory_set_field('long_term_summary', $1)", {"keep": 1, "x": 2}
    )
    return user, [item["id"] for item in items]


async def stored_ids(pool: asyncpg.Pool, user: uuid.UUID) -> list[str]:
    row = await memory_row(pool, user)
    assert row is not None
    return [item["id"] for item in row["episodic_memory"]]


async def test_removes_exactly_those_items_and_merges_the_summary(
    admin_pool: asyncpg.Pool,
) -> None:
    user, _ = await user_with_episodes(admin_pool, 5)
    before = await memory_row(admin_pool, user)
    assert before is not None
    result = await call_as(admin_pool, user, COMPACT, ["e0", "e2"], {"summary": "s", "x": None})
    after = await memory_row(admin_pool, user)
    assert after is not None
    assert [item["id"] for item in after["episodic_memory"]] == ["e1", "e3", "e4"]
    assert after["long_term_summary"] == {"keep": 1, "summary": "s"}
    assert result["version"] == after["version"] == before["version"] + 1


async def test_all_or_nothing_when_an_item_is_gone(admin_pool: asyncpg.Pool) -> None:
    user, _ = await user_with_episodes(admin_pool, 3)
    before = await memory_row(admin_pool, user)
    assert await call_as(admin_pool, user, COMPACT, ["e0", "missing"], {"summary": "s"}) is None
    assert await memory_row(admin_pool, user) == before
    # The second of two compactions of the same items changes nothing.
    assert await call_as(admin_pool, user, COMPACT, ["e0", "e1"], {"summary": "first"})
    assert await call_as(admin_pool, user, COMPACT, ["e0", "e1"], {"summary": "second"}) is None
    row = await memory_row(admin_pool, user)
    assert row is not None and row["long_term_summary"]["summary"] == "first"


async def test_appends_racing_a_compaction_all_survive(admin_pool: asyncpg.Pool) -> None:
    user, ids = await user_with_episodes(admin_pool, 20)
    appended = [f"new{n}" for n in range(60)]

    async def append(item_id: str) -> Any:
        return await call_as(admin_pool, user, APPEND, [{"id": item_id, "role": "user"}])

    jobs = [append(item_id) for item_id in appended[:30]]
    jobs.append(call_as(admin_pool, user, COMPACT, ids[:10], {"summary": "s"}))
    jobs += [append(item_id) for item_id in appended[30:]]
    results = await asyncio.gather(*jobs)

    assert results[30] is not None  # the compaction applied
    stored = await stored_ids(admin_pool, user)
    assert stored[:10] == ids[10:]  # the survivors of the old ones keep their order
    assert sorted(stored[10:]) == sorted(appended)  # every racing append is there, once
    assert len(stored) == 10 + len(appended)


async def test_another_users_items_are_out_of_reach(admin_pool: asyncpg.Pool) -> None:
    owner, ids = await user_with_episodes(admin_pool, 3)
    before = await memory_row(admin_pool, owner)
    intruder = await create_auth_user(admin_pool)
    assert await call_as(admin_pool, intruder, COMPACT, ids, {"summary": "mine"}) is None
    assert await memory_row(admin_pool, owner) == before


async def test_refuses_wrong_fields_and_empty_ids(admin_pool: asyncpg.Pool) -> None:
    user, ids = await user_with_episodes(admin_pool, 2)
    bad_calls: list[tuple[str, tuple[Any, ...]]] = [
        ("select public.memory_compact('identity', $1, 'long_term_summary', '{}')", (ids,)),
        ("select public.memory_compact('episodic_memory', $1, 'rewards', '{}')", (ids,)),
        ("select public.memory_compact('nope', $1, 'long_term_summary', '{}')", (ids,)),
        (COMPACT, ([], {})),
        (COMPACT, ([None], {})),
        (COMPACT, (ids, [1])),
    ]
    for sql, args in bad_calls:
        assert await sqlstate_as(admin_pool, user, sql, *args) == "22023", sql
    assert await stored_ids(admin_pool, user) == ids


async def test_needs_a_signed_in_user(admin_pool: asyncpg.Pool) -> None:
    assert await sqlstate_as(admin_pool, None, COMPACT, ["e0"], {}, role="anon") == "42501"
    assert await sqlstate_as(admin_pool, None, COMPACT, ["e0"], {}) == "42501"


class TestSupabaseRepository:
    """The same call through PostgREST: one RPC with named arguments, as the user."""

    SUPABASE_URL = "https://compacttestproject0.supabase.co"
    KEY = "sb_publishable_compact-test-key_000000000"

    @pytest.mark.parametrize(("answer", "compacted"), [({"version": 7}, True), (None, False)])
    async def test_calls_memory_compact(self, answer: Any, compacted: bool) -> None:
        settings = make_settings(supabase_url=self.SUPABASE_URL, supabase_key=self.KEY)
        user_id = uuid.uuid4()
        user = User(id=user_id, claims=supabase_claims(user_id), token=user_token(user_id))
        async with httpx.AsyncClient() as http:
            repository = SupabaseMemoryRepository(settings, http)
            with respx.mock(base_url=f"{self.SUPABASE_URL}/rest/v1") as router:
                route = router.post("/rpc/memory_compact").respond(
                    content=json.dumps(answer).encode(),  # PostgREST's JSON, `null` included
                    headers={"Content-Type": "application/json; charset=utf-8"},
                )
                result = await repository.compact_items(
                    user,
                    MemoryField.EPISODIC_MEMORY,
                    ["e0", "e1"],
                    summary_field=MemoryField.LONG_TERM_SUMMARY,
                    summary_patch={"summary": "s"},
                )
        assert result is compacted
        request = route.calls.last.request
        assert json.loads(request.content) == {
            "p_field": "episodic_memory",
            "p_item_ids": ["e0", "e1"],
            "p_summary_field": "long_term_summary",
            "p_summary_patch": {"summary": "s"},
        }
        assert request.headers["authorization"] == f"Bearer {user.token}"
        assert request.headers["apikey"] == self.KEY
