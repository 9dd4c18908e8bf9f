"""The guardian API (DESIGN section 11): HTTP only. A guardian (a user the operator linked to
children) reads a child's memory, sets its standing instructions, generates and reads parent
reports, sets the daily chat limit, and erases the memory. Every route acts as the guardian;
the database answers 403 for a child it is not linked to.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Path, Response, status

from deps import CurrentUserDep, ServicesDep
from models import ChatLimits, ChildLink, ErrorOut, JsonObject, MemoryDocument
from services.chat.llm import LLMService
from services.guardians.service import GuardianService
from services.memory_service import MAX_ITEMS_PER_APPEND

router = APIRouter(prefix="/api/children", tags=["guardians"])

_ERROR_TEXT = {
    400: "the body can not be read as JSON text (e.g. it is not UTF-8)",
    401: "missing, invalid or expired bearer token",
    403: "you are not a guardian of this user",
    404: "no such item",
    409: "nothing new to report, or another report was stored at the same time",
    413: "body or item too large",
    422: "invalid body or parameters (the child id is a UUID)",
    502: "storage or the LLM upstream answered something unusable",
    503: "storage unreachable (retry after Retry-After), or no LLM configured for reports",
    504: "the LLM upstream timed out",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for these statuses (401, 403, 422, 502 and 503 everywhere)."""
    return {
        code: {"model": ErrorOut, "description": _ERROR_TEXT[code]}
        for code in sorted({401, 403, 422, 502, 503, *codes})
    }


async def guardian_service(services: ServicesDep) -> GuardianService:
    settings = services.settings
    llm = LLMService(services.http, settings) if settings.llm_configured else None
    return GuardianService(services.repository, services.memory, settings, llm)


GuardianDep = Annotated[GuardianService, Depends(guardian_service)]
ChildId = Annotated[UUID, Path(description="The child's user id (a guardian's linked child)")]


@router.get(
    "", summary="The children linked to me", response_model=list[ChildLink], responses=errors()
)
async def list_children(user: CurrentUserDep, guardians: GuardianDep) -> Any:
    return await guardians.children(user)


@router.get(
    "/{child_id}/memory",
    summary="A child's whole memory",
    response_model=MemoryDocument,
    responses=errors(),
)
async def read_child_memory(
    user: CurrentUserDep, guardians: GuardianDep, child_id: ChildId, response: Response
) -> Any:
    document = await guardians.read_memory(user, child_id)
    response.headers["ETag"] = f'"{document.version}"'
    return document


@router.delete(
    "/{child_id}/memory",
    summary="Erase a child's whole memory",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(),
)
async def erase_child_memory(
    user: CurrentUserDep, guardians: GuardianDep, child_id: ChildId
) -> Response:
    await guardians.erase(user, child_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/{child_id}/memory/core_instructions",
    summary="Replace a child's standing instructions",
    response_model=list[JsonObject],
    responses=errors(400, 413),
)
async def replace_instructions(
    user: CurrentUserDep,
    guardians: GuardianDep,
    child_id: ChildId,
    items: Annotated[list[JsonObject], Body(description="The whole new list of instructions")],
) -> Any:
    return (await guardians.set_instructions(user, child_id, items)).value


@router.post(
    "/{child_id}/memory/core_instructions",
    summary=f"Add one instruction or 1-{MAX_ITEMS_PER_APPEND} to a child's instructions",
    status_code=status.HTTP_201_CREATED,
    response_model=list[JsonObject],
    responses=errors(400, 413),
)
async def append_instructions(
    user: CurrentUserDep,
    guardians: GuardianDep,
    child_id: ChildId,
    items: Annotated[
        JsonObject | list[JsonObject],
        Body(description='An instruction object (e.g. {"text": "…"}) or an array of them'),
    ],
) -> Any:
    return (await guardians.append_instructions(user, child_id, items)).items


@router.delete(
    "/{child_id}/memory/core_instructions/{item_id}",
    summary="Remove one of a child's instructions",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(404),
)
async def remove_instruction(
    user: CurrentUserDep,
    guardians: GuardianDep,
    child_id: ChildId,
    item_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> Response:
    await guardians.remove_instruction(user, child_id, item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{child_id}/reports",
    summary="A child's parent reports, oldest first",
    response_model=list[JsonObject],
    responses=errors(),
)
async def read_reports(user: CurrentUserDep, guardians: GuardianDep, child_id: ChildId) -> Any:
    return await guardians.reports(user, child_id)


@router.post(
    "/{child_id}/reports",
    summary="Write a report on the conversations since the last one (LLM)",
    status_code=status.HTTP_201_CREATED,
    response_model=JsonObject,
    responses=errors(409, 504),
)
async def generate_report(user: CurrentUserDep, guardians: GuardianDep, child_id: ChildId) -> Any:
    return await guardians.generate_report(user, child_id)


@router.put(
    "/{child_id}/limits",
    summary="Set a child's daily chat turn limit (null: none)",
    response_model=ChatLimits,
    responses=errors(400),
)
async def set_limits(
    user: CurrentUserDep, guardians: GuardianDep, child_id: ChildId, limits: ChatLimits
) -> Any:
    return ChatLimits(
        daily_turns=await guardians.set_daily_limit(user, child_id, limits.daily_turns)
    )
