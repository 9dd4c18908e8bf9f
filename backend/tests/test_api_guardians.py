"""The guardian API and chat limits end to end: the ASGI app on the embedded backend with real
signed tokens for children, guardians and strangers, links made as the operator makes them,
and a respx stand-in for the LLM. Two app instances share one database where limits and
report generation must hold across instances."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
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
from tests.llm_stand_in import LLMStandIn, completion
from tests.tokens import TEST_JWT_SECRET, bearer, user_token

DAILY_DETAIL = "That's all the chatting for today! Come back tomorrow to talk again."


@pytest.fixture
def llm(chat_app: FastAPI) -> Iterator[LLMStandIn]:
    with respx.mock(base_url=CHAT_LLM_BASE_URL, assert_all_called=False) as router:
        yield LLMStandIn(router)


@pytest.fixture(scope="session")
async def second_chat_app(embedded_server: EmbeddedPostgres) -> AsyncIterator[FastAPI]:
    """Another instance of `chat_app` (its own pool and clients) on the same database."""
    settings = make_settings(
        memory_backend="embedded",
        data_dir=embedded_server.pgdata.parent,
        supabase_jwt_secret=TEST_JWT_SECRET,
        llm_base_url=CHAT_LLM_BASE_URL,
        llm_api_key=CHAT_LLM_API_KEY,
        llm_model="companion-test-model",
        chat_history_episodes=4,
        episodic_soft_cap=100,
    )
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def second_client(second_chat_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(second_chat_app) as http:
        yield http


@pytest.fixture
async def operator(embedded_server: EmbeddedPostgres, chat_app: FastAPI) -> AsyncIterator[Any]:
    """The operator's connection (what `make guardian` uses): links and unlinks users."""
    conn = await asyncpg.connect(embedded_server.dsn)
    yield conn
    await conn.close()


class Family:
    def __init__(self) -> None:
        self.guardian_id, self.child_id = uuid.uuid4(), uuid.uuid4()
        self.guardian = bearer(user_token(self.guardian_id))
        self.child = bearer(user_token(self.child_id))
        self.stranger = bearer(user_token(uuid.uuid4()))

    def path(self, rest: str = "", child_id: uuid.UUID | None = None) -> str:
        return f"/api/children/{child_id or self.child_id}{rest}"


async def link(operator: Any, guardian: uuid.UUID, child: uuid.UUID) -> None:
    for user_id in (guardian, child):
        await operator.execute(
            "insert into auth.users (id, aud, role) values ($1, 'authenticated',"
            " 'authenticated') on conflict do nothing",
            user_id,
        )
    await operator.execute(
        "insert into public.guardianships (guardian_id, child_id) values ($1, $2)", guardian, child
    )


@pytest.fixture
async def family(operator: Any) -> Family:
    family = Family()
    await link(operator, family.guardian_id, family.child_id)
    return family


async def chat(client: httpx.AsyncClient, auth: dict[str, str], message: str) -> httpx.Response:
    return await client.post("/api/chat", json={"message": message}, headers=auth)


