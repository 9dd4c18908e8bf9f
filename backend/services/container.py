"""The process's shared clients, opened once in the lifespan and closed after it.

`open_services` picks the storage backend (DESIGN section 5) and builds everything a request
needs from it; dependencies read the result from `request.app.state.services`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx

from config import Backend, Settings
from repositories.base import StorageRepository
from services.auth.jwks import JwksCache
from services.auth.verifier import TokenVerifier
from services.memory_service import MemoryService
from services.storage.embedded_postgres import EmbeddedPostgres
from services.storage.embedded_users import EmbeddedUserDirectory


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    http: httpx.AsyncClient
    repository: StorageRepository
    memory: MemoryService
    verifier: TokenVerifier
    embedded: EmbeddedPostgres | None = None
    users: EmbeddedUserDirectory | None = None  # the embedded backend records users on sight


def new_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one pooled HTTP client (Supabase, JWKS, LLM); per-call timeouts are set by callers."""
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


async def open_storage(
    settings: Settings, http: httpx.AsyncClient, stack: AsyncExitStack
) -> Storage:
    """The configured backend's repository; what it opens is closed by `stack`."""
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
    pool = await create_pool(dsn, settings)
    stack.push_async_callback(pool.close)
    if embedded is None:
        return Storage(PostgresMemoryRepository(pool, settings))
    async with pool.acquire() as conn:
        await apply_schema(conn, bootstrap=True)
    return Storage(
        PostgresMemoryRepository(pool, settings),
        embedded=embedded,
        users=EmbeddedUserDirectory(pool, timeout=settings.storage_timeout_seconds),
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
        yield Services(
            settings=settings,
            http=http,
            repository=storage.repository,
            memory=MemoryService(storage.repository, settings),
            verifier=TokenVerifier(settings, jwks),
            embedded=storage.embedded,
            users=storage.users,
        )
