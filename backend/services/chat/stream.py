"""A streamed chat turn: text events as the LLM produces them, the episodes stored at the end,
and a partial reply still stored (marked interrupted) when the client goes away mid-stream.

Stores never overlap: the normal end and `close()` both go through one state, and a store that
has begun is shielded from cancellation, so a disconnect can not leave it half-decided.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from enum import Enum
from typing import Any

import anyio

from errors import ServiceError
from services.chat.llm import CompletionStream
from services.chat.turn import TurnResult

logger = logging.getLogger(__name__)

ChatEvent = tuple[str, dict[str, Any]]  # ("delta" | "done" | "error", data)
SaveReply = Callable[[str, bool], Awaitable[TurnResult]]  # (reply, interrupted) -> stored


async def _nothing_to_save(reply: str, interrupted: bool) -> TurnResult:
    raise AssertionError("a failed turn stores nothing")


class _State(Enum):
    STREAMING = "streaming"
    SAVED = "saved"
    FAILED = "failed"


class StreamingTurn:
    """Serve `events()`, then always `await close()`, however the serving ended.

    Events: `("delta", {"text"})` per piece of text; then `("done", {"reply", "episodes"})` once
    the episodes are stored, or `("error", {"status", "detail"})` when the upstream failed (then
    nothing is stored, so the client may retry) or the store failed."""

    def __init__(
        self,
        upstream: CompletionStream | None,
        save: SaveReply,
        *,
        replay: TurnResult | None = None,
    ) -> None:
        self._upstream = upstream
        self._save = save
        self._parts: list[str] = []
        self._state = _State.STREAMING
        self.result: TurnResult | None = replay
        if replay is not None:
            self._state = _State.SAVED
        self._failure: ServiceError | None = None
        self._events = self._generate()

    @classmethod
    def failed(cls, error: ServiceError) -> StreamingTurn:
        """A turn whose upstream failed before its first token: the stream is one `error`
        event (what the README promises a streaming client), and nothing is stored."""
        turn = cls(None, _nothing_to_save)
        turn._failure = error
        turn._state = _State.FAILED
        return turn

    def events(self) -> AsyncGenerator[ChatEvent, None]:
        return self._events

    async def _generate(self) -> AsyncGenerator[ChatEvent, None]:
        if self._failure is not None:
            yield "error", {"status": self._failure.status_code, "detail": self._failure.detail}
            return
        if self.result is not None:  # an Idempotency-Key retry of a stored turn
            yield "delta", {"text": self.result.reply}
            yield "done", {"reply": self.result.reply, "episodes": self.result.episodes}
            return
        assert self._upstream is not None
        try:
            async with aclosing(self._upstream.deltas()) as deltas:
                async for text in deltas:
                    self._parts.append(text)
                    yield "delta", {"text": text}
        except ServiceError as exc:  # UpstreamError / UpstreamTimeout: store nothing
            self._state = _State.FAILED
            yield "error", {"status": exc.status_code, "detail": exc.detail}
            return
        finally:
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
        outcome = await self._store(interrupted=False)
        if isinstance(outcome, TurnResult):
            yield "done", {"reply": outcome.reply, "episodes": outcome.episodes}
        elif outcome is not None:
            yield "error", {"status": outcome.status_code, "detail": outcome.detail}

    async def _store(self, *, interrupted: bool) -> TurnResult | ServiceError | None:
        """Store the reply so far, at most once (None when already decided); shielded, as a
        store that has begun must finish."""
        if self._state is not _State.STREAMING:
            return None
        with anyio.CancelScope(shield=True):
            try:
                self.result = await self._save("".join(self._parts), interrupted)
            except ServiceError as exc:
                self._state = _State.FAILED
                logger.warning("chat turn not stored: %s", exc.detail)
                return exc
            self._state = _State.SAVED
        return self.result

    async def close(self) -> bool:
        """End the turn: release the upstream and, when the stream was cut short, store the
        message and the partial reply marked interrupted. True when the turn is stored."""
        with anyio.CancelScope(shield=True):
            await self._events.aclose()
            if self._upstream is not None:
                await self._upstream.aclose()
            if self._state is _State.STREAMING:
                logger.info("chat stream cut short; storing the partial reply")
                await self._store(interrupted=True)
        return self._state is _State.SAVED and self.result is not None