class TestChildCanNotWriteGuardianFields:
    @pytest.mark.parametrize("field", ["core_instructions", "parent_reports"])
    async def test_every_api_write_path_is_403_and_changes_nothing(
        self, chat_client: httpx.AsyncClient, family: Family, operator: Any, field: str
    ) -> None:
        c = chat_client
        await operator.execute(  # the system writes both (a report, an instruction)
            "insert into public.memories (user_id, core_instructions, parent_reports)"
            ' values ($1, \'[{"id": "item-1", "text": "rule"}]\','
            ' \'[{"id": "item-1", "report": "fine"}]\')',
            family.child_id,
        )
        before = (await c.get("/api/memory", headers=family.child)).json()
        attempts = [
            await c.put(f"/api/memory/{field}", json=[], headers=family.child),
            await c.put(f"/api/memory/{field}", json=[{"text": "forged"}], headers=family.child),
            await c.post(f"/api/memory/{field}", json={"text": "x"}, headers=family.child),
            await c.post(
                f"/api/memory/{field}",
                json={"text": "x"},
                headers={**family.child, "Idempotency-Key": "k1"},
            ),
            await c.delete(f"/api/memory/{field}/item-1", headers=family.child),
            await c.delete("/api/memory", headers=family.child),
        ]
        for response in attempts:
            assert response.status_code == 403, (response.request.method, response.text)
            assert "guardian" in response.json()["detail"]
        assert (await c.get("/api/memory", headers=family.child)).json() == before
        assert before["version"] > 0 and before[field][0]["id"] == "item-1"

    async def test_a_childs_own_fields_stay_writable(
        self, chat_client: httpx.AsyncClient, family: Family
    ) -> None:
        response = await chat_client.put(
            "/api/memory/identity", json={"child": "Mia"}, headers=family.child
        )
        assert response.status_code == 200


class TestGuardianAccess:
    async def test_lists_children(self, chat_client: httpx.AsyncClient, family: Family) -> None:
        response = await chat_client.get("/api/children", headers=family.guardian)
        assert response.status_code == 200
        assert [c["child_id"] for c in response.json()] == [str(family.child_id)]
        assert (await chat_client.get("/api/children", headers=family.child)).json() == []

    async def test_strangers_and_children_are_refused(
        self, chat_client: httpx.AsyncClient, family: Family
    ) -> None:
        for auth in (family.stranger, family.child):
            attempts: list[tuple[str, str, Any]] = [
                ("GET", "/memory", None),
                ("PUT", "/memory/core_instructions", []),
                ("POST", "/memory/core_instructions", {"text": "x"}),
                ("GET", "/reports", None),
                ("POST", "/reports", None),
                ("PUT", "/limits", {"daily_turns": 100}),
                ("DELETE", "/memory", None),
            ]
            for method, rest, body in attempts:
                response = await chat_client.request(
                    method, family.path(rest), json=body, headers=auth
                )
                assert response.status_code == 403, (method, rest, response.text)
                assert response.json()["detail"] == "you are not a guardian of this user"

    async def test_a_guardian_of_a_reading_b_is_refused(
        self, chat_client: httpx.AsyncClient, family: Family, operator: Any
    ) -> None:
        other = Family()
        await link(operator, other.guardian_id, other.child_id)
        await chat_client.put("/api/memory/identity", json={"b": 1}, headers=other.child)
        response = await chat_client.get(
            family.path("/memory", other.child_id), headers=family.guardian
        )
        assert response.status_code == 403
        assert "identity" not in response.text

    async def test_a_removed_link_revokes_at_once(
        self, chat_client: httpx.AsyncClient, family: Family, operator: Any
    ) -> None:
        assert (await chat_client.get(family.path("/memory"), headers=family.guardian)).is_success
        await operator.execute(
            "delete from public.guardianships where guardian_id = $1", family.guardian_id
        )
        response = await chat_client.get(family.path("/memory"), headers=family.guardian)
        assert response.status_code == 403
        # The child owns its instructions again.
        response = await chat_client.put(
            "/api/memory/core_instructions", json=[], headers=family.child
        )
        assert response.status_code == 200

    async def test_invalid_instructions_are_403_for_strangers_and_422_for_the_guardian(
        self, chat_client: httpx.AsyncClient, family: Family
    ) -> None:
        bad = [{"text": "a\u0000b"}]
        path = family.path("/memory/core_instructions")
        assert (await chat_client.put(path, json=bad, headers=family.stranger)).status_code == 403
        assert (await chat_client.post(path, json=[], headers=family.stranger)).status_code == 403
        refused = await chat_client.put(path, json=bad, headers=family.guardian)
        assert refused.status_code == 422 and "NUL" in refused.json()["detail"]
        assert (await chat_client.post(path, json=[], headers=family.guardian)).status_code == 422

    @pytest.mark.parametrize("body", [{}, {"daily_turns": -1}, {"daily_turns": "many"}])
    async def test_a_limit_must_be_given_and_in_range(
        self, chat_client: httpx.AsyncClient, family: Family, body: Any
    ) -> None:
        response = await chat_client.put(family.path("/limits"), json=body, headers=family.guardian)
        assert response.status_code == 422
        listed = (await chat_client.get("/api/children", headers=family.guardian)).json()
        assert listed[0]["daily_turns"] is None

    async def test_a_child_id_that_is_no_uuid_is_422(
        self, chat_client: httpx.AsyncClient, family: Family
    ) -> None:
        response = await chat_client.get("/api/children/nope/memory", headers=family.guardian)
        assert response.status_code == 422


