"""OpenAI-compatible chat completions over the process's shared httpx pool.

Anything serving `POST {LLM_BASE_URL}/chat/completions` works: OpenAI, Ollama, vLLM, llama.cpp.
Upstream failures become `UpstreamError` (502) or `UpstreamTimeout` (504); their `detail` and our
logs never carry the upstream's body or our key (an error body may echo the key back).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing, contextmanager
from typing import Any, TypedDict, cast

import httpx

from config import Settings
from errors import LLMNotConfigured, UpstreamError, UpstreamTimeout
from services.observability.llm import LLMCall

logger = logging.getLogger(__name__)

_STATUS_HINTS = {
    401: " (check LLM_API_KEY)",
    403: " (check LLM_API_KEY)",
    404: " (check LLM_BASE_URL and LLM_MODEL)",
}


class ChatMessage(TypedDict):
    role: str
    content: str


@contextmanager
def upstream_errors() -> Iterator[None]:
    """Transport faults and our own deadline as domain errors, logged by kind only."""
    try:
        yield
    except (TimeoutError, httpx.TimeoutException) as exc:
        logger.warning("LLM upstream timed out (%s)", type(exc).__name__)
        raise UpstreamTimeout() from exc
    except httpx.HTTPError as exc:
        logger.warning("LLM upstream unreachable (%s)", type(exc).__name__)
        raise UpstreamError() from exc


def _malformed(what: str) -> UpstreamError:
    logger.warning("LLM upstream sent a malformed reply: %s", what)
    return UpstreamError("the language model upstream sent a malformed reply")


def _check_status(response: httpx.Response) -> None:
    if not response.is_success:
        hint = _STATUS_HINTS.get(response.status_code, "")
        logger.warning("LLM upstream answered HTTP %s%s", response.status_code, hint)
        raise UpstreamError()


def completion_text(body: Any) -> str:
    """`choices[0].message.content` of a chat completion; anything else is malformed."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _malformed("no choices[0].message.content") from None
    if not isinstance(content, str):
        raise _malformed("content is not a string")
    return content


STREAM_DEADLINE_FACTOR = 10


class CompletionStream:
    """An open streaming completion: `deltas()` yields text as it arrives; `aclose()` releases
    the connection (and so stops the generation upstream). Owned by one turn."""

    def __init__(
        self, response: httpx.Response, idle_timeout: float, call: LLMCall | None = None
    ) -> None:
        self._response = response
        self._idle_timeout = idle_timeout
        self._call = call or LLMCall("stream")

    async def deltas(self) -> AsyncGenerator[str, None]:
        """Text pieces from `data:` chunks until `data: [DONE]`; waiting longer than the timeout
        for the next line is a 504, a stream cut short (no [DONE], no finish_reason) a 502."""
        try:
            async for text in self._deltas():
                yield text
        except BaseException as exc:
            if isinstance(exc, GeneratorExit):
                self._call.finish("cancelled")  # the turn let go before the end
            else:
                self._call.fail(exc)
            raise
        self._call.finish("ok")

    async def _deltas(self) -> AsyncGenerator[str, None]:
        if self._response.headers.get("content-type", "").startswith("application/json"):
            # A server that ignored `stream: true` answers one whole completion.
            with upstream_errors():
                async with asyncio.timeout(self._idle_timeout):
                    body = await self._response.aread()
            try:
                parsed = json.loads(body)
            except ValueError:
                raise _malformed("invalid JSON") from None
            yield completion_text(parsed)
            return
        finished = False
        loop = asyncio.get_running_loop()
        # Each line within the timeout, the whole stream within STREAM_DEADLINE_FACTOR of it
        # (keep-alive comments alone can not hold a turn open forever).
        deadline = loop.time() + self._idle_timeout * STREAM_DEADLINE_FACTOR
        lines = cast("AsyncGenerator[str, None]", self._response.aiter_lines())  # it is one
        async with aclosing(lines):
            while True:
                with upstream_errors():
                    try:
                        async with asyncio.timeout_at(
                            min(loop.time() + self._idle_timeout, deadline)
                        ):
                            line = await anext(lines)
                    except StopAsyncIteration:
                        break
                if not line.startswith("data:"):
                    continue  # blank separators, `: keep-alive` comments, event:/id: fields
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                text, finish, usage = _chunk_delta(payload)
                if usage is not None:
                    self._call.usage = usage
                finished = finished or finish
                if text:
                    yield text
        if not finished:
            raise _malformed("the stream ended before [DONE]")

    async def aclose(self) -> None:
        self._call.finish("cancelled")  # no-op when the stream was read to its end
        await self._response.aclose()


def _chunk_delta(payload: str) -> tuple[str, bool, Any]:
    """(`choices[0].delta.content` or "", whether a finish_reason came, its `usage`) of one
    chunk. Chunks with empty or null `choices` (usage-only) carry no text."""
    try:
        chunk = json.loads(payload)
    except ValueError:
        raise _malformed("a chunk is not JSON") from None
    if not isinstance(chunk, dict):
        raise _malformed("a chunk is not an object")
    if chunk.get("error") is not None:
        raise _malformed("an error chunk")
    usage = chunk.get("usage")
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _malformed("choices is not a list")
    if not choices:
        return "", False, usage
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _malformed("a choice is not an object")
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is not None and not isinstance(content, str):
        raise _malformed("delta content is not a string")
    return content or "", choice.get("finish_reason") is not None, usage


class LLMService:
    """One lightweight object per use, bound to the shared pool (never a client per call)."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        if not settings.llm_configured:
            raise LLMNotConfigured()
        self._http = http
        self._url = f"{settings.llm_base_url}/chat/completions"
        self._model = settings.llm_model
        self._timeout = settings.llm_timeout_seconds
        self._headers = {"Accept": "application/json, text/event-stream"}
        if settings.llm_api_key is not None and settings.llm_api_key.get_secret_value():
            self._headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"

    def _request(self, messages: Sequence[ChatMessage], *, stream: bool) -> httpx.Request:
        body = {"model": self._model, "messages": list(messages), "stream": stream}
        return self._http.build_request(
            "POST", self._url, json=body, headers=self._headers, timeout=self._timeout
        )

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """The whole reply, within LLM_TIMEOUT_SECONDS in total."""
        call = LLMCall("complete")
        try:
            text, call.usage = await self._complete(messages)
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish("ok")
        return text

    async def _complete(self, messages: Sequence[ChatMessage]) -> tuple[str, Any]:
        request = self._request(messages, stream=False)
        with upstream_errors():
            async with asyncio.timeout(self._timeout):
                response = await self._http.send(request)
        _check_status(response)
        try:
            body = response.json()
        except ValueError:
            raise _malformed("invalid JSON") from None
        return completion_text(body), body.get("usage") if isinstance(body, dict) else None

    async def open_stream(self, messages: Sequence[ChatMessage]) -> CompletionStream:
        """Send a streaming request and check its status before returning, so a refused or
        unreachable upstream is still an error status for our client (nothing sent yet)."""
        request = self._request(messages, stream=True)
        call = LLMCall("stream")
        try:
            with upstream_errors():
                async with asyncio.timeout(self._timeout):
                    response = await self._http.send(request, stream=True)
        except BaseException as exc:
            call.fail(exc)
            raise
        try:
            _check_status(response)
        except UpstreamError as exc:
            call.fail(exc)
            await response.aclose()
            raise
        return CompletionStream(response, self._timeout, call)
