"""Property-based check of the Postgres repository's one-trip impersonation: whatever a token's
claims hold (quotes, backslashes, `$$`, SQL, any Unicode), the server reads back exactly the
JSON we meant and acts as `authenticated` with RLS (claims are user-influenced: user_metadata)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repositories.postgres import begin_as_user_sql, quote_literal
from services.storage.embedded_postgres import EmbeddedPostgres

TRICKY = st.sampled_from(
    ["'", "''", "\\", "\\'", "$$", "$x$", "E'", "';", "--", "/*", "\n", "\u00e9", "\U0001f600"]
)
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=8)), max_size=6).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)


@pytest.fixture(scope="module")
async def conn(embedded_server: EmbeddedPostgres) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(embedded_server.dsn)
    await connection.execute(
        "do $$ begin if not exists (select from pg_roles where rolname = 'authenticated')"
        " then create role authenticated nologin; end if; end $$"
    )
    yield connection
    await connection.close()


def test_quote_literal_refuses_nul() -> None:
    with pytest.raises(ValueError):
        quote_literal("a\x00b")


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
    await conn.execute(begin_as_user_sql(claims))
    try:
        row = await conn.fetchrow("select current_user, current_setting('request.jwt.claims')")
    finally:
        await conn.execute("ROLLBACK")
    assert row is not None
    role, stored = row
    assert role == "authenticated"
    assert stored == json.dumps(claims)
    assert json.loads(stored) == claims
