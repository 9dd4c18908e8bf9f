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
    ServiceError,
    StorageError,
    StorageUnavailable,
    VersionMismatch,
)

logger = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)

# Retry later: connection, transaction rollback (serialization, deadlock), resources,
# operator intervention (shutdown, cancel), system errors.
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")


def error_for_sqlstate(code: str, message: str) -> ServiceError | None:
    """The domain error for `code`, or None when it has no meaning of its own here. Messages
    are shown only for codes our SQL raises itself (22023, PT409); others hide their text."""
    if code == "PT412":
        return VersionMismatch()
    if code == "PT409":
        return IdempotencyConflict(message or None)
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
