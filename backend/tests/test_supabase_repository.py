"""SupabaseMemoryRepository against PostgREST's real request and response shapes (respx).

Every request must carry `apikey: SUPABASE_KEY` and the user's own `Authorization: Bearer`
token; reads select the user's row, writes are RPCs with named arguments; PostgREST's error
bodies map to domain errors, and no storage error ever reads as an empty memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
import respx

from config import Settings
from errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidToken,
    InvalidValue,
    ItemNotFound,
    ServiceError,
    StorageError,
    StorageUnavailable,
    VersionMismatch,
)
from models import MemoryDocument, MemoryField, User
from repositories.postgrest_clients import SupabaseConfigError
from repositories.supabase import DOCUMENT_COLUMNS, SupabaseMemoryRepository
from tests.conftest import make_settings
from tests.tokens import supabase_claims, user_token

SUPABASE_URL = "https://abcdefghijklmnopqrst.supabase.co"
REST_URL = f"{SUPABASE_URL}/rest/v1"
PUBLISHABLE_KEY = "sb_publishable_Zm9vYmFyYmF6cXV4cXV1eA_0123abcd"
UPDATED_AT = "2026-11-25T14:34:45.123456+00:00"
DOCUMENT_SELECT = ",".join(DOCUMENT_COLUMNS)
TIMEOUT_SECONDS = 0.2


def settings_for(key: str = PUBLISHABLE_KEY, **overrides: Any) -> Settings:
    return make_settings(
        supabase_url=SUPABASE_URL,
        supabase_key=key,
        storage_timeout_seconds=TIMEOUT_SECONDS,
        **overrides,
    )


def make_user() -> User:
    """A signed-in user as `get_current_user` returns it: id, claims and a real signed token."""
    user_id = uuid.uuid4()
    return User(id=user_id, claims=supabase_claims(user_id), token=user_token(user_id))


def pgrst(status: int, body: Any) -> httpx.Response:
    """A PostgREST JSON answer."""
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )


def pgrst_error(
    status: int, code: str, message: str, details: str | None = None, hint: str | None = None
) -> httpx.Response:
    """A PostgREST error: `{code, details, hint, message}` plus its `Proxy-Status` header."""
    response = pgrst(status, {"code": code, "details": details, "hint": hint, "message": message})
    response.headers["Proxy-Status"] = f"PostgREST; error={code}"
    return response


def stored_row(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {f.value: f.default() for f in MemoryField}
    row.update(version=1, updated_at=UPDATED_AT)
    row.update(fields)
    return row


def token_sub(request: httpx.Request) -> str:
    """The user id in the request's bearer token (as PostgREST would read it)."""
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    sub: str = jwt.decode(token, options={"verify_signature": False})["sub"]
    return sub


def assert_acts_as(request: httpx.Request, user: User, key: str = PUBLISHABLE_KEY) -> None:
    """The headers supabase-py sends for a user: the API key, that user's token, the schema."""
    assert request.headers["apikey"] == key
    assert request.headers["Authorization"] == f"Bearer {user.token}"
    assert request.headers["Accept-Profile"] == "public"
    assert request.headers["Content-Profile"] == "public"
    assert "Prefer" not in request.headers  # no count=exact: one cheap statement


def assert_rpc(request: httpx.Request, function: str, args: dict[str, Any]) -> None:
    assert request.method == "POST"
    assert request.url.path == f"/rest/v1/rpc/{function}"
    assert request.url.query == b""
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == args


@pytest.fixture
def pgrst_mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=REST_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The app's one pool, as `new_http_client` makes it (respx intercepts its transport)."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
        yield client


@pytest.fixture
def repo(http: httpx.AsyncClient) -> SupabaseMemoryRepository:
    return SupabaseMemoryRepository(settings_for(), http)


@pytest.fixture
def user() -> User:
    return make_user()


