"""Property-based check of the Postgres repository's impersonation: whatever a token's claims
hold (quotes, backslashes, `$$`, SQL, any Unicode), `memory_private.call_as_user` sets exactly
the JSON we meant as `request.jwt.claims` and acts as `authenticated` for that `sub` (claims are
user-influenced: user_metadata). The claims are a bind parameter, never SQL text."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repositories.postgres import CALL_AS_USER_SQL, claims_json

TRICKY = st.sampled_from(
    ["'", "''", "\\", "\\'", "$$", "$x$", "E'", "';", "--", "/*", "\n", "\u00e9", "\U0001f600"]
)
# jsonb can not hold NUL (\u0000), in claims or anywhere else.
TEXT = st.lists(
    st.one_of(TRICKY, st.text(st.characters(exclude_characters="\x00"), max_size=8)), max_size=6
).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)


@pytest.fixture(scope="module")
async def conn(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_dsn)
    yield connection
    await connection.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
@given(metadata=JSON_VALUES, email=TEXT)
async def test_claims_read_back_verbatim_as_authenticated(
    conn: asyncpg.Connection, metadata: Any, email: str
) -> None:
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "email": email,
        "user_metadata": {"note": metadata},
    }
    sent = claims_json(claims)
    # Inside an explicit transaction the transaction-local settings outlive the call, so what
    # the operation ran with can be read back (in autocommit they end with the statement).
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.fetchval(CALL_AS_USER_SQL, sent, "read_document", "{}")
        row = await conn.fetchrow(
            "select current_user, current_setting('request.jwt.claims'), auth.uid()"
        )
    finally:
        await tx.rollback()
    assert row is not None
    role, stored, uid = row
    assert role == "authenticated"
    assert stored == sent
    assert json.loads(stored) == claims
    assert str(uid) == claims["sub"]