class TestWholeFlow:
    async def test_instruct_chat_report_limit_erase(
        self, chat_client: httpx.AsyncClient, family: Family, llm: LLMStandIn
    ) -> None:
        c, g = chat_client, family.guardian
        # The guardian sets an instruction; the child's companion follows it.
        put = await c.put(
            family.path("/memory/core_instructions"),
            json=[{"text": "Bedtime is at 8."}],
            headers=g,
        )
        assert put.status_code == 200 and put.json()[0]["text"] == "Bedtime is at 8."
        added = await c.post(
            family.path("/memory/core_instructions"), json={"text": "No scary stories."}, headers=g
        )
        assert added.status_code == 201
        llm.replies = ["Hi! Let's talk about dinosaurs."]
        assert (await chat(c, family.child, "I like dinosaurs")).status_code == 200
        system = llm.turns[-1]["messages"][0]["content"]
        assert "Bedtime is at 8." in system and "No scary stories." in system
        removed = await c.delete(
            family.path(f"/memory/core_instructions/{added.json()[0]['id']}"), headers=g
        )
        assert removed.status_code == 204
        missing = await c.delete(family.path("/memory/core_instructions/nope"), headers=g)
        assert missing.status_code == 404

        # A report on the conversation so far.
        llm.replies = ["Topics: dinosaurs. Mood: happy. Anything worrying: Nothing."]
        report = await c.post(family.path("/reports"), headers=g)
        assert report.status_code == 201, report.text
        body = report.json()
        assert body["report"].startswith("Topics: dinosaurs.")
        episodes = (await c.get("/api/memory/episodic_memory", headers=family.child)).json()
        assert body["from_episode_id"] == episodes[0]["id"]
        assert body["through_episode_id"] == episodes[-1]["id"]
        assert body["episode_count"] == 2
        prompt = llm.turns[-1]["messages"][1]["content"]
        assert "user: I like dinosaurs" in prompt
        assert (await c.get(family.path("/reports"), headers=g)).json() == [body]
        again = await c.post(family.path("/reports"), headers=g)
        assert again.status_code == 409  # nothing new since
        # The child reads the reports but can not change them.
        assert (await c.get("/api/memory/parent_reports", headers=family.child)).json() == [body]

        # A daily limit: the child's next turn is its last today.
        limits = await c.put(family.path("/limits"), json={"daily_turns": 2}, headers=g)
        assert limits.json() == {"daily_turns": 2}
        assert (await chat(c, family.child, "one more")).status_code == 200
        stored = (await c.get("/api/memory", headers=family.child)).json()
        refused = await chat(c, family.child, "and another")
        assert refused.status_code == 429
        assert refused.json()["detail"] == DAILY_DETAIL
        assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
        assert (await c.get("/api/memory", headers=family.child)).json() == stored
        listed = (await c.get("/api/children", headers=g)).json()
        assert listed[0]["daily_turns"] == 2

        # Erase: everything of the child's memory is gone.
        assert (await c.delete(family.path("/memory"), headers=g)).status_code == 204
        memory = (await c.get("/api/memory", headers=family.child)).json()
        assert memory["version"] == 0 and memory["episodic_memory"] == []

    async def test_a_report_without_an_llm_is_503(
        self, client: httpx.AsyncClient, operator: Any
    ) -> None:
        family = Family()
        await link(operator, family.guardian_id, family.child_id)
        response = await client.post(family.path("/reports"), headers=family.guardian)
        assert response.status_code == 503
        assert "LLM_BASE_URL" in response.json()["detail"]


