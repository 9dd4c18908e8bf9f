"""Memory repository on PostgreSQL through an asyncpg pool (the `postgres` and `embedded` backends).

Each operation is one transaction that first impersonates the user exactly as PostgREST does
(`role` = authenticated, `request.jwt.claims` = the verified claims, both transaction-local),
then runs one statement: RLS and the SQL functions of `supabase_schema.sql` see that user.

Three round trips per operation: `BEGIN` and the impersonation travel together as one simple
query (the claims inlined as a quoted literal), then the statement, then `COMMIT`. On loopback
each trip costs the app more CPU than anything else on the hot path (`make bench`, README).
The role is still set by a statement *before* the protected one: RLS is decided when a
statement is planned, so it must never be set inside the statement it protects.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from config import Settings
from errors import (
    ServiceError,
    StorageError,
    StorageUnavailable,
)
from models import AppendResult, MemoryDocument, MemoryField, StoredValue, User
from repositories.storage_errors import error_for_sqlstate, validated

logger = logging.getLogger(__name__)

Connection = asyncpg.Connection | PoolConnectionProxy

# What PostgREST runs first in every request's transaction (as the `role` claim says; only
# `authenticated` users get here).
IMPERSONATE_SQL = (
    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)"
)
_BEGIN_CACHE_SIZE = 4096  # BEGIN statements of recently seen tokens (a token's claims never change)
_DOCUMENT_COLUMNS = ", ".join([*(f.value for f in MemoryField), "version", "updated_at"])
# Column names below come from the MemoryField catalogue only, never from a request.
READ_DOCUMENT_SQL = (
    f"select {_DOCUMENT_COLUMNS} from public.memories"  # noqa: S608
    " where user_id = (select auth.uid())"
)
READ_FIELD_SQL = {
    field: f'select "{field.value}" as value, version from public.memories'  # noqa: S608
    " where user_id = (select auth.uid())"
    for field in MemoryField
}
SET_FIELD_SQL = "select public.memory_set_field($1, $2::jsonb, $3)"
MERGE_FIELD_SQL = "select public.memory_merge_field($1, $2::jsonb, $3)"
APPEND_ITEMS_SQL = "select public.memory_append_items($1, $2::jsonb, $3, $4)"
REMOVE_ITEM_SQL = "select public.memory_remove_item($1, $2)"
ERASE_SQL = "select public.memory_erase()"
COMPACT_SQL = "select public.memory_compact($1, $2::text[], $3, $4::jsonb)"


def quote_literal(text: str) -> str:
    """`text` as an escape-string literal (E'…'): backslashes and quotes doubled, so it reads
    back verbatim whatever `standard_conforming_strings` says. NUL can not be quoted at all."""
    if "\x00" in text:
        raise ValueError("NUL in a SQL literal")
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def begin_as_user_sql(claims: dict[str, Any]) -> str:
    """`BEGIN` plus PostgREST's first statement for these verified claims, as one simple query
    (one round trip). `json.dumps` escapes every control character and non-ASCII one, so the
    literal holds printable ASCII only."""
    return "BEGIN; " + IMPERSONATE_SQL.replace("$1", quote_literal(json.dumps(claims)))


async def _roll_back(conn: Connection) -> None:
    """End a failed transaction. A connection that can not even do that is closed, and the
    pool opens a new one: it is never handed out again mid-transaction."""
    if conn.is_closed():
        return
    try:
        await conn.execute("ROLLBACK")
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    ):
        conn.terminate()


def storage_error_for(exc: asyncpg.PostgresError) -> ServiceError:
    """Map a PostgreSQL error to a domain error (see `error_for_sqlstate`)."""
    code = exc.sqlstate or ""
    message = str(getattr(exc, "message", "") or "")
    mapped = error_for_sqlstate(code, message)
    if mapped is not None:
        return mapped
    logger.error("unexpected database error %s: %s", code, message)
    return StorageError()


class PostgresMemoryRepository:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._timeout = settings.storage_timeout_seconds
        self._begin_sql: dict[str, str] = {}
        # First come, first served for the pool's connections. asyncpg's pool queue lets a
        # newcomer take a just-released connection before a woken waiter gets to it, so under
        # load some requests wait many turns (p99 several times p90). asyncio.Semaphore is
        # FIFO, and with it the pool's own queue never has waiters.
        self._turns = asyncio.Semaphore(pool.get_max_size())

    def _begin_for(self, user: User) -> str:
        """The BEGIN + impersonation query of this user's token (cached: built per token once)."""
        sql = self._begin_sql.get(user.token)
        if sql is None:
            sql = begin_as_user_sql(user.claims)
            if len(self._begin_sql) >= _BEGIN_CACHE_SIZE:
                self._begin_sql.clear()
            self._begin_sql[user.token] = sql
        return sql

    @asynccontextmanager
    async def _as_user(self, user: User) -> AsyncIterator[Connection]:
        """One transaction as `user`, bounded by the storage timeout; faults become 503.

        Rolled back on any exception, committed otherwise (as asyncpg's `transaction()` would,
        one round trip less: BEGIN rides with the impersonation)."""
        begin = self._begin_for(user)
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._turns,
                self._pool.acquire() as conn,
            ):
                try:
                    await conn.execute(begin)
                    yield conn
                except BaseException:
                    await _roll_back(conn)
                    raise
                await conn.execute("COMMIT")
        except asyncpg.PostgresError as exc:
            raise storage_error_for(exc) from exc
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            logger.warning("database unavailable: %s", type(exc).__name__)
            raise StorageUnavailable() from exc
        except asyncpg.InternalClientError as exc:
            # The connection broke mid-protocol (e.g. the server shut down while it sat in the
            # pool): the pool drops it; the request is retryable.
            logger.warning("database connection unusable: %s", exc)
            raise StorageUnavailable() from exc

    async def read_document(self, user: User) -> MemoryDocument:
        async with self._as_user(user) as conn:
            row = await conn.fetchrow(READ_DOCUMENT_SQL)
        return MemoryDocument() if row is None else validated(MemoryDocument, dict(row))

    async def read_field(self, user: User, field: MemoryField) -> tuple[Any, int]:
        async with self._as_user(user) as conn:
            row = await conn.fetchrow(READ_FIELD_SQL[field])
        if row is None:
            return field.default(), 0
        return row["value"], row["version"]

    async def set_field(
        self, user: User, field: MemoryField, value: Any, *, expected_version: int | None
    ) -> StoredValue:
        async with self._as_user(user) as conn:
            result = await conn.fetchval(SET_FIELD_SQL, field.value, value, expected_version)
        return validated(StoredValue, result)

    async def merge_field(
        self,
        user: User,
        field: MemoryField,
        patch: dict[str, Any],
        *,
        expected_version: int | None,
    ) -> StoredValue:
        async with self._as_user(user) as conn:
            result = await conn.fetchval(MERGE_FIELD_SQL, field.value, patch, expected_version)
        return validated(StoredValue, result)

    async def append_items(
        self,
        user: User,
        field: MemoryField,
        items: list[dict[str, Any]],
        *,
        cap: int,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        async with self._as_user(user) as conn:
            result = await conn.fetchval(APPEND_ITEMS_SQL, field.value, items, cap, idempotency_key)
        return validated(AppendResult, result)

    async def remove_item(self, user: User, field: MemoryField, item_id: str) -> bool:
        async with self._as_user(user) as conn:
            result = await conn.fetchval(REMOVE_ITEM_SQL, field.value, item_id)
        return result is not None

    async def erase(self, user: User) -> bool:
        async with self._as_user(user) as conn:
            erased: bool = await conn.fetchval(ERASE_SQL)
        return erased

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                await conn.fetchval("select 1")
        except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable() from exc

    async def compact_items(
        self,
        user: User,
        field: MemoryField,
        item_ids: list[str],
        *,
        summary_field: MemoryField,
        summary_patch: dict[str, Any],
    ) -> bool:
        async with self._as_user(user) as conn:
            result = await conn.fetchval(
                COMPACT_SQL, field.value, item_ids, summary_field.value, summary_patch
            )
        return result is not None
