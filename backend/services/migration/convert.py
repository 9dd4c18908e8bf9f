"""A source file's bytes to a field value, by the documented rules (README, "Migration").

Every refusal names the file and the JSON path of the offending value; nothing is dropped
silently. List items get deterministic ids (`item_id`), so importing the same source twice
finds the same items.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from errors import InvalidValue
from models import FieldKind
from services.memory_service import MAX_ITEM_ID_LENGTH, encoded_size
from services.migration.catalogue import SourceFileSpec

ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "memory-service/import/item")


class SourceError(Exception):
    """A source value that can not be imported: `file`, JSON `path` and what is wrong."""

    def __init__(self, file: str, path: str, message: str) -> None:
        super().__init__(f"{file}: {path}: {message}" if path else f"{file}: {message}")
        self.file = file
        self.path = path
        self.message = message


def _kind_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} appears twice in one object")
            seen.add(key)
    return result


def parse_json(file: str, raw: bytes) -> Any:
    """UTF-8 (a BOM is allowed) JSON text; NaN/Infinity and duplicate keys refused. Empty or
    whitespace-only text is None (the field's default)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(file, "", f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if not text.strip():
        return None
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SourceError(
            file, "", f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise SourceError(file, "", f"not valid JSON ({exc})") from None


def item_id(user_id: uuid.UUID, target: str, index: int, canonical: str) -> str:
    """The id of a source item that has none (`canonical`: its JSON with sorted keys): the same
    user, field, position and content give the same id on every run."""
    return _item_id(f"{user_id}/{target}/", index, canonical)


def _item_id(prefix: str, index: int, canonical: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{prefix}{index}/{canonical}"))


def _checked_size(file: str, path: str, value: Any) -> int:
    try:
        return encoded_size(value)
    except InvalidValue as exc:
        raise SourceError(file, path, str(exc.detail)) from None


def convert_object(file: str, value: Any, *, max_bytes: int) -> dict[str, Any] | None:
    """An object field's value: an object as is, a non-empty string as {"text": …}."""
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict):
        raise SourceError(file, "$", f"this field holds a JSON object, found {_kind_name(value)}")
    if _checked_size(file, "$", value) > max_bytes:
        raise SourceError(file, "$", f"larger than {max_bytes} bytes")
    return value or None


def convert_items(
    file: str, value: Any, *, user_id: uuid.UUID, target: str, max_item_bytes: int
) -> list[dict[str, Any]]:
    """A list field's items, oldest first: objects as they are, strings as {"text": …}; a
    non-empty string instead of the array is one such item. Ids: strings kept, integers as
    their decimal string, missing ones derived from the content (`item_id`)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise SourceError(
            file, "$", f"this field holds a JSON array of objects, found {_kind_name(value)}"
        )
    items: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    prefix = f"{user_id}/{target}/"
    for index, entry in enumerate(value):
        path = f"$[{index}]"
        if isinstance(entry, str):
            entry = {"text": entry}
        elif not isinstance(entry, dict):
            raise SourceError(file, path, f"an item is a JSON object, found {_kind_name(entry)}")
        raw_id = entry.get("id")
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            entry = {**entry, "id": str(raw_id)}
        elif raw_id is not None and not (
            isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ITEM_ID_LENGTH
        ):
            raise SourceError(
                file, f"{path}.id", f"an item id is a string of 1-{MAX_ITEM_ID_LENGTH} characters"
            )
        if _checked_size(file, path, entry) > max_item_bytes:
            raise SourceError(file, path, f"an item is larger than {max_item_bytes} bytes")
        if entry.get("id") is None:
            canonical = json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            entry = {**entry, "id": _item_id(prefix, index, canonical)}
        key = entry["id"]
        if key in seen:
            raise SourceError(
                file, f"{path}.id", f"the id {key!r} is also the id of $[{seen[key]}]"
            )
        seen[key] = index
        items.append(entry)
    return items


def convert(
    spec: SourceFileSpec,
    file: str,
    value: Any,
    *,
    user_id: uuid.UUID,
    max_item_bytes: int,
    max_object_bytes: int,
) -> Any:
    """The value to import for `spec`, or None for the field's default (nothing to import):
    a missing or empty file, JSON `""` or `null` (the old code's default was ""), `{}` or `[]`
    (whatever the field's kind)."""
    if value is None or value == "" or value == {} or value == []:
        return None
    if spec.kind is FieldKind.OBJECT:
        return convert_object(file, value, max_bytes=max_object_bytes)
    items = convert_items(
        file, value, user_id=user_id, target=spec.target, max_item_bytes=max_item_bytes
    )
    return items or None
