"""Recall through the API on the embedded backend: GET /api/memory/search, chat turns that
recall episodes beyond their history window, and embeddings (a respx stand-in) that are made
once per turn and never break a turn when they fail."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from services.storage.embedded_postgres import EmbeddedPostgres
from tests.conftest import (
    CHAT_LLM_API_KEY,
    CHAT_LLM_BASE_URL,
    asgi_client,
    make_settings,
    running_app,
)
from tests.embedder_stand_in import EMBED_BASE_URL, EMBED_MODEL, EmbedderStandIn
from tests.llm_stand_in import LLMStandIn
from tests.tokens import TEST_JWT_SECRET, bearer, user_token

RECALL_HEADING = "## Earlier moments that may matter now"


def new_user() -> dict[str, str]:
    return bearer(user_token(uuid.uuid4()))


def recall_settings(embedded_server: EmbeddedPostgres, **overrides: Any) -> Any:
    return make_settings(
        memory_backend="embedded",
        data_dir=embedded_server.pgdata.parent,
        supabase_jwt_secret=TEST_JWT_SECRET,
        llm_base_url=CHAT_LLM_BASE_URL,
        llm_api_key=CHAT_LLM_API_KEY,
        llm_model="companion-test-model",
        chat_history_episodes=4,
        **overrides,
    )


@pytest.fixture(scope="module")
async def hybrid_app(embedded_server: EmbeddedPostgres) -> AsyncIterator[FastAPI]:
    settings = recall_settings(
        embedded_server,
        embedding_base_url=EMBED_BASE_URL,
        embedding_model=EMBED_MODEL,
        embedding_api_key="sk-embed-test",
    )
    async with running_app(settings) as app:
        yield app


@pytest.fixture(scope="module")
async def no_recall_app(embedded_server: EmbeddedPostgres) -> AsyncIterator[FastAPI]:
    async with running_app(recall_settings(embedded_server, recall_k=0)) as app:
        yield app


@pytest.fixture
def upstreams() -> Iterator[tuple[LLMStandIn, EmbedderStandIn]]:
    with respx.mock(assert_all_called=False) as router:
        yield LLMStandIn(router, CHAT_LLM_BASE_URL), EmbedderStandIn(router)


async def plant(client: httpx.AsyncClient, auth: dict[str, str], texts: list[str]) -> None:
    items = [{"role": "user", "content": text} for text in texts]
    response = await client.post("/api/memory/episodic_memory", json=items, headers=auth)
    assert response.status_code == 201


class TestSearchRoute:
    async def test_finds_the_users_own_episodes_with_score_and_date(
        self, client: httpx.AsyncClient
    ) -> None:
        alice, bob = new_user(), new_user()
        await plant(client, alice, ["My dog Biscuit loves the beach", "I had soup"])
        await plant(client, bob, ["Bob's dog is called Rex"])
        response = await client.get(
            "/api/memory/search", params={"q": "what is my dog called?"}, headers=alice
        )
        assert response.status_code == 200
        body = response.json()
        assert body["mode"] == "text"
        assert [hit["episode"]["content"] for hit in body["results"]] == [
            "My dog Biscuit loves the beach"
        ]
        hit = body["results"][0]
        assert hit["score"] > 0 and hit["created_at"] and hit["id"] == hit["episode"]["id"]

    @pytest.mark.parametrize(
        "params",
        [{}, {"q": ""}, {"q": "x", "limit": 0}, {"q": "x", "limit": 51}, {"q": "x", "lmit": 3}],
    )
    async def test_bad_parameters_are_422(
        self, client: httpx.AsyncClient, params: dict[str, Any]
    ) -> None:
        response = await client.get("/api/memory/search", params=params, headers=new_user())
        assert response.status_code == 422

    async def test_needs_a_token(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/api/memory/search", params={"q": "x"})).status_code == 401

    async def test_forgotten_and_erased_episodes_are_not_found(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        await plant(client, auth, ["the password is swordfish", "swordfish are fast"])
        found = await client.get("/api/memory/search", params={"q": "swordfish"}, headers=auth)
        first = found.json()["results"][0]["id"]
        deleted = await client.delete(f"/api/memory/episodic_memory/{first}", headers=auth)
        assert deleted.status_code == 204
        again = await client.get("/api/memory/search", params={"q": "swordfish"}, headers=auth)
        assert [hit["id"] for hit in again.json()["results"]] != [] and first not in {
            hit["id"] for hit in again.json()["results"]
        }
        assert (await client.delete("/api/memory", headers=auth)).status_code == 204
        erased = await client.get("/api/memory/search", params={"q": "swordfish"}, headers=auth)
        assert erased.json()["results"] == []


def system_prompt_of(request: dict[str, Any]) -> str:
    content: str = request["messages"][0]["content"]
    return content


class TestChatRecall:
    async def test_a_turn_recalls_what_left_the_window_with_its_date(
        self, hybrid_app: FastAPI, upstreams: tuple[LLMStandIn, EmbedderStandIn]
    ) -> None:
        llm, _ = upstreams
        auth = new_user()
        async with asgi_client(hybrid_app) as client:
            await plant(client, auth, ["My puppy is called Biscuit"])
            await plant(client, auth, [f"we talked about clouds, part {n}" for n in range(6)])
            response = await client.post(
                "/api/chat", json={"message": "What is my dog called?"}, headers=auth
            )
        assert response.status_code == 200
        prompt = system_prompt_of(llm.turns[-1])
        assert RECALL_HEADING in prompt
        recalled = prompt.split(RECALL_HEADING, 1)[1]
        assert "user: My puppy is called Biscuit" in recalled
        assert "clouds" not in recalled  # what the history window shows is not repeated
        assert recalled.strip().startswith("- 20")  # its date

    async def test_the_message_is_embedded_once_and_the_reply_after_it_is_stored(
        self, hybrid_app: FastAPI, upstreams: tuple[LLMStandIn, EmbedderStandIn]
    ) -> None:
        llm, embedder = upstreams
        llm.replies = ["Biscuit is a lovely name for a dog!"]
        auth = new_user()
        async with asgi_client(hybrid_app) as client:
            response = await client.post(
                "/api/chat", json={"message": "I named my puppy Biscuit"}, headers=auth
            )
            assert response.status_code == 200
            assert embedder.inputs == [
                ["I named my puppy Biscuit"],
                ["Biscuit is a lovely name for a dog!"],
            ]
            search = await client.get("/api/memory/search", params={"q": "dog"}, headers=auth)
        body = search.json()
        assert body["mode"] == "hybrid"
        # "dog" is in the reply's words; the message only matches by its vector (puppy ~ dog).
        assert {hit["episode"]["role"] for hit in body["results"]} == {"user", "assistant"}

    async def test_failing_embeddings_never_fail_a_turn_and_search_falls_back_to_text(
        self, hybrid_app: FastAPI, upstreams: tuple[LLMStandIn, EmbedderStandIn]
    ) -> None:
        _, embedder = upstreams
        embedder.failing = True
        auth = new_user()
        async with asgi_client(hybrid_app) as client:
            response = await client.post(
                "/api/chat", json={"message": "my kite is green"}, headers=auth
            )
            assert response.status_code == 200
            episodes = await client.get("/api/memory/episodic_memory", headers=auth)
            assert len(episodes.json()) == 2
            search = await client.get("/api/memory/search", params={"q": "kite"}, headers=auth)
        assert search.json()["mode"] == "text"
        assert [hit["episode"]["content"] for hit in search.json()["results"]] == [
            "my kite is green"
        ]

    async def test_recall_k_zero_chats_as_before(
        self, no_recall_app: FastAPI, upstreams: tuple[LLMStandIn, EmbedderStandIn]
    ) -> None:
        llm, embedder = upstreams
        auth = new_user()
        async with asgi_client(no_recall_app) as client:
            await plant(client, auth, ["My puppy is called Biscuit"])
            await plant(client, auth, [f"we talked about clouds, part {n}" for n in range(6)])
            response = await client.post(
                "/api/chat", json={"message": "What is my puppy called?"}, headers=auth
            )
        assert response.status_code == 200
        assert RECALL_HEADING not in system_prompt_of(llm.turns[-1])
        assert "Biscuit" not in str(llm.turns[-1]["messages"])
        assert embedder.inputs == []  # no embeddings configured there
