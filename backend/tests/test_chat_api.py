"""POST /api/chat end to end: the ASGI app on the embedded backend, real signed tokens, and a
respx stand-in for the OpenAI-compatible API (only the LLM's base URL is routed)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import CHAT_LLM_API_KEY, CHAT_LLM_BASE_URL
from tests.llm_stand_in import LLMStandIn, completion
from tests.tokens import bearer, user_token

UPSTREAM_SECRET = "internal-upstream-trace-5c1b"


@pytest.fixture
def llm(chat_app: FastAPI) -> Iterator[LLMStandIn]:
    with respx.mock(base_url=CHAT_LLM_BASE_URL, assert_all_called=False) as router:
        yield LLMStandIn(router)


def new_user() -> dict[str, str]:
    return bearer(user_token(uuid.uuid4()))


async def stored_episodes(client: httpx.AsyncClient, auth: dict[str, str]) -> list[Any]:
    response = await client.get("/api/memory/episodic_memory", headers=auth)
    assert response.status_code == 200
    episodes: list[Any] = response.json()
    return episodes


async def say(
    client: httpx.AsyncClient, auth: dict[str, str], message: str, **extra: Any
) -> httpx.Response:
    return await client.post("/api/chat", json={"message": message, **extra}, headers=auth)


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event, data) of each server-sent event; every event here has both fields."""
    events = []
    for block in text.split("\n\n"):
        if block:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            assert set(fields) == {"event", "data"}, block
            events.append((fields["event"], json.loads(fields["data"])))
    return events