class TestConstruction:
    def test_refuses_missing_credentials(self, http: httpx.AsyncClient) -> None:
        with pytest.raises(SupabaseConfigError, match="SUPABASE_URL and SUPABASE_KEY"):
            SupabaseMemoryRepository(make_settings(), http)

    @pytest.mark.parametrize(
        "key",
        [
            "sb_secret_Zm9vYmFyYmF6cXV4cXV1eA_0123abcd",
            jwt.encode({"role": "service_role", "iss": "supabase"}, "s" * 32, algorithm="HS256"),
        ],
        ids=["sb_secret", "legacy_service_role_jwt"],
    )
    def test_refuses_keys_that_bypass_rls(self, http: httpx.AsyncClient, key: str) -> None:
        with pytest.raises(SupabaseConfigError, match="row level security"):
            SupabaseMemoryRepository(settings_for(key), http)


class TestReadDocument:
    async def test_reads_the_users_row_as_the_user(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        row = stored_row(identity={"name": "Mia"}, episodic_memory=[{"id": "e1"}], version=7)
        route = pgrst_mock.get("/memories").mock(return_value=pgrst(200, [row]))

        document = await repo.read_document(user)

        assert document.identity == {"name": "Mia"}
        assert document.episodic_memory == [{"id": "e1"}]
        assert document.version == 7
        assert document.updated_at is not None and document.updated_at.year == 2026
        request = route.calls.last.request
        assert request.method == "GET"
        assert request.url.path == "/rest/v1/memories"
        assert dict(request.url.params) == {
            "select": DOCUMENT_SELECT,
            "user_id": f"eq.{user.id}",
        }
        assert_acts_as(request, user)

    async def test_no_row_reads_as_defaults(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        pgrst_mock.get("/memories").mock(return_value=pgrst(200, []))
        assert await repo.read_document(user) == MemoryDocument()

    @pytest.mark.parametrize(
        "response",
        [
            pgrst_error(503, "PGRST001", "Database client error. Retrying the connection."),
            httpx.Response(520, text="<html>origin error</html>"),
            pgrst(200, [stored_row(), stored_row()]),
            pgrst(200, {"unexpected": "shape"}),
            pgrst(200, [stored_row(identity=["not", "an", "object"])]),
            httpx.Response(200, text="not json"),
            pgrst_error(406, "PGRST116", "Cannot coerce", "The result contains 2 rows"),
        ],
        ids=["503", "520", "two_rows", "object", "bad_field", "not_json", "pgrst116_many"],
    )
    async def test_a_storage_failure_never_reads_as_empty(
        self,
        repo: SupabaseMemoryRepository,
        user: User,
        pgrst_mock: respx.MockRouter,
        response: httpx.Response,
    ) -> None:
        route = pgrst_mock.get("/memories").mock(return_value=response)
        with pytest.raises((StorageUnavailable, StorageError)):
            await repo.read_document(user)
        assert route.call_count == 1  # postgrest-py's GET retry (1, 2, 4 s) stays off


class TestReadField:
    async def test_calls_memory_read_field_with_the_field_only(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        episodes = [{"id": "e1", "text": "hi"}]
        route = pgrst_mock.post("/rpc/memory_read_field").mock(
            return_value=pgrst(200, {"value": episodes, "version": 4})
        )

        assert await repo.read_field(user, MemoryField.EPISODIC_MEMORY) == (episodes, 4)
        request = route.calls.last.request
        assert_rpc(request, "memory_read_field", {"p_field": "episodic_memory"})
        assert_acts_as(request, user)

    async def test_paging_is_sliced_by_the_function(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        page = [{"id": "e8"}, {"id": "e9"}]
        route = pgrst_mock.post("/rpc/memory_read_field").mock(
            return_value=pgrst(200, {"value": page, "version": 7})
        )

        result = await repo.read_field(user, MemoryField.EPISODIC_MEMORY, limit=2, before="e10")

        assert result == (page, 7)
        assert_rpc(
            route.calls.last.request,
            "memory_read_field",
            {"p_field": "episodic_memory", "p_limit": 2, "p_before": "e10"},
        )

    async def test_an_unknown_before_id_is_item_not_found(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        pgrst_mock.post("/rpc/memory_read_field").mock(
            return_value=pgrst_error(404, "PT404", "no item zz in rewards")
        )
        with pytest.raises(ItemNotFound, match="no item zz"):
            await repo.read_field(user, MemoryField.REWARDS, before="zz")

    @pytest.mark.parametrize(
        ("field", "answer"),
        [
            (MemoryField.IDENTITY, {"version": 2}),
            (MemoryField.IDENTITY, {"value": [], "version": 2}),
            (MemoryField.REWARDS, {"value": ["a string"], "version": 2}),
            (MemoryField.REWARDS, {"value": [], "version": "2"}),
            (MemoryField.REWARDS, [{"value": [], "version": 2}]),
        ],
    )
    async def test_an_answer_of_another_shape_is_an_error(
        self,
        repo: SupabaseMemoryRepository,
        user: User,
        pgrst_mock: respx.MockRouter,
        field: MemoryField,
        answer: Any,
    ) -> None:
        pgrst_mock.post("/rpc/memory_read_field").mock(return_value=pgrst(200, answer))
        with pytest.raises(StorageError):
            await repo.read_field(user, field)


class TestChatContext:
    async def test_calls_memory_chat_context_with_history_and_turn_ids(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        answer = {
            "identity": {"name": "Robo"},
            "core_instructions": [],
            "long_term_summary": {},
            "current_state": {},
            "recent_episodes": [{"id": "e9", "role": "user", "content": "hi"}],
            "episode_count": 9,
            "turn_episodes": [],
            "version": 12,
        }
        route = pgrst_mock.post("/rpc/memory_chat_context").mock(return_value=pgrst(200, answer))

        context = await repo.chat_context(user, history=4, turn_ids=("a", "b"))

        assert context.identity == {"name": "Robo"} and context.episode_count == 9
        assert context.recent_episodes == answer["recent_episodes"] and context.version == 12
        request = route.calls.last.request
        assert_rpc(request, "memory_chat_context", {"p_history": 4, "p_turn_ids": ["a", "b"]})
        assert_acts_as(request, user)

    async def test_without_turn_ids_sends_history_only(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        route = pgrst_mock.post("/rpc/memory_chat_context").mock(
            return_value=pgrst(200, {"version": 0})
        )
        context = await repo.chat_context(user, history=20)
        assert context.version == 0 and context.recent_episodes == []
        assert_rpc(route.calls.last.request, "memory_chat_context", {"p_history": 20})


class TestSearch:
    async def test_one_rpc_with_the_query_the_configuration_and_the_embedding(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        answer = {
            "mode": "hybrid",
            "results": [
                {
                    "id": "e1",
                    "created_at": "2026-11-25T10:00:00+00:00",
                    "score": 0.031,
                    "episode": {"id": "e1", "role": "user", "content": "my dog Biscuit"},
                }
            ],
        }
        route = pgrst_mock.post("/rpc/memory_search").mock(return_value=pgrst(200, answer))

        found = await repo.search(user, "dog?", limit=5, embedding=[0.5, -1.0])

        assert found.mode == "hybrid" and [hit.id for hit in found.results] == ["e1"]
        request = route.calls.last.request
        assert_rpc(
            request,
            "memory_search",
            {
                "p_query": "dog?",
                "p_limit": 5,
                "p_config": "english",
                "p_embedding": "[0.5,-1.0]",
                "p_vector_weight": 0.5,
            },
        )
        assert_acts_as(request, user)

    async def test_an_answer_of_another_shape_is_a_storage_error(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        pgrst_mock.post("/rpc/memory_search").mock(return_value=pgrst(200, [{"id": 1}]))
        with pytest.raises(StorageError):
            await repo.search(user, "dog", limit=5)

    async def test_save_embeddings_is_one_rpc_answering_how_many(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        route = pgrst_mock.post("/rpc/memory_save_embeddings").mock(return_value=pgrst(200, 1))
        assert await repo.save_embeddings(user, {"e1": [0.1, 0.2]}) == 1
        assert_rpc(
            route.calls.last.request, "memory_save_embeddings", {"p_embeddings": {"e1": [0.1, 0.2]}}
        )


class TestSetField:
    async def test_calls_memory_set_field_with_named_arguments(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        stored = {"value": {"name": "Mia"}, "version": 4, "updated_at": UPDATED_AT}
        route = pgrst_mock.post("/rpc/memory_set_field").mock(return_value=pgrst(200, stored))

        result = await repo.set_field(
            user, MemoryField.IDENTITY, {"name": "Mia"}, expected_version=3
        )

        assert result.value == {"name": "Mia"} and result.version == 4
        request = route.calls.last.request
        assert_rpc(
            request,
            "memory_set_field",
            {
                "p_field": "identity",
                "p_value": {"name": "Mia"},
                "p_expected_version": 3,
                "p_config": "english",
            },
        )
        assert_acts_as(request, user)

    async def test_unconditional_write_sends_null_version(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        stored = {"value": [{"id": "a", "created_at": UPDATED_AT}], "version": 1}
        route = pgrst_mock.post("/rpc/memory_set_field").mock(return_value=pgrst(200, stored))

        await repo.set_field(user, MemoryField.REWARDS, [{"id": "a"}], expected_version=None)

        body = json.loads(route.calls.last.request.content)
        assert body == {
            "p_field": "rewards",
            "p_value": [{"id": "a"}],
            "p_expected_version": None,
            "p_config": "english",
        }

    async def test_stale_version_is_412(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        pgrst_mock.post("/rpc/memory_set_field").mock(
            return_value=pgrst_error(412, "PT412", "memory is not at version 3")
        )
        with pytest.raises(VersionMismatch):
            await repo.set_field(user, MemoryField.IDENTITY, {}, expected_version=3)

    async def test_nan_is_an_invalid_value_and_sends_nothing(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        route = pgrst_mock.post("/rpc/memory_set_field")
        with pytest.raises(InvalidValue):
            await repo.set_field(
                user, MemoryField.CURRENT_STATE, {"mood": math.nan}, expected_version=None
            )
        assert not route.called


class TestMergeField:
    async def test_sends_the_patch_with_nulls_kept(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        stored = {"value": {"activity": "drawing"}, "version": 9, "updated_at": UPDATED_AT}
        route = pgrst_mock.post("/rpc/memory_merge_field").mock(return_value=pgrst(200, stored))
        patch = {"mood": None, "activity": "drawing"}

        result = await repo.merge_field(
            user, MemoryField.CURRENT_STATE, patch, expected_version=None
        )

        assert result.value == {"activity": "drawing"} and result.version == 9
        request = route.calls.last.request
        assert_rpc(
            request,
            "memory_merge_field",
            {"p_field": "current_state", "p_patch": patch, "p_expected_version": None},
        )
        assert_acts_as(request, user)


class TestAppendItems:
    async def test_calls_memory_append_items_with_the_cap(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        items = [{"text": "hello"}, {"id": "k1", "text": "again"}]
        stored = {
            "items": [
                {"id": str(uuid.uuid4()), "text": "hello", "created_at": UPDATED_AT},
                {"id": "k1", "text": "again", "created_at": UPDATED_AT},
            ],
            "version": 12,
            "updated_at": UPDATED_AT,
        }
        route = pgrst_mock.post("/rpc/memory_append_items").mock(return_value=pgrst(200, stored))

        result = await repo.append_items(user, MemoryField.EPISODIC_MEMORY, items, cap=500)

        assert [i["text"] for i in result.items] == ["hello", "again"]
        assert result.version == 12
        request = route.calls.last.request
        assert_rpc(
            request,
            "memory_append_items",
            {"p_field": "episodic_memory", "p_items": items, "p_cap": 500, "p_config": "english"},
        )
        assert_acts_as(request, user)

    async def test_sends_the_idempotency_key_as_a_named_argument(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        items = [{"text": "hello"}]
        stored = {
            "items": [{"id": str(uuid.uuid4()), "text": "hello", "created_at": UPDATED_AT}],
            "version": 13,
            "updated_at": UPDATED_AT,
        }
        route = pgrst_mock.post("/rpc/memory_append_items").mock(return_value=pgrst(200, stored))

        result = await repo.append_items(
            user, MemoryField.REWARDS, items, cap=5, idempotency_key="turn-1"
        )

        assert result.items == stored["items"] and result.version == 13
        request = route.calls.last.request
        assert_rpc(
            request,
            "memory_append_items",
            {
                "p_field": "rewards",
                "p_items": items,
                "p_cap": 5,
                "p_idempotency_key": "turn-1",
                "p_config": "english",
            },
        )
        assert_acts_as(request, user)

    async def test_key_reused_with_another_body_is_an_idempotency_conflict(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        message = "this Idempotency-Key was used with a different body"
        pgrst_mock.post("/rpc/memory_append_items").mock(
            return_value=pgrst_error(409, "PT409", message)
        )
        with pytest.raises(IdempotencyConflict) as caught:
            await repo.append_items(
                user, MemoryField.REWARDS, [{"n": 1}, {"n": 2}], cap=5, idempotency_key="k"
            )
        assert caught.value.detail == message and caught.value.status_code == 409

    async def test_reused_item_id_with_other_content_is_an_idempotency_conflict(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        message = "item k1 is already stored with other content"
        pgrst_mock.post("/rpc/memory_append_items").mock(
            return_value=pgrst_error(409, "PT409", message)
        )
        with pytest.raises(IdempotencyConflict) as caught:
            await repo.append_items(user, MemoryField.REWARDS, [{"id": "k1"}], cap=5)
        assert caught.value.detail == message
        assert caught.value.status_code == 409


class TestRemoveItem:
    @pytest.mark.parametrize(
        ("answer", "removed"),
        [({"version": 3, "updated_at": UPDATED_AT}, True), (None, False)],
        ids=["removed", "no_such_item"],
    )
    async def test_calls_memory_remove_item(
        self,
        repo: SupabaseMemoryRepository,
        user: User,
        pgrst_mock: respx.MockRouter,
        answer: dict[str, Any] | None,
        removed: bool,
    ) -> None:
        route = pgrst_mock.post("/rpc/memory_remove_item").mock(return_value=pgrst(200, answer))

        assert await repo.remove_item(user, MemoryField.REWARDS, "k1") is removed
        request = route.calls.last.request
        assert_rpc(request, "memory_remove_item", {"p_field": "rewards", "p_item_id": "k1"})
        assert_acts_as(request, user)


class TestErase:
    @pytest.mark.parametrize("had_row", [True, False])
    async def test_calls_memory_erase_without_arguments(
        self,
        repo: SupabaseMemoryRepository,
        user: User,
        pgrst_mock: respx.MockRouter,
        had_row: bool,
    ) -> None:
        route = pgrst_mock.post("/rpc/memory_erase").mock(return_value=pgrst(200, had_row))

        assert await repo.erase(user) is had_row
        request = route.calls.last.request
        assert_rpc(request, "memory_erase", {})
        assert_acts_as(request, user)

    async def test_an_unexpected_answer_is_an_error(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        pgrst_mock.post("/rpc/memory_erase").mock(return_value=pgrst(200, None))
        with pytest.raises(StorageError):
            await repo.erase(user)


ERROR_CASES: list[tuple[str, httpx.Response, type[ServiceError]]] = [
    ("PT412", pgrst_error(412, "PT412", "memory is not at version 2"), VersionMismatch),
    ("PT409", pgrst_error(409, "PT409", "item x is already stored"), IdempotencyConflict),
    ("22023", pgrst_error(400, "22023", "unknown memory field: nope"), InvalidValue),
    ("22P02", pgrst_error(400, "22P02", "invalid input syntax for type json"), InvalidValue),
    ("23514", pgrst_error(400, "23514", "violates check constraint"), InvalidValue),
    ("42501_403", pgrst_error(403, "42501", "permission denied for table memories"), Forbidden),
    ("42501_401", pgrst_error(401, "42501", "permission denied for table memories"), InvalidToken),
    ("PGRST301", pgrst_error(401, "PGRST301", "No suitable key or wrong key type"), InvalidToken),
    ("PGRST302", pgrst_error(401, "PGRST302", "Anonymous access is disabled"), InvalidToken),
    ("PGRST303", pgrst_error(401, "PGRST303", "JWT expired"), InvalidToken),
    ("23505", pgrst_error(409, "23505", "duplicate key value"), Conflict),
    ("23503", pgrst_error(409, "23503", "violates foreign key constraint"), Conflict),
    (
        "PGRST000",
        pgrst_error(503, "PGRST000", "Could not connect to the database"),
        StorageUnavailable,
    ),
    (
        "PGRST002",
        pgrst_error(503, "PGRST002", "Could not query the database for the schema cache"),
        StorageUnavailable,
    ),
    (
        "PGRST003",
        pgrst_error(504, "PGRST003", "Timed out acquiring connection"),
        StorageUnavailable,
    ),
    (
        "57014",
        pgrst_error(500, "57014", "canceling statement due to statement timeout"),
        StorageUnavailable,
    ),
    ("XX000", pgrst_error(500, "XX000", "internal error"), StorageUnavailable),
    (
        "502_gateway_json",
        pgrst(502, {"message": "An invalid response was received from the upstream server"}),
        StorageUnavailable,
    ),
    ("503_html", httpx.Response(503, text="<html>Service Unavailable</html>"), StorageUnavailable),
    ("520_cloudflare", httpx.Response(520, text="error code: 520"), StorageUnavailable),
    ("429", pgrst(429, {"message": "Too many requests"}), StorageUnavailable),
    (
        "PGRST202",
        pgrst_error(404, "PGRST202", "Could not find the function public.memory_set_field"),
        StorageError,
    ),
    ("P0001", pgrst_error(400, "P0001", "raised by a trigger"), StorageError),
    (
        "invalid_api_key",
        pgrst(
            401,
            {
                "message": "Invalid API key",
                "hint": "Double check your Supabase `anon` or `service_role` API key.",
            },
        ),
        StorageError,
    ),
    ("418_empty", httpx.Response(418), StorageError),
]


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("response", "expected"),
        [case[1:] for case in ERROR_CASES],
        ids=[case[0] for case in ERROR_CASES],
    )
    async def test_postgrest_errors_map_to_domain_errors(
        self,
        repo: SupabaseMemoryRepository,
        user: User,
        pgrst_mock: respx.MockRouter,
        response: httpx.Response,
        expected: type[ServiceError],
    ) -> None:
        route = pgrst_mock.post("/rpc/memory_set_field").mock(return_value=response)
        with pytest.raises(ServiceError) as caught:
            await repo.set_field(user, MemoryField.IDENTITY, {"a": 1}, expected_version=None)
        assert type(caught.value) is expected
        assert route.call_count == 1

    async def test_unavailable_says_when_to_retry(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        pgrst_mock.get("/memories").mock(return_value=httpx.Response(503))
        with pytest.raises(StorageUnavailable) as caught:
            await repo.read_document(user)
        assert caught.value.status_code == 503
        assert caught.value.headers is not None and "Retry-After" in caught.value.headers

    async def test_messages_of_other_errors_are_not_shown(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        pgrst_mock.post("/rpc/memory_erase").mock(
            return_value=pgrst_error(400, "42703", 'column "secret_sql" does not exist')
        )
        with pytest.raises(StorageError) as caught:
            await repo.erase(user)
        assert "secret_sql" not in caught.value.detail

    @pytest.mark.parametrize(
        "fault",
        [
            httpx.ConnectError("connection refused"),
            httpx.ConnectTimeout("connect timed out"),
            httpx.ReadTimeout("read timed out"),
            httpx.RemoteProtocolError("server disconnected"),
            httpx.ReadError("connection reset"),
        ],
        ids=lambda e: type(e).__name__,
    )
    async def test_transport_errors_are_unavailable(
        self,
        repo: SupabaseMemoryRepository,
        user: User,
        pgrst_mock: respx.MockRouter,
        fault: Exception,
    ) -> None:
        route = pgrst_mock.get("/memories").mock(side_effect=fault)
        with pytest.raises(StorageUnavailable):
            await repo.read_document(user)
        assert route.call_count == 1

    async def test_an_answer_that_never_comes_times_out(
        self, repo: SupabaseMemoryRepository, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        never = asyncio.Event()

        async def hang(request: httpx.Request) -> httpx.Response:
            await never.wait()
            raise AssertionError("unreachable")

        pgrst_mock.post("/rpc/memory_append_items").mock(side_effect=hang)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StorageUnavailable):
            await repo.append_items(user, MemoryField.REWARDS, [{"id": "a"}], cap=5)
        assert loop.time() - started < TIMEOUT_SECONDS + 1.0


class TestConcurrentUsers:
    async def test_interleaved_requests_each_carry_their_own_token(
        self, http: httpx.AsyncClient, pgrst_mock: respx.MockRouter
    ) -> None:
        """Both users' reads and writes are in flight at once (a barrier holds every answer
        until all requests have arrived); each carries its own token and gets its own data."""
        repo = SupabaseMemoryRepository(settings_for(), http)
        alice, bob = make_user(), make_user()
        users = {str(u.id): u for u in (alice, bob)}
        rounds = 3
        barrier = asyncio.Barrier(len(users) * 3 * rounds)
        seen: list[tuple[str, str, httpx.Request]] = []  # (path, token's user, request)

        async def read(request: httpx.Request) -> httpx.Response:
            sub = token_sub(request)
            seen.append(("read", sub, request))
            await barrier.wait()
            assert request.url.params["user_id"] == f"eq.{sub}"
            return pgrst(200, [stored_row(identity={"owner": sub})])

        async def set_field(request: httpx.Request) -> httpx.Response:
            sub = token_sub(request)
            seen.append(("set", sub, request))
            await barrier.wait()
            value = json.loads(request.content)["p_value"]
            return pgrst(200, {"value": value | {"stored_for": sub}, "version": 2})

        async def append(request: httpx.Request) -> httpx.Response:
            sub = token_sub(request)
            seen.append(("append", sub, request))
            await barrier.wait()
            items = json.loads(request.content)["p_items"]
            return pgrst(200, {"items": [i | {"stored_for": sub} for i in items], "version": 3})

        pgrst_mock.get("/memories").mock(side_effect=read)
        pgrst_mock.post("/rpc/memory_set_field").mock(side_effect=set_field)
        pgrst_mock.post("/rpc/memory_append_items").mock(side_effect=append)

        async def session(user: User, n: int) -> None:
            me = str(user.id)
            document, stored, appended = await asyncio.gather(
                repo.read_document(user),
                repo.set_field(user, MemoryField.IDENTITY, {"sent_by": me}, expected_version=None),
                repo.append_items(user, MemoryField.REWARDS, [{"id": f"{me}-{n}"}], cap=10),
            )
            assert document.identity == {"owner": me}
            assert stored.value == {"sent_by": me, "stored_for": me}
            assert appended.items == [{"id": f"{me}-{n}", "stored_for": me}]

        async with asyncio.timeout(5):
            await asyncio.gather(*(session(u, n) for n in range(rounds) for u in (alice, bob)))

        assert len(seen) == len(users) * 3 * rounds
        for kind, sub, request in seen:
            owner = users[sub]
            other = bob if owner is alice else alice
            assert_acts_as(request, owner)
            assert other.token not in request.headers["Authorization"]
            if kind != "read":  # what the request asks to store was sent by the token's user
                assert sub in request.content.decode()
                assert str(other.id) not in request.content.decode()
        assert "Authorization" not in http.headers and "apikey" not in http.headers
        assert not http.is_closed


class TestSharedPool:
    async def test_operations_never_touch_or_close_the_shared_pool(
        self, http: httpx.AsyncClient, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        repo = SupabaseMemoryRepository(settings_for(), http)
        pgrst_mock.get("/memories").mock(return_value=pgrst(200, []))
        pgrst_mock.post("/rpc/memory_erase").mock(return_value=pgrst(200, True))
        for _ in range(3):
            await repo.read_document(user)
            await repo.erase(user)
        assert not http.is_closed
        assert dict(http.headers).keys().isdisjoint({"authorization", "apikey"})

    async def test_a_legacy_anon_jwt_key_goes_only_in_apikey(
        self, http: httpx.AsyncClient, user: User, pgrst_mock: respx.MockRouter
    ) -> None:
        anon_key = jwt.encode(
            {"iss": "supabase", "ref": "abcdefghijklmnopqrst", "role": "anon"},
            "legacy-project-jwt-secret-of-32-characters",
            algorithm="HS256",
        )
        repo = SupabaseMemoryRepository(settings_for(anon_key), http)
        route = pgrst_mock.get("/memories").mock(return_value=pgrst(200, []))

        await repo.read_document(user)

        assert_acts_as(route.calls.last.request, user, key=anon_key)


class TestPing:
    async def test_probes_with_the_api_key_alone(
        self, repo: SupabaseMemoryRepository, pgrst_mock: respx.MockRouter
    ) -> None:
        route = pgrst_mock.get("/memories").mock(
            return_value=pgrst_error(401, "42501", "permission denied for table memories")
        )

        await repo.ping()

        request = route.calls.last.request
        assert dict(request.url.params) == {"select": "version", "limit": "0"}
        assert request.headers["apikey"] == PUBLISHABLE_KEY
        assert "Authorization" not in request.headers

    async def test_an_empty_answer_is_ready(
        self, repo: SupabaseMemoryRepository, pgrst_mock: respx.MockRouter
    ) -> None:
        route = pgrst_mock.get("/memories").mock(return_value=pgrst(200, []))
        await repo.ping()  # raises StorageUnavailable when not ready
        assert route.call_count == 1

    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(503, text="Service Unavailable"),
            pgrst_error(503, "PGRST001", "Database client error"),
            pgrst(401, {"message": "Invalid API key"}),
            pgrst_error(404, "PGRST205", "Could not find the table 'public.memories'"),
            httpx.ConnectError("connection refused"),
        ],
        ids=["503", "PGRST001", "invalid_api_key", "no_schema", "connect_error"],
    )
    async def test_not_ready(
        self,
        repo: SupabaseMemoryRepository,
        pgrst_mock: respx.MockRouter,
        answer: httpx.Response | Exception,
    ) -> None:
        route = pgrst_mock.get("/memories")
        if isinstance(answer, Exception):
            route.mock(side_effect=answer)
        else:
            route.mock(return_value=answer)
        with pytest.raises(StorageUnavailable):
            await repo.ping()
