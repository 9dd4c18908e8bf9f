"""Reading old-layout sources without a database: conversion rules, refusals with file and JSON
path, layouts, the mapping CSV, and size limits enforced before reading."""

from __future__ import annotations

import json
import tracemalloc
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from models import MemoryField
from services.migration.catalogue import SOURCE_FILES, SPECS_BY_NAME
from services.migration.convert import SourceError, convert, parse_json
from services.migration.plan import (
    Limits,
    MappingError,
    plan_user,
    read_mapping,
    resolve_user,
)
from services.migration.source import SourceTreeError, open_source

FIXTURES = Path(__file__).parent / "fixtures" / "migration"
USER = uuid.UUID("6e0c1d2a-5b4f-4a3e-9d8c-7b6a5f4e3d21")
LIMITS = Limits(max_file_bytes=1024 * 1024, max_item_bytes=4096, max_object_bytes=64 * 1024)


def convert_value(field: str, value: Any) -> Any:
    return convert(
        SPECS_BY_NAME[f"{field}.json"],
        f"{field}.json",
        value,
        user_id=USER,
        max_item_bytes=LIMITS.max_item_bytes,
        max_object_bytes=LIMITS.max_object_bytes,
    )


def refusal(field: str, value: Any) -> SourceError:
    with pytest.raises(SourceError) as info:
        convert_value(field, value)
    return info.value


class TestCatalogue:
    def test_one_file_per_field_named_after_it(self) -> None:
        names = [spec.name for spec in SOURCE_FILES]
        assert names == [*(f"{f.value}.json" for f in MemoryField), "conversation_log.json"]
        fields = [spec for spec in SOURCE_FILES if spec.target != "conversation_log"]
        assert all(spec.kind is MemoryField(spec.target).kind for spec in fields)


class TestConversion:
    @pytest.mark.parametrize("value", [None, "", {}, []])
    @pytest.mark.parametrize("field", ["identity", "episodic_memory"])
    def test_old_defaults_import_nothing(self, field: str, value: Any) -> None:
        assert convert_value(field, value) is None

    def test_a_string_in_an_object_field_is_its_text(self) -> None:
        assert convert_value("long_term_summary", "likes cats") == {"text": "likes cats"}

    def test_strings_in_a_list_field_are_text_items_with_stable_ids(self) -> None:
        first = convert_value("episodic_memory", ["hi", {"text": "there"}])
        again = convert_value("episodic_memory", ["hi", {"text": "there"}])
        assert [{k: v for k, v in i.items() if k != "id"} for i in first] == [
            {"text": "hi"},
            {"text": "there"},
        ]
        assert first == again
        assert len({item["id"] for item in first}) == 2
        assert all(uuid.UUID(item["id"]) for item in first)

    def test_a_bare_string_in_a_list_field_is_one_item(self) -> None:
        (item,) = convert_value("core_instructions", "be kind")
        assert item["text"] == "be kind"

    def test_the_same_content_at_two_positions_gets_two_ids(self) -> None:
        items = convert_value("episodic_memory", ["ok", "ok"])
        assert items[0]["id"] != items[1]["id"]

    def test_ids_are_per_user(self) -> None:
        spec = SPECS_BY_NAME["rewards.json"]
        ids = {
            convert(spec, "f", [{"a": 1}], user_id=u, max_item_bytes=4096, max_object_bytes=4096)[
                0
            ]["id"]
            for u in (uuid.uuid4(), uuid.uuid4())
        }
        assert len(ids) == 2

    def test_given_ids_are_kept_and_integer_ids_become_strings(self) -> None:
        items = convert_value("rewards", [{"id": "r-1"}, {"id": 7, "star": 1}])
        assert [item["id"] for item in items] == ["r-1", "7"]

    @pytest.mark.parametrize(
        ("field", "value", "path", "words"),
        [
            ("identity", ["a"], "$", "found an array"),
            ("identity", 3, "$", "found a number"),
            ("rewards", {"badge": "a"}, "$", "found an object"),
            ("rewards", True, "$", "found a boolean"),
            ("rewards", [{"a": 1}, {"b": 2}, 42], "$[2]", "found a number"),
            ("rewards", [{"a": 1}, None], "$[1]", "found null"),
            ("rewards", [{"id": {"x": 1}}], "$[0].id", "an item id is a string"),
            ("rewards", [{"id": ""}], "$[0].id", "an item id is a string"),
            ("rewards", [{"id": "a"}, {"id": "a"}], "$[1].id", "also the id of $[0]"),
            ("rewards", [{"text": "x" * 5000}], "$[0]", "larger than 4096 bytes"),
            ("rewards", [{"text": "nul \x00"}], "$[0]", "NUL"),
            ("identity", {"deep": json.loads("[" * 40 + "]" * 40)}, "$", "nest"),
        ],
    )
    def test_what_does_not_fit_is_refused_with_its_json_path(
        self, field: str, value: Any, path: str, words: str
    ) -> None:
        error = refusal(field, value)
        assert error.file == f"{field}.json"
        assert error.path == path
        assert words in error.message


