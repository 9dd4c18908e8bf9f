"""Reading a source tree: a folder (or a zip of one) in the old layout, never unbounded.

Two layouts: one user's folder (the field files directly inside; the caller names the user),
or a folder of user folders, each named by the user's id. Files are read at most
`max_file_bytes` (+1 to notice more) bytes at a time: a larger file is refused by its size
before anything is read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from services.migration.catalogue import MANIFEST_NAME, SPECS_BY_NAME
from services.migration.convert import SourceError

KNOWN_FILES = frozenset({*SPECS_BY_NAME, MANIFEST_NAME})


class SourceTreeError(Exception):
    """The source as a whole can not be read (missing, no memory files, not a zip)."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    label: str  # the path shown in messages, relative to the source
    size: int
    _open_read: Callable[[int], bytes]

    def read(self, max_bytes: int) -> bytes:
        """The whole file, refused (SourceError) when it is larger than `max_bytes`."""
        if self.size > max_bytes:
            raise SourceError(
                self.label,
                "",
                f"{self.size} bytes, over the import limit of {max_bytes}"
                " (--max-file-bytes / IMPORT_MAX_FILE_BYTES)",
            )
        data = self._open_read(max_bytes + 1)
        if len(data) > max_bytes:  # grew since, or a zip entry larger than it says
            raise SourceError(self.label, "", f"over the import limit of {max_bytes} bytes")
        return data


@dataclass(slots=True)
class UserFolder:
    """One user's files: `name` is the folder's name (the user id, or an old id to map); ""
    for a one-user source."""

    name: str
    files: dict[str, SourceFile] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _read_path(path: Path) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        with path.open("rb") as handle:
            return handle.read(limit)

    return read


def _read_zip(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        with archive.open(info) as handle:
            return handle.read(limit)

    return read


def _add(folder: UserFolder, name: str, file: SourceFile) -> None:
    if name in SPECS_BY_NAME:
        folder.files[name] = file
    elif name != MANIFEST_NAME:
        folder.ignored.append(file.label)


def _directory_entries(root: Path) -> list[tuple[tuple[str, ...], SourceFile]]:
    entries = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in parts) or not path.is_file():
            continue
        label = "/".join(parts)
        entries.append((parts, SourceFile(label, path.stat().st_size, _read_path(path))))
    return entries


def _zip_entries(archive: zipfile.ZipFile) -> list[tuple[tuple[str, ...], SourceFile]]:
    entries = []
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or any(part.startswith(".") or part == ".." for part in parts):
            continue
        entries.append((parts, SourceFile(info.filename, info.file_size, _read_zip(archive, info))))
    return entries


Entries = list[tuple[tuple[str, ...], SourceFile]]


def user_folders(entries: Entries) -> tuple[bool, list[UserFolder]]:
    """(one-user layout?, the user folders). Memory files at the top mean one user's folder;
    otherwise each top-level folder is a user. Files deeper down are listed as ignored."""
    one_user = any(len(parts) == 1 and parts[0] in KNOWN_FILES for parts, _ in entries)
    folders: dict[str, UserFolder] = {}
    ignored: list[str] = []
    for parts, file in entries:
        if one_user:
            if len(parts) == 1:
                _add(folders.setdefault("", UserFolder("")), parts[0], file)
            else:
                ignored.append(file.label)
        elif len(parts) == 2:
            _add(folders.setdefault(parts[0], UserFolder(parts[0])), parts[1], file)
        else:
            ignored.append(file.label)
    if not folders:
        raise SourceTreeError(
            "no memory files found: expected identity.json, episodic_memory.json, … in the"
            " folder itself (one user) or in one folder per user"
        )
    result = sorted(folders.values(), key=lambda f: f.name)
    result[0].ignored.extend(ignored)
    return one_user, result


@contextmanager
def open_source(path: Path) -> Iterator[tuple[bool, list[UserFolder]]]:
    """The source at `path` (a folder, or a .zip such as `GET /api/memory/export` returns):
    (one-user layout?, its user folders), readable while the context is open."""
    if path.is_dir():
        yield user_folders(_directory_entries(path))
    elif path.is_file():
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceTreeError(f"{path} is neither a folder nor a zip archive ({exc})") from None
        with archive:
            yield user_folders(_zip_entries(archive))
    else:
        raise SourceTreeError(f"{path} does not exist")
