"""Liveness and readiness probes (no auth)."""

from __future__ import annotations

from fastapi import APIRouter

from deps import ServicesDep
from models import ErrorOut

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: storage answers",
    responses={503: {"model": ErrorOut, "description": "storage unreachable"}},
)
async def readyz(services: ServicesDep) -> dict[str, str]:
    await services.repository.ping()
    return {"status": "ready", "backend": services.settings.backend.value}
