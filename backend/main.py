"""The FastAPI application: `create_app()` builds it; the lifespan opens and closes the shared
clients and pools. `python main.py` serves it on HOST:PORT (what `make run` does)."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from config import Settings, StartupError, describe_settings_error
from errors import ServiceError
from middleware import (
    DEMO_CSP,
    DOCS_CSP,
    BodySizeLimitMiddleware,
    ContentSecurityPolicyMiddleware,
    RequestIdMiddleware,
    configure_logging,
)
from routers import chat, children, demo, export, health, me, memory, metrics
from services.auth.keys import resolve_auth_settings
from services.container import open_services
from services.observability.http import RequestMetricsMiddleware

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings are read and validated here, so a bad configuration stops the
    process before it serves anything."""
    settings = resolve_auth_settings(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            logger.info("storage open (backend: %s)", settings.backend.value)
            yield

    app = FastAPIOffline(  # /docs and /redoc from the package's own assets: no CDN
        title="Memory service",
        summary="Per-user memory documents for an AI chat companion, on Supabase Postgres.",
        version="0.1.0",
        lifespan=lifespan,
        # `/api/memory/` is no route: a 404, not a 307 to `/api/memory` (clients that follow
        # it lose their body on some methods, and the README documents no trailing slashes).
        redirect_slashes=False,
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
        errors = [{"loc": e["loc"], "msg": _message(e), "type": e["type"]} for e in exc.errors()]
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
    app.include_router(export.router)  # before memory: /export is not a field
    app.include_router(memory.router)
    app.include_router(chat.router)
    app.include_router(children.router)
    # The demo page, /metrics and the docs' CSP.
    demo.include(app, settings)
    metrics.include(app, settings)
    app.add_middleware(
        ContentSecurityPolicyMiddleware,
        policies={"/demo": DEMO_CSP, "/docs": DOCS_CSP, "/redoc": DOCS_CSP},
    )

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
    if settings.metrics_enabled:
        app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def _message(error: dict[str, Any]) -> str:
    """A validation error's message; for JSON decode errors with the decoder's reason (a fixed
    text such as "Expecting value", never the input)."""
    reason = (error.get("ctx") or {}).get("error")
    if error["type"] == "json_invalid" and isinstance(reason, str):
        return f"{error['msg']}: {reason}"
    return str(error["msg"])


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


class _Server(uvicorn.Server):
    """uvicorn's server, run on a socket bound beforehand, with the app's lifespan entered here
    (not by uvicorn's lifespan protocol): a `StartupError` then reaches `main` as itself, to be
    printed as one line, and "memory service ready" is logged only once the server accepts."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, address: str) -> None:
        super().__init__(config)
        self._app = app
        self._address = address
        self._lifespan = app.router.lifespan_context(app)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self._lifespan.__aenter__()
        await super().startup(sockets)
        settings: Settings = self._app.state.settings
        logger.info(
            "memory service ready on %s (backend: %s)", self._address, settings.backend.value
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            await self._lifespan.__aexit__(None, None, None)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on HOST:PORT (PORT 0: a free one), bound before anything starts so a
    busy port is refused at once, and so that "ready" is only said of a bound port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"({exc.strerror})"
        raise StartupError(
            f"{host}:{port} {reason}: stop what listens there, or set PORT (and HOST)"
        ) from exc
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    """Serve on HOST:PORT until SIGINT, SIGTERM or SIGHUP (a closed terminal): each shuts
    down cleanly, so the embedded PostgreSQL is released too."""
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        log_config=None,  # keep our handler: every line carries the request id
        lifespan="off",  # entered by _Server, so start-up errors are ours to report
    )
    server = _Server(config, app, address)
    signal.signal(signal.SIGHUP, server.handle_exit)  # uvicorn handles SIGINT and SIGTERM
    with sock:
        server.run(sockets=[sock])


def main() -> int:
    """`python main.py` (make run): a start-up error is one line, `cannot start: <what to
    fix>`, and exit status 1."""
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"cannot start: {describe_settings_error(exc)}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    try:
        serve(settings)
    except StartupError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
