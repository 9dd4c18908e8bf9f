"""The FastAPI application: `create_app()` builds it; the lifespan opens and closes the shared
clients and pools. `python main.py` serves it on HOST:PORT (what `make run` does)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from config import Settings
from errors import ServiceError
from routers import health
from services.container import open_services

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings are read and validated here, so a bad configuration stops the
    process before it serves anything."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            logger.info("memory service ready (backend: %s)", settings.backend.value)
            yield

    app = FastAPI(
        title="Memory service",
        summary="Per-user memory documents for an AI chat companion, on Supabase Postgres.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.exception_handler(ServiceError)
    async def service_error_handler(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app.include_router(health.router)
    return app


def main() -> None:
    import uvicorn

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        "main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
