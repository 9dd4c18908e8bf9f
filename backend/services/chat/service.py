"""Chat turns grounded in the memory (DESIGN section 7), and compaction of old episodes.

A turn reads its chat context once (what the prompt uses, nothing more), asks the LLM, then
appends the user's message and the reply to episodic_memory in one append call; a failed
upstream call stores nothing. Past the soft cap, the oldest episodes are summarised into
long_term_summary and removed by one SQL call that keeps anything appended meanwhile (never a
read-modify-write of the list here).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from config import Settings
from errors import IdempotencyConflict, ServiceError
from models import JsonObject, MemoryField, User
from services.chat.llm import LLMService
from services.chat.stream import StreamingTurn
from services.chat.turn import Turn, TurnResult, stored_turn_of, summary_messages
from services.memory_service import MemoryService
from services.observability.metrics import count_compaction, count_recall
from services.recall.service import RecallService

logger = logging.getLogger(__name__)

EPISODES = MemoryField.EPISODIC_MEMORY
SUMMARY = MemoryField.LONG_TERM_SUMMARY


class ChatService:
    """Lightweight (built per request around the shared memory service and HTTP pool)."""

    def __init__(
        self, memory: MemoryService, recall: RecallService, llm: LLMService, settings: Settings
    ) -> None:
        self._memory = memory
        self._recall = recall
        self._llm = llm
        self._settings = settings

    async def begin(self, user: User, message: str, *, idempotency_key: str | None) -> Turn:
        """Read the chat context, with recall, and count the turn against the chat limits (one
        call; 429 past a limit, nothing stored), then build the turn's prompt and episode ids.
        The message is embedded once, for the recall search and for storing it."""
        episode_ids = Turn.episode_ids_for(user, idempotency_key or uuid.uuid4().hex)
        keyed = idempotency_key is not None
        recall = await self._recall.recall_for(message)
        context = await self._memory.begin_chat_turn(
            user,
            history=self._settings.chat_history_episodes,
            turn_ids=episode_ids if keyed else None,
            recall=recall,
        )
        if recall is not None:
            count_recall(len(context.recalled))
        return Turn.build(
            user,
            message,
            context,
            episode_ids=episode_ids,
            keyed=keyed,
            embedding=recall.embedding if recall else None,
        )

    async def reply(self, turn: Turn) -> TurnResult:
        """The whole reply, stored with the message; a retried stored turn answers as stored."""
        if turn.stored is not None:
            return turn.stored
        reply = await self._llm.complete(turn.prompt)
        return await self.store(turn, reply, interrupted=False)

    async def stream(self, turn: Turn) -> StreamingTurn:
        """Open the upstream stream first: a refused or unreachable upstream is still an error
        status for the client, with nothing stored."""

        async def save(reply: str, interrupted: bool) -> TurnResult:
            return await self.store(turn, reply, interrupted=interrupted)

        if turn.stored is not None:
            return StreamingTurn(None, save, replay=turn.stored)
        return StreamingTurn(await self._llm.open_stream(turn.prompt), save)

    async def store(self, turn: Turn, reply: str, *, interrupted: bool) -> TurnResult:
        """Append both episodes in one call (ids fixed per turn: a retry appends nothing). A
        retry racing its first try (same key, both past the read) finds the other's turn
        stored: it answers that turn rather than a 409."""
        try:
            return await self._append_turn(turn, reply, interrupted=interrupted)
        except IdempotencyConflict:
            context = await self._memory.chat_context(
                turn.user, history=0, turn_ids=turn.episode_ids
            )
            stored = stored_turn_of(turn, context)
            if stored is None:
                raise
            return stored

    async def _append_turn(self, turn: Turn, reply: str, *, interrupted: bool) -> TurnResult:
        message_id = turn.episode_ids[0]
        result = await self._memory.append_items(
            turn.user,
            EPISODES,
            turn.episodes(reply, interrupted=interrupted, max_bytes=self._settings.max_item_bytes),
            embeddings={message_id: turn.embedding} if turn.embedding else None,
        )
        return TurnResult(reply, result.items)

    async def after_turn(self, turn: Turn, result: TurnResult) -> None:
        """After a stored turn: embed what is not embedded yet (the reply; the message too when
        it was not embedded for recall), then compact past the soft cap. Never raises: a
        failure is logged; backfill embeds later and the next turn compacts."""
        message_id = turn.episode_ids[0]
        unembedded = [e for e in result.episodes if e.get("id") != message_id or not turn.embedding]
        try:
            await self._recall.embed_stored(turn.user, unembedded)
        except ServiceError as exc:
            logger.warning("storing the turn's embeddings failed: %s", exc.detail)
        if turn.context.episode_count + 2 <= self._settings.episodic_soft_cap:
            return
        try:
            outcome = await self._compact(turn)
        except ServiceError as exc:
            count_compaction("failed")
            logger.warning("episode compaction failed: %s", exc.detail)
        except Exception:
            count_compaction("failed")
            logger.exception("episode compaction failed")
        else:
            if outcome is not None:
                count_compaction(outcome)

    async def _compact(self, turn: Turn) -> str | None:
        """Read the list (only now: compaction needs the oldest items themselves), summarise
        all but the newest EPISODIC_KEEP_AFTER_COMPACTION, then remove exactly those and merge
        the summary in one SQL call; that call changes nothing when another compaction removed
        any of them first."""
        episodes, _ = await self._memory.read_field(turn.user, EPISODES)
        oldest = episodes[: max(0, len(episodes) - self._settings.compaction_keep)]
        ids = [e["id"] for e in oldest if isinstance(e.get("id"), str)]
        if len(episodes) <= self._settings.episodic_soft_cap or not ids:
            return None  # nothing to do: not counted
        prompt = summary_messages(turn.context.long_term_summary, oldest)
        summary = (await self._llm.complete(prompt)).strip()
        if not summary:
            logger.warning("episode compaction skipped: the LLM returned an empty summary")
            return "skipped"
        patch: JsonObject = {
            "summary": summary,
            "summarized_through": oldest[-1].get("created_at"),
            "compacted_at": datetime.now(UTC).isoformat(),
        }
        compacted = await self._memory.compact(
            turn.user, EPISODES, ids, summary_field=SUMMARY, summary_patch=patch
        )
        if compacted:
            logger.info("compacted %d episodes into long_term_summary", len(ids))
            return "compacted"
        logger.info("episode compaction skipped: those episodes changed meanwhile")
        return "skipped"
