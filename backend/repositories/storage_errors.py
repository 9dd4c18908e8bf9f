"""Storage answers as domain errors, shared by both repositories: what a SQLSTATE from our
schema's functions or PostgreSQL means (PostgREST passes the database's code through in its
error body), and stored data of an unexpected shape."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidValue,
    ItemNotFound,
    ServiceError,
    StorageError,
    StorageUnavailable,
    VersionMismatch,
)
from models import FieldKind, MemoryField

logger = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)

# Retry later: connection, transaction rollback (serialization, deadlock), resources,
# operator intervention (shutdown, cancel), system errors.
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")


def error_for_sqlstate(code: str, message: str) -> ServiceError | None:
    """The domain error for `code`, or None when it has no meaning of its own here. Messages
    are shown only for codes our SQL raises itself (22023, PT404, PT409); others hide their
    text."""
    if code == "PT412":
        return VersionMismatch()
    if code == "PT409":
        return IdempotencyConflict(message or None)
    if code == "PT404":
        return ItemNotFound(message or None)
    if code == "22023":
        return InvalidValue(message or None)
    if code.startswith("22") or code == "23514":
        return InvalidValue("the value can not be stored (invalid JSON content)")
    if code == "42501":
        return Forbidden()
    if code in ("23505", "23503"):
        return Conflict("the memory row conflicts with existing data")
    if code.startswith(UNAVAILABLE_SQLSTATE_CLASSES):
        return StorageUnavailable()
    return None


def validated(model: type[_M], data: Any) -> _M:
    """`data` as `model`; an answer of another shape (storage misbehaving, or a row written
    straight through PostgREST) is a StorageError, never a 500 and never an empty memory."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        logger.error("storage answered data that does not fit %s", model.__name__)
        raise StorageError() from exc


def field_value(field: MemoryField, data: Any) -> tuple[Any, int]:
    """`{"value", "version"}` as `memory_read_field` answers it, checked without copying: an
    object for an object field, a list of objects for a list field, an integer version."""
    if isinstance(data, dict):
        value, version = data.get("value"), data.get("version")
        if field.kind is FieldKind.OBJECT:
            fits = isinstance(value, dict)
        else:
            fits = isinstance(value, list) and all(isinstance(item, dict) for item in value)
        if fits and isinstance(version, int) and not isinstance(version, bool):
            return value, version
    logger.error("storage answered a %s read of another shape", field.value)
    raise StorageError()
