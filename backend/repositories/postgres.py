"""Memory repository on PostgreSQL through an asyncpg pool (the `postgres` and `embedded` backends).

Each operation is one transaction that first impersonates the user exactly as PostgREST does
(`role` = authenticated, `request.jwt.claims` = the verified claims, both transaction-local),
then runs one statement: RLS and the SQL functions of `supabase_schema.sql` see that user.
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
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidValue,
    ServiceError,
    StorageError,
    StorageUnavailable,
    VersionMismatch,
)
from models import AppendResult, MemoryDocument, MemoryField, StoredValue, User

logger = logging.getLogger(__name__)

Connection = asyncpg.Connection | PoolConnectionProxy

# What PostgREST runs first in every request's transaction (as the `role` claim says; only
# `authenticated` users get here).
IMPERSONATE_SQL = (
    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)"
)
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
APPEND_ITEMS_SQL = "select public.memory_append_items($1, $2::jsonb, $3)"
REMOVE_ITEM_SQL = "select public.memory_remove_item($1, $2)"
ERASE_SQL = "select public.memory_erase()"
COMPACT_SQL = "select public.memory_compact($1, $2::text[], $3, $4::jsonb)"

# Retry later: connection, transaction rollback (serialization, deadlock), resources,
# operator intervention (shutdown, cancel), system errors.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")


def storage_error_for(exc: asyncpg.PostgresError) -> ServiceError:
    """Map a PostgreSQL error (sqlstate) to a domain error; messages we raise ourselves are
    safe to show, anything else is described without SQL."""
    code = exc.sqlstate or ""
    message = str(getattr(exc, "message", "") or "")
    if code == "PT412":
        return VersionMismatch()
    if code == "PT409":
        return IdempotencyConflict(message or None)
    if code == "22023":
        return InvalidValue(message or None)
    if code.startswith("22") or code == "23514":
        return InvalidValue("the value can not be stored (invalid JSON content)")
    if code == "42501":
        return Forbidden()
    if code in ("23505", "23503"):
        return Conflict("the memory row conflicts with existing data")
    if code.startswith(_UNAVAILABLE_SQLSTATE_CLASSES):
        return StorageUnavailable()
    logger.error("unexpected database error %s: %s", code, message)
    return StorageError()


class PostgresMemoryRepository:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._timeout = settings.storage_timeout_seconds

    @asynccontextmanager
    async def _as_user(self, user: User) -> AsyncIterator[Connection]:
        """One transaction as `user`, bounded by the storage timeout; faults become 503."""
        try:
            async with asyncio.timeout(self._timeout):
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute(IMPERSONATE_SQL, json.dumps(user.claims))
                    yield conn
        except asyncpg.PostgresError as exc:
            raise storage_error_for(exc) from exc
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            logger.warning("database unavailable: %s", type(exc).__name__)
            raise StorageUnavailable() from exc

    async def read_document(self, user: User) -> MemoryDocument:
        async with self._as_user(user) as conn:
            row = await conn.fetchrow(READ_DOCUMENT_SQL)
        return MemoryDocument() if row is None else MemoryDocument(**dict(row))

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
        return StoredValue.model_validate(result)

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
        return StoredValue.model_validate(result)

    async def append_items(
        self, user: User, field: MemoryField, items: list[dict[str, Any]], *, cap: int
    ) -> AppendResult:
        async with self._as_user(user) as conn:
            result = await conn.fetchval(APPEND_ITEMS_SQL, field.value, items, cap)
        return AppendResult.model_validate(result)

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
