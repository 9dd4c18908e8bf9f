"""Storage answers as domain errors, shared by both repositories: what a SQLSTATE from our
schema's functions or PostgreSQL means (PostgREST passes the database's code through in its
error body), and stored data of an unexpected shape."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from errors import (
    ChatLimitReached,
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
from models import ChatContext, FieldKind, MemoryField

logger = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)

# 42501 messages our schema raises itself (guardians, field ownership): shown to the client.
# PostgreSQL's own permission errors keep their text hidden.
OWN_FORBIDDEN_MESSAGES = (
    "core_instructions and parent_reports are set by your guardian",
    "only a guardian of this user may change this memory",
    "a guardian may change only core_instructions and parent_reports",
    "you are not a guardian of this user",
    "your guardian erases this memory",
    "chat usage is counted one turn at a time",
)

# Retry later: connection, transaction rollback (serialization, deadlock), resources,
# operator intervention (shutdown, cancel), system errors.
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")


def error_for_sqlstate(code: str, message: str) -> ServiceError | None:
    """The domain error for `code`, or None when it has no meaning of its own here. Messages
    are shown only for codes our SQL raises itself (22023, PT404, PT409, and our own 42501
    refusals); others hide their text."""
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
        return Forbidden(message if message in OWN_FORBIDDEN_MESSAGES else None)
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


DAILY_LIMIT_DETAIL = "That's all the chatting for today! Come back tomorrow to talk again."
MINUTE_LIMIT_DETAIL = (
    "Whoa, that's a lot of messages! Take a short break and try again in a minute."
)


def begun_turn(data: Any) -> ChatContext:
    """What `chat_begin_turn` answers: the chat context, or a refusal by a limit (raised as
    ChatLimitReached with its Retry-After)."""
    if isinstance(data, dict) and "refused" in data:
        retry_after = data.get("retry_after")
        if not isinstance(retry_after, int) or isinstance(retry_after, bool):
            logger.error("storage answered a chat limit refusal without retry_after")
            raise StorageError()
        daily = data["refused"] == "daily"
        raise ChatLimitReached(
            DAILY_LIMIT_DETAIL if daily else MINUTE_LIMIT_DETAIL, retry_after_seconds=retry_after
        )
    return validated(ChatContext, data)


def stored_daily_turns(data: Any) -> int | None:
    """The daily limit as `guardian_set_chat_limit` answers it (`{"daily_turns": n | null}`)."""
    if isinstance(data, dict):
        value = data.get("daily_turns")
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
    logger.error("storage answered a chat limit of another shape")
    raise StorageError()
