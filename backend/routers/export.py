"""`GET /api/memory/export`: the user's whole memory as a zip in the importer's layout
(services/migration/export.py), read as the user (RLS), one storage call."""

from __future__ import annotations

from fastapi import APIRouter, Response

from deps import CurrentUserDep, ServicesDep
from routers.memory import errors
from services.migration.export import export_archive

router = APIRouter(prefix="/api/memory", tags=["memory"])


@router.get(
    "/export",
    summary="Download the whole memory (a zip: one JSON file per field, as the importer reads)",
    response_class=Response,
    responses={
        **errors(),
        200: {"content": {"application/zip": {}}, "description": "a zip of `<user id>/*.json`"},
    },
)
async def export_memory(user: CurrentUserDep, services: ServicesDep) -> Response:
    archive = await export_archive(services.repository, user)
    return Response(
        content=archive,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="memory-{user.id}.zip"',
            "Cache-Control": "no-store",
        },
    )
