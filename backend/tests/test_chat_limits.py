"""Chat turns and the limits of what can be stored: refused before the LLM is paid for, or
made storable after it answered (never a 5xx, never a reply thrown away)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import CHAT_LLM_BASE_URL
from tests.llm_stand_in import LLMStandIn, completion
from tests.tokens import bearer, user_token


@pytest.fixture
def llm(chat_app: FastAPI) -> Iterator[LLMStandIn]:
    with respx.mock(base_url=CHAT_LLM_BASE_URL, assert_all_called=False) as router:
        yield LLMStandIn(router)


@pytest.mark.parametrize(
    "raw", [b'{"message": "a\\u0000b"}', b'{"message": "\\ud800"}', b'{"message": NaN}']
)
async def test_unstorable_message_is_422_before_any_llm_call(
    chat_client: httpx.AsyncClient, llm: LLMStandIn, raw: bytes
) -> None:
    auth = bearer(user_token(uuid.uuid4()))
    response = await chat_client.post(
        "/api/chat", content=raw, headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert llm.turns == []
    stored = await chat_client.get("/api/memory/episodic_memory", headers=auth)
    assert stored.json() == []


async def test_a_reply_too_large_for_an_episode_is_stored_cut_and_marked(
    chat_client: httpx.AsyncClient, llm: LLMStandIn
) -> None:
    auth = bearer(user_token(uuid.uuid4()))
    long_reply = "word " * 20_000 + "\x00 end"  # 100 KB, over MAX_ITEM_BYTES (32 KiB); a NUL
    llm.replies = [long_reply]
    response = await chat_client.post("/api/chat", json={"message": "tell me"}, headers=auth)
    assert response.status_code == 200
    assert response.json()["reply"] == long_reply
    user_episode, reply_episode = (
        await chat_client.get("/api/memory/episodic_memory", headers=auth)
    ).json()
    assert user_episode["content"] == "tell me"
    assert reply_episode["truncated"] is True
    assert 0 < len(reply_episode["content"]) < len(long_reply)
    assert long_reply.startswith(reply_episode["content"])


async def test_a_retry_racing_its_first_try_answers_the_stored_turn(
    chat_client: httpx.AsyncClient, chat_app: FastAPI
) -> None:
    """Both tries miss the stored turn and call the LLM; the first to store wins, the other
    answers that stored turn (200, same episodes) instead of a 409."""
    auth = {**bearer(user_token(uuid.uuid4())), "Idempotency-Key": "turn-7"}
    release_first = asyncio.Event()
    first_waiting = asyncio.Event()
    calls = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_waiting.set()
            await release_first.wait()
            return httpx.Response(200, json=completion("first try's reply"))
        return httpx.Response(200, json=completion("retry's reply"))

    with respx.mock(base_url=CHAT_LLM_BASE_URL, assert_all_called=False) as router:
        router.post("/chat/completions").mock(side_effect=answer)
        first = asyncio.create_task(
            chat_client.post("/api/chat", json={"message": "hi"}, headers=auth)
        )
        await first_waiting.wait()
        retry = await chat_client.post("/api/chat", json={"message": "hi"}, headers=auth)
        release_first.set()
        first_response = await first

    assert retry.status_code == first_response.status_code == 200
    assert first_response.json() == retry.json()
    assert retry.json()["reply"] == "retry's reply"
    stored = (await chat_client.get("/api/memory/episodic_memory", headers=auth)).json()
    assert [e["content"] for e in stored] == ["hi", "retry's reply"]
