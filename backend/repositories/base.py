"""The memory repository protocol: one storage backend per implementation, no FastAPI inside.

Every method acts as `user` (RLS applies in the database) and is one round trip to storage.
Bounded reads are sliced by storage: what crosses the wire is what the caller asked for.
Errors are domain errors from `errors.py`; a storage failure is never answered as "empty".
"""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

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


class MemoryRepository(Protocol):
    async def read_document(self, user: User) -> MemoryDocument:
        """The user's whole memory; defaults and version 0 when no row exists (creates none)."""
        ...

    async def read_field(
        self,
        user: User,
        field: MemoryField,
        *,
        limit: int | None = None,
        before: str | None = None,
    ) -> tuple[Any, int]:
        """One field's stored value and the row version; the field's default and 0 if no row.
        List fields: `before` keeps the items older than that item id (ItemNotFound when there
        is none), `limit` the newest N of those."""
        ...

    async def chat_context(
        self,
        user: User,
        *,
        history: int,
        turn_ids: tuple[str, str] | None = None,
        recall: Recall | None = None,
    ) -> ChatContext:
        """What a chat turn's prompt uses (see `ChatContext`), with the newest `history`
        episodic items; `turn_ids` are looked up among the stored items; with `recall`, the
        best matches of the conversation log outside the history window."""
        ...

    async def search(
        self, user: User, query: str, *, limit: int, embedding: list[float] | None = None
    ) -> SearchResult:
        """The user's logged episodes that best match `query` (hybrid with `embedding`)."""
        ...

    async def save_embeddings(self, user: User, embeddings: dict[str, list[float]]) -> int:
        """Store embeddings of logged episodes by id; returns how many were stored."""
        ...

    async def set_field(
        self, user: User, field: MemoryField, value: Any, *, expected_version: int | None
    ) -> StoredValue: ...

    async def merge_field(
        self,
        user: User,
        field: MemoryField,
        patch: dict[str, Any],
        *,
        expected_version: int | None,
    ) -> StoredValue: ...

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
        """Append `items`, keeping the newest `cap`. With `idempotency_key` the call is all or
        nothing: a retry of the same body answers the stored items and writes nothing; the key
        with another body (longer, shorter, other content) is an IdempotencyConflict.
        episodic_memory items are logged by the same call, with `embeddings` by item id."""
        ...

    async def remove_item(self, user: User, field: MemoryField, item_id: str) -> bool:
        """True when the item was there and is gone; False when there was no such item."""
        ...

    async def erase(self, user: User) -> bool:
        """Delete the user's row and conversation log; True when there was anything."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable when storage can not be reached (readiness)."""
        ...

    async def compact_items(
        self,
        user: User,
        field: MemoryField,
        item_ids: list[str],
        *,
        summary_field: MemoryField,
        summary_patch: dict[str, Any],
    ) -> bool:
        """Remove exactly `item_ids` from `field` and shallow-merge `summary_patch` into
        `summary_field`, atomically and only if all those items are still stored (items appended
        meanwhile survive). False when nothing changed."""
        ...

    async def import_document(
        self,
        user: User,
        document: dict[str, Any],
        *,
        caps: dict[str, int],
        dry_run: bool = False,
    ) -> ImportResult:
        """Apply an imported document (fields to values; list items with deterministic ids) in
        one call, all or nothing, idempotently (`memory_import_document` in the schema)."""
        ...

    async def export_document(self, user: User) -> MemoryExport:
        """The user's whole memory as an export holds it (defaults when no row exists)."""
        ...


class ChatTurnRepository(Protocol):
    async def begin_chat_turn(
        self,
        user: User,
        *,
        history: int,
        turn_ids: tuple[str, str] | None = None,
        turns_per_minute: int | None = None,
        recall: Recall | None = None,
    ) -> ChatContext:
        """`chat_context` (with `recall`) and, in the same call, one turn counted against the
        user's limits (the guardian's daily limit, `turns_per_minute`); a retry that finds its
        turn stored is not counted. Past a limit: ChatLimitReached, and nothing is stored."""
        ...


class GuardianRepository(Protocol):
    """Guardian operations: each acts as the guardian `user` on a linked child (Forbidden
    when there is no link; RLS and the field-ownership trigger decide again)."""

    async def guardian_children(self, user: User) -> list[ChildLink]: ...

    async def guardian_read_document(self, user: User, child_id: UUID) -> MemoryDocument: ...

    async def guardian_set_field(
        self, user: User, child_id: UUID, field: MemoryField, value: list[dict[str, Any]]
    ) -> StoredValue: ...

    async def guardian_append_items(
        self,
        user: User,
        child_id: UUID,
        field: MemoryField,
        items: list[dict[str, Any]],
        *,
        cap: int,
    ) -> AppendResult: ...

    async def guardian_remove_item(
        self, user: User, child_id: UUID, field: MemoryField, item_id: str
    ) -> bool: ...

    async def guardian_report_context(
        self, user: User, child_id: UUID, *, max_episodes: int
    ) -> ReportContext: ...

    async def guardian_store_report(
        self,
        user: User,
        child_id: UUID,
        report: dict[str, Any],
        *,
        after_episode_id: str | None,
        cap: int,
    ) -> AppendResult | None:
        """Store `report` unless another report was stored since `after_episode_id` was read
        (then None: two racing generations store one)."""
        ...

    async def guardian_set_chat_limit(
        self, user: User, child_id: UUID, daily_turns: int | None
    ) -> int | None: ...

    async def guardian_erase_child(self, user: User, child_id: UUID) -> bool: ...


class StorageRepository(MemoryRepository, ChatTurnRepository, GuardianRepository, Protocol):
    """Everything one storage backend does."""
