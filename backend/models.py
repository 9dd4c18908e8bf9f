"""The memory field catalogue and the API's request/response models.

The catalogue here and the one in `supabase_schema.sql` (`public.memory_field_kind`) must agree;
a database test checks that they do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, PlainSerializer

# Timestamps in replies as the database writes them into items' `created_at`:
# ISO 8601 in UTC with `+00:00` (pydantic alone would write `Z` for `updated_at`).
Timestamp = Annotated[
    datetime,
    PlainSerializer(
        lambda value: value.astimezone(UTC).isoformat(), return_type=str, when_used="json"
    ),
]


class FieldKind(StrEnum):
    OBJECT = "object"
    LIST = "list"


class MemoryField(StrEnum):
    IDENTITY = "identity"
    CURRENT_STATE = "current_state"
    LONG_TERM_SUMMARY = "long_term_summary"
    CORE_INSTRUCTIONS = "core_instructions"
    EPISODIC_MEMORY = "episodic_memory"
    REWARDS = "rewards"
    PARENT_REPORTS = "parent_reports"

    @property
    def kind(self) -> FieldKind:
        return FIELD_KINDS[self]

    def default(self) -> dict[str, Any] | list[Any]:
        """A fresh empty value of this field's kind (what a user with no row reads)."""
        return {} if self.kind is FieldKind.OBJECT else []


FIELD_KINDS: dict[MemoryField, FieldKind] = {
    MemoryField.IDENTITY: FieldKind.OBJECT,
    MemoryField.CURRENT_STATE: FieldKind.OBJECT,
    MemoryField.LONG_TERM_SUMMARY: FieldKind.OBJECT,
    MemoryField.CORE_INSTRUCTIONS: FieldKind.LIST,
    MemoryField.EPISODIC_MEMORY: FieldKind.LIST,
    MemoryField.REWARDS: FieldKind.LIST,
    MemoryField.PARENT_REPORTS: FieldKind.LIST,
}
OBJECT_FIELDS = frozenset(f.value for f, k in FIELD_KINDS.items() if k is FieldKind.OBJECT)
LIST_FIELDS = frozenset(f.value for f, k in FIELD_KINDS.items() if k is FieldKind.LIST)

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class User:
    """A verified Supabase Auth user: the data layer acts as this user with `token`."""

    id: UUID
    claims: JsonObject
    token: str

    @property
    def role(self) -> str:
        return str(self.claims.get("role", ""))

    @property
    def is_anonymous(self) -> bool:
        return self.claims.get("is_anonymous") is True


class MemoryDocument(BaseModel):
    """The whole memory of one user. `version` 0 means no row is stored yet."""

    identity: JsonObject = Field(default_factory=dict)
    current_state: JsonObject = Field(default_factory=dict)
    long_term_summary: JsonObject = Field(default_factory=dict)
    core_instructions: list[JsonObject] = Field(default_factory=list)
    episodic_memory: list[JsonObject] = Field(default_factory=list)
    rewards: list[JsonObject] = Field(default_factory=list)
    parent_reports: list[JsonObject] = Field(default_factory=list)
    version: int = 0
    updated_at: Timestamp | None = None


MAX_SEARCH_LIMIT = 50  # results per search request


class SearchHit(BaseModel):
    """One episode of the conversation log that matched a search, with its score."""

    id: str
    created_at: Any = None  # the episode's own created_at, as stored
    score: float
    episode: JsonObject


class SearchResult(BaseModel):
    """Search answers: `mode` text (full-text only) or hybrid (full-text fused with vectors)."""

    mode: Literal["text", "hybrid"]
    results: list[SearchHit]


@dataclass(frozen=True, slots=True)
class Recall:
    """What a chat turn searches its log with: the user's message (and its embedding)."""

    query: str
    k: int
    embedding: list[float] | None = None


class ChatContext(BaseModel):
    """What one chat turn's prompt uses, read in one call: the object fields, the instructions,
    the newest episodic items, how many are stored, and the turn's own items when a keyed retry
    finds them stored. `version` 0 means no row is stored yet."""

    identity: JsonObject = Field(default_factory=dict)
    core_instructions: list[JsonObject] = Field(default_factory=list)
    long_term_summary: JsonObject = Field(default_factory=dict)
    current_state: JsonObject = Field(default_factory=dict)
    recent_episodes: list[JsonObject] = Field(default_factory=list)
    episode_count: int = 0
    turn_episodes: list[JsonObject] = Field(default_factory=list)
    recalled: list[SearchHit] = Field(default_factory=list)
    version: int = 0


class StoredValue(BaseModel):
    """A field's value after a write, with the row's new version."""

    value: JsonObject | list[JsonObject]
    version: int
    updated_at: Timestamp | None = None


class AppendResult(BaseModel):
    """The stored items of one append (earlier copies for ids that were already there)."""

    items: list[JsonObject]
    version: int
    updated_at: Timestamp | None = None


class CurrentUserOut(BaseModel):
    id: UUID
    role: str
    is_anonymous: bool
    claims: JsonObject


class ErrorOut(BaseModel):
    detail: str | list[Any]


# --- import / export (services/migration) ----------------------------------------------------


class FieldImport(BaseModel):
    """What an import did (or, dry, would do) to one field: `set` an object field, `append`
    `items` to a list field (`stored`: source items already there; `over_cap`: items the cap
    keeps out of the field afterwards), or leave it `unchanged`."""

    action: str
    items: int = 0
    stored: int = 0
    over_cap: int = 0


class MemoryExport(MemoryDocument):
    """Everything an export holds (`memory_export_document`): the document, and whatever else
    the user's memory keeps (a field per extra file of services/migration/catalogue.py): the
    whole conversation log, oldest first."""

    conversation_log: list[JsonObject] = Field(default_factory=list)


class ImportResult(BaseModel):
    """One user's import, applied in one SQL call: whether anything changed, the row version."""

    changed: bool
    version: int
    fields: dict[str, FieldImport] = Field(default_factory=dict)


class ChildLink(BaseModel):
    """One child of the calling guardian."""

    child_id: UUID
    linked_at: datetime
    daily_turns: int | None = Field(default=None, description="The daily chat turn limit")


class ChatLimits(BaseModel):
    """A child's chat limits as a guardian sets them (`null`: no daily limit)."""

    daily_turns: int | None = Field(
        ge=0, le=100_000, description="Chat turns per UTC day; 0 stops chat; null: no limit"
    )


class ReportContext(BaseModel):
    """What a report on a child reads: the episodes after the one the newest report covers
    (`after_episode_id`), when that report was written, and the newest rewards."""

    episodes: list[JsonObject] = Field(default_factory=list)
    after_episode_id: str | None = None
    last_report_at: str | None = None
    rewards: list[JsonObject] = Field(default_factory=list)
    version: int = 0
