"""The FastAPI application: `create_app()` builds it; the lifespan opens and closes the shared
clients and pools. `python main.py` serves it on HOST:PORT (what `make run` does)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from config import Settings
from errors import ServiceError
from middleware import BodySizeLimitMiddleware, RequestIdMiddleware, configure_logging
from routers import chat, children, health, me, memory
from services.auth.keys import resolve_auth_settings
from services.container import open_services

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings are read and validated here, so a bad configuration stops the
    process before it serves anything."""
    settings = resolve_auth_settings(settings or Settings())

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
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error_handler(request: Request, exc: RequestValidationError) -> Response:
        """422 naming where and what, without echoing the input: it may be large, and it may
        not even be encodable as JSON (NaN, lone surrogates), which made FastAPI's own 500."""
        errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error_handler(request: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI's handler, but a 405 from routing names every method the path serves
        (Starlette names only those of the first route matching the path)."""
        if exc.status_code == 405:
            exc.headers = {**(exc.headers or {}), "Allow": allowed_methods(app, request)}
        return await http_exception_handler(request, exc)

    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(memory.router)
    app.include_router(chat.router)
    app.include_router(children.router)

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "PUT", "PATCH", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "If-Match",
                "Idempotency-Key",
                "X-Request-ID",
            ],
            expose_headers=["ETag", "Retry-After", "X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(RequestIdMiddleware)
    return app


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(app: FastAPI, request: Request) -> str:
    """The methods some route serves at this request's path (asked of the router itself, so
    included routers count too)."""
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in app.router.routes
        )
    )


def main() -> None:
    import uvicorn

    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        "main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our handler: every line carries the request id
    )


if __name__ == "__main__":
    main()
