"""The import and export commands as an operator runs them: exit status, the summary, the
README's walk-through on the embedded default, and DATABASE_URL on both servers."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from rich.console import Console

from config import Backend
from services.migration import export_cli, import_cli
from services.storage.embedded_postgres import EmbeddedPostgres
from services.storage.operator import NoDatabase, operator_settings
from tests.conftest import make_settings
from tests.tokens import bearer, user_token

FIXTURES = Path(__file__).parent / "fixtures" / "migration"


async def run_import(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await import_cli.run(import_cli.parse_args(list(argv)), Console(file=out, width=120))
    return code, out.getvalue()


async def run_export(dest: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    args = export_cli.parse_args([str(dest), *argv])
    return await export_cli.run(args, Console(file=out, width=120)), out.getvalue()


@pytest.fixture
def on_database(database_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The commands write through DATABASE_URL (a scratch database on each server)."""
    monkeypatch.setenv("DATABASE_URL", database_dsn)
    monkeypatch.setenv("MEMORY_BACKEND", "postgres")
    return database_dsn


@pytest.fixture
def on_embedded(embedded_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default, in the session's embedded server (as `embedded_app` uses it)."""
    monkeypatch.setenv("MEMORY_BACKEND", "embedded")
    monkeypatch.setenv("DATA_DIR", str(embedded_server.pgdata.parent))


class TestOnDatabaseUrl:
    async def test_failures_exit_1_and_name_file_and_path(self, on_database: str) -> None:
        code, out = await run_import(str(FIXTURES / "malformed"))
        assert code == 1
        assert "rewards.json: $[2]: an item is a JSON object, found a number" in out
        assert "not in auth.users" in out  # DATABASE_URL: users are not created

    async def test_a_dry_run_reports_and_names_users_missing_from_auth(
        self, on_database: str
    ) -> None:
        code, out = await run_import(str(FIXTURES / "well_formed"), "--dry-run")
        assert "dry run: nothing written" in out
        assert "not in auth.users: create the user in Supabase Auth first" in out
        assert code == 1  # the users do not exist in this database's auth.users

    async def test_an_unusable_source_or_mapping_exits_2(
        self, on_database: str, tmp_path: Path
    ) -> None:
        assert (await run_import(str(tmp_path / "nothing")))[0] == 2
        code, out = await run_import(str(FIXTURES / "one_user"))
        assert code == 2 and "name the user with --user-id" in out
        (tmp_path / "map.csv").write_text("alice,not-a-uuid\n")
        code, out = await run_import(str(FIXTURES / "old_ids"), "--map", str(tmp_path / "map.csv"))
        assert code == 2 and "is not a UUID" in out

    async def test_huge_files_are_refused_by_the_flag(
        self, on_database: str, tmp_path: Path
    ) -> None:
        (tmp_path / "identity.json").write_text(json.dumps({"pad": "x" * 2000}))
        code, out = await run_import(
            str(tmp_path), "--user-id", str(uuid.uuid4()), "--max-file-bytes", "1000"
        )
        assert code == 1
        assert "over the import limit of 1000 (--max-file-bytes / IMPORT_MAX_FILE_BYTES)" in out


class TestReadmeWalkThrough:
    async def test_import_shows_in_the_api_twice_changes_nothing_and_export_reimports(
        self, on_embedded: None, client: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        user_id = uuid.uuid4()
        code, out = await run_import(str(FIXTURES / "one_user"), "--user-id", str(user_id))
        assert code == 0, out
        response = await client.get("/api/memory", headers=bearer(user_token(user_id)))
        memory = response.json()
        assert memory["identity"]["child_name"] == "Mia"
        assert len(memory["episodic_memory"]) == 5

        code, out = await run_import(str(FIXTURES / "one_user"), "--user-id", str(user_id))
        assert code == 0
        assert "nothing changed: everything in the source is imported already" in out
        assert (await client.get("/api/memory", headers=bearer(user_token(user_id)))).json() == (
            memory
        )

        code, out = await run_export(tmp_path, "--user-id", str(user_id))
        assert code == 0 and "exported 1 users" in out
        code, out = await run_import(str(tmp_path))
        assert code == 0 and "nothing changed" in out

    async def test_the_embedded_backend_creates_missing_users(self, on_embedded: None) -> None:
        code, out = await run_import(str(FIXTURES / "well_formed"))
        assert code == 0, out  # 1 if a user had been refused as missing from auth.users

    async def test_a_dry_run_creates_no_user(
        self, on_embedded: None, embedded_server: EmbeddedPostgres
    ) -> None:
        user_id = uuid.uuid4()
        code, out = await run_import(
            str(FIXTURES / "one_user"), "--user-id", str(user_id), "--dry-run"
        )
        assert code == 0
        assert "would change .: would be created in auth.users" in out
        conn = await asyncpg.connect(embedded_server.dsn)
        try:
            exists = await conn.fetchval(
                "select exists (select from auth.users where id = $1)", user_id
            )
        finally:
            await conn.close()
        assert exists is False


class TestOperatorSettings:
    def test_database_url_wins_over_supabase_for_operator_commands(self) -> None:
        settings = make_settings(
            supabase_url="https://x.supabase.co",
            supabase_key="sb_publishable_x",
            database_url="postgresql://postgres@db.example/postgres",
        )
        chosen = operator_settings(settings, connections=3)
        assert chosen.backend is Backend.POSTGRES
        assert chosen.db_pool_max_size == 3

    def test_supabase_without_a_connection_string_is_refused(self) -> None:
        settings = make_settings(supabase_url="https://x.supabase.co", supabase_key="k")
        with pytest.raises(NoDatabase, match="set DATABASE_URL"):
            operator_settings(settings, connections=1)