class TestPlainTurn:
    async def test_reply_and_exactly_two_episodes(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = new_user()
        llm.replies = ["Hi Mia! How was school?"]
        response = await say(chat_client, auth, "Hi Robo!")
        assert response.status_code == 200
        body = response.json()
        assert body["reply"] == "Hi Mia! How was school?"
        episodes = await stored_episodes(chat_client, auth)
        assert episodes == body["episodes"]
        assert [(e["role"], e["content"]) for e in episodes] == [
            ("user", "Hi Robo!"),
            ("assistant", "Hi Mia! How was school?"),
        ]
        assert all(e["id"] and e["created_at"] and "interrupted" not in e for e in episodes)
        await say(chat_client, auth, "Good!")
        assert len(await stored_episodes(chat_client, auth)) == 4

    async def test_prompt_carries_the_memory_and_the_message(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = new_user()
        await chat_client.put(
            "/api/memory/identity", json={"companion": "Robo", "child": "Mia"}, headers=auth
        )
        await chat_client.post(
            "/api/memory/core_instructions",
            json=[{"text": "Never talk about scary movies."}, {"rule": "bedtime", "at": "20:00"}],
            headers=auth,
        )
        await chat_client.put(
            "/api/memory/long_term_summary", json={"summary": "Mia has a cat."}, headers=auth
        )
        await chat_client.put("/api/memory/current_state", json={"mood": "sleepy"}, headers=auth)

        assert (await say(chat_client, auth, "Tell me a story")).status_code == 200

        request = llm.route.calls.last.request
        assert str(request.url) == f"{CHAT_LLM_BASE_URL}/chat/completions"
        assert request.headers["authorization"] == f"Bearer {CHAT_LLM_API_KEY}"
        (sent,) = llm.turns
        assert sent["model"] == "companion-test-model" and sent["stream"] is False
        system, *rest = sent["messages"]
        assert system["role"] == "system"
        for fact in (
            "companion: Robo",
            "child: Mia",
            "Never talk about scary movies.",
            "at: 20:00; rule: bedtime",  # jsonb keeps keys shortest first
            "Mia has a cat.",
            "mood: sleepy",
        ):
            assert fact in system["content"], fact
        assert rest == [{"role": "user", "content": "Tell me a story"}]

    async def test_next_turn_carries_the_previous_turn(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = new_user()
        llm.replies = ["Dinosaurs are great!", "The T. rex."]
        await say(chat_client, auth, "I like dinosaurs")
        await say(chat_client, auth, "Which one is the biggest?")
        assert llm.turns[1]["messages"][1:] == [
            {"role": "user", "content": "I like dinosaurs"},
            {"role": "assistant", "content": "Dinosaurs are great!"},
            {"role": "user", "content": "Which one is the biggest?"},
        ]

    async def test_history_is_the_newest_chat_history_episodes(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = new_user()  # chat_app sends 4 history episodes
        for n in range(1, 5):
            await say(chat_client, auth, f"message {n}")
        history = llm.turns[3]["messages"][1:-1]
        assert [m["content"] for m in history] == ["message 2", "Reply 2", "message 3", "Reply 3"]

    async def test_idempotency_key_retry_answers_the_stored_turn(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = {**new_user(), "Idempotency-Key": "turn-1"}
        first = await say(chat_client, auth, "Hello")
        retry = await say(chat_client, auth, "Hello")
        streamed = await say(chat_client, auth, "Hello", stream=True)
        assert retry.status_code == 200 and retry.json() == first.json()
        assert sse_events(streamed.text)[-1] == ("done", first.json())
        assert len(llm.turns) == 1
        assert len(await stored_episodes(chat_client, auth)) == 2
        other = await say(chat_client, auth, "Something else")
        assert other.status_code == 409


class TestStreamedTurn:
    async def test_text_events_then_done_and_two_episodes(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = new_user()
        llm.replies = ["Once upon a time"]
        response = await say(chat_client, auth, "Tell me a story", stream=True)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.text)
        deltas = [data["text"] for name, data in events if name == "delta"]
        assert deltas == ["Onc", "e u", "pon", " a ", "tim", "e"]
        name, done = events[-1]
        assert name == "done" and done["reply"] == "Once upon a time"
        episodes = await stored_episodes(chat_client, auth)
        assert episodes == done["episodes"]
        assert [(e["role"], e["content"]) for e in episodes] == [
            ("user", "Tell me a story"),
            ("assistant", "Once upon a time"),
        ]
        assert llm.turns[0]["stream"] is True
        assert llm.turns[0]["messages"][-1] == {"role": "user", "content": "Tell me a story"}

    async def test_next_streamed_turn_carries_the_previous_turn(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = new_user()
        llm.replies = ["Hi!", "Sure."]
        await say(chat_client, auth, "Hello", stream=True)
        await say(chat_client, auth, "Can we play?", stream=True)
        assert [m["content"] for m in llm.turns[1]["messages"][1:]] == [
            "Hello",
            "Hi!",
            "Can we play?",
        ]

    async def test_upstream_failing_mid_stream_is_an_error_event_and_stores_nothing(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        auth = new_user()
        body = (
            b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
            + f'data: {{"error": {{"message": "{UPSTREAM_SECRET}"}}}}\n\n'.encode()
        )
        llm.route.side_effect = None
        llm.route.return_value = httpx.Response(
            200, content=body, headers={"content-type": "text/event-stream"}
        )
        response = await say(chat_client, auth, "Hi", stream=True)
        assert response.status_code == 200  # the status went out with the first byte
        events = sse_events(response.text)
        assert events[0] == ("delta", {"text": "Hel"})
        assert events[-1][0] == "error" and events[-1][1]["status"] == 502
        assert UPSTREAM_SECRET not in response.text
        assert await stored_episodes(chat_client, auth) == []


def assert_failed(response: httpx.Response, stream: bool, status: int, detail: str) -> None:
    """A plain JSON error status; streamed, the one `error` event the README promises (the
    upstream failed before its first token, so nothing else was sent)."""
    if not stream:
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert response.json()["detail"] == detail
        return
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_events(response.text) == [("error", {"status": status, "detail": detail})]


class TestErrors:
    @pytest.mark.parametrize("stream", [False, True])
    async def test_upstream_error_is_502_leaks_nothing_stores_nothing(
        self,
        chat_client: httpx.AsyncClient,
        llm: LLMStandIn,
        stream: bool,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        auth = new_user()
        llm.route.side_effect = None
        llm.route.return_value = httpx.Response(
            401, json={"error": {"message": f"{UPSTREAM_SECRET}: bad key {CHAT_LLM_API_KEY}"}}
        )
        response = await say(chat_client, auth, "Hi", stream=stream)
        assert_failed(response, stream, 502, "the language model upstream failed")
        for text in (response.text, caplog.text):
            assert UPSTREAM_SECRET not in text and CHAT_LLM_API_KEY not in text
        assert await stored_episodes(chat_client, auth) == []

    @pytest.mark.parametrize("stream", [False, True])
    async def test_upstream_timeout_is_504_and_stores_nothing(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn, stream: bool
    ) -> None:
        auth = new_user()
        llm.route.side_effect = httpx.ReadTimeout("timed out")
        response = await say(chat_client, auth, "Hi", stream=stream)
        assert_failed(response, stream, 504, "the language model upstream timed out")
        assert await stored_episodes(chat_client, auth) == []

    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(200, text=f"<html>{UPSTREAM_SECRET}</html>"),
            httpx.Response(200, json={"choices": []}),
            httpx.Response(200, json=completion("x") | {"choices": [{"message": {}}]}),
        ],
    )
    async def test_malformed_upstream_reply_is_502(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn, answer: httpx.Response
    ) -> None:
        auth = new_user()
        llm.route.side_effect = None
        llm.route.return_value = answer
        response = await say(chat_client, auth, "Hi")
        assert response.status_code == 502 and UPSTREAM_SECRET not in response.text
        assert await stored_episodes(chat_client, auth) == []

    @pytest.mark.parametrize("stream", [False, True])
    async def test_unreachable_upstream_is_502(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn, stream: bool
    ) -> None:
        auth = new_user()
        llm.route.side_effect = httpx.ConnectError("connection refused")
        response = await say(chat_client, auth, "Hi", stream=stream)
        assert_failed(response, stream, 502, "the language model upstream failed")
        assert await stored_episodes(chat_client, auth) == []

    @pytest.mark.parametrize("body", [{"message": ""}, {"message": "x" * 4001}, {}, {"m": 1}])
    async def test_invalid_body_is_422(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn, body: dict[str, Any]
    ) -> None:
        response = await chat_client.post("/api/chat", json=body, headers=new_user())
        assert response.status_code == 422
        assert llm.turns == []

    async def test_4000_characters_are_fine(
        self, chat_client: httpx.AsyncClient, llm: LLMStandIn
    ) -> None:
        assert (await say(chat_client, new_user(), "x" * 4000)).status_code == 200

    async def test_needs_a_token(self, chat_client: httpx.AsyncClient, llm: LLMStandIn) -> None:
        response = await chat_client.post("/api/chat", json={"message": "Hi"})
        assert response.status_code == 401
        assert llm.turns == []


class TestNotConfigured:
    async def test_503_names_the_settings_and_memory_still_works(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()  # `client` is embedded_app: no LLM settings
        response = await say(client, auth, "Hi")
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert "LLM_BASE_URL" in detail and "LLM_MODEL" in detail
        put = await client.put("/api/memory/identity", json={"name": "Robo"}, headers=auth)
        assert put.status_code == 200
        assert (await client.get("/api/memory", headers=auth)).status_code == 200

    async def test_openapi_documents_the_route_and_its_errors(
        self, client: httpx.AsyncClient
    ) -> None:
        operation = (await client.get("/openapi.json")).json()["paths"]["/api/chat"]["post"]
        assert {"200", "401", "409", "422", "502", "503", "504"} <= set(operation["responses"])
        assert "text/event-stream" in operation["responses"]["200"]["content"]