class TestParsing:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"", None),
            (b"  \n", None),
            (b'""', ""),
            (b"\xef\xbb\xbf{}", {}),  # a UTF-8 byte order mark
            ('{"name": "Zoë"}'.encode(), {"name": "Zoë"}),
        ],
    )
    def test_utf8_json(self, raw: bytes, expected: Any) -> None:
        assert parse_json("f.json", raw) == expected

    @pytest.mark.parametrize(
        ("raw", "words"),
        [
            (b'{"mood": "gl\xfccklich"}', "not UTF-8 text (byte 12"),
            (b'[{"a": 1},\n {"b": 2}\n', "not valid JSON (line 3 column 1"),
            (b'{"a": NaN}', "NaN is not a JSON value"),
            (b'{"a": 1, "a": 2}', "the key 'a' appears twice"),
        ],
    )
    def test_refused_with_the_reason(self, raw: bytes, words: str) -> None:
        with pytest.raises(SourceError) as info:
            parse_json("x.json", raw)
        assert info.value.file == "x.json"
        assert words in info.value.message


class TestLayouts:
    def test_one_users_folder(self) -> None:
        with open_source(FIXTURES / "one_user") as (one_user, folders):
            assert one_user
            assert [f.name for f in folders] == [""]
            assert set(folders[0].files) == {f"{field.value}.json" for field in MemoryField}

    def test_a_folder_of_user_folders(self) -> None:
        with open_source(FIXTURES / "well_formed") as (one_user, folders):
            assert not one_user
            assert [f.name for f in folders] == [
                "3f1c2a9e-6b7d-4c1e-9a55-0d2e8f6b7a11",
                "8b0e4d6a-2c3f-4e5a-b1d7-9f6e3c2a1b22",
            ]

    def test_a_zip_reads_like_the_folder(self, tmp_path: Path) -> None:
        archive = tmp_path / "export.zip"
        source = FIXTURES / "well_formed"
        with zipfile.ZipFile(archive, "w") as z:
            for path in source.rglob("*.json"):
                z.write(path, path.relative_to(source).as_posix())
        with open_source(source) as (_, folders), open_source(archive) as (_, zipped):
            plans = [plan_user(f, USER, LIMITS).document for f in folders]
            assert [plan_user(f, USER, LIMITS).document for f in zipped] == plans

    def test_other_files_are_listed_as_ignored(self, tmp_path: Path) -> None:
        (tmp_path / "identity.json").write_text("{}")
        (tmp_path / "notes.txt").write_text("x")
        (tmp_path / "old").mkdir()
        (tmp_path / "old" / "rewards.json").write_text("[]")
        with open_source(tmp_path) as (_, folders):
            assert sorted(folders[0].ignored) == ["notes.txt", "old/rewards.json"]

    @pytest.mark.parametrize("kind", ["missing", "empty", "not a zip"])
    def test_unusable_sources_are_refused(self, tmp_path: Path, kind: str) -> None:
        path = tmp_path / "src"
        if kind == "empty":
            path.mkdir()
        elif kind == "not a zip":
            path.write_text("hello")
        with pytest.raises(SourceTreeError), open_source(path):
            pass


class TestHugeFiles:
    def test_refused_by_size_without_being_read(self, tmp_path: Path) -> None:
        folder = tmp_path / "user"
        folder.mkdir()
        with (folder / "episodic_memory.json").open("wb") as handle:
            handle.truncate(512 * 1024 * 1024)  # sparse: 512 MiB that take no disk
        tracemalloc.start()
        try:
            with open_source(folder) as (_, folders), pytest.raises(SourceError) as info:
                plan_user(folders[0], USER, LIMITS)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert "536870912 bytes, over the import limit of 1048576" in str(info.value)
        assert info.value.file == "episodic_memory.json"
        assert peak < 1024 * 1024

    def test_a_zip_entry_is_read_no_further_than_the_limit(self, tmp_path: Path) -> None:
        archive = tmp_path / "bomb.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("identity.json", b" " * (8 * 1024 * 1024))
        limits = Limits(max_file_bytes=1024, max_item_bytes=4096, max_object_bytes=4096)
        with open_source(archive) as (_, folders), pytest.raises(SourceError) as info:
            plan_user(folders[0], USER, limits)
        assert "over the import limit of 1024" in str(info.value)


class TestUserIds:
    def test_a_folder_name_is_the_user_id(self) -> None:
        assert resolve_user(str(USER), None) == USER

    def test_a_name_that_is_not_a_uuid_is_refused(self) -> None:
        with pytest.raises(SourceError, match="not a UUID"):
            resolve_user("alice", None)

    def test_the_mapping_takes_old_ids_to_uuids(self) -> None:
        mapping = read_mapping(FIXTURES / "old_ids_map.csv")
        assert resolve_user("alice", mapping) == uuid.UUID("0d9f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a01")
        with pytest.raises(SourceError, match="no row for this user id in the mapping"):
            resolve_user("carol", mapping)

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ("alice,not-a-uuid\n", "line 1: 'not-a-uuid' is not a UUID"),
            (
                "a,0d9f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a01\na,0d9f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a02\n",
                "old id 'a' is mapped twice",
            ),
            (
                "a,0d9f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a01\nb,0d9f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a01\n",
                "two old users can not share one",
            ),
            ("a,b,c\n", "expected old_id,new_uuid"),
        ],
    )
    def test_a_bad_mapping_is_refused_with_its_line(
        self, tmp_path: Path, text: str, words: str
    ) -> None:
        path = tmp_path / "map.csv"
        path.write_text(text)
        with pytest.raises(MappingError, match=words.replace("(", r"\(").replace("$", r"\$")):
            read_mapping(path)
