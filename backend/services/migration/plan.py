"""One user's import document, built and checked in Python before any SQL runs.

Which user a folder is: the folder's name is a user id (a UUID), or an old id that the mapping
CSV (`old_id,new_uuid`) takes to one; a one-user source is named by `--user-id`.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.migration.catalogue import SOURCE_FILES
from services.migration.convert import SourceError, convert, parse_json
from services.migration.source import UserFolder

EPISODES = "episodic_memory"
HEADER_NAMES = frozenset({"new_uuid", "new_id", "user_id"})  # a header row's second column


class MappingError(Exception):
    """The mapping CSV can not be used (unreadable, a bad row, an id twice)."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int
    max_item_bytes: int
    max_object_bytes: int


@dataclass(slots=True)
class UserPlan:
    """What to import for one user: `document` maps targets to values (fields with nothing to
    import are absent); `items` counts the source items per list target."""

    source: str
    user_id: uuid.UUID
    document: dict[str, Any]
    items: dict[str, int] = field(default_factory=dict)

    @property
    def episodes(self) -> int:
        return self.items.get(EPISODES, 0)


def parse_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        return None


def read_mapping(path: Path) -> dict[str, uuid.UUID]:
    """old id -> Supabase Auth user id, from a CSV of `old_id,new_uuid` rows (a header row
    naming them is allowed)."""
    mapping: dict[str, uuid.UUID] = {}
    owners: dict[uuid.UUID, str] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MappingError(f"{path}: can not be read ({exc})") from None
    for line, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise MappingError(f"{path} line {line}: expected old_id,new_uuid")
        old, new = row[0].strip(), parse_uuid(row[1])
        if line == 1 and new is None and row[1].strip().lower() in HEADER_NAMES:
            continue
        if not old or new is None:
            raise MappingError(f"{path} line {line}: {row[1].strip()!r} is not a UUID")
        if old in mapping:
            raise MappingError(f"{path} line {line}: old id {old!r} is mapped twice")
        if new in owners:
            raise MappingError(
                f"{path} line {line}: {new} is also the user of {owners[new]!r}"
                " (two old users can not share one)"
            )
        mapping[old], owners[new] = new, old
    return mapping


def resolve_user(name: str, mapping: dict[str, uuid.UUID] | None) -> uuid.UUID:
    """The Auth user id for a folder (or `--user-id`) name; SourceError when there is none."""
    if mapping is not None:
        if name not in mapping:
            raise SourceError(name, "", "no row for this user id in the mapping file (--map)")
        return mapping[name]
    user_id = parse_uuid(name)
    if user_id is None:
        raise SourceError(
            name, "", "not a UUID: name users by their Supabase Auth id, or map old ids (--map)"
        )
    return user_id


def plan_user(folder: UserFolder, user_id: uuid.UUID, limits: Limits) -> UserPlan:
    """Read, parse and convert every file of `folder`; the first problem is a SourceError."""
    plan = UserPlan(folder.name or ".", user_id, {})
    for spec in SOURCE_FILES:
        file = folder.files.get(spec.name)
        if file is None:
            continue
        raw = file.read(limits.max_file_bytes)
        value = convert(
            spec,
            file.label,
            parse_json(file.label, raw),
            user_id=user_id,
            max_item_bytes=limits.max_item_bytes,
            max_object_bytes=limits.max_object_bytes,
        )
        if value is None:
            continue
        plan.document[spec.target] = value
        if spec.is_list:
            plan.items[spec.target] = len(value)
    return plan
