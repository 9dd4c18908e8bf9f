"""Applying supabase_schema.sql: twice in a row; on a database that looks like a fresh Supabase
project (a non-superuser owner whose default privileges grant everything to anon); and over the
table of the original plan."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from services.storage.database import BOOTSTRAP_SQL, SCHEMA_SQL, apply_schema, create_pool
from tests.conftest import create_auth_user, make_settings
from tests.db_helpers import (
    API_CALLS,
    call_as,
    describe_schema,
    execute_as,
    scratch_database,
    sqlstate_as,
)

SCHEMA = SCHEMA_SQL.read_text(encoding="utf-8")
BOOTSTRAP = BOOTSTRAP_SQL.read_text(encoding="utf-8")

# As on Supabase, where `postgres` (the SQL editor's role) is no superuser and its default
# privileges in public grant everything new to the API roles.
SUPABASE_OWNER_SQL = """
create role {owner} nologin nosuperuser noinherit bypassrls;
grant anon, authenticated, service_role to {owner};
do $grant$ begin
  execute format('grant create on database %I to {owner}', current_database());
end $grant$;
grant usage, create on schema public to {owner};
grant usage on schema auth to {owner};
grant usage on schema extensions to {owner};
grant select, references on auth.users to {owner};
alter default privileges for role {owner} in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges for role {owner} in schema public
  grant all on functions to anon, authenticated, service_role;
alter default privileges for role {owner} in schema public
  grant all on sequences to anon, authenticated, service_role;
"""

# The original plan's table and policies, verbatim (Supabase finds uuid_generate_v4 in its
# `extensions` schema).
SEED_SQL = """
CREATE TABLE memories (
    id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
    user_id UUID REFERENCES auth.users(id) NOT NULL,
    identity JSONB DEFAULT '{}'::jsonb,
    current_state JSONB DEFAULT '{}'::jsonb,
    long_term_summary JSONB DEFAULT '{}'::jsonb,
    core_instructions JSONB DEFAULT '[]'::jsonb,
    episodic_memory JSONB DEFAULT '[]'::jsonb,
    rewards JSONB DEFAULT '[]'::jsonb,
    parent_reports JSONB DEFAULT '[]'::jsonb,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT TIMEZONE('utc'::text, NOW()) NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT TIMEZONE('utc'::text, NOW()) NOT NULL,
    UNIQUE(user_id)
);
ALTER TABLE memories ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own memories"
ON memories FOR SELECT
USING (auth.uid() = user_id);
CREATE POLICY "Users can update their own memories"
ON memories FOR UPDATE
USING (auth.uid() = user_id);
CREATE POLICY "Users can insert their own memories"
ON memories FOR INSERT
WITH CHECK (auth.uid() = user_id);
"""
UUID_OSSP_STAND_IN = """
create schema if not exists extensions;
create or replace function extensions.uuid_generate_v4() returns uuid
  language sql volatile as 'select gen_random_uuid()';
"""


@pytest.fixture(scope="module")
async def fresh_description(database_dsn: str) -> dict[str, list[dict[str, Any]]]:
    """The schema as the ordinary bootstrap + apply leaves it: what every path must match."""
    conn = await asyncpg.connect(database_dsn)
    try:
        return await describe_schema(conn)
    finally:
        await conn.close()


# Supabase's dashboard (Database > Extensions) enables pgvector as a superuser would; the
# schema's owner then only uses it.
ENABLE_PGVECTOR_WHERE_AVAILABLE = """
do $$ begin
  if exists (select from pg_available_extensions where name = 'vector') then
    create extension if not exists vector with schema extensions;
  end if;
