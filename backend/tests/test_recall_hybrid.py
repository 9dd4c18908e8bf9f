"""Hybrid search (pgvector): an exact per-user scan, fused with full text. Run where pgvector is
installed (the embedded PostgreSQL 18); the machine's PostgreSQL 15 has none and keeps full-text
search only, which test_recall_log covers on both servers."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from models import MemoryField, User
from repositories.postgres import PostgresMemoryRepository
from services.storage.database import create_pool
from services.storage.operator import acting_user
from tests.conftest import create_auth_user, make_settings
from tests.db_helpers import call_as

EPISODES = MemoryField.EPISODIC_MEMORY
DIMS = 16


@pytest.fixture(scope="module")
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_dsn, make_settings(), min_size=1, max_size=4)
    has_vector = await pool.fetchval(
        "select exists (select from pg_extension where extname = 'vector')"
    )
    if not has_vector:
        await pool.close()
        pytest.skip("pgvector is not installed on this server: search is full-text only here")
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def repo(pool: asyncpg.Pool) -> PostgresMemoryRepository:
    return PostgresMemoryRepository(pool, make_settings())


def cosine_distance(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def random_vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(DIMS)]


async def store(
    repo: PostgresMemoryRepository, user: User, vectors: dict[str, list[float]]
) -> None:
    items = [
        {"id": i, "role": "user", "content": f"note number {n}"} for n, i in enumerate(vectors)
    ]
    for start in range(0, len(items), 100):
        batch = items[start : start + 100]
        await repo.append_items(
            user,
            EPISODES,
            batch,
            cap=10_000,
            embeddings={item["id"]: vectors[item["id"]] for item in batch},
        )


class TestExactPerUserScan:
    async def test_returns_what_an_exact_search_returns_however_many_others_share_the_table(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        """Many other users hold vectors nearer the query than any of ours: a shared
        approximate index filtered by user afterwards could return too few of ours; the exact
        per-user scan returns exactly the nearest of ours, in order."""
        rng = random.Random(7)
        query = random_vector(rng)
        ours = acting_user(await create_auth_user(admin_pool))
        our_vectors = {f"ours-{n}": random_vector(rng) for n in range(300)}
        await store(repo, ours, our_vectors)
        for _ in range(5):
            other = acting_user(await create_auth_user(admin_pool))
            near = {f"near-{n}": [x + rng.uniform(-0.01, 0.01) for x in query] for n in range(200)}
            await store(repo, other, near)

        found = await repo.search(ours, "zzzz-no-word-matches", limit=10, embedding=query)
        exact = sorted(our_vectors, key=lambda i: cosine_distance(our_vectors[i], query))[:10]
        assert found.mode == "hybrid"
        assert [hit.id for hit in found.results] == exact

    async def test_append_stores_given_vectors_in_the_same_call_and_save_skips_unknown_ids(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = acting_user(await create_auth_user(admin_pool))
        other = acting_user(await create_auth_user(admin_pool))
        await repo.append_items(
            user, EPISODES, [{"id": "a", "content": "x"}], cap=9, embeddings={"a": [1.0, 0.0]}
        )
        await repo.append_items(other, EPISODES, [{"id": "b", "content": "y"}], cap=9)
        assert await repo.save_embeddings(user, {"b": [0.0, 1.0], "missing": [1.0, 1.0]}) == 0
        count = "select count(*) from public.memory_episode_vectors"
        assert await call_as(admin_pool, user.id, count) == 1
        assert await call_as(admin_pool, other.id, count) == 0
        assert await repo.save_embeddings(other, {"b": [0.0, 1.0]}) == 1


class TestFusion:
    async def test_agreeing_rankings_win_and_weight_zero_is_full_text_alone(
        self, pool: asyncpg.Pool, admin_pool: asyncpg.Pool
    ) -> None:
        user = acting_user(await create_auth_user(admin_pool))
        plain = PostgresMemoryRepository(pool, make_settings())
        items = {
            "both": ("my kite is red", [1.0, 0.0]),
            "text-only": ("kite kite kite festival", [0.0, 1.0]),
            "vector-only": ("a windy afternoon", [0.99, 0.1]),
        }
        await plain.append_items(
            user,
            EPISODES,
            [{"id": i, "content": text} for i, (text, _) in items.items()],
            cap=9,
            embeddings={i: vector for i, (_, vector) in items.items()},
        )
        hybrid = await plain.search(user, "red kite", limit=3, embedding=[1.0, 0.0])
        assert hybrid.results[0].id == "both"
        assert {hit.id for hit in hybrid.results} == set(items)

        text_weighted = PostgresMemoryRepository(pool, make_settings(search_vector_weight=0))
        text_only = await text_weighted.search(user, "kite", limit=3, embedding=[1.0, 0.0])
        by_text = await plain.search(user, "kite", limit=3)
        assert [h.id for h in text_only.results][:2] == [h.id for h in by_text.results]
