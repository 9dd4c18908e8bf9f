"""What a guardian does with a linked child's memory (DESIGN section 11): read it, set the
standing instructions, generate and read parent reports, set the chat limit, erase it.

Every call acts as the guardian: the database checks the link (Forbidden without one) and the
field-ownership trigger decides what may change, so this layer only validates and decides what
to write. Reports: the episodes since the newest report are summarised by the LLM and stored
only if no other report was stored meanwhile (two racing generations store one).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from config import Settings
from errors import (
    Forbidden,
    InvalidValue,
    ItemNotFound,
    LLMNotConfigured,
    NothingToReport,
    PayloadTooLarge,
    ReportRaceLost,
)
from models import (
    AppendResult,
    ChildLink,
    JsonObject,
    MemoryDocument,
    MemoryField,
    StoredValue,
    User,
)
from repositories.base import GuardianRepository
from services.chat.llm import LLMService
from services.guardians.report import report_item, report_messages
from services.memory_service import MAX_ITEMS_PER_APPEND, MemoryService

logger = logging.getLogger(__name__)

INSTRUCTIONS = MemoryField.CORE_INSTRUCTIONS
REPORTS = MemoryField.PARENT_REPORTS


class GuardianService:
    """Lightweight (built per request around the shared repository and HTTP pool)."""

    def __init__(
        self,
        repository: GuardianRepository,
        memory: MemoryService,
        settings: Settings,
        llm: LLMService | None,
    ) -> None:
        self._repository = repository
        self._memory = memory
        self._settings = settings
        self._llm = llm

    @asynccontextmanager
    async def _link_first(self, user: User, child_id: UUID) -> AsyncIterator[None]:
        """Validation inside: when it refuses the input, a caller who is not this child's
        guardian gets 403 rather than the validation error (one extra read, on refusal only)."""
        try:
            yield
        except (InvalidValue, PayloadTooLarge):
            if not any(c.child_id == child_id for c in await self.children(user)):
                raise Forbidden("you are not a guardian of this user") from None
            raise

    async def children(self, user: User) -> list[ChildLink]:
        return await self._repository.guardian_children(user)

    async def read_memory(self, user: User, child_id: UUID) -> MemoryDocument:
        return await self._repository.guardian_read_document(user, child_id)

    async def set_instructions(
        self, user: User, child_id: UUID, items: list[JsonObject]
    ) -> StoredValue:
        async with self._link_first(user, child_id):
            self._memory.check_items(
                items, INSTRUCTIONS, limit=self._settings.list_cap(INSTRUCTIONS)
            )
        return await self._repository.guardian_set_field(user, child_id, INSTRUCTIONS, items)

    async def append_instructions(
        self, user: User, child_id: UUID, items: JsonObject | list[JsonObject]
    ) -> AppendResult:
        batch = [items] if isinstance(items, dict) else items
        async with self._link_first(user, child_id):
            if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_ITEMS_PER_APPEND:
                raise InvalidValue(f"send one item object or an array of 1-{MAX_ITEMS_PER_APPEND}")
            self._memory.check_items(batch, INSTRUCTIONS, limit=MAX_ITEMS_PER_APPEND)
        return await self._repository.guardian_append_items(
            user, child_id, INSTRUCTIONS, batch, cap=self._settings.list_cap(INSTRUCTIONS)
        )

    async def remove_instruction(self, user: User, child_id: UUID, item_id: str) -> None:
        if "\x00" in item_id or not await self._repository.guardian_remove_item(
            user, child_id, INSTRUCTIONS, item_id
        ):
            raise ItemNotFound(f"no item {item_id!r} in {INSTRUCTIONS.value}")

    async def reports(self, user: User, child_id: UUID) -> list[JsonObject]:
        return (await self.read_memory(user, child_id)).parent_reports

    async def generate_report(self, user: User, child_id: UUID) -> JsonObject:
        """Summarise the episodes since the newest report and store the report (201). 409 when
        there is nothing new, or when another report was stored while this one was written."""
        context = await self._repository.guardian_report_context(
            user, child_id, max_episodes=self._settings.report_max_episodes
        )  # first: a user who is not this child's guardian gets 403, not 503
        if self._llm is None:
            raise LLMNotConfigured()
        if not context.episodes:
            raise NothingToReport()
        text = await self._llm.complete(report_messages(context))
        if not text.strip():
            logger.warning("report skipped: the LLM returned an empty report")
            raise NothingToReport("the language model wrote an empty report; try again")
        item = report_item(context, text, max_bytes=self._settings.max_item_bytes)
        stored = await self._repository.guardian_store_report(
            user,
            child_id,
            item,
            after_episode_id=context.after_episode_id,
            cap=self._settings.list_cap(REPORTS),
        )
        if stored is None:
            raise ReportRaceLost()
        report: JsonObject = stored.items[0]
        return report

    async def set_daily_limit(
        self, user: User, child_id: UUID, daily_turns: int | None
    ) -> int | None:
        return await self._repository.guardian_set_chat_limit(user, child_id, daily_turns)

    async def erase(self, user: User, child_id: UUID) -> None:
        await self._repository.guardian_erase_child(user, child_id)
