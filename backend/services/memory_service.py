"""The memory service: validation, limits and idempotency on top of a `MemoryRepository`.

The repository does every write in one SQL function call (no read-modify-write here), so this
layer only decides *what* to write. Storage errors propagate: a failed read is never "empty".
"""

from __future__ import annotations

import json
import re
from typing import Any

from config import Settings
from errors import (
    InvalidValue,
    ItemNotFound,
    PayloadTooLarge,
    UnknownField,
    WrongFieldKind,
)
from models import (
    AppendResult,
    ChatContext,
    FieldKind,
    MemoryDocument,
    MemoryField,
    Recall,
    StoredValue,
    User,
)
from repositories.base import StorageRepository

MAX_ITEMS_PER_APPEND = 100
MAX_ITEM_ID_LENGTH = 200
MAX_NESTING_DEPTH = 32  # far beyond any memory's needs; well inside what JSON libraries handle
_MISSING: Any = object()
# json.dumps writes NUL as \u0000; an even run of backslashes before it is escaped backslashes.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def resolve_field(name: str) -> MemoryField:
    """The catalogue entry for `name`; unknown names are a 404, never a column lookup."""
    try:
        return MemoryField(name)
    except ValueError:
        raise UnknownField(f"unknown memory field {name!r}") from None


def require_kind(field: MemoryField, kind: FieldKind) -> None:
    if field.kind is not kind:
        raise WrongFieldKind(
            f"{field.value} is a{'n' if field.kind is FieldKind.OBJECT else ''} "
            f"{field.kind.value} field",
            allow="GET, PUT, PATCH" if field.kind is FieldKind.OBJECT else "GET, PUT, POST",
        )


