"""Row level security on direct table access: a signed-in user reaches only their own row, a
request without a token (anon) reaches nothing. Statements run as PostgREST would run them."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.conftest import create_auth_user
from tests.db_helpers import (
    API_CALLS,
    acting_as,
    call_as,
    execute_as,
    memory_row,
    snapshot,
    sqlstate_as,
)

SET_IDENTITY = "select public.memory_set_field('identity', $1::jsonb)"


async def _user_with_row(pool: asyncpg.Pool, identity: dict[str, Any]) -> uuid.UUID:
    uid = await create_auth_user(pool)
    await call_as(pool, uid, SET_IDENTITY, identity)
    return uid


class TestOtherUsersRow:
    async def test_select_sees_only_own_row(self, admin_pool: asyncpg.Pool) -> None:
        a = await _user_with_row(admin_pool, {"name": "a"})
        b = await _user_with_row(admin_pool, {"name": "b"})
        async with acting_as(admin_pool, a) as conn:
            rows = await conn.fetch("select user_id, identity from public.memories")
            by_id = await conn.fetch("select * from public.memories where user_id = $1", b)
        assert [(r["user_id"], r["identity"]) for r in rows] == [(a, {"name": "a"})]
        assert by_id == []

    async def test_insert_for_another_user_is_refused(self, admin_pool: asyncpg.Pool) -> None:
        a = await create_auth_user(admin_pool)
        c = await create_auth_user(admin_pool)  # has no row yet
        state = await sqlstate_as(
            admin_pool, a, "insert into public.memories (user_id) values ($1)", c
        )
        assert state == "42501"
        assert await memory_row(admin_pool, c) is None

    async def test_upsert_onto_another_users_row_is_refused(self, admin_pool: asyncpg.Pool) -> None:
        a = await create_auth_user(admin_pool)
        b = await _user_with_row(admin_pool, {"name": "b"})
        before = snapshot(await memory_row(admin_pool, b))
        state = await sqlstate_as(
            admin_pool,
            a,
            "insert into public.memories (user_id, identity) values ($1, $2::jsonb)"
            " on conflict (user_id) do update set identity = excluded.identity",
            b,
            {"name": "pwned"},
        )
        assert state == "42501"
        assert snapshot(await memory_row(admin_pool, b)) == before

    async def test_update_of_another_users_row_changes_nothing(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        a = await _user_with_row(admin_pool, {"name": "a"})
        b = await _user_with_row(admin_pool, {"name": "b"})
        before = snapshot(await memory_row(admin_pool, b))
        status = await execute_as(
            admin_pool,
            a,
            "update public.memories set identity = $2::jsonb where user_id = $1",
            b,
            {"name": "pwned"},
        )
        everything = await execute_as(
            admin_pool, a, "update public.memories set current_state = '{\"x\": 1}'"
        )
        assert status == "UPDATE 0"
        assert everything == "UPDATE 1"  # its own row only
        assert snapshot(await memory_row(admin_pool, b)) == before

    async def test_delete_of_another_users_row_changes_nothing(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        a = await _user_with_row(admin_pool, {"name": "a"})
        b = await _user_with_row(admin_pool, {"name": "b"})
        before = snapshot(await memory_row(admin_pool, b))
        status = await execute_as(
            admin_pool, a, "delete from public.memories where user_id = $1", b
        )
        assert status == "DELETE 0"
        assert snapshot(await memory_row(admin_pool, b)) == before
        assert await execute_as(admin_pool, a, "delete from public.memories") == "DELETE 1"
        assert snapshot(await memory_row(admin_pool, b)) == before

    @pytest.mark.parametrize("target", ["existing", "new"])
    async def test_moving_own_row_to_another_user_is_refused(
        self, admin_pool: asyncpg.Pool, target: str
    ) -> None:
        a = await _user_with_row(admin_pool, {"name": "a"})
        if target == "existing":
            other = await _user_with_row(admin_pool, {"name": "b"})
        else:
            other = await create_auth_user(admin_pool)
        before_a = snapshot(await memory_row(admin_pool, a))
        before_other = snapshot(await memory_row(admin_pool, other))
        state = await sqlstate_as(
            admin_pool,
            a,
            "update public.memories set user_id = $1 where user_id = $2",
            other,
            a,
        )
        assert state == "42501"
        assert snapshot(await memory_row(admin_pool, a)) == before_a
        assert snapshot(await memory_row(admin_pool, other)) == before_other

    async def test_taking_over_another_users_row_changes_nothing(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        a = await create_auth_user(admin_pool)
        b = await _user_with_row(admin_pool, {"name": "b"})
        status = await execute_as(
            admin_pool, a, "update public.memories set user_id = $1 where user_id = $2", a, b
        )
        assert status == "UPDATE 0"
        row = await memory_row(admin_pool, b)
        assert row is not None and row["identity"] == {"name": "b"}
        assert await memory_row(admin_pool, a) is None

    async def test_truncate_is_refused(self, admin_pool: asyncpg.Pool) -> None:
        a = await _user_with_row(admin_pool, {"name": "a"})
        assert await sqlstate_as(admin_pool, a, "truncate public.memories") == "42501"
        assert await memory_row(admin_pool, a) is not None

    async def test_auth_users_are_not_readable(self, admin_pool: asyncpg.Pool) -> None:
        a = await create_auth_user(admin_pool)
        assert await sqlstate_as(admin_pool, a, "select count(*) from auth.users") == "42501"

    async def test_functions_touch_only_the_callers_row(self, admin_pool: asyncpg.Pool) -> None:
        a = await _user_with_row(admin_pool, {"name": "a"})
        b = await _user_with_row(admin_pool, {"name": "b"})
        await call_as(
            admin_pool, b, "select public.memory_append_items('rewards', $1::jsonb)", [{"n": 1}]
        )
        before = snapshot(await memory_row(admin_pool, b))
        for sql, args in API_CALLS.values():
            await call_as(admin_pool, a, sql, *args)
        assert snapshot(await memory_row(admin_pool, b)) == before
        assert await memory_row(admin_pool, a) is None  # memory_erase ran last


class TestSignedInRoleWithoutUser:
    """`authenticated` claims with no `sub` (never a real user token) reach no row."""

    async def test_reads_nothing_and_writes_nothing(self, admin_pool: asyncpg.Pool) -> None:
        b = await _user_with_row(admin_pool, {"name": "b"})
        assert await call_as(admin_pool, None, "select count(*) from public.memories") == 0
        state = await sqlstate_as(
            admin_pool, None, "insert into public.memories (user_id) values ($1)", b
        )
        assert state == "42501"
        assert await execute_as(admin_pool, None, "delete from public.memories") == "DELETE 0"
        assert await memory_row(admin_pool, b) is not None

    @pytest.mark.parametrize("name", sorted(API_CALLS))
    async def test_functions_refuse(self, admin_pool: asyncpg.Pool, name: str) -> None:
        sql, args = API_CALLS[name]
        assert await sqlstate_as(admin_pool, None, sql, *args) == "42501"


ANON_TABLE_STATEMENTS: dict[str, str] = {
    "select": "select count(*) from public.memories",
    "insert": "insert into public.memories (user_id) values ($1)",
    "update": "update public.memories set identity = '{}' where user_id = $1",
    "delete": "delete from public.memories where user_id = $1",
    "truncate": "truncate public.memories",
}


class TestAnon:
    """A request without a token: PostgREST runs it as `anon`. Permission denied everywhere,
    even with a `sub` claim of a real user."""

    @pytest.mark.parametrize("with_sub", [False, True], ids=["no-sub", "forged-sub"])
    @pytest.mark.parametrize("action", sorted(ANON_TABLE_STATEMENTS))
    async def test_table_access_is_denied(
        self, admin_pool: asyncpg.Pool, action: str, with_sub: bool
    ) -> None:
        victim = await _user_with_row(admin_pool, {"name": "victim"})
        before = snapshot(await memory_row(admin_pool, victim))
        sql = ANON_TABLE_STATEMENTS[action]
        args = (victim,) if "$1" in sql else ()
        state = await sqlstate_as(admin_pool, victim if with_sub else None, sql, *args, role="anon")
        assert state == "42501"
        assert snapshot(await memory_row(admin_pool, victim)) == before

    @pytest.mark.parametrize("with_sub", [False, True], ids=["no-sub", "forged-sub"])
    @pytest.mark.parametrize("name", sorted(API_CALLS))
    async def test_functions_are_denied(
        self, admin_pool: asyncpg.Pool, name: str, with_sub: bool
    ) -> None:
        victim = await _user_with_row(admin_pool, {"name": "victim"})
        before = snapshot(await memory_row(admin_pool, victim))
        sql, args = API_CALLS[name]
        state = await sqlstate_as(admin_pool, victim if with_sub else None, sql, *args, role="anon")
        assert state == "42501"
        assert snapshot(await memory_row(admin_pool, victim)) == before
