"""The whole app on the Supabase backend, with PostgREST served by respx in its real shapes:
every upstream request carries the API key and the requesting user's own token."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import respx
from fastapi import FastAPI

from tests.conftest import asgi_client, make_settings, running_supabase_app
from tests.tokens import TEST_JWT_SECRET, bearer, user_token

SUPABASE_URL = "https://abcdefghijklmnop.supabase.co"
REST = f"{SUPABASE_URL}/rest/v1"
API_KEY = "sb_publishable_test_key_0123456789"
UPDATED_AT = "2026-11-25T10:00:00.123456+00:00"


@pytest.fixture(scope="module")
async def supabase_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        supabase_url=SUPABASE_URL,
        supabase_key=API_KEY,
        supabase_jwt_secret=TEST_JWT_SECRET,
        data_dir=Path(tmp_path_factory.mktemp("supabase")),
        storage_timeout_seconds=2.0,
    )
    async with running_supabase_app(settings) as app:
        yield app


@pytest.fixture
def postgrest() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=REST, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def api(supabase_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(supabase_app) as http:
        yield http


def token_subject(request: httpx.Request) -> str:
    """The user id in the bearer token PostgREST received (verified with the test secret)."""
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    return str(claims["sub"])


def postgrest_error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(
        status, json={"code": code, "message": message, "details": None, "hint": None}
    )


async def test_read_sends_user_token_and_apikey_and_row_filter(
    api: httpx.AsyncClient, postgrest: respx.MockRouter
) -> None:
    user_id = uuid.uuid4()
    token = user_token(user_id)
    route = postgrest.get("/memories").respond(200, json=[])
    response = await api.get("/api/memory", headers=bearer(token))
    assert response.status_code == 200 and response.json()["version"] == 0
    sent = route.calls.last.request
    assert sent.headers["apikey"] == API_KEY
    assert sent.headers["authorization"] == f"Bearer {token}"
    assert sent.url.params["user_id"] == f"eq.{user_id}"
    assert set(sent.url.params["select"].split(",")) >= {"identity", "episodic_memory", "version"}


async def test_append_is_one_rpc_with_named_arguments(
    api: httpx.AsyncClient, postgrest: respx.MockRouter
) -> None:
    token = user_token()
    item = {"id": str(uuid.uuid4()), "text": "hi", "created_at": UPDATED_AT}
    route = postgrest.post("/rpc/memory_append_items").respond(
        200, json={"items": [item], "version": 2, "updated_at": UPDATED_AT}
    )
    response = await api.post(
        "/api/memory/episodic_memory", json={"text": "hi"}, headers=bearer(token)
    )
    assert response.status_code == 201
    assert response.json() == [item] and response.headers["etag"] == '"2"'
    assert route.call_count == 1
    sent = route.calls.last.request
    assert json.loads(sent.content) == {
        "p_field": "episodic_memory",
        "p_items": [{"text": "hi"}],
        "p_cap": 500,
        "p_config": "english",
    }
    assert sent.headers["authorization"] == f"Bearer {token}"
    assert sent.headers["apikey"] == API_KEY


async def test_append_with_idempotency_key_sends_it_and_a_conflict_is_409(
    api: httpx.AsyncClient, postgrest: respx.MockRouter
) -> None:
    token = user_token()
    headers = {**bearer(token), "Idempotency-Key": "turn-1"}
    item = {"id": str(uuid.uuid4()), "text": "hi", "created_at": UPDATED_AT}
    route = postgrest.post("/rpc/memory_append_items").respond(
        200, json={"items": [item], "version": 2, "updated_at": UPDATED_AT}
    )
    response = await api.post("/api/memory/episodic_memory", json={"text": "hi"}, headers=headers)
    assert response.status_code == 201 and response.json() == [item]
    assert json.loads(route.calls.last.request.content) == {
        "p_field": "episodic_memory",
        "p_items": [{"text": "hi"}],
        "p_cap": 500,
        "p_config": "english",
        "p_idempotency_key": "turn-1",
    }
    route.mock(
        return_value=postgrest_error(
            409, "PT409", "this Idempotency-Key was used with a different body"
        )
    )
    longer = [{"text": "hi"}, {"text": "more"}]
    conflict = await api.post("/api/memory/episodic_memory", json=longer, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json() == {"detail": "this Idempotency-Key was used with a different body"}
    assert json.loads(route.calls.last.request.content)["p_items"] == longer


async def test_interleaved_users_each_carry_their_own_token(
    api: httpx.AsyncClient, postgrest: respx.MockRouter
) -> None:
    users = [uuid.uuid4() for _ in range(8)]
    arrived = 0
    all_arrived = asyncio.Event()

    async def answer_as_token_owner(request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        arrived += 1
        if arrived == len(users):
            all_arrived.set()
        await all_arrived.wait()  # every request is in flight before any is answered
        # PostgREST runs memory_read_field as the token's user: it answers their own row.
        owner = token_subject(request)
        assert json.loads(request.content) == {"p_field": "identity"}
        return httpx.Response(200, json={"value": {"owner": owner}, "version": 1})

    postgrest.post("/rpc/memory_read_field").mock(side_effect=answer_as_token_owner)
    responses = await asyncio.gather(
        *(api.get("/api/memory/identity", headers=bearer(user_token(u))) for u in users)
    )
    assert [r.json() for r in responses] == [{"owner": str(u)} for u in users]


async def test_stale_if_match_is_412(api: httpx.AsyncClient, postgrest: respx.MockRouter) -> None:
    route = postgrest.post("/rpc/memory_set_field").mock(
        return_value=postgrest_error(412, "PT412", "memory is not at version 3")
    )
    response = await api.put(
        "/api/memory/identity", json={"a": 1}, headers={**bearer(user_token()), "If-Match": '"3"'}
    )
    assert response.status_code == 412
    assert json.loads(route.calls.last.request.content)["p_expected_version"] == 3


async def test_storage_failures_are_503_never_empty_memory(
    api: httpx.AsyncClient, postgrest: respx.MockRouter
) -> None:
    auth = bearer(user_token())
    for upstream in (
        httpx.Response(503, text="upstream connect error"),
        postgrest_error(500, "57014", "canceling statement due to statement timeout"),
        httpx.ConnectError("connection refused"),
    ):
        postgrest.get("/memories").mock(
            side_effect=upstream if isinstance(upstream, Exception) else None,
            return_value=None if isinstance(upstream, Exception) else upstream,
        )
        response = await api.get("/api/memory", headers=auth)
        assert response.status_code == 503, upstream
        assert response.headers["retry-after"]
        assert "identity" not in response.json()


async def test_token_refused_by_postgrest_is_401(
    api: httpx.AsyncClient, postgrest: respx.MockRouter
) -> None:
    postgrest.get("/memories").mock(return_value=postgrest_error(401, "PGRST301", "JWT expired"))
    response = await api.get("/api/memory", headers=bearer(user_token()))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_readiness_probes_postgrest_with_the_api_key_only(
    api: httpx.AsyncClient, postgrest: respx.MockRouter
) -> None:
    route = postgrest.get("/memories").mock(
        return_value=postgrest_error(401, "42501", "permission denied for table memories")
    )
    assert (await api.get("/readyz")).status_code == 200
    sent = route.calls.last.request
    assert sent.headers["apikey"] == API_KEY
    assert "authorization" not in sent.headers
    route.mock(return_value=httpx.Response(503))
    assert (await api.get("/readyz")).status_code == 503