end $$;
"""


@dataclass(frozen=True)
class SupabaseLike:
    dsn: str
    owner: str


@pytest.fixture(scope="module")
async def supabase_like(server_dsn: str) -> AsyncIterator[SupabaseLike]:
    """A database set up like a fresh Supabase project, the schema applied twice by its
    non-superuser owner, as the SQL editor would run it."""
    owner = f"memtest_owner_{uuid.uuid4().hex[:12]}"
    try:
        async with scratch_database(server_dsn) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(BOOTSTRAP)
                await conn.execute(SUPABASE_OWNER_SQL.format(owner=owner))
                await conn.execute(ENABLE_PGVECTOR_WHERE_AVAILABLE)
                await conn.execute(f"set role {owner}")
                await conn.execute(SCHEMA)
                await conn.execute(SCHEMA)
            finally:
                await conn.close()
            yield SupabaseLike(dsn, owner)
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f"drop role if exists {owner}")
        finally:
            await admin.close()


@pytest.fixture(scope="module")
async def supabase_like_pool(supabase_like: SupabaseLike) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(supabase_like.dsn, make_settings(), min_size=0, max_size=4)
    yield pool
    await pool.close()


class TestAppliedTwice:
    async def test_reapplying_keeps_data_and_catalog(
        self,
        admin_pool: asyncpg.Pool,
        database_dsn: str,
        fresh_description: dict[str, list[dict[str, Any]]],
    ) -> None:
        uid = await create_auth_user(admin_pool)
        sql, args = API_CALLS["memory_append_items"]
        await call_as(admin_pool, uid, sql, *args)
        before = await admin_pool.fetchrow("select * from public.memories where user_id = $1", uid)
        conn = await asyncpg.connect(database_dsn)
        try:
            await apply_schema(conn, bootstrap=True)
            await apply_schema(conn, bootstrap=True)
            assert await describe_schema(conn) == fresh_description
        finally:
            await conn.close()
        after = await admin_pool.fetchrow("select * from public.memories where user_id = $1", uid)
        assert after == before


class TestFreshSupabaseDatabase:
    async def test_same_catalog_as_the_local_bootstrap(
        self,
        supabase_like_pool: asyncpg.Pool,
        fresh_description: dict[str, list[dict[str, Any]]],
    ) -> None:
        async with supabase_like_pool.acquire() as conn:
            assert await describe_schema(conn) == fresh_description

    async def test_anon_has_no_privilege_at_all(self, supabase_like_pool: asyncpg.Pool) -> None:
        table_privileges = await supabase_like_pool.fetch(
            "select p from unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',"
            " 'REFERENCES', 'TRIGGER']) as p"
            " where has_table_privilege('anon', 'public.memories', p)"
        )
        executable = await supabase_like_pool.fetch(
            "select p.oid::regprocedure::text from pg_catalog.pg_proc as p"
            " where p.pronamespace = 'public'::regnamespace"
            "   and has_function_privilege('anon', p.oid, 'EXECUTE')"
        )
        functions = await supabase_like_pool.fetchval(
            "select count(*) from pg_catalog.pg_proc where pronamespace = 'public'::regnamespace"
            " and proname like 'memor%'"
        )
        assert table_privileges == []
        assert executable == []
        assert functions >= len(API_CALLS)

    async def test_anon_is_denied_and_users_are_isolated(
        self, supabase_like_pool: asyncpg.Pool
    ) -> None:
        pool = supabase_like_pool
        a = await create_auth_user(pool)
        b = await create_auth_user(pool)
        for name, (sql, args) in API_CALLS.items():
            assert await sqlstate_as(pool, a, sql, *args, role="anon") == "42501", name
        assert (
            await sqlstate_as(pool, None, "select * from public.memories", role="anon") == "42501"
        )
        append_sql, append_args = API_CALLS["memory_append_items"]
        appended = await call_as(pool, a, append_sql, *append_args)
        assert appended["version"] >= 1
        state = await execute_as(
            pool, a, "update public.memories set identity = '{\"x\": 1}' where user_id = $1", a
        )
        assert state == "UPDATE 1"
        assert await call_as(pool, b, "select count(*) from public.memories") == 0
        row = await pool.fetchrow(
            "select identity, version from public.memories where user_id = $1", a
        )
        assert row is not None
        assert row["identity"] == {"x": 1} and row["version"] == appended["version"] + 1


class TestOverTheOriginalPlansTable:
    """A Supabase project that followed the original plan first, then applies this schema.
    Run in one transaction that is rolled back, so the fresh database stays fresh."""

    async def test_upgrades_it_to_the_same_schema_keeping_its_rows(
        self,
        supabase_like: SupabaseLike,
        fresh_description: dict[str, list[dict[str, Any]]],
    ) -> None:
        uid = uuid.uuid4()
        conn = await asyncpg.connect(supabase_like.dsn)
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(UUID_OSSP_STAND_IN)
            await conn.execute(f"grant usage on schema extensions to {supabase_like.owner}")
            await conn.execute("insert into auth.users (id) values ($1)", uid)
            await conn.execute(f"set local role {supabase_like.owner}")
            await conn.execute("drop table public.memories")
            await conn.execute("set local search_path = public, extensions")
            await conn.execute(SEED_SQL)
            await conn.execute("set local search_path = public")
            await conn.execute(
                "insert into public.memories (user_id, identity, current_state)"
                """ values ($1, '{"name": "Ada"}', null)""",
                uid,
            )
            await conn.execute(SCHEMA)
            await conn.execute(SCHEMA)
            assert await describe_schema(conn) == fresh_description
            row = await conn.fetchrow(
                "select identity::text, current_state::text, version"
                " from public.memories where user_id = $1",
                uid,
            )
            assert row is not None
            assert (row["identity"], row["current_state"], row["version"]) == (
                '{"name": "Ada"}',
                "{}",
                1,
            )
            await conn.execute("reset role")
            await conn.execute("delete from auth.users where id = $1", uid)
            assert await conn.fetchval("select count(*) from public.memories") == 0
        finally:
            await transaction.rollback()
            await conn.close()


# memory_append_items as the schema defined it before it took an idempotency key (the body
# does not matter: applying the schema must replace the function, not add an overload).
PREVIOUS_APPEND_SQL = """
create function public.memory_append_items(p_field text, p_items jsonb, p_cap integer default 500)
returns jsonb language sql volatile security invoker set search_path = ''
as $$ select jsonb_build_object('items', p_items, 'version', -1, 'updated_at', null) $$;
revoke all on function public.memory_append_items(text, jsonb, integer) from public, anon;
grant execute on function public.memory_append_items(text, jsonb, integer) to authenticated;
"""
# What PostgREST runs for POST /rpc/memory_append_items {"p_field", "p_items", "p_cap"}.
NAMED_APPEND_SQL = (
    "select public.memory_append_items(p_field := 'rewards', p_items := '[{\"n\": 1}]', p_cap := 5)"
)


class TestOverThePreviousAppendFunction:
    """A database holding the previous version of the schema (memory_append_items without the
    key parameter), or both versions side by side: applying the schema leaves exactly one
    function, callable by name (two overloads make PostgREST fail with PGRST203). Rolled back
    afterwards."""

    @pytest.mark.parametrize("keep_current", [False, True], ids=["previous", "both"])
    async def test_leaves_one_function_callable_by_name(
        self,
        supabase_like: SupabaseLike,
        fresh_description: dict[str, list[dict[str, Any]]],
        keep_current: bool,
    ) -> None:
        uid = uuid.uuid4()
        conn = await asyncpg.connect(supabase_like.dsn)
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("insert into auth.users (id) values ($1)", uid)
            await conn.execute(f"set local role {supabase_like.owner}")
            if not keep_current:
                await conn.execute(
                    "drop function public.memory_append_items"
                    "(text, jsonb, integer, text, text, jsonb)"
                )
            await conn.execute(PREVIOUS_APPEND_SQL)
            overloads = "select count(*) from pg_proc where proname = 'memory_append_items'"
            assert await conn.fetchval(overloads) == (2 if keep_current else 1)
            if keep_current:  # the broken state: a call by name can not pick one
                await conn.execute("savepoint ambiguous")
                with pytest.raises(asyncpg.AmbiguousFunctionError):
                    await conn.fetchval(NAMED_APPEND_SQL)
                await conn.execute("rollback to savepoint ambiguous")

            await conn.execute(SCHEMA)
            await conn.execute(SCHEMA)
            assert await conn.fetchval(overloads) == 1
            assert await describe_schema(conn) == fresh_description

            await conn.execute(
                "select set_config('role', 'authenticated', true),"
                " set_config('request.jwt.claims', $1, true)",
                json.dumps({"role": "authenticated", "sub": str(uid)}),
            )
            appended = json.loads(await conn.fetchval(NAMED_APPEND_SQL))
            assert [item["n"] for item in appended["items"]] == [1]
            assert appended["version"] > 0
        finally:
            await transaction.rollback()
            await conn.close()


class TestBootstrap:
    async def test_concurrent_bootstraps_of_two_databases_do_not_collide(
        self, database_dsn: str, supabase_like: SupabaseLike
    ) -> None:
        """Roles are shared by the cluster: two test runs (or apps) bootstrapping their own
        databases at once must not trip over each other ("tuple concurrently updated")."""
        conns = [await asyncpg.connect(dsn) for dsn in (database_dsn, supabase_like.dsn)]
        try:
            for _ in range(10):
                await asyncio.gather(*(conn.execute(BOOTSTRAP) for conn in conns))
            roles = await conns[0].fetch(
                "select rolname, rolbypassrls from pg_roles"
                " where rolname in ('anon', 'authenticated', 'service_role')"
            )
            assert {r["rolname"]: r["rolbypassrls"] for r in roles} == {
                "anon": False,
                "authenticated": False,
                "service_role": True,
            }
        finally:
            for conn in conns:
                await conn.close()
