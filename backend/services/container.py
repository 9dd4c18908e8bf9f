"""The process's shared clients, opened once in the lifespan and closed after it.

`open_services` picks the storage backend (DESIGN section 5) and builds everything a request
needs from it; dependencies read the result from `request.app.state.services`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
import httpx

from config import Backend, Settings, StartupError
from errors import StorageUnavailable
from repositories.base import StorageRepository
from services.auth.jwks import JwksCache
from services.auth.verifier import TokenVerifier
from services.memory_service import MemoryService
from services.observability.lifecycle import metrics_lifecycle
from services.observability.storage import timed_repository
from services.recall.embeddings import EmbeddingsClient
from services.recall.service import RecallService
from services.storage.embedded_postgres import EmbeddedPostgres
from services.storage.embedded_users import EmbeddedUserDirectory


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    http: httpx.AsyncClient
    repository: StorageRepository
    memory: MemoryService
    recall: RecallService
    verifier: TokenVerifier
    embedded: EmbeddedPostgres | None = None
    users: EmbeddedUserDirectory | None = None  # the embedded backend records users on sight


def new_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one pooled HTTP client (Supabase, JWKS, LLM, embeddings); per-call timeouts are set by
    callers."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.storage_timeout_seconds),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
    )


@dataclass(frozen=True, slots=True)
class Storage:
    repository: StorageRepository
    embedded: EmbeddedPostgres | None = None
    users: EmbeddedUserDirectory | None = None
    pool: asyncpg.Pool | None = None  # postgres/embedded: the login role's pool (operator tools)


# What to check when the storage does not answer at start-up, by backend.
_UNREACHABLE_HINTS = {
    Backend.SUPABASE: "Supabase did not answer at SUPABASE_URL: check SUPABASE_URL and"
    " SUPABASE_KEY, and that supabase_schema.sql is applied",
    Backend.POSTGRES: "cannot reach the database at DATABASE_URL: check DATABASE_URL (host, port,"
    " user, password, database) and that PostgreSQL is running",
    Backend.EMBEDDED: "the embedded PostgreSQL does not answer: see its log in"
    " DATA_DIR/postgres/log",
}


def unreachable(settings: Settings, exc: BaseException) -> StartupError:
    """The start-up error for storage that does not answer, naming the setting to check (and
    the error's type and text, which carry no secret: asyncpg and httpx name host and port)."""
    cause = exc.__cause__ if isinstance(exc, StorageUnavailable) and exc.__cause__ else exc
    reason = f"{type(cause).__name__}: {cause}".rstrip(": ")
    return StartupError(f"{_UNREACHABLE_HINTS[settings.backend]} ({reason})")


async def open_storage(
    settings: Settings, http: httpx.AsyncClient, stack: AsyncExitStack
) -> Storage:
    """The configured backend's repository; what it opens is closed by `stack`.

    One policy for every backend: storage that does not answer at start-up is a
    `StartupError` naming the setting to check (fail fast), not a server that answers 503s
    from its first request on. Once started, an outage is a 503 with Retry-After.
    """
    storage = await _open_storage(settings, http, stack)
    try:
        await storage.repository.ping()
    except StorageUnavailable as exc:
        raise unreachable(settings, exc) from exc
    return storage


async def _open_storage(
    settings: Settings, http: httpx.AsyncClient, stack: AsyncExitStack
) -> Storage:
    if settings.backend is Backend.SUPABASE:
        from repositories.supabase import SupabaseMemoryRepository
        from services.supabase_client import close_supabase_client, init_supabase_client

        repository = SupabaseMemoryRepository(settings, http)
        init_supabase_client(settings, http)  # the seed's get_supabase_client() shares the pool
        stack.push_async_callback(close_supabase_client)
        return Storage(repository)

    from repositories.postgres import PostgresMemoryRepository
    from services.storage.database import apply_schema, create_pool

    embedded: EmbeddedPostgres | None = None
    if settings.backend is Backend.EMBEDDED:
        embedded = EmbeddedPostgres(settings.resolved_data_dir)
        await embedded.start_async()
        stack.push_async_callback(embedded.stop_async)
        dsn = embedded.dsn
    else:
        assert settings.database_url is not None
        dsn = settings.database_url.get_secret_value()
    try:
        pool = await create_pool(dsn, settings)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise unreachable(settings, exc) from exc
    stack.push_async_callback(pool.close)
    if embedded is None:
        return Storage(PostgresMemoryRepository(pool, settings), pool=pool)
    async with pool.acquire() as conn:
        await apply_schema(conn, bootstrap=True)
    return Storage(
        PostgresMemoryRepository(pool, settings),
        embedded=embedded,
        users=EmbeddedUserDirectory(pool, timeout=settings.storage_timeout_seconds),
        pool=pool,
    )


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Everything a request needs, for `settings` as `create_app` resolved them (auth keys
    included)."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(new_http_client(settings))
        jwks = (
            JwksCache(http, settings.jwks_url, cache_seconds=settings.jwks_cache_seconds)
            if settings.jwks_url
            else None
        )
        storage = await open_storage(settings, http, stack)
        repository = storage.repository
        if settings.metrics_enabled:  # storage metrics, and the metrics listener
            repository = timed_repository(repository, settings.backend.value)
            await stack.enter_async_context(metrics_lifecycle(settings))
        yield Services(
            settings=settings,
            http=http,
            repository=repository,
            memory=MemoryService(repository, settings),
            recall=RecallService(
                repository,
                EmbeddingsClient(http, settings) if settings.embeddings_configured else None,
                settings,
            ),
            verifier=TokenVerifier(settings, jwks),
            embedded=storage.embedded,
            users=storage.users,
        )
