"""Guardians and chat limits on the Supabase backend: the whole app, with PostgREST (and the
LLM) served by respx in their real shapes. Every guardian operation is one RPC with named
arguments carrying the guardian's own token; PostgREST's refusals (42501 from the
field-ownership trigger or a missing link) become 403 with their detail, a refused chat turn
is 429 with Retry-After and stores nothing, and a report that lost its race is 409."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import asgi_client, make_settings, running_supabase_app
from tests.llm_stand_in import completion
from tests.tokens import TEST_JWT_SECRET, bearer, user_token

SUPABASE_URL = "https://guardianstestproject.supabase.co"
REST = f"{SUPABASE_URL}/rest/v1"
API_KEY = "sb_publishable_guardian_test_key_0123"
LLM_URL = "http://llm.supabase-test/v1"
UPDATED_AT = "2026-12-03T10:00:00.123456+00:00"


@pytest.fixture(scope="module")
async def supabase_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        supabase_url=SUPABASE_URL,
        supabase_key=API_KEY,
        supabase_jwt_secret=TEST_JWT_SECRET,
        data_dir=Path(tmp_path_factory.mktemp("supabase-guardians")),
        storage_timeout_seconds=2.0,
        llm_base_url=LLM_URL,
        llm_model="companion-test-model",
        chat_turns_per_minute=12,
    )
    async with running_supabase_app(settings) as app:
        yield app


@pytest.fixture
def postgrest() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=REST, assert_all_called=False) as router:
        yield router


@pytest.fixture
def llm() -> Iterator[respx.Route]:
    with respx.mock(base_url=LLM_URL, assert_all_called=False) as router:
        yield router.post("/chat/completions")


@pytest.fixture
async def api(supabase_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(supabase_app) as http:
        yield http


def pgrst_error(status: int, code: str, message: str, hint: str | None = None) -> httpx.Response:
    response = httpx.Response(
        status, json={"code": code, "message": message, "details": None, "hint": hint}
    )
    response.headers["Proxy-Status"] = f"PostgREST; error={code}"
    return response


def rpc_args(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


def assert_as(route: respx.Route, token: str) -> None:
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {token}"
    assert sent.headers["apikey"] == API_KEY


def document(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "identity": {},
        "current_state": {},
        "long_term_summary": {},
        "core_instructions": [],
        "episodic_memory": [],
        "rewards": [],
        "parent_reports": [],
        "version": 7,
        "updated_at": UPDATED_AT,
    }
    return {**base, **fields}


class TestChildRefused:
    @pytest.mark.parametrize(
        ("method", "path", "body", "function"),
        [
            ("PUT", "/api/memory/core_instructions", [], "memory_set_field"),
            ("POST", "/api/memory/parent_reports", {"text": "x"}, "memory_append_items"),
            ("DELETE", "/api/memory/core_instructions/rule-1", None, "memory_remove_item"),
        ],
    )
    async def test_the_triggers_refusal_is_403_with_its_detail(
        self,
        api: httpx.AsyncClient,
        postgrest: respx.MockRouter,
        method: str,
        path: str,
        body: Any,
        function: str,
    ) -> None:
        token = user_token()
        route = postgrest.post(f"/rpc/{function}").mock(
            return_value=pgrst_error(
                403,
                "42501",
                "core_instructions and parent_reports are set by your guardian",
                "A guardian changes them through /api/children/{id}/...",
            )
        )
        response = await api.request(method, path, json=body, headers=bearer(token))
        assert response.status_code == 403
        assert response.json() == {
            "detail": "core_instructions and parent_reports are set by your guardian"
        }
        assert route.call_count == 1
        assert_as(route, token)

    async def test_postgres_own_permission_text_stays_hidden(
        self, api: httpx.AsyncClient, postgrest: respx.MockRouter
    ) -> None:
        postgrest.post("/rpc/memory_set_field").mock(
            return_value=pgrst_error(403, "42501", "permission denied for table memories")
        )
        response = await api.put("/api/memory/identity", json={}, headers=bearer(user_token()))
        assert response.status_code == 403 and response.json() == {"detail": "not allowed"}


class TestGuardianRpcs:
    async def test_each_operation_is_one_rpc_as_the_guardian(
        self, api: httpx.AsyncClient, postgrest: respx.MockRouter
    ) -> None:
        token, child = user_token(), str(uuid.uuid4())
        auth = bearer(token)
        item = {"id": "i1", "text": "Bedtime at 8", "created_at": UPDATED_AT}
        routes = {
            "guardian_children": postgrest.post("/rpc/guardian_children").respond(
                200, json=[{"child_id": child, "linked_at": UPDATED_AT, "daily_turns": None}]
            ),
            "guardian_read_document": postgrest.post("/rpc/guardian_read_document").respond(
                200, json=document(parent_reports=[{"id": "r1", "report": "ok"}])
            ),
            "guardian_set_field": postgrest.post("/rpc/guardian_set_field").respond(
                200, json={"value": [item], "version": 8, "updated_at": UPDATED_AT}
            ),
            "guardian_append_items": postgrest.post("/rpc/guardian_append_items").respond(
                200, json={"items": [item], "version": 9, "updated_at": UPDATED_AT}
            ),
            "guardian_remove_item": postgrest.post("/rpc/guardian_remove_item").respond(
                200, json={"version": 10, "updated_at": UPDATED_AT}
            ),
            "guardian_set_chat_limit": postgrest.post("/rpc/guardian_set_chat_limit").respond(
                200, json={"child_id": child, "daily_turns": 5}
            ),
            "guardian_erase_child": postgrest.post("/rpc/guardian_erase_child").respond(
                200, json=True
            ),
        }
        base = f"/api/children/{child}"
        listed = await api.get("/api/children", headers=auth)
        assert listed.json()[0]["child_id"] == child
        memory = await api.get(f"{base}/memory", headers=auth)
        assert memory.status_code == 200 and memory.headers["etag"] == '"7"'
        reports = await api.get(f"{base}/reports", headers=auth)
        assert reports.json() == [{"id": "r1", "report": "ok"}]
        put = await api.put(
            f"{base}/memory/core_instructions", json=[{"text": "Bedtime at 8"}], headers=auth
        )
        assert put.json() == [item]
        post = await api.post(
            f"{base}/memory/core_instructions", json={"text": "Bedtime at 8"}, headers=auth
        )
        assert post.status_code == 201 and post.json() == [item]
        removed = await api.delete(f"{base}/memory/core_instructions/i1", headers=auth)
        assert removed.status_code == 204
        limits = await api.put(f"{base}/limits", json={"daily_turns": 5}, headers=auth)
        assert limits.json() == {"daily_turns": 5}
        erased = await api.delete(f"{base}/memory", headers=auth)
        assert erased.status_code == 204

        expected_args = {
            "guardian_children": {},
            "guardian_read_document": {"p_child_id": child},
            "guardian_set_field": {
                "p_child_id": child,
                "p_field": "core_instructions",
                "p_value": [{"text": "Bedtime at 8"}],
            },
            "guardian_append_items": {
                "p_child_id": child,
                "p_field": "core_instructions",
                "p_items": [{"text": "Bedtime at 8"}],
                "p_cap": 500,
            },
            "guardian_remove_item": {
                "p_child_id": child,
                "p_field": "core_instructions",
                "p_item_id": "i1",
            },
            "guardian_set_chat_limit": {"p_child_id": child, "p_daily_turns": 5},
            "guardian_erase_child": {"p_child_id": child},
        }
        for name, route in routes.items():
            assert rpc_args(route) == expected_args[name], name
            assert_as(route, token)

    async def test_a_child_not_linked_is_403(
        self, api: httpx.AsyncClient, postgrest: respx.MockRouter
    ) -> None:
        postgrest.post("/rpc/guardian_read_document").mock(
            return_value=pgrst_error(403, "42501", "you are not a guardian of this user")
        )
        response = await api.get(
            f"/api/children/{uuid.uuid4()}/memory", headers=bearer(user_token())
        )
        assert response.status_code == 403
        assert response.json() == {"detail": "you are not a guardian of this user"}


class TestChatLimit:
    async def test_a_refused_turn_is_429_and_stores_nothing(
        self, api: httpx.AsyncClient, postgrest: respx.MockRouter, llm: respx.Route
    ) -> None:
        token = user_token()
        begin = postgrest.post("/rpc/chat_begin_turn").respond(
            200, json={"refused": "daily", "limit": 3, "retry_after": 5400}
        )
        append = postgrest.post("/rpc/memory_append_items").respond(500)
        response = await api.post("/api/chat", json={"message": "hi"}, headers=bearer(token))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "5400"
        assert "tomorrow" in response.json()["detail"]
        assert rpc_args(begin) == {
            "p_history": 20,
            "p_turns_per_minute": 12,
            # the recall search runs in the same call (RECALL_K=5, full text: no embeddings)
            "p_recall_query": "hi",
            "p_recall_k": 5,
            "p_config": "english",
            "p_embedding": None,
            "p_vector_weight": 0.5,
        }
        assert_as(begin, token)
        assert append.call_count == 0 and llm.call_count == 0

    async def test_an_allowed_turn_reads_its_context_from_the_same_call(
        self, api: httpx.AsyncClient, postgrest: respx.MockRouter, llm: respx.Route
    ) -> None:
        token = user_token()
        postgrest.post("/rpc/chat_begin_turn").respond(
            200,
            json={
                "identity": {},
                "core_instructions": [{"id": "r", "text": "Bedtime at 8"}],
                "long_term_summary": {},
                "current_state": {},
                "recent_episodes": [],
                "episode_count": 0,
                "turn_episodes": [],
                "version": 3,
            },
        )
        episodes = [
            {"id": "u", "role": "user", "content": "hi", "created_at": UPDATED_AT},
            {"id": "a", "role": "assistant", "content": "Hello!", "created_at": UPDATED_AT},
        ]
        postgrest.post("/rpc/memory_append_items").respond(
            200, json={"items": episodes, "version": 4, "updated_at": UPDATED_AT}
        )
        llm.respond(200, json=completion("Hello!"))
        response = await api.post("/api/chat", json={"message": "hi"}, headers=bearer(token))
        assert response.status_code == 200 and response.json()["reply"] == "Hello!"
        system = json.loads(llm.calls.last.request.content)["messages"][0]["content"]
        assert "Bedtime at 8" in system


class TestReports:
    async def test_a_report_that_lost_its_race_is_409(
        self, api: httpx.AsyncClient, postgrest: respx.MockRouter, llm: respx.Route
    ) -> None:
        token, child = user_token(), str(uuid.uuid4())
        episodes = [
            {"id": "e1", "role": "user", "content": "I saw a fox", "created_at": UPDATED_AT},
            {"id": "e2", "role": "assistant", "content": "Wow!", "created_at": UPDATED_AT},
        ]
        context = postgrest.post("/rpc/guardian_report_context").respond(
            200,
            json={
                "episodes": episodes,
                "after_episode_id": "e0",
                "last_report_at": UPDATED_AT,
                "rewards": [],
                "version": 5,
            },
        )
        stored_once: list[Any] = []

        def store(request: httpx.Request) -> httpx.Response:
            report = json.loads(request.content)["p_report"]
            if stored_once:  # the database's compare-and-set: the second finds a newer report
                return httpx.Response(  # PostgREST's body for a null jsonb result
                    200, content=b"null", headers={"Content-Type": "application/json"}
                )
            stored_once.append({**report, "id": "r1", "created_at": UPDATED_AT})
            return httpx.Response(
                200, json={"items": stored_once, "version": 6, "updated_at": UPDATED_AT}
            )

        store_route = postgrest.post("/rpc/guardian_store_report").mock(side_effect=store)
        llm.respond(200, json=completion("Topics: foxes. Mood: excited."))
        path = f"/api/children/{child}/reports"
        responses = await asyncio.gather(
            api.post(path, headers=bearer(token)), api.post(path, headers=bearer(token))
        )
        assert sorted(r.status_code for r in responses) == [201, 409]
        winner = next(r for r in responses if r.status_code == 201).json()
        assert winner["through_episode_id"] == "e2" and winner["from_episode_id"] == "e1"
        assert rpc_args(context) == {"p_child_id": child, "p_max_episodes": 200}
        args = rpc_args(store_route)
        assert args["p_after_episode_id"] == "e0" and args["p_cap"] == 500
        assert args["p_report"]["report"] == "Topics: foxes. Mood: excited."
        assert_as(store_route, token)
