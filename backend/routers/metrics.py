"""`GET /metrics`: Prometheus's text format (no auth; no user data in it). Served here unless
METRICS_ENABLED is off or METRICS_PORT gives it a listener of its own."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response

from config import Settings
from services.observability.metrics import CONTENT_TYPE, render

router = APIRouter(tags=["observability"])


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """A sync endpoint on purpose: in multiprocess mode rendering reads files (a thread)."""
    return Response(render(), media_type=CONTENT_TYPE)


def include(app: FastAPI, settings: Settings) -> None:
    if settings.metrics_enabled and settings.metrics_port is None:
        app.include_router(router)
