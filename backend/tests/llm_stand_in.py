"""A respx stand-in for an OpenAI-compatible chat API, in OpenAI's real response and chunk
formats. It records every request and tells a turn's request from a compaction's summary
request (by the summary instructions), so tests can script and inspect each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import respx

from services.chat.turn import SUMMARY_INSTRUCTIONS

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}


def completion(content: str) -> dict[str, Any]:
    """A `chat.completion` body."""
    return {
        "id": "chatcmpl-stand-in",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "companion-test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One `data:` event of a `chat.completion.chunk` stream."""
    body = {
        "id": "chatcmpl-stand-in",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "companion-test-model",
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def text_chunk(text: str) -> bytes:
    return chunk({"content": text})


def sse_body(*pieces: str) -> bytes:
    """A whole stream: the role chunk, one chunk per piece, the finish chunk, `[DONE]`."""
    return (
        chunk({"role": "assistant", "content": ""})
        + b"".join(text_chunk(piece) for piece in pieces)
        + chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )


def pieces_of(reply: str) -> list[str]:
    """A reply cut into 3-character pieces, as tokens would arrive."""
    return [reply[i : i + 3] for i in range(0, len(reply), 3)] or [""]


class LLMStandIn:
    """Answers turns with `replies` (then `Reply <n>`), streamed when asked; answers summary
    requests with `summary_text` after awaiting `before_summary` (a test's hook)."""

    def __init__(self, router: respx.MockRouter, base_url: str = "") -> None:
        """`base_url`: for a router without one (shared with other stand-ins)."""
        self.turns: list[dict[str, Any]] = []
        self.summaries: list[dict[str, Any]] = []
        self.replies: list[str] = []
        self.summary_text = "The user loves dinosaurs and has a cat called Momo."
        self.summary_response: httpx.Response | None = None
        self.before_summary: Callable[[], Awaitable[None]] | None = None
        self.route = router.post(f"{base_url}/chat/completions").mock(side_effect=self.answer)

    async def answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["messages"][0]["content"] == SUMMARY_INSTRUCTIONS:
            self.summaries.append(body)
            if self.before_summary is not None:
                await self.before_summary()
            return self.summary_response or httpx.Response(200, json=completion(self.summary_text))
        self.turns.append(body)
        reply = self.replies.pop(0) if self.replies else f"Reply {len(self.turns)}"
        if body["stream"]:
            return httpx.Response(200, content=sse_body(*pieces_of(reply)), headers=SSE_HEADERS)
        return httpx.Response(200, json=completion(reply))

    def stream_then_hang(self, *pieces: str) -> Callable[[], bool]:
        """Make the next turn stream `pieces` and then generate forever (until the turn lets
        go of the upstream); the returned probe says whether the upstream was released."""
        released = False

        async def body() -> AsyncIterator[bytes]:
            nonlocal released
            try:
                for piece in pieces:
                    yield text_chunk(piece)
                await asyncio.Event().wait()  # never set
            finally:
                released = True

        def answer(request: httpx.Request) -> httpx.Response:
            self.turns.append(json.loads(request.content))
            self.route.side_effect = self.answer
            return httpx.Response(200, content=body(), headers=SSE_HEADERS)

        self.route.side_effect = answer
        return lambda: released

    def stream_held(self, first: list[str], rest: list[str]) -> asyncio.Event:
        """Make the next turn stream `first`, then wait until the returned event is set, then
        stream `rest` and finish: a test sees the reply part-way (the browser test does)."""
        release = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            for piece in first:
                yield text_chunk(piece)
            await release.wait()
            for piece in rest:
                yield text_chunk(piece)
            yield chunk({}, "stop") + b"data: [DONE]\n\n"

        def answer(request: httpx.Request) -> httpx.Response:
            self.turns.append(json.loads(request.content))
            self.route.side_effect = self.answer
            return httpx.Response(200, content=body(), headers=SSE_HEADERS)

        self.route.side_effect = answer
        return release
