"""In-process micro-benchmarks.

- Per-request Supabase client setup against the seed's way: CPU-only, so timed with
  `time.process_time` over batches (median of a few batches), in the bench driver while no
  server runs. (Token verification: `bench/verify_tokens.py`.)
- Repository calls straight against the embedded PostgreSQL (no HTTP, no app): a chat turn's
  storage calls, timed on the wall clock one at a time; and the bulk loading of the
  conversation log for the search rows (the append path, batches of 100).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from bench.server import Chatter, bench_token
from tests.tokens import supabase_claims

FAKE_PROJECT_URL = "https://abcdefghijklmnopqrst.supabase.co"  # never contacted: setup only


@dataclass(frozen=True, slots=True)
class MicroResult:
    name: str
    microseconds: float  # CPU time per call


def cpu_per_call(func: Callable[[], object], *, calls: int, batches: int = 5) -> float:
    """Median CPU microseconds per call over `batches` batches of `calls` calls."""
    func()  # warm caches and lazy imports
    samples = []
    for _ in range(batches):
        started = time.process_time()
        for _ in range(calls):
            func()
        samples.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(samples)


def _anon_key() -> str:
    """A legacy anon API key (a JWT with role anon), the kind the seed put in SUPABASE_KEY."""
    return jwt.encode(
        {"iss": "supabase", "role": "anon", "iat": 0, "exp": 2**31 - 1},
        "x" * 40,
        algorithm="HS256",
    )


def client_setup() -> tuple[MicroResult, MicroResult]:
    """The project's per-request user client on the shared pool vs. the seed's
    `supabase.create_client()` on every call (which also built a fresh pool each time)."""
    from supabase import create_client

    from repositories.postgrest_clients import SupabaseCredentials, user_postgrest_client

    key = _anon_key()
    credentials = SupabaseCredentials(url=FAKE_PROJECT_URL, key=key)
    token = jwt.encode(supabase_claims(uuid.uuid4()), "y" * 40, algorithm="HS256")
    shared = httpx.AsyncClient()  # the process's pool; never used for I/O here
    ours = cpu_per_call(lambda: user_postgrest_client(credentials, shared, token), calls=20_000)
    seed = cpu_per_call(lambda: create_client(FAKE_PROJECT_URL, key), calls=10, batches=3)
    return (
        MicroResult("per-request user_postgrest_client()", ours),
        MicroResult("seed: create_client() per call", seed),
    )


# --- repository calls on the embedded PostgreSQL ------------------------------------------


@dataclass(frozen=True, slots=True)
class Latencies:
    """Wall-clock milliseconds of calls made one at a time."""

    samples_ms: list[float]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0

    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)


def bench_user(user_id: uuid.UUID) -> Any:
    """The verified user the repository acts as (what the auth dependency would build)."""
    from models import User

    token = bench_token(user_id)
    return User(
        id=user_id, claims=jwt.decode(token, options={"verify_signature": False}), token=token
    )


@asynccontextmanager
async def repository(dsn: str, *, connections: int = 2) -> AsyncIterator[Any]:
    """A PostgresMemoryRepository on its own small pool, as the app builds it (the schema is
    already applied: the app has started once)."""
    from config import Settings
    from repositories.postgres import PostgresMemoryRepository
    from services.storage.database import create_pool

    settings = Settings(_env_file=None, db_pool_min_size=1, db_pool_max_size=connections)
    pool = await create_pool(dsn, settings)
    try:
        yield PostgresMemoryRepository(pool, settings)
    finally:
        await pool.close()


async def append_log(
    repo: Any,
    batches: Sequence[tuple[Any, list[dict[str, Any]]]],
    *,
    cap: int,
    concurrency: int = 2,
) -> float:
    """Append each (user, items) batch to `episodic_memory` through the repository (one SQL
    call each: the window gains them, trimmed to `cap`, and the log keeps every one), with
    `concurrency` calls at a time; the seconds it took."""
    from models import MemoryField

    started = time.perf_counter()
    queue = iter(batches)

    async def worker() -> None:
        for user, items in queue:
            await repo.append_items(user, MemoryField.EPISODIC_MEMORY, items, cap=cap)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def chat_turn_storage(
    repo: Any,
    users: Sequence[Any],
    chatter: Chatter,
    *,
    history: int,
    recall_k: int,
    turns_per_minute: int,
    cap: int,
) -> Latencies:
    """What a chat turn costs the storage, one turn per user, one at a time: the turn's context
    read (limits, the newest `history` episodes, recall of `recall_k` from the log with the
    message; one call) and the append of its two episodes (one call). The LLM is not called."""
    from models import MemoryField, Recall

    samples = []
    for index, user in enumerate(users):
        message = chatter.question()
        reply = chatter.text(600)
        ids = (str(uuid.uuid4()), str(uuid.uuid4()))
        started = time.perf_counter()
        await repo.begin_chat_turn(
            user,
            history=history,
            turn_ids=None,
            turns_per_minute=turns_per_minute,
            recall=Recall(query=message, k=recall_k),
        )
        await repo.append_items(
            user,
            MemoryField.EPISODIC_MEMORY,
            [
                {"id": ids[0], "role": "user", "content": message},
                {"id": ids[1], "role": "assistant", "content": reply},
            ],
            cap=cap,
        )
        samples.append((time.perf_counter() - started) * 1000)
        if index == 0:
            samples.clear()  # the first turn warms the connection's plans
    return Latencies(samples)


async def append_pairs(
    repo: Any, users: Sequence[Any], chatter: Chatter, *, cap: int
) -> tuple[Latencies, Latencies]:
    """The same one-KB item appended to `rewards` (not logged) and to `episodic_memory` (also
    written to the log, same SQL function), once per user each, one call at a time,
    alternating which goes first: (rewards, episodic_memory) wall-clock latencies."""
    from models import MemoryField

    timed: dict[MemoryField, list[float]] = {
        MemoryField.REWARDS: [],
        MemoryField.EPISODIC_MEMORY: [],
    }
    for index, user in enumerate(users):
        fields = list(timed)
        if index % 2:
            fields.reverse()
        item = chatter.episode(index)
        for list_field in fields:
            started = time.perf_counter()
            await repo.append_items(user, list_field, [dict(item)], cap=cap)
            timed[list_field].append((time.perf_counter() - started) * 1000)
    return Latencies(timed[MemoryField.REWARDS]), Latencies(timed[MemoryField.EPISODIC_MEMORY])
