"""`GET /api/memory/export`: the user's memory as a zip in the importer's layout, as the user,
on the embedded backend and on Supabase (PostgREST served by respx in its real shapes)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx
from fastapi import FastAPI

from services.migration.catalogue import MANIFEST_NAME, SOURCE_FILES
from services.migration.plan import Limits, plan_user
from services.migration.source import open_source
from tests.conftest import asgi_client, make_settings, running_supabase_app
from tests.tokens import TEST_JWT_SECRET, bearer, user_token

FILE_NAMES = {spec.name for spec in SOURCE_FILES} | {MANIFEST_NAME}


def unzip(content: bytes) -> dict[str, object]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: json.loads(archive.read(name)) for name in archive.namelist()}


class TestEmbedded:
    async def test_the_zip_holds_every_field_in_the_importers_layout(
        self, client: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        user_id = uuid.uuid4()
        headers = bearer(user_token(user_id))
        await client.put("/api/memory/identity", json={"child_name": "Mia"}, headers=headers)
        await client.post("/api/memory/episodic_memory", json=[{"text": "hi"}], headers=headers)
        response = await client.get("/api/memory/export", headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == (
            f'attachment; filename="memory-{user_id}.zip"'
        )
        files = unzip(response.content)
        assert set(files) == {f"{user_id}/{name}" for name in FILE_NAMES}
        assert files[f"{user_id}/identity.json"] == {"child_name": "Mia"}
        memory = (await client.get("/api/memory", headers=headers)).json()
        assert files[f"{user_id}/episodic_memory.json"] == memory["episodic_memory"]
        manifest = files[f"{user_id}/{MANIFEST_NAME}"]
        assert isinstance(manifest, dict) and manifest["version"] == memory["version"]

        (tmp_path / "export.zip").write_bytes(response.content)
        limits = Limits(max_file_bytes=1 << 20, max_item_bytes=4096, max_object_bytes=1 << 16)
        with open_source(tmp_path / "export.zip") as (one_user, folders):
            assert not one_user and [f.name for f in folders] == [str(user_id)]
            plan = plan_user(folders[0], user_id, limits)
        assert plan.document["episodic_memory"] == memory["episodic_memory"]

    async def test_a_new_user_exports_the_defaults(self, client: httpx.AsyncClient) -> None:
        user_id = uuid.uuid4()
        response = await client.get("/api/memory/export", headers=bearer(user_token(user_id)))
        files = unzip(response.content)
        assert files[f"{user_id}/rewards.json"] == []
        assert files[f"{user_id}/identity.json"] == {}

    async def test_each_user_exports_only_their_own(self, client: httpx.AsyncClient) -> None:
        owner, other = uuid.uuid4(), uuid.uuid4()
        await client.put(
            "/api/memory/identity", json={"secret": 1}, headers=bearer(user_token(owner))
        )
        response = await client.get("/api/memory/export", headers=bearer(user_token(other)))
        assert unzip(response.content)[f"{other}/identity.json"] == {}

    async def test_without_a_token_it_is_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/api/memory/export")).status_code == 401


SUPABASE_URL = "https://exportproject0000000.supabase.co"
REST = f"{SUPABASE_URL}/rest/v1"
API_KEY = "sb_publishable_export_test_key_0123"


@pytest.fixture(scope="module")
async def supabase_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        supabase_url=SUPABASE_URL,
        supabase_key=API_KEY,
        supabase_jwt_secret=TEST_JWT_SECRET,
        data_dir=Path(tmp_path_factory.mktemp("supabase-export")),
        storage_timeout_seconds=2.0,
    )
    async with running_supabase_app(settings) as app:
        yield app


@pytest.fixture
def postgrest() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=REST, assert_all_called=False) as router:
        yield router


class TestSupabase:
    async def test_one_rpc_as_the_user(
        self, supabase_app: FastAPI, postgrest: respx.MockRouter
    ) -> None:
        user_id = uuid.uuid4()
        token = user_token(user_id)
        stored = {
            "identity": {"child_name": "Ada"},
            "current_state": {},
            "long_term_summary": {},
            "core_instructions": [],
            "episodic_memory": [{"id": "e1", "text": "hi", "created_at": "2026-11-25T10:00:00Z"}],
            "rewards": [],
            "parent_reports": [],
            "version": 7,
            "updated_at": "2026-11-25T10:00:00.123456+00:00",
        }
        route = postgrest.post("/rpc/memory_export_document").respond(200, json=stored)
        async with asgi_client(supabase_app) as api:
            response = await api.get("/api/memory/export", headers=bearer(token))
        assert response.status_code == 200
        sent = route.calls.last.request
        assert sent.headers["apikey"] == API_KEY
        assert sent.headers["authorization"] == f"Bearer {token}"
        assert json.loads(sent.content) == {}
        files = unzip(response.content)
        assert files[f"{user_id}/episodic_memory.json"] == stored["episodic_memory"]
        manifest = files[f"{user_id}/{MANIFEST_NAME}"]
        assert isinstance(manifest, dict) and manifest["version"] == 7

    async def test_no_row_is_the_defaults_and_a_failure_is_503(
        self, supabase_app: FastAPI, postgrest: respx.MockRouter
    ) -> None:
        route = postgrest.post("/rpc/memory_export_document")
        async with asgi_client(supabase_app) as api:
            headers = bearer(user_token(uuid.uuid4()))
            # A function returning SQL null: PostgREST answers the JSON text `null`.
            route.respond(200, content=b"null", headers={"Content-Type": "application/json"})
            empty = await api.get("/api/memory/export", headers=headers)
            route.respond(
                503, json={"code": "PGRST001", "message": "down", "details": None, "hint": None}
            )
            down = await api.get("/api/memory/export", headers=headers)
        assert empty.status_code == 200 and len(unzip(empty.content)) == len(FILE_NAMES)
        assert down.status_code == 503

    async def test_the_repository_imports_by_rpc_with_named_arguments(
        self, postgrest: respx.MockRouter
    ) -> None:
        from models import User
        from repositories.supabase import SupabaseMemoryRepository

        user_id = uuid.uuid4()
        user = User(id=user_id, claims={"sub": str(user_id)}, token=user_token(user_id))
        answer = {"changed": True, "version": 3, "fields": {"identity": {"action": "set"}}}
        route = postgrest.post("/rpc/memory_import_document").respond(200, json=answer)
        settings = make_settings(supabase_url=SUPABASE_URL, supabase_key=API_KEY)
        async with httpx.AsyncClient() as http:
            repository = SupabaseMemoryRepository(settings, http)
            result = await repository.import_document(
                user, {"identity": {"a": 1}}, caps={"rewards": 5}, dry_run=True
            )
        assert result.changed and result.fields["identity"].action == "set"
        sent = route.calls.last.request
        assert sent.headers["authorization"] == f"Bearer {user.token}"
        assert json.loads(sent.content) == {
            "p_document": {"identity": {"a": 1}},
            "p_caps": {"rewards": 5},
            "p_dry_run": True,
            "p_config": "english",
        }
