"""Shared fixtures: real PostgreSQL servers (the embedded one always, the machine's service on
127.0.0.1:5432 when it answers), each test session in throwaway databases."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import respx
from fastapi import FastAPI

from config import Settings
from main import create_app
from services.storage.database import apply_schema, create_pool
from services.storage.embedded_postgres import EmbeddedPostgres
from tests.db_helpers import scratch_database
from tests.tokens import TEST_JWT_SECRET

SYSTEM_POSTGRES_DSN = os.environ.get(
    "TEST_SYSTEM_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# Tests never read the developer's .env: every setting they need is passed explicitly.
for _name in list(os.environ):
    if _name.startswith(("SUPABASE_", "LLM_", "DATABASE_URL", "MEMORY_")):
        del os.environ[_name]


def _system_postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


def make_settings(**overrides: Any) -> Settings:
    """Settings that ignore any .env file."""
    return Settings(_env_file=None, **overrides)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """`create_app(settings)` with its lifespan entered: shared clients and storage open."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


# PostgREST's answer to a read with the API key alone: anon may not read memories (what the
# supabase backend's start-up probe expects of a reachable project with the schema applied).
POSTGREST_ANON_REFUSED = {
    "code": "42501",
    "message": "permission denied for table memories",
    "details": None,
    "hint": None,
}


@asynccontextmanager
async def running_supabase_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """`running_app` on the supabase backend, its start-up probe answered as Supabase does."""
    rest = f"{settings.supabase_url}/rest/v1"
    async with AsyncExitStack() as stack:
        with respx.mock(base_url=rest) as startup:
            probe = startup.get("/memories").respond(401, json=POSTGREST_ANON_REFUSED)
            app = await stack.enter_async_context(running_app(settings))
        assert probe.call_count == 1
        yield app


@asynccontextmanager
async def asgi_client(app: FastAPI, **transport_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that calls `app` in-process (no sockets)."""
    transport = httpx.ASGITransport(app=app, **transport_options)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("embedded")))
    server.start()
    yield server
    server.stop()


SERVER_KINDS = ["embedded", "system"]


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server_dsn(request: pytest.FixtureRequest) -> str:
    """The admin DSN of one real PostgreSQL server."""
    if request.param == "system":
        if not _system_postgres_answers():
            pytest.skip("no PostgreSQL service on 127.0.0.1:5432")
        return SYSTEM_POSTGRES_DSN
    server: EmbeddedPostgres = request.getfixturevalue("embedded_server")
    return server.dsn


@pytest.fixture(scope="session")
async def database_dsn(server_dsn: str) -> AsyncIterator[str]:
    """A throwaway database with the local Supabase bootstrap and the schema applied."""
    async with scratch_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await apply_schema(conn, bootstrap=True)
        finally:
            await conn.close()
        yield dsn


@pytest.fixture(scope="session")
async def admin_pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool connected as the superuser (like Supabase's `postgres`), json codecs on."""
    pool = await create_pool(database_dsn, make_settings(), min_size=0, max_size=20)
    yield pool
    await pool.close()


async def create_auth_user(pool: asyncpg.Pool, user_id: uuid.UUID | None = None) -> uuid.UUID:
    """Insert a user into auth.users, as Supabase Auth would on sign-up."""
    user_id = user_id or uuid.uuid4()
    await pool.execute(
        "insert into auth.users (id, aud, role, email) values ($1, 'authenticated',"
        " 'authenticated', $2)",
        user_id,
        f"{user_id.hex[:8]}@example.test",
    )
    return user_id


@pytest.fixture(scope="session")
async def embedded_app(embedded_server: EmbeddedPostgres) -> AsyncIterator[FastAPI]:
    """The app on the embedded backend (sharing the session's embedded server), lifespan run,
    accepting HS256 tokens signed with TEST_JWT_SECRET."""
    settings = make_settings(
        memory_backend="embedded",
        data_dir=embedded_server.pgdata.parent,
        supabase_jwt_secret=TEST_JWT_SECRET,
        memory_list_caps={"rewards": 5},
        max_item_bytes=4096,
        max_body_bytes=64 * 1024,
    )
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def client(embedded_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(embedded_app) as http:
        yield http


SEED_CLIENT_TEST_MODULE = "tests.test_supabase_client"
SEED_CLIENT_TEST_ENV = {
    "SUPABASE_URL": "https://seedtestproject00000.supabase.co",
    "SUPABASE_KEY": "sb_publishable_seed-test-key_0000000000",
}


@pytest.fixture(scope="module", autouse=True)
def _supabase_env_for_seed_client_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """The seed's own test (kept word for word) reads SUPABASE_URL/SUPABASE_KEY from the
    environment: give it placeholder credentials, for that module only (no network is used)."""
    if request.module.__name__ != SEED_CLIENT_TEST_MODULE:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SEED_CLIENT_TEST_ENV.items():
            patch.setenv(name, value)
        yield


CHAT_LLM_BASE_URL = "http://llm.test/v1"
CHAT_LLM_API_KEY = "sk-test-llm-key-that-must-never-leak"


@pytest.fixture(scope="session")
async def chat_app(embedded_server: EmbeddedPostgres) -> AsyncIterator[FastAPI]:
    """`embedded_app` with chat configured: an OpenAI-compatible API at CHAT_LLM_BASE_URL (respx
    stands in for it), 4 history episodes, and a small soft cap (a user's 4th turn compacts)."""
    settings = make_settings(
        memory_backend="embedded",
        data_dir=embedded_server.pgdata.parent,
        supabase_jwt_secret=TEST_JWT_SECRET,
        llm_base_url=CHAT_LLM_BASE_URL,
        llm_api_key=CHAT_LLM_API_KEY,
        llm_model="companion-test-model",
        chat_history_episodes=4,
        episodic_soft_cap=6,
        episodic_keep_after_compaction=2,
    )
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def chat_client(chat_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(chat_app) as http:
        yield http
