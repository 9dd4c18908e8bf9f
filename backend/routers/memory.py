"""The memory API (DESIGN section 6): HTTP only — parse, call the memory service, shape the reply.

Every route acts as the bearer token's user; `ETag` carries the row version and `If-Match`
makes a write conditional on it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Body,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)

from deps import CurrentUserDep, ServicesDep, get_services
from errors import InvalidValue, VersionMismatch
from models import (
    FIELD_KINDS,
    MAX_SEARCH_LIMIT,
    ErrorOut,
    FieldKind,
    JsonObject,
    MemoryDocument,
    MemoryField,
    SearchResult,
)
from routers.json_body import JsonBodyRoute
from services.memory_service import (
    MAX_ITEMS_PER_APPEND,
    MemoryService,
    require_kind,
    resolve_field,
)

router = APIRouter(prefix="/api/memory", tags=["memory"], route_class=JsonBodyRoute)

MAX_QUERY_CHARS = 1000

_ERROR_TEXT = {
    400: 'malformed If-Match (an ETag is quoted: "3")',
    401: "missing, invalid or expired bearer token",
    404: "unknown field (or item)",
    405: "method not allowed on this kind of field",
    409: "idempotency conflict: the key or item id was used with a different body",
    412: "If-Match does not match the current version",
    413: "body or item too large",
    415: "the body was not sent as application/json",
    422: "invalid body or parameters",
    502: "storage answered in a way the service does not understand (nothing is assumed)",
    503: "storage unreachable or timed out; retry after Retry-After seconds",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for these statuses (401, 502 and 503 are possible everywhere)."""
    return {
        code: {"model": ErrorOut, "description": _ERROR_TEXT[code]}
        for code in sorted({401, 502, 503, *codes})
    }


FIELD_NAMES = ", ".join(f"{f.value} ({k.value})" for f, k in FIELD_KINDS.items())
FieldName = Annotated[str, Path(description=f"A memory field: {FIELD_NAMES}.")]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Write only if the memory is still at this ETag (`"<version>"`); '
        '`"0"` means "only if nothing is stored yet".',
        max_length=64,
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="A retry with the same key appends nothing and answers the same items.",
        min_length=1,
        max_length=255,
    ),
]


async def memory_field(field: FieldName) -> MemoryField:
    return resolve_field(field)


async def object_field(field: FieldName) -> MemoryField:
    """An object field, checked before the body is: PATCH on a list field is a 405 whatever
    the body (FastAPI reports dependency errors before body errors)."""
    resolved = resolve_field(field)
    require_kind(resolved, FieldKind.OBJECT)
    return resolved


async def list_field(field: FieldName) -> MemoryField:
    """A list field, checked before the body is (POST on an object field is a 405)."""
    resolved = resolve_field(field)
    require_kind(resolved, FieldKind.LIST)
    return resolved


async def memory_service(request: Request) -> MemoryService:
    """The memory service. `get_services` is called here, not depended on: every level of
    dependencies costs each request about 20 µs of FastAPI's own work on the bench machine."""
    return (await get_services(request)).memory


FieldDep = Annotated[MemoryField, Depends(memory_field)]
ObjectFieldDep = Annotated[MemoryField, Depends(object_field)]
ListFieldDep = Annotated[MemoryField, Depends(list_field)]
MemoryDep = Annotated[MemoryService, Depends(memory_service)]


# `"3"`, `W/"3"`, or a bare `3` (lenient clients); ASCII digits only, within bigint.
_OUR_ETAG = re.compile(r'(?:W/)?"([0-9]{1,18})"', re.ASCII)
# RFC 9110 entity-tag: an optional W/ and a quoted string of etagc (no `"`, no controls).
_ENTITY_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
_ENTITY_TAG_LIST = re.compile(rf"{_ENTITY_TAG}(?:[ \t]*,[ \t]*{_ENTITY_TAG})*")


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None) -> int | None:
    """The version an If-Match names (`"3"`, `W/"3"`); `*` or no header: no condition.

    A header that is not entity-tag syntax (`12345` unquoted, `"1` unterminated) is a 400
    saying so; a well-formed tag that is not one of ours (`"abc"`, or a list) matches no
    version, so the write is refused with 412 like any stale tag."""
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip()
    if not _ENTITY_TAG_LIST.fullmatch(value):
        raise HTTPException(
            status_code=400,
            detail='malformed If-Match: send an ETag as this API serves it, quoted: "3"',
        )
    match = _OUR_ETAG.fullmatch(value)
    if match is None:
        raise VersionMismatch("If-Match names no version of this memory")
    return int(match.group(1))


