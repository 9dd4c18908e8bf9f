"""Import and export on real PostgreSQL (both servers), through the API's own SQL path: one
`memory_import_document` call per user made as that user, idempotent, all or nothing."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from models import LIST_FIELDS, MemoryField
from repositories.postgres import PostgresMemoryRepository
from services.migration.catalogue import MANIFEST_NAME
from services.migration.export import export_users, stored_users
from services.migration.importer import Importer, Report, Status
from services.migration.plan import Limits, read_mapping, resolve_user
from services.migration.source import open_source
from services.storage.database import apply_schema, create_pool
from services.storage.operator import acting_user
from tests.conftest import create_auth_user, make_settings
from tests.db_helpers import memory_row, scratch_database, snapshot

FIXTURES = Path(__file__).parent / "fixtures" / "migration"
EPISODIC = MemoryField.EPISODIC_MEMORY
SETTINGS = make_settings(memory_list_caps={"rewards": 3}, storage_timeout_seconds=30)
CAPS = {field: SETTINGS.list_cap(field) for field in LIST_FIELDS}
LIMITS = Limits(max_file_bytes=1024 * 1024, max_item_bytes=4096, max_object_bytes=64 * 1024)
LEO = uuid.UUID("3f1c2a9e-6b7d-4c1e-9a55-0d2e8f6b7a11")
ADA = uuid.UUID("8b0e4d6a-2c3f-4e5a-b1d7-9f6e3c2a1b22")
MALFORMED_GOOD = uuid.UUID("5a7d3c1e-0b2f-4e6a-8c9d-1e2f3a4b5c01")


def importer(pool: asyncpg.Pool, *, create_users: bool = True, dry_run: bool = False) -> Importer:
    return Importer(
        PostgresMemoryRepository(pool, SETTINGS),
        pool,
        CAPS,
        LIMITS,
        create_users=create_users,
        dry_run=dry_run,
    )


async def run_import(
    pool: asyncpg.Pool,
    source: Path,
    *,
    user_id: uuid.UUID | None = None,
    mapping: dict[str, uuid.UUID] | None = None,
    **options: Any,
) -> Report:
    with open_source(source) as (one_user, folders):
        assigned: list[tuple[Any, uuid.UUID | None, str]] = []
        for folder in folders:
            if one_user:
                assigned.append((folder, user_id, ""))
                continue
            try:
                assigned.append((folder, resolve_user(folder.name, mapping), ""))
            except Exception as exc:
                assigned.append((folder, None, str(exc)))
        return await importer(pool, **options).run(assigned)


def outcome_of(report: Report, source: str) -> Any:
    (outcome,) = [o for o in report.outcomes if o.source == source]
    return outcome


async def document(pool: asyncpg.Pool, user_id: uuid.UUID) -> dict[str, Any]:
    repository = PostgresMemoryRepository(pool, SETTINGS)
    return (await repository.read_document(acting_user(user_id))).model_dump(mode="json")


class TestImport:
    async def test_a_users_folder_lands_in_their_memory(self, admin_pool: asyncpg.Pool) -> None:
        user_id = uuid.uuid4()
        report = await run_import(admin_pool, FIXTURES / "one_user", user_id=user_id)
        assert [o.status for o in report.outcomes] == [Status.IMPORTED]
        stored = await document(admin_pool, user_id)
        assert stored["identity"]["child_name"] == "Mia"
        assert stored["long_term_summary"] == {
            "text": "Mia loves dinosaurs and is learning to read. Her cat is called Biscuit."
        }
        assert [i["text"] for i in stored["core_instructions"]] == [
            "Use short sentences.",
            "No scary stories at bedtime.",
        ]
        episodes = stored["episodic_memory"]
        assert len(episodes) == 5 and episodes[-1]["text"] == "Mia said goodnight."
        assert all(e["id"] and e["created_at"] for e in episodes)
        assert [r["id"] for r in stored["rewards"]] == ["1", "2"]
        assert stored["parent_reports"] == []
        result = report.outcomes[0].result
        assert result is not None
        assert result.fields["episodic_memory"].items == 5

    async def test_a_second_run_changes_nothing_and_says_so(self, admin_pool: asyncpg.Pool) -> None:
        await run_import(admin_pool, FIXTURES / "well_formed")
        before = [snapshot(await memory_row(admin_pool, u)) for u in (LEO, ADA)]
        report = await run_import(admin_pool, FIXTURES / "well_formed")
        assert {o.status for o in report.outcomes} == {Status.UNCHANGED}
        assert all(o.result and not o.result.changed for o in report.outcomes)
        assert [snapshot(await memory_row(admin_pool, u)) for u in (LEO, ADA)] == before

    async def test_items_added_to_the_source_later_are_appended_once(
        self, admin_pool: asyncpg.Pool, tmp_path: Path
    ) -> None:
        user_id = uuid.uuid4()
        source = tmp_path / "user"
        shutil.copytree(FIXTURES / "one_user", source)
        await run_import(admin_pool, source, user_id=user_id)
        episodes = json.loads((source / "episodic_memory.json").read_text())
        (source / "episodic_memory.json").write_text(json.dumps([*episodes, "See you!"]))
        report = await run_import(admin_pool, source, user_id=user_id)
        result = report.outcomes[0].result
        assert result is not None
        assert result.fields["episodic_memory"].items == 1
        assert result.fields["episodic_memory"].stored == 5
        stored = await document(admin_pool, user_id)
        assert [e.get("text") for e in stored["episodic_memory"]][-2:] == [
            "Mia said goodnight.",
            "See you!",
        ]

    async def test_items_over_the_cap_are_reported_and_a_rerun_is_still_unchanged(
        self, admin_pool: asyncpg.Pool, tmp_path: Path
    ) -> None:
        user_id = uuid.uuid4()
        (tmp_path / "rewards.json").write_text(json.dumps([{"star": n} for n in range(5)]))
        first = await run_import(admin_pool, tmp_path, user_id=user_id)
        result = first.outcomes[0].result
        assert result is not None and result.fields["rewards"].over_cap == 2
        stored = await document(admin_pool, user_id)
        assert [r["star"] for r in stored["rewards"]] == [2, 3, 4]
        again = await run_import(admin_pool, tmp_path, user_id=user_id)
        assert again.outcomes[0].status is Status.UNCHANGED
        assert [r["star"] for r in (await document(admin_pool, user_id))["rewards"]] == [2, 3, 4]

    async def test_items_the_user_removed_are_not_brought_back(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        user_id = uuid.uuid4()
        await run_import(admin_pool, FIXTURES / "one_user", user_id=user_id)
        repository = PostgresMemoryRepository(admin_pool, SETTINGS)
        first = (await document(admin_pool, user_id))["episodic_memory"][0]["id"]
        from models import MemoryField

        assert await repository.remove_item(
            acting_user(user_id), MemoryField.EPISODIC_MEMORY, first
        )
        report = await run_import(admin_pool, FIXTURES / "one_user", user_id=user_id)
        assert report.outcomes[0].status is Status.UNCHANGED
        assert len((await document(admin_pool, user_id))["episodic_memory"]) == 4

    async def test_empty_files_are_the_defaults_and_create_nothing(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        user_id = uuid.uuid4()
        report = await run_import(admin_pool, FIXTURES / "empty_files", user_id=user_id)
        assert report.outcomes[0].status is Status.UNCHANGED
        assert await memory_row(admin_pool, user_id) is None

    async def test_a_bad_file_leaves_that_user_untouched_and_the_others_imported(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        report = await run_import(admin_pool, FIXTURES / "malformed")
        failed = {o.source: o.detail for o in report.outcomes if o.status is Status.FAILED}
        assert outcome_of(report, str(MALFORMED_GOOD)).status is Status.IMPORTED
        prefix = "5a7d3c1e-0b2f-4e6a-8c9d-1e2f3a4b5c0"
        assert failed == {
            f"{prefix}2": f"{prefix}2/identity.json: $: this field holds a JSON object,"
            " found an array",
            f"{prefix}3": f"{prefix}3/episodic_memory.json: not valid JSON (line 3 column 1:"
            " Expecting ',' delimiter)",
            f"{prefix}4": f"{prefix}4/current_state.json: not UTF-8 text (byte 12: invalid"
            " start byte)",
            f"{prefix}5": f"{prefix}5/rewards.json: $[2]: an item is a JSON object, found a number",
            "not-a-user-id": "not-a-user-id: not a UUID: name users by their Supabase Auth id,"
            " or map old ids (--map)",
        }
        for n in range(2, 6):
            assert await memory_row(admin_pool, uuid.UUID(f"{prefix}{n}")) is None
        assert report.failed

    async def test_a_conflict_in_sql_rolls_back_every_field_of_that_user(
        self, admin_pool: asyncpg.Pool, tmp_path: Path
    ) -> None:
        user_id = uuid.uuid4()
        (tmp_path / "rewards.json").write_text(json.dumps([{"id": "r1", "star": 1}]))
        await run_import(admin_pool, tmp_path, user_id=user_id)
        before = snapshot(await memory_row(admin_pool, user_id))
        (tmp_path / "identity.json").write_text(json.dumps({"child_name": "New"}))
        (tmp_path / "rewards.json").write_text(json.dumps([{"id": "r1", "star": 5}]))
        report = await run_import(admin_pool, tmp_path, user_id=user_id)
        assert report.outcomes[0].status is Status.FAILED
        assert (
            "item r1 of rewards is already stored with other content" in report.outcomes[0].detail
        )
        assert snapshot(await memory_row(admin_pool, user_id)) == before

    async def test_dry_run_reports_and_writes_nothing(self, admin_pool: asyncpg.Pool) -> None:
        user_id = await create_auth_user(admin_pool)
        report = await run_import(admin_pool, FIXTURES / "one_user", user_id=user_id, dry_run=True)
        outcome = report.outcomes[0]
        assert outcome.status is Status.WOULD_CHANGE
        assert outcome.result is not None
        assert outcome.result.fields["episodic_memory"].items == 5
        assert await memory_row(admin_pool, user_id) is None

    async def test_a_user_missing_from_auth_is_reported_not_created(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        user_id = uuid.uuid4()
        report = await run_import(
            admin_pool, FIXTURES / "one_user", user_id=user_id, create_users=False
        )
        assert report.outcomes[0].status is Status.FAILED
        assert "not in auth.users" in report.outcomes[0].detail
        assert not await admin_pool.fetchval(
            "select exists (select from auth.users where id = $1)", user_id
        )

    async def test_old_ids_through_the_mapping(self, admin_pool: asyncpg.Pool) -> None:
        mapping = read_mapping(FIXTURES / "old_ids_map.csv")
        report = await run_import(admin_pool, FIXTURES / "old_ids", mapping=mapping)
        assert outcome_of(report, "carol").status is Status.FAILED
        assert "no row for this user id in the mapping" in outcome_of(report, "carol").detail
        for old in ("alice", "bob"):
            stored = await document(admin_pool, mapping[old])
            assert stored["identity"] == {"child_name": old.title()}

    async def test_an_import_acts_only_on_its_own_user(self, admin_pool: asyncpg.Pool) -> None:
        owner, other = uuid.uuid4(), await create_auth_user(admin_pool)
        await run_import(admin_pool, FIXTURES / "one_user", user_id=owner)
        claims = json.dumps({"sub": str(other), "role": "authenticated"})
        counted = await admin_pool.fetchval(
            "select memory_private.call_as_user($1, 'export_document', '{}')", claims
        )
        assert counted is None  # the other user sees no row, not the owner's


def tree(path: Path) -> dict[str, Any]:
    """Every file under `path` by relative name (export.json's server-made fields left out)."""
    files: dict[str, Any] = {}
    for file in sorted(path.rglob("*.json")):
        content = json.loads(file.read_text(encoding="utf-8"))
        if file.name == MANIFEST_NAME:
            content = {k: v for k, v in content.items() if k in ("format", "user_id")}
        files[file.relative_to(path).as_posix()] = content
    return files


@pytest.fixture
async def fresh_pool(server_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """Another database on the same server, bootstrap and schema applied."""
    async with scratch_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await apply_schema(conn, bootstrap=True)
        finally:
            await conn.close()
        pool = await create_pool(dsn, make_settings(), min_size=0, max_size=4)
        try:
            yield pool
        finally:
            await pool.close()


class TestExportRoundTrip:
    async def test_export_import_elsewhere_export_again_is_identical(
        self, admin_pool: asyncpg.Pool, fresh_pool: asyncpg.Pool, tmp_path: Path
    ) -> None:
        user_id = uuid.uuid4()
        await run_import(admin_pool, FIXTURES / "one_user", user_id=user_id)
        await run_import(admin_pool, FIXTURES / "well_formed")
        users = [user_id, LEO, ADA]
        repository = PostgresMemoryRepository(admin_pool, SETTINGS)
        assert await export_users(repository, users, tmp_path / "first") == 3

        report = await run_import(fresh_pool, tmp_path / "first")
        assert {o.status for o in report.outcomes} == {Status.IMPORTED}
        assert set(await stored_users(fresh_pool)) == set(users)
        again = PostgresMemoryRepository(fresh_pool, SETTINGS)
        await export_users(again, await stored_users(fresh_pool), tmp_path / "second")

        first, second = tree(tmp_path / "first"), tree(tmp_path / "second")
        assert first == second
        assert first[f"{user_id}/identity.json"]["child_name"] == "Mia"
        assert len(first) == 3 * 9  # seven field files, the conversation log, the manifest

    async def test_the_whole_conversation_log_travels_beyond_the_window(
        self, admin_pool: asyncpg.Pool, fresh_pool: asyncpg.Pool, tmp_path: Path
    ) -> None:
        """Episodes compaction took out of the window are still in the log: the export holds
        them, an import elsewhere restores window and log as they were, and a second import
        changes nothing (nothing is appended to the window again)."""
        user_id = await create_auth_user(admin_pool)
        user = acting_user(user_id)
        repository = PostgresMemoryRepository(admin_pool, SETTINGS)
        episodes = [{"id": f"e{n}", "role": "user", "content": f"turn {n}"} for n in range(6)]
        await repository.append_items(user, EPISODIC, episodes, cap=500)
        await repository.compact_items(
            user,
            EPISODIC,
            ["e0", "e1", "e2", "e3"],
            summary_field=MemoryField.LONG_TERM_SUMMARY,
            summary_patch={"summary": "four turns"},
        )
        await export_users(repository, [user_id], tmp_path / "first")
        first = tree(tmp_path / "first")
        assert [e["id"] for e in first[f"{user_id}/conversation_log.json"]] == [
            f"e{n}" for n in range(6)
        ]
        assert [e["id"] for e in first[f"{user_id}/episodic_memory.json"]] == ["e4", "e5"]

        await create_auth_user(fresh_pool, user_id)
        report = await run_import(fresh_pool, tmp_path / "first")
        assert [o.status for o in report.outcomes] == [Status.IMPORTED]
        again = PostgresMemoryRepository(fresh_pool, SETTINGS)
        await export_users(again, [user_id], tmp_path / "second")
        assert tree(tmp_path / "second") == first
        rerun = await run_import(fresh_pool, tmp_path / "first")
        assert [o.status for o in rerun.outcomes] == [Status.UNCHANGED]

    async def test_an_export_holds_every_field_and_the_server_made_facts(
        self, admin_pool: asyncpg.Pool, tmp_path: Path
    ) -> None:
        user_id = uuid.uuid4()
        await run_import(admin_pool, FIXTURES / "one_user", user_id=user_id)
        repository = PostgresMemoryRepository(admin_pool, SETTINGS)
        await export_users(repository, [user_id], tmp_path)
        folder = tmp_path / str(user_id)
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        stored = await memory_row(admin_pool, user_id)
        assert stored is not None
        assert manifest["version"] == stored["version"]
        assert manifest["user_id"] == str(user_id)
        assert json.loads((folder / "parent_reports.json").read_text()) == []
