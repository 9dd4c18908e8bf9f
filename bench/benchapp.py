"""The production app plus two bench-only routes, for `make bench`.

The issue asks for read and append throughput *as a ratio to a no-op authenticated endpoint of
the same app*. Rather than shipping such a route (even behind a setting), the bench serves
`create_app()` unchanged and adds `GET /api/_bench/noop` in this factory only: same middleware,
same auth dependency, same uvicorn process, and nothing extra in production.

`GET /api/_bench/round-trips` shows the floor under every memory operation: one round trip
to PostgreSQL (`select 1` on a pool connection, taken in turn as the repository does) and
nothing else.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request

from config import Settings
from deps import CurrentUserDep
from main import create_app
from repositories.postgres import PostgresMemoryRepository

NOOP_PATH = "/api/_bench/noop"
ROUND_TRIPS_PATH = "/api/_bench/round-trips"


def create_bench_app() -> FastAPI:
    """`create_app()` with settings from the environment only (a developer's `.env` must not
    change what the bench measures), plus the bench-only routes."""
    app = create_app(Settings(_env_file=None))

    @app.get(NOOP_PATH, include_in_schema=False)
    async def bench_noop(user: CurrentUserDep) -> dict[str, bool]:
        """Verifies the bearer token (as every memory route does) and nothing else."""
        return {"ok": True}

    @app.get(ROUND_TRIPS_PATH, include_in_schema=False)
    async def bench_round_trips(user: CurrentUserDep, request: Request) -> dict[str, bool]:
        """One round trip on the repository's pool, with a trivial statement."""
        repository = request.app.state.services.repository
        # with metrics on (the default) the repository is wrapped in TimedRepository
        repository = getattr(repository, "_inner", repository)
        if not isinstance(repository, PostgresMemoryRepository):
            raise HTTPException(404, "only with the postgres/embedded backend")
        async with repository._turns, repository._pool.acquire() as conn:  # bench: look inside
            await conn.fetchval("select 1")
        return {"ok": True}

    return app
