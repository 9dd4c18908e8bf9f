"""A client that goes away mid-stream, for real: the app behind a real uvicorn server on a
loopback socket, a raw TCP client that reads the first events and closes its connection. The
message and the partial reply must be stored (marked interrupted) and the upstream released."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
import respx
import uvicorn
from fastapi import FastAPI
from starlette.types import Message

from tests.conftest import CHAT_LLM_BASE_URL
from tests.llm_stand_in import LLMStandIn
from tests.tokens import bearer, user_token


@pytest.fixture
def llm(chat_app: FastAPI) -> Iterator[LLMStandIn]:
    with respx.mock(base_url=CHAT_LLM_BASE_URL, assert_all_called=False) as router:
        yield LLMStandIn(router)


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[int]:
    """`app` (lifespan already run) on a real uvicorn server; yields its port. Leaving waits for
    uvicorn's graceful shutdown, which waits for every request handler to finish."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        data = await reader.read(4096)
        assert data, f"connection closed before {marker!r}: {received!r}"
        received += data
    return received


async def test_client_gone_mid_stream_stores_the_partial_reply(
    chat_app: FastAPI, chat_client: httpx.AsyncClient, llm: LLMStandIn
) -> None:
    user_id = uuid.uuid4()
    auth = bearer(user_token(user_id))
    upstream_released = llm.stream_then_hang("Once upon", " a time")
    payload = json.dumps({"message": "Tell me a story", "stream": True}).encode()
    request = (
        b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: {auth['Authorization']}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )

    async with served(chat_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        received = await read_until(reader, b'{"text":" a time"}')
        writer.close()  # gone, while the model is still generating
        await writer.wait_closed()

    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"event: done" not in received
    assert upstream_released(), "the upstream request was not closed"
    response = await chat_client.get("/api/memory/episodic_memory", headers=auth)
    episodes = response.json()
    assert [(e["role"], e["content"]) for e in episodes] == [
        ("user", "Tell me a story"),
        ("assistant", "Once upon a time"),
    ]
    assert episodes[1]["interrupted"] is True
    assert "interrupted" not in episodes[0]


async def test_send_failing_mid_stream_stores_the_partial_reply(
    chat_app: FastAPI, chat_client: httpx.AsyncClient, llm: LLMStandIn
) -> None:
    """ASGI 2.4 servers report a gone client by failing `send` (Starlette then raises
    ClientDisconnect) instead of cancelling: the body is left suspended mid-iteration. The app
    is driven directly, as such a server would."""
    auth = bearer(user_token(uuid.uuid4()))
    llm.stream_then_hang("Once upon", " a time")
    payload = json.dumps({"message": "Tell me a story", "stream": True}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/chat",
        "raw_path": b"/api/chat",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", auth["Authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    requests: list[Message] = [{"type": "http.request", "body": payload, "more_body": False}]
    sent: list[bytes] = []

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # a 2.4 server need not send http.disconnect
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        body = message.get("body", b"")
        assert isinstance(body, bytes)
        if b" a time" in body:
            raise OSError("connection reset by peer")
        sent.append(body)

    await chat_app(scope, receive, send)  # a client leaving is an outcome, not an error

    assert any(b"Once upon" in body for body in sent)
    response = await chat_client.get("/api/memory/episodic_memory", headers=auth)
    episodes = response.json()
    assert [(e["role"], e["content"]) for e in episodes] == [
        ("user", "Tell me a story"),
        ("assistant", "Once upon a time"),
    ]
    assert episodes[1]["interrupted"] is True
