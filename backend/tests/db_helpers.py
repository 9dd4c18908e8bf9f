"""Impersonation exactly as PostgREST does it, for the database tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg


def claims_for(user_id: uuid.UUID | None, role: str = "authenticated") -> dict[str, Any]:
    claims: dict[str, Any] = {"role": role, "aud": "authenticated" if user_id else None}
    if user_id is not None:
        claims["sub"] = str(user_id)
    return claims


@asynccontextmanager
async def acting_as(
    pool: asyncpg.Pool, user_id: uuid.UUID | None, role: str = "authenticated"
) -> AsyncIterator[asyncpg.Connection]:
    """One transaction in which `role` with these JWT claims runs the statements (user_id None
    with role anon is a request without a token)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            role,
            json.dumps(claims_for(user_id, role)),
        )
        yield conn
