"""Request metrics as pure ASGI middleware: a count and a latency per route template (never
the raw path: no ids in labels, bounded cardinality), method and status."""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.observability.metrics import observe_request

UNMATCHED = "unmatched"  # no route took the request (404s of unknown paths, early 413s)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request (`/api/memory/{field}`); a mount's
    path with `/*` (static files); UNMATCHED when routing found none."""
    route: Any = scope.get("route")
    if route is None:  # a mount answered: routing recorded only its prefix, in root_path
        prefix = scope.get("root_path", "").removeprefix(scope.get("app_root_path", ""))
        routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
        route = next((r for r in routes if isinstance(r, Mount) and r.path == prefix), None)
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{path}/*" if isinstance(route, Mount) else path or "/"


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            seconds = time.perf_counter() - start
            observe_request(route_template(scope), method, str(status), seconds)
