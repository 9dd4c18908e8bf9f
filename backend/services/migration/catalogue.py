"""The files of the old layout: one JSON file per memory field, named after the field.

Import and export both walk `SOURCE_FILES`. An entry's `target` is the key of the import
document sent to `memory_import_document` (and of the exported document it is written from), so
a new file is one entry here plus its branch in that SQL function.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import FieldKind, MemoryField


@dataclass(frozen=True, slots=True)
class SourceFileSpec:
    name: str  # the file name in a user's folder
    target: str  # the key in the import/export document
    kind: FieldKind

    @property
    def is_list(self) -> bool:
        return self.kind is FieldKind.LIST


SOURCE_FILES: tuple[SourceFileSpec, ...] = (
    *(SourceFileSpec(f"{field.value}.json", field.value, field.kind) for field in MemoryField),
    # Every episode ever appended (episodic_memory is its recent window); written by export.
    SourceFileSpec("conversation_log.json", "conversation_log", FieldKind.LIST),
)
SPECS_BY_NAME = {spec.name: spec for spec in SOURCE_FILES}

# Written by an export next to the field files: who, which version, when. Server-made, so the
# importer skips it (a round trip may change everything in it).
MANIFEST_NAME = "export.json"
