"""Exports in the layout the importer reads: a folder per user holding one JSON file per field
(all seven, defaults included) and `export.json`, the server-made facts (user id, version,
updated_at, export time) that the importer skips.

The same bytes serve `GET /api/memory/export` (a zip of the user's folder) and `make export`
(folders on disk).
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from models import MemoryExport, User
from repositories.base import MemoryRepository
from services.migration.catalogue import MANIFEST_NAME, SOURCE_FILES
from services.storage.operator import acting_user

EXPORT_FORMAT = "memory-export/1"


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode()


def export_files(user_id: uuid.UUID, document: MemoryExport) -> dict[str, bytes]:
    """File name -> content for one user's folder."""
    values = document.model_dump(mode="json")
    files = {spec.name: _json_bytes(values[spec.target]) for spec in SOURCE_FILES}
    files[MANIFEST_NAME] = _json_bytes(
        {
            "format": EXPORT_FORMAT,
            "user_id": str(user_id),
            "version": document.version,
            "updated_at": values["updated_at"],
            "exported_at": datetime.now(UTC).isoformat(),
        }
    )
    return files


def zip_archive(user_id: uuid.UUID, files: dict[str, bytes]) -> bytes:
    """A zip holding the folder `<user id>/` with `files` (the importer reads it as is)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(f"{user_id}/{name}", content)
    return buffer.getvalue()


async def export_archive(repository: MemoryRepository, user: User) -> bytes:
    """The user's memory as a zip, read in one call as that user (RLS); zipped off the loop."""
    document = await repository.export_document(user)
    files = export_files(user.id, document)
    return await asyncio.to_thread(zip_archive, user.id, files)


def write_folder(dest: Path, user_id: uuid.UUID, files: dict[str, bytes]) -> None:
    folder = dest / str(user_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)


async def stored_users(pool: asyncpg.Pool) -> list[uuid.UUID]:
    """Every user with a memory row. The one read made with the login role's own rights
    (the table's owner, or a role that bypasses RLS); each user's memory is then read as them."""
    rows = await pool.fetch("select user_id from public.memories order by user_id")
    return [row["user_id"] for row in rows]


async def export_users(
    repository: MemoryRepository,
    user_ids: list[uuid.UUID],
    dest: Path,
    *,
    concurrency: int = 4,
) -> int:
    """Write each user's folder under `dest`; returns how many were written."""
    slots = asyncio.Semaphore(concurrency)

    async def one(user_id: uuid.UUID) -> None:
        async with slots:
            document = await repository.export_document(acting_user(user_id))
        files = export_files(user_id, document)
        await asyncio.to_thread(write_folder, dest, user_id, files)

    await asyncio.gather(*(one(user_id) for user_id in user_ids))
    return len(user_ids)
