"""LLMService against a respx stand-in for an OpenAI-compatible API: request shape, plain and
streamed replies in OpenAI's real formats, and every failure as a 502/504 that leaks nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest.mock import patch

import httpx
import pytest
import respx

from config import Settings
from errors import LLMNotConfigured, UpstreamError, UpstreamTimeout
from services.chat.llm import ChatMessage, LLMService
from tests.conftest import make_settings

BASE_URL = "http://llm.unit.test/v1"
API_KEY = "sk-unit-test-key-never-shown"
UPSTREAM_SECRET = "upstream-internal-trace-9f8e7d"
MESSAGES = [ChatMessage(role="system", content="Be kind."), ChatMessage(role="user", content="Hi")]
SSE_HEADERS = {"content-type": "text/event-stream"}


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "llm_base_url": BASE_URL,
        "llm_api_key": API_KEY,
        "llm_model": "unit-model",
        "llm_timeout_seconds": 5,
    }
    return make_settings(**{**values, **overrides})


def completion(content: Any) -> dict[str, Any]:
    """A chat.completion body as OpenAI sends it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "unit-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def chunk(delta: dict[str, Any], finish: str | None = None, *, choices: Any = None) -> bytes:
    """One `data:` line of a chat.completion.chunk stream, as OpenAI frames it."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "unit-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        if choices is None
        else choices,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def sse(*pieces: str, done: bool = True) -> bytes:
    body = chunk({"role": "assistant", "content": ""})
    body += b"".join(chunk({"content": piece}) for piece in pieces)
    body += chunk({}, "stop") + chunk({}, choices=[])  # finish, then a usage-style chunk
    return body + (b"data: [DONE]\n\n" if done else b"")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def llm_api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


async def collect(service: LLMService) -> str:
    stream = await service.open_stream(MESSAGES)
    try:
        return "".join([piece async for piece in stream.deltas()])
    finally:
        await stream.aclose()


class TestRequest:
    async def test_posts_model_messages_and_bearer_key(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        route = llm_api.post("/chat/completions").respond(json=completion("Hello!"))
        assert await LLMService(http, settings()).complete(MESSAGES) == "Hello!"
        request = route.calls.last.request
        assert str(request.url) == f"{BASE_URL}/chat/completions"
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert json.loads(request.content) == {
            "model": "unit-model",
            "messages": MESSAGES,
            "stream": False,
        }

    async def test_no_key_no_authorization_header(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        route = llm_api.post("/chat/completions").respond(json=completion("ok"))
        await LLMService(http, settings(llm_api_key=None)).complete(MESSAGES)
        assert "authorization" not in route.calls.last.request.headers

    async def test_uses_the_shared_client(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        """Never a client per call: plain and streamed calls create no httpx.AsyncClient."""

        def answer(request: httpx.Request) -> httpx.Response:
            if json.loads(request.content)["stream"]:
                return httpx.Response(200, content=sse("a"), headers=SSE_HEADERS)
            return httpx.Response(200, json=completion("ok"))

        llm_api.post("/chat/completions").mock(side_effect=answer)
        service = LLMService(http, settings())
        new_client = AssertionError("a new httpx.AsyncClient")
        with patch.object(httpx.AsyncClient, "__init__", side_effect=new_client):
            assert await service.complete(MESSAGES) == "ok"
            assert await collect(service) == "a"

    def test_not_configured(self, http: httpx.AsyncClient) -> None:
        with pytest.raises(LLMNotConfigured) as caught:
            LLMService(http, make_settings())
        assert "LLM_BASE_URL" in caught.value.detail and "LLM_MODEL" in caught.value.detail


class TestStreaming:
    async def test_text_as_it_arrives_until_done(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        route = llm_api.post("/chat/completions").respond(
            content=b": keep-alive\n\n" + sse("Hel", "lo", " there"),
            headers=SSE_HEADERS,
        )
        stream = await LLMService(http, settings()).open_stream(MESSAGES)
        pieces = [piece async for piece in stream.deltas()]
        await stream.aclose()
        assert pieces == ["Hel", "lo", " there"]
        assert json.loads(route.calls.last.request.content)["stream"] is True

    async def test_pieces_are_yielded_before_the_stream_ends(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        more = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield chunk({"content": "first"})
            await more.wait()
            yield chunk({"content": " second"}, "stop") + b"data: [DONE]\n\n"

        llm_api.post("/chat/completions").respond(content=body(), headers=SSE_HEADERS)
        stream = await LLMService(http, settings()).open_stream(MESSAGES)
        deltas = stream.deltas()
        assert await anext(deltas) == "first"  # while the upstream is still generating
        more.set()
        assert [piece async for piece in deltas] == [" second"]
        await stream.aclose()

    async def test_a_json_answer_to_a_stream_request_is_one_piece(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        llm_api.post("/chat/completions").respond(json=completion("whole"))
        assert await collect(LLMService(http, settings())) == "whole"

    async def test_cut_short_is_502(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        llm_api.post("/chat/completions").respond(
            content=chunk({"content": "Hel"}), headers=SSE_HEADERS
        )
        with pytest.raises(UpstreamError):
            await collect(LLMService(http, settings()))

    @pytest.mark.parametrize(
        "bad",
        [
            b"data: {not json\n\n",
            b'data: {"error": {"message": "' + UPSTREAM_SECRET.encode() + b'"}}\n\n',
            b'data: {"choices": {"0": 1}}\n\n',
            b'data: {"choices": [{"delta": {"content": 5}}]}\n\n',
        ],
    )
    async def test_malformed_chunk_is_502(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter, bad: bytes
    ) -> None:
        llm_api.post("/chat/completions").respond(
            content=chunk({"content": "ok"}) + bad, headers=SSE_HEADERS
        )
        with pytest.raises(UpstreamError) as caught:
            await collect(LLMService(http, settings()))
        assert UPSTREAM_SECRET not in caught.value.detail

    async def test_refused_stream_is_502_before_any_text(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        llm_api.post("/chat/completions").respond(401, json={"error": {"message": API_KEY}})
        with pytest.raises(UpstreamError) as caught:
            await LLMService(http, settings()).open_stream(MESSAGES)
        assert API_KEY not in caught.value.detail

    async def test_silent_upstream_mid_stream_is_504(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield chunk({"content": "Hel"})
            await asyncio.Event().wait()  # never another byte
            yield b""

        llm_api.post("/chat/completions").respond(content=body(), headers=SSE_HEADERS)
        stream = await LLMService(http, settings(llm_timeout_seconds=0.05)).open_stream(MESSAGES)
        deltas = stream.deltas()
        assert await anext(deltas) == "Hel"
        with pytest.raises(UpstreamTimeout):
            await anext(deltas)
        await stream.aclose()


class TestFailures:
    @pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
    async def test_error_status_is_502_without_body_or_key(
        self,
        http: httpx.AsyncClient,
        llm_api: respx.MockRouter,
        status: int,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        llm_api.post("/chat/completions").respond(
            status, json={"error": {"message": f"{UPSTREAM_SECRET} key {API_KEY}"}}
        )
        with pytest.raises(UpstreamError) as caught:
            await LLMService(http, settings()).complete(MESSAGES)
        assert caught.value.status_code == 502
        for text in (caught.value.detail, caplog.text):
            assert UPSTREAM_SECRET not in text and API_KEY not in text

    @pytest.mark.parametrize(
        "body",
        [b"<html>oops</html>", b"{}", b'{"choices": []}', json.dumps(completion(None)).encode()],
    )
    async def test_malformed_body_is_502(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter, body: bytes
    ) -> None:
        llm_api.post("/chat/completions").respond(200, content=body)
        with pytest.raises(UpstreamError):
            await LLMService(http, settings()).complete(MESSAGES)

    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            (httpx.ReadTimeout("read timed out"), UpstreamTimeout),
            (httpx.ConnectTimeout("connect timed out"), UpstreamTimeout),
            (httpx.ConnectError("connection refused"), UpstreamError),
            (httpx.RemoteProtocolError("peer closed"), UpstreamError),
        ],
    )
    async def test_transport_faults(
        self,
        http: httpx.AsyncClient,
        llm_api: respx.MockRouter,
        fault: Exception,
        error: type[Exception],
    ) -> None:
        llm_api.post("/chat/completions").mock(side_effect=fault)
        with pytest.raises(error):
            await LLMService(http, settings()).complete(MESSAGES)
        with pytest.raises(error):
            await LLMService(http, settings()).open_stream(MESSAGES)

    async def test_hanging_upstream_is_504_within_the_timeout(
        self, http: httpx.AsyncClient, llm_api: respx.MockRouter
    ) -> None:
        async def hang(request: httpx.Request) -> httpx.Response:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        llm_api.post("/chat/completions").mock(side_effect=hang)
        service = LLMService(http, settings(llm_timeout_seconds=0.05))
        with pytest.raises(UpstreamTimeout):
            await service.complete(MESSAGES)
        with pytest.raises(UpstreamTimeout):
            await service.open_stream(MESSAGES)