class TestAcrossTwoInstances:
    async def test_concurrent_turns_at_the_limit_take_exactly_the_limit(
        self,
        chat_client: httpx.AsyncClient,
        second_client: httpx.AsyncClient,
        family: Family,
        llm: LLMStandIn,
    ) -> None:
        limit = 3
        set_limit = await chat_client.put(
            family.path("/limits"), json={"daily_turns": limit}, headers=family.guardian
        )
        assert set_limit.status_code == 200
        responses = await asyncio.gather(
            *(
                chat((chat_client, second_client)[n % 2], family.child, f"turn {n}")
                for n in range(10)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * limit + [429] * (10 - limit)
        episodes = await chat_client.get("/api/memory/episodic_memory", headers=family.child)
        assert len(episodes.json()) == 2 * limit
        assert len(llm.turns) == limit  # a refused turn never reached the LLM

    async def test_report_generation_racing_itself_stores_one(
        self,
        chat_client: httpx.AsyncClient,
        second_client: httpx.AsyncClient,
        family: Family,
        llm: LLMStandIn,
    ) -> None:
        assert (await chat(chat_client, family.child, "hello")).status_code == 200
        arrived: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]
        count = 0

        async def answer(request: httpx.Request) -> httpx.Response:
            nonlocal count
            mine, count = count, count + 1
            arrived[mine].set()
            await asyncio.gather(*(event.wait() for event in arrived))  # both have read
            return httpx.Response(200, json=completion(f"report {mine}"))

        llm.route.side_effect = answer
        responses = await asyncio.gather(
            chat_client.post(family.path("/reports"), headers=family.guardian),
            second_client.post(family.path("/reports"), headers=family.guardian),
        )
        assert sorted(r.status_code for r in responses) == [201, 409]
        reports = (await chat_client.get(family.path("/reports"), headers=family.guardian)).json()
        winner = next(r for r in responses if r.status_code == 201).json()
        assert reports == [winner]


class TestStreamedTurnPastTheLimit:
    async def test_is_a_429_before_any_event(
        self, chat_client: httpx.AsyncClient, family: Family, llm: LLMStandIn
    ) -> None:
        await chat_client.put(
            family.path("/limits"), json={"daily_turns": 0}, headers=family.guardian
        )
        response = await chat_client.post(
            "/api/chat", json={"message": "hi", "stream": True}, headers=family.child
        )
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/json"
        assert response.json()["detail"] == DAILY_DETAIL
        assert llm.turns == []


class TestPerMinuteLimit:
    async def test_past_the_rate_429_and_nothing_stored(
        self, embedded_server: EmbeddedPostgres, llm: LLMStandIn
    ) -> None:
        settings = make_settings(
            memory_backend="embedded",
            data_dir=embedded_server.pgdata.parent,
            supabase_jwt_secret=TEST_JWT_SECRET,
            llm_base_url=CHAT_LLM_BASE_URL,
            llm_model="companion-test-model",
            chat_turns_per_minute=2,
        )
        auth = bearer(user_token(uuid.uuid4()))
        async with running_app(settings) as app, asgi_client(app) as http:
            assert [(await chat(http, auth, f"hi {n}")).status_code for n in range(2)] == [200, 200]
            refused = await chat(http, auth, "hi again")
            stored = (await http.get("/api/memory/episodic_memory", headers=auth)).json()
        assert refused.status_code == 429
        assert "minute" in refused.json()["detail"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert len(stored) == 4
