"""Retrieval quality on conversations written here: facts planted in the first turns of long
conversations, then asked about (often in other words) after the history window moved on and
compaction removed them from the window. Measures recall@5 and recall@10 of full-text search,
of the vector ranking alone, and of hybrid search (the deterministic stand-in embedder of
tests/embedder_stand_in.py), and checks that nothing was lost from the log.

The figures are printed (`pytest -s`); the assertions are floors that a regression (a ranking
that stops weighting rare words, a fusion that drags the better ranking down) would break.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from models import MemoryField, User
from repositories.postgres import PostgresMemoryRepository
from services.storage.database import create_pool
from services.storage.operator import acting_user
from tests.conftest import create_auth_user, make_settings
from tests.embedder_stand_in import embed_text

EPISODES = MemoryField.EPISODIC_MEMORY
TURNS = 120  # episodes per conversation; the facts sit in the first 16
WINDOW = 20  # what compaction leaves in episodic_memory

# (fact said early, question asked later). Some questions share words with their fact, some
# only their meaning (puppy ~ dog, granny ~ grandma), as a child would ask.
FACTS = [
    ("My dog is called Biscuit and he has floppy ears", "what is my puppy's name?"),
    ("My grandma lives in Lisbon near the sea", "where does my granny live?"),
    ("I am scared of thunderstorms at night", "what am I afraid of?"),
    ("My birthday is on the twelfth of May", "when was I born?"),
    ("My favourite food is lasagne with lots of cheese", "which meal do I love?"),
    ("My best friend is Priya from next door", "who is my best friend?"),
    ("I broke my arm last year falling off my bike", "did I ever break a bone on my bike?"),
    ("Mrs Holt is my teacher and she gave me a gold star", "what did my teacher give me?"),
    ("We have a kitten called Pepper who sleeps all day", "what is our cat called?"),
    ("I play football every Saturday with my cousin Leo", "which sport do I play on Saturdays?"),
]
FILLER_WORDS = [
    "today",
    "we",
    "played",
    "a",
    "game",
    "outside",
    "and",
    "it",
    "was",
    "fun",
    "then",
    "we",
    "had",
    "some",
    "juice",
    "and",
    "talked",
    "about",
    "the",
    "weather",
    "the",
    "clouds",
    "a",
    "cartoon",
    "homework",
    "drawing",
    "a",
    "castle",
    "building",
    "blocks",
    "the",
    "park",
    "a",
    "rainbow",
    "puzzles",
    "music",
    "the",
    "swing",
    "slide",
    "reading",
    "a",
    "book",
    "a",
    "song",
    "dinosaurs",
    "robots",
    "space",
    "rockets",
    "the",
    "moon",
    "stars",
    "trains",
    "a",
    "boat",
    "painting",
    "colours",
    "a",
    "story",
    "bedtime",
    "breakfast",
    "lunch",
]


@dataclass(frozen=True)
class Conversation:
    user: User
    evidence: dict[str, str]  # question -> id of the episode that answers it


@pytest.fixture(scope="module")
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_dsn, make_settings(), min_size=1, max_size=4)
    yield pool
    await pool.close()


async def converse(
    repository: PostgresMemoryRepository, admin_pool: asyncpg.Pool, seed: int, vectors: bool
) -> Conversation:
    """One long conversation: the facts in its first 16 turns, filler after, then compaction
    of everything but the newest WINDOW episodes."""
    rng = random.Random(seed)
    user = acting_user(await create_auth_user(admin_pool))
    facts = rng.sample(FACTS, 6)
    slots = sorted(rng.sample(range(16), len(facts)))
    episodes = []
    evidence = {}
    for n in range(TURNS):
        role = "user" if n % 2 == 0 else "assistant"
        if n in slots:
            fact, question = facts[slots.index(n)]
            text, role = fact, "user"
            evidence[question] = f"{seed}-{n}"
        else:
            text = " ".join(rng.choice(FILLER_WORDS) for _ in range(rng.randint(8, 20)))
        episodes.append({"id": f"{seed}-{n}", "role": role, "content": text})
    for start in range(0, TURNS, 50):
        batch = episodes[start : start + 50]
        embeddings = {e["id"]: embed_text(e["content"]) for e in batch} if vectors else None
        await repository.append_items(user, EPISODES, batch, cap=500, embeddings=embeddings)
    compacted = [e["id"] for e in episodes[:-WINDOW]]
    assert await repository.compact_items(
        user,
        EPISODES,
        compacted,
        summary_field=MemoryField.LONG_TERM_SUMMARY,
        summary_patch={"summary": "they talked a lot"},
    )
    window, _ = await repository.read_field(user, EPISODES)
    assert len(window) == WINDOW
    logged = await admin_pool.fetchval(
        "select count(*) from public.memory_episodes where user_id = $1", user.id
    )
    assert logged == TURNS  # zero episodes lost through compaction
    return Conversation(user, evidence)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def recall_at(
    repository: PostgresMemoryRepository,
    conversations: list[Conversation],
    *,
    hybrid: bool,
) -> tuple[float, float]:
    hits5 = hits10 = total = 0
    for conversation in conversations:
        for question, answer in conversation.evidence.items():
            embedding = embed_text(question) if hybrid else None
            found = await repository.search(
                conversation.user, question, limit=10, embedding=embedding
            )
            ids = [hit.id for hit in found.results]
            hits5 += answer in ids[:5]
            hits10 += answer in ids
            total += 1
    return hits5 / total, hits10 / total


async def vector_recall_at(
    admin_pool: asyncpg.Pool, conversations: list[Conversation]
) -> tuple[float, float]:
    """The vector ranking alone, computed here exactly (cosine over each user's episodes)."""
    hits5 = hits10 = total = 0
    for conversation in conversations:
        rows = await admin_pool.fetch(
            "select id, item ->> 'content' as content from public.memory_episodes"
            " where user_id = $1",
            conversation.user.id,
        )
        for question, answer in conversation.evidence.items():
            q = embed_text(question)
            ranked = sorted(rows, key=lambda r: -cosine(embed_text(r["content"]), q))
            ids = [r["id"] for r in ranked[:10]]
            hits5 += answer in ids[:5]
            hits10 += answer in ids
            total += 1
    return hits5 / total, hits10 / total


async def test_full_text_recall_after_the_window_moved_on(
    pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    repository = PostgresMemoryRepository(pool, make_settings())
    conversations = [await converse(repository, admin_pool, seed, False) for seed in range(8)]
    at5, at10 = await recall_at(repository, conversations, hybrid=False)
    print(f"\nfull-text recall@5 {at5:.2f} recall@10 {at10:.2f}")
    # Half the questions share a content word with their fact; OR semantics and idf find those.
    assert at10 >= 0.5 and at5 >= 0.45


async def test_hybrid_recall_beats_each_ranking_alone(
    pool: asyncpg.Pool, admin_pool: asyncpg.Pool
) -> None:
    if not await admin_pool.fetchval("select to_regclass('public.memory_episode_vectors')"):
        pytest.skip("pgvector is not installed on this server: full text only here")
    repository = PostgresMemoryRepository(pool, make_settings())
    conversations = [await converse(repository, admin_pool, 100 + s, True) for s in range(8)]
    text5, text10 = await recall_at(repository, conversations, hybrid=False)
    hybrid5, hybrid10 = await recall_at(repository, conversations, hybrid=True)
    vector5, vector10 = await vector_recall_at(admin_pool, conversations)
    print(
        f"\nrecall@5/@10: full text {text5:.2f}/{text10:.2f}, vectors {vector5:.2f}/"
        f"{vector10:.2f}, hybrid {hybrid5:.2f}/{hybrid10:.2f}"
    )
    assert hybrid10 >= max(text10, vector10)
    assert hybrid5 >= max(text5, vector5) - 0.05  # within one question of the better one
    assert hybrid10 > text10  # the paraphrased questions are found
