"""The chat API (DESIGN sections 6 and 7): HTTP only — parse, run a turn, answer JSON or
server-sent events. With no LLM configured it answers 503; the memory API works regardless."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, BackgroundTasks, Depends, Header
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from deps import CurrentUserDep, ServicesDep
from errors import LLMNotConfigured, UpstreamError, UpstreamTimeout
from models import ErrorOut, JsonObject
from routers.json_body import JsonBodyRoute
from services.chat.llm import LLMService
from services.chat.service import ChatService
from services.chat.stream import ChatEvent, StreamingTurn
from services.chat.turn import TurnResult

router = APIRouter(prefix="/api", tags=["chat"], route_class=JsonBodyRoute)

MAX_MESSAGE_CHARS = 4000
_ERROR_TEXT = {
    401: "missing, invalid or expired bearer token",
    409: "this Idempotency-Key was used with a different message",
    413: "body or stored episode too large",
    415: "the body was not sent as application/json",
    422: "invalid body (message must be 1-4000 characters)",
    429: "past a chat limit (a guardian's daily limit, or CHAT_TURNS_PER_MINUTE): retry after "
    "Retry-After seconds; the detail is written for the child; nothing was stored",
    502: "the LLM upstream failed or answered something unusable (its body is never relayed)",
    503: "chat not configured (set LLM_BASE_URL and LLM_MODEL), or storage unavailable",
    504: "the LLM upstream timed out (LLM_TIMEOUT_SECONDS)",
}
_SSE_EXAMPLE = (
    'event: delta\ndata: {"text":"Hel"}\n\n'
    'event: delta\ndata: {"text":"lo!"}\n\n'
    'event: done\ndata: {"reply":"Hello!","episodes":[{"id":"…","role":"user",…},'
    '{"id":"…","role":"assistant",…}]}\n\n'
)


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    stream: bool = Field(default=False, description="Answer as server-sent events")

    @field_validator("message")
    @classmethod
    def _storable(cls, message: str) -> str:
        """Refused up front (422), before any LLM call: text PostgreSQL's jsonb can not hold."""
        if "\x00" in message:
            raise ValueError("the message may not contain NUL characters")
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the message must be valid Unicode (no lone surrogates)") from None
        return message


class ChatReply(BaseModel):
    reply: str
    episodes: list[JsonObject] = Field(
        description="The stored episodes of this turn: the user's message, then the reply"
    )


async def chat_service(services: ServicesDep) -> ChatService:
    """503 naming the settings when no LLM is configured; else a service on the shared pool."""
    settings = services.settings
    if not settings.llm_configured:
        raise LLMNotConfigured()
    return ChatService(
        services.memory, services.recall, LLMService(services.http, settings), settings
    )


ChatDep = Annotated[ChatService, Depends(chat_service)]
TurnKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="A retry with the same key and message answers the stored turn "
        "(no second LLM call, nothing appended twice).",
        min_length=1,
        max_length=255,
    ),
]


async def _encode(events: AsyncGenerator[ChatEvent, None]) -> AsyncGenerator[str, None]:
    """Each event as `event: <name>` and one `data:` line of JSON (which has no raw newline)."""
    async with aclosing(events):
        async for name, data in events:
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            yield f"event: {name}\ndata: {text}\n\n"


class ChatEventStream(StreamingResponse):
    """A streamed turn as server-sent events. However the stream ends — completed, failed
    upstream, or the client gone (the server cancels the body, or a send fails) — the turn is
    closed before this returns (storing a partial reply), then embedded and compacted if it
    stored."""

    media_type = "text/event-stream"

    def __init__(
        self, turn: StreamingTurn, after: Callable[[TurnResult], Awaitable[None]] | None
    ) -> None:
        self._encoder = _encode(turn.events())
        super().__init__(
            self._encoder, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._turn = turn
        self._after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass  # an ASGI 2.4 server's way to say the client left: an outcome, not an error
        finally:
            with anyio.CancelScope(shield=True):
                await self._encoder.aclose()
            stored = await self._turn.close()
        if stored and self._after is not None and self._turn.result is not None:
            await self._after(self._turn.result)


@router.post(
    "/chat",
    summary="One chat turn grounded in the user's memory",
    response_model=ChatReply,
    responses={
        200: {
            "description": "The reply and the two stored episodes; with `stream: true`, "
            "server-sent events: `delta` ({text}) as text arrives, then `done` ({reply, "
            "episodes}) or `error` ({status, detail}; nothing stored when the LLM failed). "
            "A client that leaves mid-stream still gets its message and the partial reply "
            "stored, marked `interrupted`.",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}, "example": _SSE_EXAMPLE}
            },
        },
        **{code: {"model": ErrorOut, "description": text} for code, text in _ERROR_TEXT.items()},
    },
)
async def chat_turn(
    body: ChatRequest,
    user: CurrentUserDep,
    service: ChatDep,
    background: BackgroundTasks,
    idempotency_key: TurnKey = None,
) -> Any:
    turn = await service.begin(user, body.message, idempotency_key=idempotency_key)
    after = partial(service.after_turn, turn) if turn.stored is None else None
    if body.stream:
        try:
            streaming = await service.stream(turn)
        except (UpstreamError, UpstreamTimeout) as exc:  # before the first token
            streaming = StreamingTurn.failed(exc)
        return ChatEventStream(streaming, after)
    result = await service.reply(turn)
    if after is not None:
        background.add_task(after, result)
    return ChatReply(reply=result.reply, episodes=result.episodes)
