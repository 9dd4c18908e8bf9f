"""The embedded backend's stand-in for Supabase Auth sign-up: a verified token's user is put
into the embedded `auth.users` on first sight, so any valid token works (memories reference
`auth.users` by foreign key). The `postgres` and `supabase` backends never write `auth.users`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg

from errors import StorageUnavailable
from models import User

logger = logging.getLogger(__name__)

INSERT_USER_SQL = (
    "insert into auth.users (id, aud, role, email, phone, is_anonymous, raw_app_meta_data,"
    " raw_user_meta_data) values ($1, 'authenticated', 'authenticated', $2, $3, $4, $5::jsonb,"
    " $6::jsonb) on conflict do nothing"
)
MAX_KNOWN_USERS = 100_000  # then the set starts over: one more cheap no-op insert per user


def _text(value: Any, limit: int = 255) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class EmbeddedUserDirectory:
    """Inserts each user once per process (`on conflict do nothing`, through the superuser
    pool); the in-process set of known ids is only an optimisation."""

    def __init__(self, pool: asyncpg.Pool, *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._known: set[uuid.UUID] = set()

    async def ensure(self, user: User) -> None:
        if user.id in self._known:
            return
        claims = user.claims
        try:
            async with asyncio.timeout(self._timeout):
                await self._pool.execute(
                    INSERT_USER_SQL,
                    user.id,
                    _text(claims.get("email")),
                    _text(claims.get("phone"), 15),
                    user.is_anonymous,
                    _object(claims.get("app_metadata")),
                    _object(claims.get("user_metadata")),
                )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            logger.warning("could not record user in auth.users: %s", type(exc).__name__)
            raise StorageUnavailable() from exc
        if len(self._known) >= MAX_KNOWN_USERS:
            self._known.clear()
        self._known.add(user.id)