def nesting_depth(value: Any) -> int:
    """How deep arrays and objects nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            stack.extend((child, depth + 1) for child in current.values())
        elif isinstance(current, list):
            stack.extend((child, depth + 1) for child in current)
        else:
            continue
        deepest = max(deepest, depth + 1)
    return deepest


def encoded_size(value: Any) -> int:
    """UTF-8 bytes of `value` as JSON; refuses what PostgreSQL's jsonb can not hold (NaN,
    \\u0000). Control characters stay escaped, so a NUL shows as the six characters \\u0000."""
    if nesting_depth(value) > MAX_NESTING_DEPTH:
        raise InvalidValue(f"values may nest at most {MAX_NESTING_DEPTH} levels deep")
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise InvalidValue("strings must be valid Unicode (no lone surrogates)") from exc
    except ValueError as exc:
        raise InvalidValue("NaN and Infinity are not JSON values") from exc
    if "\\u0000" in text and _ESCAPED_NUL.search(text):  # the substring test is cheap
        raise InvalidValue("strings may not contain the NUL character (\\u0000)")
    return size


class MemoryService:
    def __init__(self, repository: StorageRepository, settings: Settings) -> None:
        self._repository = repository
        self._settings = settings

    # --- reads --------------------------------------------------------------------------

    async def read_document(self, user: User) -> MemoryDocument:
        return await self._repository.read_document(user)

    async def read_field(
        self,
        user: User,
        field: MemoryField,
        *,
        limit: int | None = None,
        before: str | None = None,
    ) -> tuple[Any, int]:
        """A field's value and the row version. For list fields, `before` keeps the items older
        than that item id (404 when it is not there) and `limit` the newest N of those; storage
        slices, so a page costs what it returns."""
        if field.kind is FieldKind.OBJECT:
            limit = before = None
        elif before is not None and "\x00" in before:
            raise ItemNotFound(f"no item {before!r} in {field.value}")
        return await self._repository.read_field(user, field, limit=limit, before=before)

    async def chat_context(
        self,
        user: User,
        *,
        history: int,
        turn_ids: tuple[str, str] | None = None,
        recall: Recall | None = None,
    ) -> ChatContext:
        """What a chat turn's prompt uses, in one read (see `ChatContext`)."""
        return await self._repository.chat_context(
            user, history=history, turn_ids=turn_ids, recall=recall
        )

    async def begin_chat_turn(
        self,
        user: User,
        *,
        history: int,
        turn_ids: tuple[str, str] | None = None,
        recall: Recall | None = None,
    ) -> ChatContext:
        """`chat_context`, with one turn counted against the user's chat limits in the same
        call (CHAT_TURNS_PER_MINUTE, a guardian's daily limit): past one, ChatLimitReached
        (429) and nothing stored. A keyed retry that finds its turn stored is not counted."""
        return await self._repository.begin_chat_turn(
            user,
            history=history,
            turn_ids=turn_ids,
            turns_per_minute=self._settings.chat_turns_per_minute or None,
            recall=recall,
        )

    async def read_db_field(self, user: User, field: str, default: Any = _MISSING) -> Any:
        """The seed's read: the stored value of `field`. `default` (else the field's empty value)
        only when the user has no row yet; storage errors propagate."""
        value, version = await self._repository.read_field(user, resolve_field(field))
        if version == 0 and default is not _MISSING:
            return default
        return value

    # --- writes -------------------------------------------------------------------------

    async def write_db_field(
        self, user: User, field: str, value: Any, *, expected_version: int | None = None
    ) -> StoredValue:
        """The seed's write: replace a field's whole value (an upsert on the user's row)."""
        return await self.set_field(
            user, resolve_field(field), value, expected_version=expected_version
        )

    async def set_field(
        self, user: User, field: MemoryField, value: Any, *, expected_version: int | None = None
    ) -> StoredValue:
        if field.kind is FieldKind.OBJECT:
            if not isinstance(value, dict):
                raise InvalidValue(f"{field.value} holds a JSON object")
            encoded_size(value)
        else:
            self.check_items(value, field, limit=self._settings.list_cap(field.value))
        return await self._repository.set_field(
            user, field, value, expected_version=expected_version
        )

    async def merge_field(
        self,
        user: User,
        field: MemoryField,
        patch: Any,
        *,
        expected_version: int | None = None,
    ) -> StoredValue:
        require_kind(field, FieldKind.OBJECT)
        if not isinstance(patch, dict):
            raise InvalidValue("a merge patch is a JSON object")
        encoded_size(patch)
        return await self._repository.merge_field(
            user, field, patch, expected_version=expected_version
        )

    async def append_items(
        self,
        user: User,
        field: MemoryField,
        items: Any,
        *,
        idempotency_key: str | None = None,
        embeddings: dict[str, list[float]] | None = None,
    ) -> AppendResult:
        """Append one item or up to 100. With an idempotency key the SQL function decides, in
        the same statement: a retry of the same body appends nothing and answers the stored
        items; the key with any other body is an IdempotencyConflict (409)."""
        require_kind(field, FieldKind.LIST)
        batch = [items] if isinstance(items, dict) else items
        if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_ITEMS_PER_APPEND:
            raise InvalidValue(f"send one item object or an array of 1-{MAX_ITEMS_PER_APPEND}")
        self.check_items(batch, field, limit=MAX_ITEMS_PER_APPEND)
        return await self._repository.append_items(
            user,
            field,
            batch,
            cap=self._settings.list_cap(field.value),
            idempotency_key=idempotency_key,
            embeddings=embeddings,
        )

    async def remove_item(self, user: User, field: MemoryField, item_id: str) -> None:
        require_kind(field, FieldKind.LIST)
        if "\x00" in item_id or not await self._repository.remove_item(user, field, item_id):
            raise ItemNotFound(f"no item {item_id!r} in {field.value}")

    async def erase(self, user: User) -> None:
        await self._repository.erase(user)

    async def compact(
        self,
        user: User,
        field: MemoryField,
        item_ids: list[str],
        *,
        summary_field: MemoryField,
        summary_patch: dict[str, Any],
    ) -> bool:
        """Replace the items `item_ids` of a list field by a merge into an object field (their
        summary), in one SQL call: items appended meanwhile are kept. False when any of those
        items is gone already (another compaction won): nothing changed."""
        require_kind(field, FieldKind.LIST)
        require_kind(summary_field, FieldKind.OBJECT)
        if not item_ids or len(set(item_ids)) != len(item_ids):
            raise InvalidValue("compaction needs distinct item ids")
        encoded_size(summary_patch)
        return await self._repository.compact_items(
            user, field, item_ids, summary_field=summary_field, summary_patch=summary_patch
        )

    # --- validation ---------------------------------------------------------------------

    def check_items(self, items: Any, field: MemoryField, *, limit: int) -> None:
        """List items: objects, ids (when given) unique non-empty strings, each within size."""
        if not isinstance(items, list):
            raise InvalidValue(f"{field.value} holds a JSON array of objects")
        if len(items) > limit:
            raise InvalidValue(f"at most {limit} items in {field.value}")
        seen: set[str] = set()
        for item in items:
            if not isinstance(item, dict):
                raise InvalidValue(f"{field.value} items are JSON objects")
            item_id = item.get("id")
            if item_id is not None:
                if not isinstance(item_id, str) or not 0 < len(item_id) <= MAX_ITEM_ID_LENGTH:
                    raise InvalidValue(
                        f"an item id is a string of 1-{MAX_ITEM_ID_LENGTH} characters"
                    )
                if item_id in seen:
                    raise InvalidValue(f"item id {item_id!r} appears twice")
                seen.add(item_id)
            if encoded_size(item) > self._settings.max_item_bytes:
                raise PayloadTooLarge(
                    f"an item is larger than {self._settings.max_item_bytes} bytes"
                )