@router.get(
    "",
    summary="The whole memory document",
    response_model=MemoryDocument,
    responses=errors(),
)
async def read_memory(user: CurrentUserDep, memory: MemoryDep, response: Response) -> Any:
    document = await memory.read_document(user)
    response.headers["ETag"] = etag(document.version)
    return document


@router.delete(
    "",
    summary="Erase the user's whole memory",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(),
)
async def erase_memory(user: CurrentUserDep, memory: MemoryDep) -> Response:
    await memory.erase(user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/search",
    summary="Search the conversation log (every episode ever appended, not only the window)",
    response_model=SearchResult,
    responses=errors(422),
)
async def search_log(
    request: Request,
    user: CurrentUserDep,
    services: ServicesDep,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            pattern=r"^[^\x00]*$",  # PostgreSQL text holds no NUL
            description="Words or a question; any word may match (OR), rarer words count more",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = 10,
) -> Any:
    unknown = sorted(set(request.query_params) - {"q", "limit"})
    if unknown:  # a misspelt parameter would otherwise search with its default silently
        raise InvalidValue(f"unknown query parameter: {unknown[0]!r} (use q and limit)")
    return await services.recall.search(user, q, limit=limit)


@router.get(
    "/{field}",
    summary="One field: an object, or a list of items (oldest first)",
    response_model=JsonObject | list[JsonObject],
    responses=errors(404, 422),
)
async def read_field(
    user: CurrentUserDep,
    field: FieldName,
    memory: MemoryDep,
    response: Response,
    limit: Annotated[
        int | None, Query(ge=0, le=10_000, description="List fields: only the newest N items")
    ] = None,
    before: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="List fields: items older than this id"),
    ] = None,
) -> Any:
    # The field is resolved here, not by FieldDep: a read has no body to check it before, and
    # each dependency costs a request about 20 µs of FastAPI's own work (the hottest route).
    value, version = await memory.read_field(user, resolve_field(field), limit=limit, before=before)
    response.headers["ETag"] = etag(version)
    return value


@router.put(
    "/{field}",
    summary="Replace a field's whole value",
    response_model=JsonObject | list[JsonObject],
    responses=errors(400, 404, 412, 413, 415, 422),
)
async def replace_field(
    user: CurrentUserDep,
    field: FieldDep,
    memory: MemoryDep,
    value: Annotated[JsonObject | list[JsonObject], Body(description="The whole new value")],
    response: Response,
    if_match: IfMatch = None,
) -> Any:
    stored = await memory.set_field(user, field, value, expected_version=expected_version(if_match))
    response.headers["ETag"] = etag(stored.version)
    return stored.value


@router.patch(
    "/{field}",
    summary="Shallow-merge into an object field (a null value removes that key)",
    response_model=JsonObject,
    responses=errors(400, 404, 405, 412, 413, 415, 422),
)
async def merge_field(
    user: CurrentUserDep,
    field: ObjectFieldDep,
    memory: MemoryDep,
    patch: Annotated[JsonObject, Body(description="Keys to set; null removes a key")],
    response: Response,
    if_match: IfMatch = None,
) -> Any:
    stored = await memory.merge_field(
        user, field, patch, expected_version=expected_version(if_match)
    )
    response.headers["ETag"] = etag(stored.version)
    return stored.value


@router.post(
    "/{field}",
    summary=f"Append one item or 1-{MAX_ITEMS_PER_APPEND} items to a list field",
    status_code=status.HTTP_201_CREATED,
    response_model=list[JsonObject],
    responses=errors(404, 405, 409, 413, 415, 422),
)
async def append_items(
    user: CurrentUserDep,
    field: ListFieldDep,
    memory: MemoryDep,
    items: Annotated[
        JsonObject | list[JsonObject],
        Body(description="An item object, or an array of them; each gets `id` and `created_at`"),
    ],
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    result = await memory.append_items(user, field, items, idempotency_key=idempotency_key)
    response.headers["ETag"] = etag(result.version)
    return result.items


@router.delete(
    "/{field}/{item_id}",
    summary="Remove one item from a list field",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(404, 405),
)
async def remove_item(
    user: CurrentUserDep,
    field: ListFieldDep,
    memory: MemoryDep,
    item_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> Response:
    await memory.remove_item(user, field, item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
