"""`python -m bench.one_trip`: ways to run one memory operation as a user, side by side.

Each reads one field (`identity`) as the user, with `role` authenticated and the verified
claims transaction-local, as PostgREST does, against the embedded PostgreSQL over its Unix
socket, one connection, sequentially. Wall time per operation, p50 and p99 of N calls:

- asyncpg, 4 round trips: BEGIN; set_config(role, claims); the read; COMMIT (the old path).
- asyncpg, 3 round trips: "BEGIN; select set_config(...)" as one simple query, the read,
  COMMIT (the path before this change).
- psycopg 3, pipeline: the same four statements pipelined (one network flush, four statements).
- psycopg 3, one multi-statement simple query: BEGIN; set_config; the read; COMMIT in one
  string (claims inlined as an escaped literal).
- asyncpg, 1 round trip: `memory_private.call_as_user` (what the service does).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import psycopg

from repositories.postgres import CALL_AS_USER_SQL
from services.storage.database import apply_schema
from services.storage.embedded_postgres import EmbeddedPostgres

CALLS = 2000
READ_SQL = "select public.memory_read_field('identity')"
IMPERSONATE_SQL = (
    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)"
)


def literal(text: str) -> str:
    """`text` as an escaped SQL string literal (E'...')."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


async def timed(name: str, call: Callable[[], Awaitable[object]]) -> tuple[str, float, float]:
    for _ in range(200):  # warm plans and caches
        await call()
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return name, statistics.median(samples), samples[int(len(samples) * 0.99)]


async def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedPostgres(Path(data))
        server.start()
        try:
            await measure(server.dsn)
        finally:
            server.stop()


async def measure(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    await apply_schema(admin, bootstrap=True)
    user_id = uuid.uuid4()
    await admin.execute("insert into auth.users (id) values ($1)", user_id)
    await admin.execute(
        """insert into public.memories (user_id, identity) values ($1, '{"name": "Mia"}')""",
        user_id,
    )
    await admin.close()
    claims = json.dumps({"sub": str(user_id), "role": "authenticated", "aud": "authenticated"})

    conn = await asyncpg.connect(dsn)
    pg3 = await psycopg.AsyncConnection.connect(dsn.replace("postgresql://", "postgres://"))

    async def four_trips() -> object:
        async with conn.transaction():
            await conn.execute(IMPERSONATE_SQL, claims)
            return await conn.fetchval(READ_SQL)

    async def three_trips() -> object:
        await conn.execute(
            "begin; select set_config('role', 'authenticated', true),"
            f" set_config('request.jwt.claims', {literal(claims)}, true)"
        )
        try:
            return await conn.fetchval(READ_SQL)
        finally:
            await conn.execute("commit")

    async def pipelined() -> object:
        async with pg3.pipeline():
            cursor = pg3.cursor()
            await cursor.execute("begin")
            await cursor.execute(IMPERSONATE_SQL.replace("$1", "%s"), (claims,))
            await cursor.execute(READ_SQL)
            await cursor.execute("commit")
        return None

    async def multi_statement() -> object:
        cursor = pg3.cursor()
        await cursor.execute(
            "begin; select set_config('role', 'authenticated', true),"
            f" set_config('request.jwt.claims', {literal(claims)}, true); {READ_SQL}; commit"
        )
        return None

    async def one_trip() -> object:
        return await conn.fetchval(CALL_AS_USER_SQL, claims, "read_field", {"field": "identity"})

    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    rows = [
        await timed("asyncpg, 4 round trips (BEGIN, set_config, read, COMMIT)", four_trips),
        await timed("asyncpg, 3 round trips (BEGIN+set_config, read, COMMIT)", three_trips),
        await timed("psycopg 3 pipeline (4 statements, one flush)", pipelined),
        await timed("psycopg 3, one multi-statement simple query", multi_statement),
        await timed("asyncpg, 1 round trip: memory_private.call_as_user (used)", one_trip),
    ]
    await conn.close()
    await pg3.close()
    used = rows[-1][1]
    print(f"\n{CALLS} sequential reads of one field as a user, one connection (Unix socket)\n")
    print("| path | p50 µs | p99 µs | p50 vs the one used |")
    print("|---|---:|---:|---:|")
    for name, p50, p99 in rows:
        print(f"| {name} | {p50:,.0f} | {p99:,.0f} | {p50 / used:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
