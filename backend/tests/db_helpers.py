"""Impersonation exactly as PostgREST does it, and small helpers for the database tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy

# The memory service's callable API (what PostgREST exposes as /rpc/<name>), with sample
# arguments that would succeed for a signed-in user.
API_CALLS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "memory_set_field": ("select public.memory_set_field($1, $2::jsonb)", ("identity", {})),
    "memory_merge_field": ("select public.memory_merge_field($1, $2::jsonb)", ("identity", {})),
    "memory_append_items": (
        "select public.memory_append_items($1, $2::jsonb, $3)",
        ("rewards", [{"star": 1}], 10),
    ),
    "memory_remove_item": ("select public.memory_remove_item($1, $2)", ("rewards", "x")),
    "memory_erase": ("select public.memory_erase()", ()),
}

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


def claims_for(user_id: uuid.UUID | None, role: str = "authenticated") -> dict[str, Any]:
    claims: dict[str, Any] = {"role": role, "aud": "authenticated" if user_id else None}
    if user_id is not None:
        claims["sub"] = str(user_id)
    return claims


@asynccontextmanager
async def acting_as(
    pool: asyncpg.Pool, user_id: uuid.UUID | None, role: str = "authenticated"
) -> AsyncIterator[Connection]:
    """One transaction in which `role` with these JWT claims runs the statements (user_id None
    with role anon is a request without a token)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            role,
            json.dumps(claims_for(user_id, role)),
        )
        yield conn


async def call_as(
    pool: asyncpg.Pool,
    user_id: uuid.UUID | None,
    sql: str,
    *args: Any,
    role: str = "authenticated",
) -> Any:
    """Run one statement in its own impersonated transaction; its first column of the first
    row."""
    async with acting_as(pool, user_id, role) as conn:
        return await conn.fetchval(sql, *args)


async def execute_as(
    pool: asyncpg.Pool,
    user_id: uuid.UUID | None,
    sql: str,
    *args: Any,
    role: str = "authenticated",
) -> str:
    """Run one statement in its own impersonated transaction; its status ("UPDATE 0", …)."""
    async with acting_as(pool, user_id, role) as conn:
        status: str = await conn.execute(sql, *args)
        return status


async def sqlstate_as(
    pool: asyncpg.Pool,
    user_id: uuid.UUID | None,
    sql: str,
    *args: Any,
    role: str = "authenticated",
) -> str:
    """Run a statement that must fail in its own impersonated transaction; its SQLSTATE."""
    with pytest.raises(asyncpg.PostgresError) as info:
        await call_as(pool, user_id, sql, *args, role=role)
    return str(info.value.sqlstate)


async def memory_row(pool: asyncpg.Pool, user_id: uuid.UUID) -> asyncpg.Record | None:
    """The user's row as the superuser sees it (no RLS)."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "select * from public.memories where user_id = $1", user_id
    )
    return row


def snapshot(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """A row as a plain dict, to compare before and after a refused write."""
    return None if row is None else dict(row)


def with_database(dsn: str, database: str) -> str:
    """The same server, another database (host:port and socket-dir DSNs alike)."""
    base, _, query = dsn.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + database
    return f"{base}?{query}" if query else base


@asynccontextmanager
async def scratch_database(server_dsn: str) -> AsyncIterator[str]:
    """An empty throwaway database on this server (no bootstrap, no schema); dropped after."""
    name = f"memtest_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_dsn, name)
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()


# What the schema leaves behind, comparable between two databases: privileges are listed
# without the owner's own (its name differs between a Supabase-like and a plain database).
_DESCRIBE_SQL: dict[str, str] = {
    "table": """
        select c.relrowsecurity, c.relforcerowsecurity from pg_catalog.pg_class as c
        where c.oid = 'public.memories'::regclass""",
    "columns": """
        select a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) as type,
               a.attnotnull, pg_catalog.pg_get_expr(d.adbin, d.adrelid) as default_value
        from pg_catalog.pg_attribute as a
        left join pg_catalog.pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attrelid = 'public.memories'::regclass and a.attnum > 0 and not a.attisdropped
        order by a.attname""",
    "constraints": """
        select conname, pg_catalog.pg_get_constraintdef(oid) as def
        from pg_catalog.pg_constraint where conrelid = 'public.memories'::regclass
        order by conname""",
    "triggers": """
        select tgname, pg_catalog.pg_get_triggerdef(oid) as def from pg_catalog.pg_trigger
        where tgrelid = 'public.memories'::regclass and not tgisinternal order by tgname""",
    "policies": """
        select policyname, permissive, roles::text[] as roles, cmd, qual, with_check
        from pg_catalog.pg_policies where schemaname = 'public' order by policyname""",
    "table_privileges": """
        select case when a.grantee = 0 then 'PUBLIC' else a.grantee::regrole::text end
                 as grantee, a.privilege_type
        from pg_catalog.pg_class as c, aclexplode(c.relacl) as a
        where c.oid = 'public.memories'::regclass and a.grantee <> c.relowner
        order by 1, 2""",
    "functions": """
        select p.oid::regprocedure::text as signature, p.prosecdef, p.proconfig,
               p.provolatile::text as volatility, md5(p.prosrc) as source,
               p.proacl is null as default_acl,
               array(select case when a.grantee = 0 then 'PUBLIC'
                                 else a.grantee::regrole::text end
                     from aclexplode(p.proacl) as a
                     where a.grantee <> p.proowner and a.privilege_type = 'EXECUTE'
                     order by 1) as executors
        from pg_catalog.pg_proc as p where p.pronamespace = 'public'::regnamespace
        order by 1""",
}


async def describe_schema(conn: asyncpg.Connection | Connection) -> dict[str, list[dict[str, Any]]]:
    """The memory schema as the catalog sees it, as plain data."""
    return {
        part: [dict(row) for row in await conn.fetch(sql)] for part, sql in _DESCRIBE_SQL.items()
    }
