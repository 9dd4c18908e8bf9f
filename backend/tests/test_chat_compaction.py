"""Compaction through the API: past the soft cap (chat_app: 6, keeping 2), a turn's oldest
episodes are summarised into long_term_summary by the LLM and removed; an append landing while
the LLM is summarising survives; a failing compaction never fails the turn."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import CHAT_LLM_BASE_URL
from tests.llm_stand_in import LLMStandIn
from tests.tokens import bearer, user_token


@pytest.fixture
def llm(chat_app: FastAPI) -> Iterator[LLMStandIn]:
    with respx.mock(base_url=CHAT_LLM_BASE_URL, assert_all_called=False) as router:
        yield LLMStandIn(router)


async def turns(client: httpx.AsyncClient, auth: dict[str, str], *numbers: int) -> None:
    for n in numbers:
        response = await client.post("/api/chat", json={"message": f"message {n}"}, headers=auth)
        assert response.status_code == 200


async def read(client: httpx.AsyncClient, auth: dict[str, str], field: str) -> Any:
    response = await client.get(f"/api/memory/{field}", headers=auth)
    assert response.status_code == 200
    return response.json()


def contents(episodes: list[dict[str, Any]]) -> list[str]:
    return [e["content"] for e in episodes]


async def test_fourth_turn_folds_the_first_three_into_the_summary(
    chat_client: httpx.AsyncClient, llm: LLMStandIn
) -> None:
    auth = bearer(user_token(uuid.uuid4()))
    await turns(chat_client, auth, 1, 2, 3)  # 6 episodes: at the soft cap, not past it
    assert llm.summaries == []
    before = await read(chat_client, auth, "episodic_memory")

    await turns(chat_client, auth, 4)  # 8 > 6: the 6 oldest go, the 2 newest stay

    assert contents(await read(chat_client, auth, "episodic_memory")) == ["message 4", "Reply 4"]
    (summary_request,) = llm.summaries
    prompt = summary_request["messages"][1]["content"]
    for text in ("message 1", "Reply 1", "message 3", "Reply 3"):
        assert text in prompt
    assert "message 4" not in prompt
    summary = await read(chat_client, auth, "long_term_summary")
    assert summary["summary"] == llm.summary_text
    assert summary["summarized_through"] == before[-1]["created_at"]

    await turns(chat_client, auth, 5)  # the next turn remembers through the summary
    assert llm.summary_text in llm.turns[-1]["messages"][0]["content"]
    assert len(llm.summaries) == 1


async def test_an_append_during_compaction_is_kept(
    chat_client: httpx.AsyncClient, llm: LLMStandIn
) -> None:
    auth = bearer(user_token(uuid.uuid4()))
    await turns(chat_client, auth, 1, 2, 3)
    summarising, release = asyncio.Event(), asyncio.Event()

    async def hold_the_summary() -> None:
        summarising.set()
        await release.wait()

    llm.before_summary = hold_the_summary
    turn = asyncio.create_task(
        chat_client.post("/api/chat", json={"message": "message 4"}, headers=auth)
    )
    await summarising.wait()  # compaction has picked its episodes and is waiting on the LLM
    appended = await chat_client.post(
        "/api/memory/episodic_memory",
        json={"role": "user", "content": "appended meanwhile"},
        headers=auth,
    )
    assert appended.status_code == 201
    release.set()
    assert (await turn).status_code == 200  # returns once its compaction is done

    episodes = await read(chat_client, auth, "episodic_memory")
    assert contents(episodes) == ["message 4", "Reply 4", "appended meanwhile"]
    assert episodes[2]["id"] == appended.json()[0]["id"]
    assert (await read(chat_client, auth, "long_term_summary"))["summary"] == llm.summary_text


async def test_a_failing_compaction_keeps_everything_and_retries_next_turn(
    chat_client: httpx.AsyncClient, llm: LLMStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    auth = bearer(user_token(uuid.uuid4()))
    await turns(chat_client, auth, 1, 2, 3)
    llm.summary_response = httpx.Response(500, json={"error": "overloaded"})

    await turns(chat_client, auth, 4)  # the turn succeeds; its compaction fails

    assert len(await read(chat_client, auth, "episodic_memory")) == 8
    assert await read(chat_client, auth, "long_term_summary") == {}
    assert "episode compaction failed" in caplog.text

    llm.summary_response = None
    await turns(chat_client, auth, 5)  # 10 > 6: this time all 8 older ones are folded in
    assert contents(await read(chat_client, auth, "episodic_memory")) == ["message 5", "Reply 5"]
    assert (await read(chat_client, auth, "long_term_summary"))["summary"] == llm.summary_text


async def test_an_empty_summary_removes_nothing(
    chat_client: httpx.AsyncClient, llm: LLMStandIn
) -> None:
    auth = bearer(user_token(uuid.uuid4()))
    llm.summary_text = "   "
    await turns(chat_client, auth, 1, 2, 3, 4)
    assert len(llm.summaries) == 1
    assert len(await read(chat_client, auth, "episodic_memory")) == 8


async def test_a_streamed_turn_compacts_too(
    chat_client: httpx.AsyncClient, llm: LLMStandIn
) -> None:
    auth = bearer(user_token(uuid.uuid4()))
    await turns(chat_client, auth, 1, 2, 3)
    response = await chat_client.post(
        "/api/chat", json={"message": "message 4", "stream": True}, headers=auth
    )
    assert response.status_code == 200 and "event: done" in response.text
    assert contents(await read(chat_client, auth, "episodic_memory")) == ["message 4", "Reply 4"]
    assert (await read(chat_client, auth, "long_term_summary"))["summary"] == llm.summary_text
