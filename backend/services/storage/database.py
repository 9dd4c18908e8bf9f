"""asyncpg pool creation and schema application (the `postgres` and `embedded` backends).

One pool per process, opened in the app's lifespan. Each connection decodes json/jsonb to
Python values, so repositories pass and receive dicts and lists, never JSON strings.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from config import BACKEND_DIR, Settings

SCHEMA_SQL = BACKEND_DIR / "supabase_schema.sql"
BOOTSTRAP_SQL = BACKEND_DIR / "local_supabase_bootstrap.sql"

# Any constant will do; it keeps two processes from applying the schema at the same time.
_SCHEMA_LOCK_KEY = 0x6D656D6F72790001


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(dsn: str, settings: Settings, **overrides: Any) -> asyncpg.Pool:
    """The process's pool. Transaction-local settings only, so no per-release reset query."""
    options: dict[str, Any] = {
        "min_size": settings.db_pool_min_size,
        "max_size": settings.db_pool_max_size,
        "statement_cache_size": settings.db_statement_cache_size,
        "command_timeout": settings.storage_timeout_seconds,
        "timeout": settings.storage_timeout_seconds,
        "init": _init_connection,
        "reset": _no_reset,
        # Timestamps the SQL writes into JSON (items' created_at) in UTC, +00:00, whatever
        # the server's own TimeZone (an embedded server takes the machine's).
        "server_settings": {"TimeZone": "UTC"},
    }
    options.update(overrides)
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, **options)
    return pool


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Every operation runs in a transaction with `set_config(…, true)`: nothing outlives it."""


async def apply_schema(conn: asyncpg.Connection | PoolConnectionProxy, *, bootstrap: bool) -> None:
    """Run the local Supabase bootstrap (plain PostgreSQL only) and then the schema, under a
    transaction-level advisory lock so concurrent starts (several workers) take turns."""
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
        if bootstrap:
            await conn.execute(BOOTSTRAP_SQL.read_text(encoding="utf-8"))
        await conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
