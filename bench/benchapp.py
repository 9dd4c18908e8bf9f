"""The production app plus one bench-only route, for `make bench`.

The issue asks for read and append throughput *as a ratio to a no-op authenticated endpoint of
the same app*. Rather than shipping such a route (even behind a setting), the bench serves
`create_app()` unchanged and adds `GET /api/_bench/noop` in this factory only: same middleware,
same auth dependency, same uvicorn process, and nothing extra in production.
"""

from __future__ import annotations

from fastapi import FastAPI

from config import Settings
from deps import CurrentUserDep
from main import create_app

NOOP_PATH = "/api/_bench/noop"


def create_bench_app() -> FastAPI:
    """`create_app()` with settings from the environment only (a developer's `.env` must not
    change what the bench measures), plus the no-op authenticated route."""
    app = create_app(Settings(_env_file=None))

    @app.get(NOOP_PATH, include_in_schema=False)
    async def bench_noop(user: CurrentUserDep) -> dict[str, bool]:
        """Verifies the bearer token (as every memory route does) and nothing else."""
        return {"ok": True}

    return app
