"""`make backfill` (services/recall/backfill.py) on the embedded PostgreSQL 18 (pgvector), with
the embeddings API stood in by respx."""

from __future__ import annotations

import asyncpg
import pytest
import respx
from rich.console import Console

from config import Settings
from models import MemoryField
from repositories.postgres import PostgresMemoryRepository
from services.recall import backfill as backfill_module
from services.recall.backfill import backfill
from services.recall.embeddings import EmbeddingsFailed
from services.storage.operator import acting_user
from tests.conftest import create_auth_user, make_settings
from tests.embedder_stand_in import EMBED_BASE_URL, EMBED_MODEL, EmbedderStandIn, embed_text

VECTORS = "select count(*) from public.memory_episode_vectors where user_id = $1"


@pytest.fixture
async def vector_db(database_dsn: str, admin_pool: asyncpg.Pool) -> str:
    if not await admin_pool.fetchval("select to_regclass('public.memory_episode_vectors')"):
        pytest.skip("pgvector is not installed on this server: nothing to backfill there")
    return database_dsn


def settings_for(dsn: str) -> Settings:
    return make_settings(
        memory_backend="postgres",
        database_url=dsn,
        embedding_base_url=EMBED_BASE_URL,
        embedding_model=EMBED_MODEL,
    )


async def test_embeds_what_is_missing_once_as_each_user(
    vector_db: str, admin_pool: asyncpg.Pool
) -> None:
    repository = PostgresMemoryRepository(admin_pool, make_settings())
    users = [await create_auth_user(admin_pool) for _ in range(2)]
    for user_id in users:
        episodes = [{"role": "user", "content": f"my cat naps, day {n}"} for n in range(70)]
        await repository.append_items(
            acting_user(user_id), MemoryField.EPISODIC_MEMORY, episodes, cap=500
        )
    console = Console(file=None, quiet=True)
    with respx.mock(assert_all_called=False) as router:
        embedder = EmbedderStandIn(router)
        stored = await backfill(settings_for(vector_db), console, batch=50)
        again = await backfill(settings_for(vector_db), console, batch=50)
    assert stored >= 140  # ours, and any other test's episodes still without one
    assert again == 0
    assert all(len(batch) <= 50 for batch in embedder.inputs)
    for user_id in users:
        assert await admin_pool.fetchval(VECTORS, user_id) == 70
    found = await repository.search(
        acting_user(users[0]), "kitten", limit=3, embedding=embed_text("kitten")
    )
    assert found.mode == "hybrid"


async def test_a_failing_api_stops_with_what_was_stored_kept(
    vector_db: str, admin_pool: asyncpg.Pool
) -> None:
    repository = PostgresMemoryRepository(admin_pool, make_settings())
    user_id = await create_auth_user(admin_pool)
    await repository.append_items(
        acting_user(user_id), MemoryField.EPISODIC_MEMORY, [{"content": "hello"}], cap=500
    )
    with respx.mock(assert_all_called=False) as router:
        EmbedderStandIn(router).failing = True
        with pytest.raises(EmbeddingsFailed):
            await backfill(settings_for(vector_db), Console(quiet=True))
    assert await admin_pool.fetchval(VECTORS, user_id) == 0


def test_without_embeddings_configured_it_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(backfill_module, "Settings", lambda: make_settings())
    assert backfill_module.main([]) == 2
    assert "EMBEDDING_BASE_URL" in capsys.readouterr().err
