"""services.supabase_client beyond the seed's own test: the process's client is built once on a
shared pool and never closes it; the per-request PostgREST client acts as exactly one user."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx
from pydantic import ValidationError
from supabase import AsyncClient

from config import Settings
from repositories.postgrest_clients import (
    SupabaseConfigError,
    SupabaseCredentials,
    user_postgrest_client,
)
from services.supabase_client import (
    close_supabase_client,
    get_supabase_client,
    init_supabase_client,
)
from tests.conftest import make_settings
from tests.tokens import user_token

SUPABASE_URL = "https://abcdefghijklmnopqrst.supabase.co"
KEY = "sb_publishable_Zm9vYmFyYmF6cXV4cXV1eA_0123abcd"
CREDENTIALS = SupabaseCredentials(url=SUPABASE_URL, key=KEY)


def is_closed(pool: httpx.AsyncClient) -> bool:
    return pool.is_closed


@pytest.fixture(autouse=True)
async def no_cached_client() -> AsyncIterator[None]:
    await close_supabase_client()
    yield
    await close_supabase_client()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Settings from the environment only (never the developer's .env), no Supabase yet."""
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "MEMORY_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def credentials_in_env(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("SUPABASE_URL", SUPABASE_URL)
    environment.setenv("SUPABASE_KEY", KEY)


@pytest.fixture
def pgrst_mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=f"{SUPABASE_URL}/rest/v1", assert_all_called=False) as router:
        yield router


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


class TestGetSupabaseClient:
    @pytest.mark.usefixtures("environment")
    def test_without_credentials_says_what_to_set(self) -> None:
        with pytest.raises(ValueError, match="SUPABASE_URL and SUPABASE_KEY") as caught:
            get_supabase_client()
        assert isinstance(caught.value, SupabaseConfigError)

    @pytest.mark.usefixtures("credentials_in_env")
    async def test_built_once_per_process_without_retries(self) -> None:
        client = get_supabase_client()
        assert isinstance(client, AsyncClient)
        assert get_supabase_client() is client
        assert client.postgrest.retry_enabled is False
        assert client.postgrest.headers["apikey"] == KEY

    @pytest.mark.usefixtures("credentials_in_env")
    async def test_closing_its_postgrest_client_leaves_the_pool_open(self) -> None:
        client = get_supabase_client()
        pool = client.postgrest.session
        await client.postgrest.aclose()
        assert not is_closed(pool)
        await close_supabase_client()
        assert is_closed(pool)  # the module opened this pool, so it closes it
        assert get_supabase_client() is not client

    async def test_init_binds_it_to_the_apps_pool(self, http: httpx.AsyncClient) -> None:
        settings = make_settings(supabase_url=SUPABASE_URL, supabase_key=KEY)
        client = init_supabase_client(settings, http)
        assert get_supabase_client() is client
        assert client.postgrest.session is http
        await close_supabase_client()
        assert not http.is_closed  # the lifespan owns it

    @pytest.mark.usefixtures("credentials_in_env")
    async def test_its_requests_are_async_and_shaped_as_supabase_py_sends_them(
        self, pgrst_mock: respx.MockRouter
    ) -> None:
        uid = uuid.uuid4()
        route = pgrst_mock.get("/memories").respond(200, json=[])
        response = (
            await get_supabase_client()
            .table("memories")
            .select("identity")
            .eq("user_id", str(uid))
            .execute()
        )
        assert response.data == []
        request = route.calls.last.request
        assert dict(request.url.params) == {"select": "identity", "user_id": f"eq.{uid}"}
        assert request.headers["apikey"] == KEY


class TestCredentials:
    def test_a_url_that_is_not_http_is_refused(self) -> None:
        """Refused by the settings themselves, before any client is built."""
        with pytest.raises(ValidationError, match="must be an http"):
            make_settings(supabase_url="abcdefghijklmnopqrst.supabase.co", supabase_key=KEY)

    def test_rest_url(self) -> None:
        settings = make_settings(supabase_url=f"{SUPABASE_URL}/", supabase_key=KEY)
        assert SupabaseCredentials.from_settings(settings).rest_url == f"{SUPABASE_URL}/rest/v1"


class TestUserPostgrestClient:
    async def test_carries_the_api_key_and_the_users_own_token(
        self, http: httpx.AsyncClient
    ) -> None:
        token = user_token()
        client = user_postgrest_client(CREDENTIALS, http, token)
        assert client.headers["apikey"] == KEY
        assert client.headers["Authorization"] == f"Bearer {token}"
        assert client.headers["Accept-Profile"] == "public"
        assert client.session is http
        assert client.retry_enabled is False

    async def test_clients_of_two_users_share_the_pool_not_the_headers(
        self, http: httpx.AsyncClient
    ) -> None:
        alice_token, bob_token = user_token(), user_token()
        alice = user_postgrest_client(CREDENTIALS, http, alice_token)
        bob = user_postgrest_client(CREDENTIALS, http, bob_token)
        assert alice.session is bob.session is http
        assert alice.headers["Authorization"] == f"Bearer {alice_token}"
        assert bob.headers["Authorization"] == f"Bearer {bob_token}"
        assert "Authorization" not in http.headers and "apikey" not in http.headers

    async def test_closing_it_never_closes_the_shared_pool(self, http: httpx.AsyncClient) -> None:
        async with user_postgrest_client(CREDENTIALS, http, user_token()) as client:
            assert client.session is http
        await client.aclose()
        assert not http.is_closed

    async def test_needs_a_token(self, http: httpx.AsyncClient) -> None:
        with pytest.raises(ValueError, match="token"):
            user_postgrest_client(CREDENTIALS, http, "")
