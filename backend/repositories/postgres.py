"""Memory repository on PostgreSQL through an asyncpg pool (the `postgres` and `embedded` backends).

One round trip per operation: a single statement, in autocommit, calls
`memory_private.call_as_user(claims, operation, args)` (supabase_schema.sql). Its first
statement impersonates the user exactly as PostgREST does (`role` authenticated and
`request.jwt.claims`, both transaction-local); its next one runs the operation, planned as that
user, so RLS and the SQL functions see only them. Both settings end with the statement's
implicit transaction, error or not: a pooled connection never keeps a user. The claims travel
as a bind parameter, never inside SQL text.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from uuid import UUID

import asyncpg

from config import Settings
from errors import ServiceError, StorageError, StorageUnavailable
from models import (
    AppendResult,
    ChatContext,
    ChildLink,
    ImportResult,
    MemoryDocument,
    MemoryExport,
    MemoryField,
    Recall,
    ReportContext,
    SearchResult,
    StoredValue,
    User,
)
from repositories.sql_values import vector_text
from repositories.storage_errors import (
    begun_turn,
    error_for_sqlstate,
    field_value,
    stored_daily_turns,
    validated,
)

logger = logging.getLogger(__name__)

CALL_AS_USER_SQL = "select memory_private.call_as_user($1, $2, $3::jsonb)"
_CLAIMS_CACHE_SIZE = 4096  # claims JSON of recently seen tokens (a token's claims never change)


def claims_json(claims: dict[str, Any]) -> str:
    """The claims as `request.jwt.claims` holds them (what PostgREST sets): a JSON object."""
    return json.dumps(claims)


def storage_error_for(exc: asyncpg.PostgresError) -> ServiceError:
    """Map a PostgreSQL error to a domain error (see `error_for_sqlstate`)."""
    code = exc.sqlstate or ""
    message = str(getattr(exc, "message", "") or "")
    mapped = error_for_sqlstate(code, message)
    if mapped is not None:
        return mapped
    logger.error("unexpected database error %s: %s", code, message)
    return StorageError()


class _CountedSemaphore:
    """An asyncio.Semaphore (FIFO) that counts the tasks waiting on it. A free slot is taken
    without suspending, so only tasks that really queue are ever counted."""

    def __init__(self, slots: int) -> None:
        self._semaphore = asyncio.Semaphore(slots)
        self.waiting = 0

    async def __aenter__(self) -> None:
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1

    async def __aexit__(self, *exc_info: object) -> None:
        self._semaphore.release()


class PostgresMemoryRepository:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._timeout = settings.storage_timeout_seconds
        self._text_config = settings.search_text_config
        self._vector_weight = settings.search_vector_weight
        self._claims: dict[str, str] = {}
        # First come, first served for the pool's connections. asyncpg's pool queue lets a
        # newcomer take a just-released connection before a woken waiter gets to it, so under
        # load some requests wait many turns (p99 several times p90). asyncio.Semaphore is
        # FIFO, and with it the pool's own queue never has waiters.
        self._turns = _CountedSemaphore(pool.get_max_size())

    def pool_in_use(self) -> int:
        """Connections of the pool held by an operation now (metrics)."""
        return self._pool.get_size() - self._pool.get_idle_size()

    def pool_waiters(self) -> int:
        """Operations queued for a connection now (metrics): counted, not estimated."""
        return self._turns.waiting

    def _claims_of(self, user: User) -> str:
        """The user's verified claims as JSON (built once per token)."""
        claims = self._claims.get(user.token)
        if claims is None:
            claims = claims_json(user.claims)
            if len(self._claims) >= _CLAIMS_CACHE_SIZE:
                self._claims.clear()
            self._claims[user.token] = claims
        return claims

    async def call(self, user: User, operation: str, args: dict[str, Any] | None = None) -> Any:
        """Run one operation of `memory_private.call_as_user` as `user`: one round trip,
        bounded by the storage timeout; its JSON result decoded. Faults become domain errors
        (503 for anything worth retrying)."""
        claims = self._claims_of(user)
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._turns,
                self._pool.acquire() as conn,
            ):
                return await conn.fetchval(CALL_AS_USER_SQL, claims, operation, args or {})
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
        result = await self.call(user, "read_document")
        return MemoryDocument() if result is None else validated(MemoryDocument, result)

    async def read_field(
        self,
        user: User,
        field: MemoryField,
        *,
        limit: int | None = None,
        before: str | None = None,
    ) -> tuple[Any, int]:
        args = {"field": field.value, "limit": limit, "before": before}
        return field_value(field, await self.call(user, "read_field", args))

    async def chat_context(
        self,
        user: User,
        *,
        history: int,
        turn_ids: tuple[str, str] | None = None,
        recall: Recall | None = None,
    ) -> ChatContext:
        args = {
            "history": history,
            "turn_ids": list(turn_ids) if turn_ids else None,
            **self._recall_args(recall),
        }
        return validated(ChatContext, await self.call(user, "chat_context", args))

    def _recall_args(self, recall: Recall | None) -> dict[str, Any]:
        """The chat context's recall search arguments (none: no recall)."""
        if recall is None or recall.k == 0:
            return {}
        return {
            "recall_query": recall.query,
            "recall_k": recall.k,
            "config": self._text_config,
            "embedding": vector_text(recall.embedding),
            "vector_weight": self._vector_weight,
        }

    async def search(
        self, user: User, query: str, *, limit: int, embedding: list[float] | None = None
    ) -> SearchResult:
        args = {
            "query": query,
            "limit": limit,
            "config": self._text_config,
            "embedding": vector_text(embedding),
            "vector_weight": self._vector_weight,
        }
        return validated(SearchResult, await self.call(user, "search", args))

    async def save_embeddings(self, user: User, embeddings: dict[str, list[float]]) -> int:
        stored = await self.call(user, "save_embeddings", {"embeddings": embeddings})
        if not isinstance(stored, int):
            raise StorageError()
        return stored

    async def set_field(
        self, user: User, field: MemoryField, value: Any, *, expected_version: int | None
    ) -> StoredValue:
        args = {
            "field": field.value,
            "value": value,
            "expected_version": expected_version,
            "config": self._text_config,
        }
        return validated(StoredValue, await self.call(user, "set_field", args))

    async def merge_field(
        self,
        user: User,
        field: MemoryField,
        patch: dict[str, Any],
        *,
        expected_version: int | None,
    ) -> StoredValue:
        args = {"field": field.value, "patch": patch, "expected_version": expected_version}
        return validated(StoredValue, await self.call(user, "merge_field", args))

    async def append_items(
        self,
        user: User,
        field: MemoryField,
        items: list[dict[str, Any]],
        *,
        cap: int,
        idempotency_key: str | None = None,
        embeddings: dict[str, list[float]] | None = None,
    ) -> AppendResult:
        args = {
            "field": field.value,
            "items": items,
            "cap": cap,
            "idempotency_key": idempotency_key,
            "config": self._text_config,
            "embeddings": embeddings or None,
        }
        return validated(AppendResult, await self.call(user, "append_items", args))

    async def remove_item(self, user: User, field: MemoryField, item_id: str) -> bool:
        args = {"field": field.value, "item_id": item_id}
        return await self.call(user, "remove_item", args) is not None

    async def erase(self, user: User) -> bool:
        erased = await self.call(user, "erase")
        if not isinstance(erased, bool):
            raise StorageError()
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
        args = {
            "field": field.value,
            "item_ids": item_ids,
            "summary_field": summary_field.value,
            "summary_patch": summary_patch,
        }
        return await self.call(user, "compact", args) is not None

    async def import_document(
        self,
        user: User,
        document: dict[str, Any],
        *,
        caps: dict[str, int],
        dry_run: bool = False,
    ) -> ImportResult:
        args = {
            "document": document,
            "caps": caps,
            "dry_run": dry_run,
            "config": self._text_config,
        }
        return validated(ImportResult, await self.call(user, "import_document", args))

    async def export_document(self, user: User) -> MemoryExport:
        result = await self.call(user, "export_document")
        return MemoryExport() if result is None else validated(MemoryExport, result)

    # --- chat limits and guardians (supabase_schema.sql, "Guardians") ------------------------

    async def begin_chat_turn(
        self,
        user: User,
        *,
        history: int,
        turn_ids: tuple[str, str] | None = None,
        turns_per_minute: int | None = None,
        recall: Recall | None = None,
    ) -> ChatContext:
        args = {
            "history": history,
            "turn_ids": list(turn_ids) if turn_ids else None,
            "turns_per_minute": turns_per_minute,
            **self._recall_args(recall),
        }
        return begun_turn(await self.call(user, "chat_begin_turn", args))

    async def guardian_children(self, user: User) -> list[ChildLink]:
        result = await self.call(user, "guardian_children")
        if not isinstance(result, list):
            raise StorageError()
        return [validated(ChildLink, link) for link in result]

    async def guardian_read_document(self, user: User, child_id: UUID) -> MemoryDocument:
        result = await self.call(user, "guardian_read_document", {"child_id": str(child_id)})
        return MemoryDocument() if result is None else validated(MemoryDocument, result)

    async def guardian_set_field(
        self, user: User, child_id: UUID, field: MemoryField, value: list[dict[str, Any]]
    ) -> StoredValue:
        args = {"child_id": str(child_id), "field": field.value, "value": value}
        return validated(StoredValue, await self.call(user, "guardian_set_field", args))

    async def guardian_append_items(
        self,
        user: User,
        child_id: UUID,
        field: MemoryField,
        items: list[dict[str, Any]],
        *,
        cap: int,
    ) -> AppendResult:
        args = {"child_id": str(child_id), "field": field.value, "items": items, "cap": cap}
        return validated(AppendResult, await self.call(user, "guardian_append_items", args))

    async def guardian_remove_item(
        self, user: User, child_id: UUID, field: MemoryField, item_id: str
    ) -> bool:
        args = {"child_id": str(child_id), "field": field.value, "item_id": item_id}
        return await self.call(user, "guardian_remove_item", args) is not None

    async def guardian_report_context(
        self, user: User, child_id: UUID, *, max_episodes: int
    ) -> ReportContext:
        args = {"child_id": str(child_id), "max_episodes": max_episodes}
        return validated(ReportContext, await self.call(user, "guardian_report_context", args))

    async def guardian_store_report(
        self,
        user: User,
        child_id: UUID,
        report: dict[str, Any],
        *,
        after_episode_id: str | None,
        cap: int,
    ) -> AppendResult | None:
        args = {
            "child_id": str(child_id),
            "report": report,
            "after_episode_id": after_episode_id,
            "cap": cap,
        }
        result = await self.call(user, "guardian_store_report", args)
        return None if result is None else validated(AppendResult, result)

    async def guardian_set_chat_limit(
        self, user: User, child_id: UUID, daily_turns: int | None
    ) -> int | None:
        args = {"child_id": str(child_id), "daily_turns": daily_turns}
        result = await self.call(user, "guardian_set_chat_limit", args)
        return stored_daily_turns(result)

    async def guardian_erase_child(self, user: User, child_id: UUID) -> bool:
        erased = await self.call(user, "guardian_erase_child", {"child_id": str(child_id)})
        if not isinstance(erased, bool):
            raise StorageError()
        return erased
