"""The database an operator command (import, export, backfill) works on: DATABASE_URL, else
the embedded backend's (started as `make run` starts it, schema applied). The Supabase REST
backend has no connection string to write through, so it is refused with what to set."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg

from config import Backend, Settings
from models import User
from repositories.base import MemoryRepository
from services.container import new_http_client, open_storage

OPERATOR_TIMEOUT_SECONDS = 30.0  # one call imports a whole user


class NoDatabase(Exception):
    pass


@dataclass(frozen=True, slots=True)
class OperatorStorage:
    repository: MemoryRepository
    pool: asyncpg.Pool
    embedded: bool


def operator_settings(settings: Settings, *, connections: int) -> Settings:
    """`settings` for an operator command: postgres when DATABASE_URL is set (even next to
    SUPABASE_URL), a pool of `connections`, a longer per-call timeout."""
    backend = settings.backend
    if backend is Backend.SUPABASE:
        if settings.database_url is None:
            raise NoDatabase(
                "MEMORY_BACKEND=supabase: set DATABASE_URL to the project's connection string"
                " (Supabase dashboard, Connect) to import or export"
            )
        backend = Backend.POSTGRES
    values = settings.model_dump(exclude={"memory_backend"})
    values.update(
        memory_backend=backend,
        db_pool_min_size=0,
        db_pool_max_size=connections,
        storage_timeout_seconds=OPERATOR_TIMEOUT_SECONDS,
    )
    return Settings.model_validate(values)


@asynccontextmanager
async def open_operator_storage(
    settings: Settings, *, connections: int
) -> AsyncIterator[OperatorStorage]:
    settings = operator_settings(settings, connections=connections)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(new_http_client(settings))
        storage = await open_storage(settings, http, stack)
        assert storage.pool is not None
        yield OperatorStorage(storage.repository, storage.pool, storage.embedded is not None)


def acting_user(user_id: uuid.UUID) -> User:
    """The user an operator command acts as: the claims PostgREST would set for their token.
    The token field only keys the repository's claims cache; no token exists or is sent."""
    claims = {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"}
    return User(id=user_id, claims=claims, token=f"operator:{user_id}")
