"""`make bench`: throughput and latency of the memory API against a no-op authenticated
endpoint of the same app, append latency by list size, client setup and token verification
cost, with 1 and 2 uvicorn workers; one-connection latencies as ratios to `GET /api/me`, their
growth with what is stored (reads and a chat turn's storage calls), the conversation log's
search and its cost on appends; prints markdown tables ready for the README.

Everything runs on this machine over loopback, bounded in time (about 5 minutes in all, half
of it loading 220,000 log rows for the search rows). `--parts` runs some parts only and
`--quick` shrinks every data set (to try the bench itself, not to measure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg

from bench import verify_tokens
from bench.benchapp import NOOP_PATH, ROUND_TRIPS_PATH
from bench.loadgen import LoadResult, run_python, run_wrk
from bench.micro import (
    Latencies,
    MicroResult,
    append_log,
    append_pairs,
    bench_user,
    chat_turn_storage,
    client_setup,
    repository,
)
from bench.server import (
    RESULTS_DIR,
    AppServer,
    Chatter,
    bench_token,
    create_auth_users,
    embedded_postgres,
    episode,
    seed_memories,
)
from models import MemoryField

CONNECTIONS = 32
LIST_CAP = 500
READ_USERS = 64  # each with an identity and 10 episodes
APPEND_USERS = 256  # reset to 10 episodes before each append run
TEN_USERS = 1600  # 10 episodes each; one append per user: the list stays at 10-11
CAP_USERS = 64  # at the cap: every append trims the oldest
SINGLE_APPENDS = 300  # appends measured one at a time (1 connection), for each list size
SPREAD_ATTEMPTS = 3  # runs whose connections landed unevenly on the workers are repeated
PARTS = ("throughput", "single", "chat", "search", "micro")


@dataclass(frozen=True, slots=True)
class Sizes:
    """The data sets of the one-connection, chat and search rows (`--quick` shrinks them)."""

    one_users: int = 64  # identity + 10 one-KB episodes: the one-connection reads
    one_appends: int = 300  # one append per user, each holding 10 one-KB episodes
    growth_users: int = 16  # 500 one-KB episodes each
    cost_appends: int = 300  # users with 10 episodes and 10 rewards: one append to each list
    chat_turns: int = 150  # chat turns timed per list size
    search_user_episodes: int = 20_000  # the one user the search rows search
    search_users: int = 100  # then this many users ...
    search_user_rows: int = 2_000  # ... with this many logged episodes each
    search_queries: int = 200  # distinct questions; a row stops after all or its time
    search_seconds: float = 10.0
    load_concurrency: int = 2  # append calls at a time while loading the log


QUICK = Sizes(
    one_users=8,
    one_appends=40,
    growth_users=4,
    cost_appends=40,
    chat_turns=20,
    search_user_episodes=1_000,
    search_users=5,
    search_user_rows=200,
    search_queries=40,
    search_seconds=3.0,
)


@dataclass(frozen=True, slots=True)
class Users:
    read: list[uuid.UUID]
    append: list[uuid.UUID]
    ten: list[uuid.UUID]
    cap: list[uuid.UUID]
    one: list[uuid.UUID]  # 10 one-KB episodes
    one_append: list[uuid.UUID]  # 10 one-KB episodes, one append each
    growth: list[uuid.UUID]  # 500 one-KB episodes
    cost: list[uuid.UUID]  # 10 episodes and 10 rewards of one KB

    def all(self) -> list[uuid.UUID]:
        return [
            *self.read,
            *self.append,
            *self.ten,
            *self.cap,
            *self.one,
            *self.one_append,
            *self.growth,
            *self.cost,
        ]


@dataclass(slots=True)
class Row:
    label: str
    workers: int
    result: LoadResult
    baseline: float | None = None  # no-op req/s of the same run
    connections: int = 32

    @property
    def ratio(self) -> float | None:
        return self.result.rps / self.baseline if self.baseline else None


@dataclass(slots=True)
class LatencyRow:
    """p50/p99 of requests (or calls) made one at a time; `ratio` is p50 against the p50 of
    its table's reference row, measured in the same run."""

    table: str
    label: str
    count: int
    p50_ms: float
    p99_ms: float
    errors: int = 0
    ratio: float | None = None
    note: str = ""

    @classmethod
    def of(
        cls, table: str, label: str, result: LoadResult | Latencies, note: str = ""
    ) -> LatencyRow:
        if isinstance(result, Latencies):
            count, errors = len(result.samples_ms), 0
        else:
            count, errors = result.requests, result.errors
        return cls(table, label, count, result.p50_ms, result.p99_ms, errors, note=note)


def with_ratios(rows: list[LatencyRow], reference: LatencyRow) -> list[LatencyRow]:
    for row in rows:
        row.ratio = row.p50_ms / reference.p50_ms if reference.p50_ms else None
    return rows


ONE_CONNECTION = "one connection"
GROWTH = "growth"
LOG_COST = "log cost"
SEARCH = "search"


@dataclass(slots=True)
class Report:
    started: str
    machine: str
    load_before: tuple[float, float, float]
    rows: list[Row] = field(default_factory=list)
    append_by_size: list[Row] = field(default_factory=list)
    latency: list[LatencyRow] = field(default_factory=list)
    micro: list[MicroResult] = field(default_factory=list)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    notes: list[str] = field(default_factory=list)


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )


async def vacuum_analyze(dsn: str) -> None:
    """What autovacuum does after a bulk load, at once rather than some time later."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("vacuum analyze public.memory_episodes, public.memories")
    finally:
        await conn.close()


class Bench:
    def __init__(
        self, data_dir: Path, dsn: str, users: Users, seconds: float, sizes: Sizes
    ) -> None:
        self.data_dir = data_dir
        self.dsn = dsn
        self.users = users
        self.seconds = seconds
        self.sizes = sizes
        self.chatter = Chatter(seed=2)
        self.tokens = {uid: bench_token(uid) for uid in users.all()}
        self.episode_body = json.dumps(episode(7)).encode()
        self.kb_body = json.dumps(self.chatter.episode(1)).encode()  # one KB of words
        self.uneven: list[str] = []  # runs whose connections stayed unevenly spread

    def tokens_of(self, users: list[uuid.UUID]) -> list[str]:
        return [self.tokens[uid] for uid in users]

    def warm_up(self, server: AppServer, seconds: float) -> None:
        """Every user seen by every worker, a few times at this app's rates (first-sight work,
        caches, pool connections)."""
        everyone = self.tokens_of(self.users.all())
        run_wrk(server.base_url, "GET", NOOP_PATH, everyone, seconds=seconds)

    def throughput(
        self, server: AppServer, method: str, path: str, users: list[uuid.UUID], body: bytes | None
    ) -> LoadResult:
        tokens = self.tokens_of(users)
        run_wrk(server.base_url, method, path, tokens, seconds=1, body=body)  # settle
        result, spread = evenly_spread(
            server,
            lambda: run_wrk(server.base_url, method, path, tokens, seconds=self.seconds, body=body),
            settle=min(1.0, self.seconds / 2),
        )
        if spread is not None and not _balanced(spread, server.workers):
            self.uneven.append(f"{method} {path} with {server.workers} workers: {spread}")
        return result

    def reset_append_users(self) -> None:
        asyncio.run(seed_memories(self.dsn, self.users.append, episodes=10))

    def throughput_rows(self, server: AppServer, workers: int) -> list[Row]:
        """No-op, /api/me, reads and append at 32 connections. The no-op runs before and after
        every other row, and each row's ratio is to the mean of the two no-op runs around it:
        this host's speed drifts by 20-30% within minutes, less within seconds."""
        read, append = self.users.read, self.users.append
        measured: list[tuple[str, Callable[[], LoadResult]]] = [
            # the app's own auth-only route (it also serializes the verified claims)
            ("GET /api/me", lambda: self.throughput(server, "GET", "/api/me", read, None)),
            # the floor under every memory operation: its one round trip, nothing else
            (
                "1 round trip only (select 1 on a pool connection)",
                lambda: self.throughput(server, "GET", ROUND_TRIPS_PATH, read, None),
            ),
            ("GET /api/memory", lambda: self.throughput(server, "GET", "/api/memory", read, None)),
            (
                "GET /api/memory/identity",
                lambda: self.throughput(server, "GET", "/api/memory/identity", read, None),
            ),
            ("POST /api/memory/episodic_memory", lambda: self.append_throughput(server, append)),
        ]
        noops = [self.throughput(server, "GET", NOOP_PATH, read, None)]
        rows = []
        for label, measure in measured:
            row = Row(label, workers, measure())
            noops.append(self.throughput(server, "GET", NOOP_PATH, read, None))
            row.baseline = (noops[-2].rps + noops[-1].rps) / 2
            rows.append(row)
        noop = Row(f"GET {NOOP_PATH} (auth only)", workers, _mean(*noops))
        noop.baseline = noop.result.rps
        return [noop, *rows]

    def append_throughput(self, server: AppServer, users: list[uuid.UUID]) -> LoadResult:
        self.reset_append_users()
        return self.throughput(
            server, "POST", "/api/memory/episodic_memory", users, self.episode_body
        )

    def append_by_size(self, server: AppServer, append_rps: float) -> list[Row]:
        """Append latency with 10 stored vs. at the cap, alone (1 connection: the cost of one
        append) and at 32 connections (with queueing). Each 10-episode user gets one append,
        so those lists stay at 10-11; the cap users' lists stay at the cap (oldest dropped).
        wrk runs for its whole -d even when the count is reached: -d is sized from the append
        throughput just measured."""
        rows = []
        alone, crowd = self.users.ten[:SINGLE_APPENDS], self.users.ten[SINGLE_APPENDS:]
        for connections, ten_users in ((1, alone), (CONNECTIONS, crowd)):
            count = len(ten_users)
            per_request = (6.0 if connections == 1 else 2.0) / max(append_rps, 1.0)
            seconds = min(20.0, max(2.0, count * per_request))
            pair = []
            for label, users in (
                ("10 episodes stored", ten_users),
                (f"{LIST_CAP} episodes stored (the cap)", self.users.cap),
            ):
                result = run_wrk(
                    server.base_url,
                    "POST",
                    "/api/memory/episodic_memory",
                    self.tokens_of(users),
                    seconds=seconds,
                    connections=connections,
                    body=self.episode_body,
                    max_requests=count,
                )
                pair.append(Row(label, 1, result, connections=connections))
            for row in pair:
                row.baseline = pair[0].result.rps
            rows += pair
        return rows

    # --- one connection (issue 9): requests one at a time, one keep-alive client ----------

    def one_at_a_time(
        self,
        server: AppServer,
        method: str,
        path: str,
        users: list[uuid.UUID],
        *,
        body: bytes | None = None,
        count: int = 0,
        paths: list[str] | None = None,
        seconds: float | None = None,
    ) -> LoadResult:
        """wrk with one connection: each request waits for the previous answer. Reads settle
        for a second first; an append run sends `count` requests, one per user (round robin)."""
        tokens = self.tokens_of(users)
        seconds = seconds or max(1.0, self.seconds * 0.6)
        if method == "GET":
            run_wrk(server.base_url, method, path, tokens, seconds=1, connections=1, paths=paths)
        else:
            seconds = min(30.0, max(seconds, count * 0.02))
        return run_wrk(
            server.base_url,
            method,
            path,
            tokens,
            seconds=seconds,
            connections=1,
            body=body,
            max_requests=count,
            paths=paths,
        )

    def single_connection_rows(self, server: AppServer) -> list[LatencyRow]:
        """The one-connection rows (ratios to GET /api/me), the `?limit=10` growth pair
        and the cost of logging an append (episodic_memory against rewards)."""
        one, limit = self.users.one, "/api/memory/episodic_memory?limit=10"
        runs = [
            ("GET /api/me", "GET", "/api/me"),
            ("GET /api/memory/identity", "GET", "/api/memory/identity"),
            ("GET /api/memory (10 episodes of 1 KB)", "GET", "/api/memory"),
        ]
        rows = [
            LatencyRow.of(ONE_CONNECTION, label, self.one_at_a_time(server, m, p, one))
            for label, m, p in runs
        ]
        appended = self.one_at_a_time(
            server,
            "POST",
            "/api/memory/episodic_memory",
            self.users.one_append,
            body=self.kb_body,
            count=len(self.users.one_append),
        )
        rows.append(
            LatencyRow.of(
                ONE_CONNECTION, "POST /api/memory/episodic_memory (1 KB, 10 stored)", appended
            )
        )
        ten = LatencyRow.of(
            ONE_CONNECTION,
            f"GET {limit} (10 stored)",
            self.one_at_a_time(server, "GET", limit, one),
        )
        rows.append(ten)
        with_ratios(rows, rows[0])
        # 10 stored, 500, 500, 10: the host's drift during the pair cancels out of the ratio
        rounds: dict[str, list[LoadResult]] = {"ten": [], "full": []}
        half = max(1.0, self.seconds * 0.3)
        for size, users in (
            ("ten", one),
            ("full", self.users.growth),
            ("full", self.users.growth),
            ("ten", one),
        ):
            rounds[size].append(self.one_at_a_time(server, "GET", limit, users, seconds=half))
        growth = [
            LatencyRow.of(GROWTH, label, _mean(*rounds[size]), note="2 rounds, ABBA")
            for label, size in (
                (f"GET {limit}, 10 episodes of 1 KB stored", "ten"),
                (f"GET {limit}, 500 episodes of 1 KB stored", "full"),
            )
        ]
        with_ratios(growth, growth[0])
        # each user gets one append of each; two rounds in opposite orders (drift cancels)
        halves = self.users.cost[::2], self.users.cost[1::2]
        results: dict[str, list[LoadResult]] = {"rewards": [], "episodic_memory": []}
        for list_field, users in (
            ("rewards", halves[0]),
            ("episodic_memory", halves[0]),
            ("episodic_memory", halves[1]),
            ("rewards", halves[1]),
        ):
            path = f"/api/memory/{list_field}"
            results[list_field].append(
                self.one_at_a_time(server, "POST", path, users, body=self.kb_body, count=len(users))
            )
        cost = [
            LatencyRow.of(
                LOG_COST, label, _mean(*results[list_field]), note="10 items stored; 2 rounds"
            )
            for label, list_field in (
                ("POST /api/memory/rewards (1 KB, not logged)", "rewards"),
                ("POST /api/memory/episodic_memory (1 KB, logged)", "episodic_memory"),
            )
        ]
        with_ratios(cost, cost[0])
        return [*rows, *growth, *cost]

    # --- a chat turn's storage time by list size (issue 9), on the repository -------------

    def chat_rows(self) -> list[LatencyRow]:
        """A chat turn's storage calls (context read with history 20 and recall 5, then the
        append of its two episodes), with 10 and with 500 one-KB episodes stored (also in the
        log), straight on the repository: one turn per user for 10 stored, a few turns per user
        at the cap."""
        return asyncio.run(self._chat_rows())

    async def _chat_rows(self) -> list[LatencyRow]:
        turns = self.sizes.chat_turns
        ten = [uuid.uuid4() for _ in range(turns + 1)]
        full = [uuid.uuid4() for _ in range(self.sizes.growth_users)]
        await create_auth_users(self.dsn, [*ten, *full])
        users_ten = [bench_user(uid) for uid in ten]
        users_full = [bench_user(uid) for uid in full]
        async with repository(self.dsn, connections=2) as repo:
            batches = [(u, [self.chatter.episode(i) for i in range(10)]) for u in users_ten]
            for user in users_full:
                for start in range(0, LIST_CAP, 100):
                    batches.append((user, [self.chatter.episode(start + i) for i in range(100)]))
            await append_log(repo, batches, cap=LIST_CAP)
            # Planned on the loaded data, as after autovacuum: whether it had run yet decided
            # recall's plans (a context read with recall once took 5.7 ms against 2.3).
            await vacuum_analyze(self.dsn)
            rows = []
            for label, users in (
                ("chat turn's storage calls, 10 episodes of 1 KB stored", users_ten),
                (
                    "chat turn's storage calls, 500 episodes of 1 KB stored",
                    [users_full[i % len(users_full)] for i in range(turns + 1)],
                ),
            ):
                latencies = await chat_turn_storage(
                    repo,
                    users,
                    self.chatter,
                    history=20,
                    recall_k=5,
                    turns_per_minute=30,
                    cap=LIST_CAP,
                )
                rows.append(LatencyRow.of(GROWTH, label, latencies, note="repository, no HTTP"))
            with_ratios(rows, rows[0])
            # the log's cost on an append, without HTTP: the chat users (10 episodes stored and
            # their turn's two, 12 rewards) append the same item to rewards and to
            # episodic_memory in turn
            for user in users_ten:  # as many rewards as episodes stored (12)
                kb = [self.chatter.episode(i) for i in range(12)]
                await repo.append_items(user, MemoryField.REWARDS, kb, cap=LIST_CAP)
            rewards, episodes = await append_pairs(repo, users_ten, self.chatter, cap=LIST_CAP)
            note = "repository append_items, no HTTP; alternating"
            cost = [
                LatencyRow.of(
                    LOG_COST, "append_items to rewards (1 KB, not logged)", rewards, note
                ),
                LatencyRow.of(
                    LOG_COST, "append_items to episodic_memory (1 KB, logged)", episodes, note
                ),
            ]
        return [*rows, *with_ratios(cost, cost[0])]

    # --- search of the conversation log ----------------------------------------------------

    def search_rows(self, server: AppServer) -> list[LatencyRow]:
        """Search p50/p99 through the API, one connection, varied natural-language questions
        made of words in the data: one user holding `search_user_episodes` in the log, then
        the same with `search_users` more users of `search_user_rows` each in the table (one
        of those searched too). Loaded through the repository's append path (batches of 100,
        one SQL call each), then `vacuum analyze` as autovacuum would after a bulk load."""
        sizes = self.sizes
        main_id = uuid.uuid4()
        others = [uuid.uuid4() for _ in range(sizes.search_users)]
        asyncio.run(create_auth_users(self.dsn, [main_id, *others]))
        self.tokens.update({uid: bench_token(uid) for uid in [main_id, *others]})
        texts = [self.chatter.episode(i) for i in range(sizes.search_user_episodes)]
        questions = list(
            dict.fromkeys(self.chatter.question() for _ in range(sizes.search_queries * 2))
        )[: sizes.search_queries]
        paths = [f"/api/memory/search?q={urllib.parse.quote(q)}&limit=10" for q in questions]
        main = bench_user(main_id)
        first = [(main, texts[i : i + 100]) for i in range(0, len(texts), 100)]
        seconds = self._load(first)
        rows = []
        total = sizes.search_user_episodes
        load_note = f"{total:,} rows loaded in {seconds:.0f} s ({total / seconds:,.0f} rows/s)"
        rows.append(
            self._search_row(
                server, main_id, paths, f"1 user, {total:,} episodes", total, load_note
            )
        )
        # The other users' episodes repeat the first user's texts, each user a different
        # slice: generating 200,000 distinct texts would take longer than loading them.
        batches = []
        for k, uid in enumerate(others):
            user = bench_user(uid)
            start = k * sizes.search_user_rows
            items = [texts[(start + i) % len(texts)] for i in range(sizes.search_user_rows)]
            batches += [(user, items[i : i + 100]) for i in range(0, len(items), 100)]
        seconds = self._load(batches)
        added = sizes.search_users * sizes.search_user_rows
        total += added
        load_note = f"{added:,} rows loaded in {seconds:.0f} s ({added / seconds:,.0f} rows/s)"
        rows.append(
            self._search_row(
                server,
                others[0],
                paths,
                f"1 of {sizes.search_users} users of {sizes.search_user_rows:,} episodes",
                total,
                load_note,
            )
        )
        rows.append(
            self._search_row(
                server, main_id, paths, f"the user of {sizes.search_user_episodes:,}", total, ""
            )
        )
        return rows

    def _load(self, batches: list[tuple[Any, list[dict[str, Any]]]]) -> float:
        async def load() -> float:
            async with repository(self.dsn, connections=self.sizes.load_concurrency) as repo:
                seconds = await append_log(
                    repo, batches, cap=LIST_CAP, concurrency=self.sizes.load_concurrency
                )
            await vacuum_analyze(self.dsn)
            return seconds

        _say(f"loading {sum(len(items) for _, items in batches):,} log rows")
        return asyncio.run(load())

    def _search_row(
        self,
        server: AppServer,
        user_id: uuid.UUID,
        paths: list[str],
        label: str,
        rows_in_table: int,
        note: str,
    ) -> LatencyRow:
        result = self.one_at_a_time(
            server,
            "GET",
            "/api/memory/search",
            [user_id],
            paths=paths,
            count=len(paths),
            seconds=self.sizes.search_seconds,
        )
        row = LatencyRow.of(
            SEARCH, f"{label}; {rows_in_table:,} rows in the log table", result, note
        )
        return row


def evenly_spread(
    server: AppServer, measure: Callable[[], LoadResult], *, settle: float
) -> tuple[LoadResult, list[int] | None]:
    """Run `measure` (a load run); with several workers, look after `settle` seconds at how
    its connections landed on them, and measure again (a few times at most) when unevenly."""
    result, spread = _measure_watching_spread(server, measure, settle)
    for _ in range(SPREAD_ATTEMPTS - 1):
        if server.workers == 1 or spread is None or _balanced(spread, server.workers):
            break
        _say(f"connections per worker {spread}: uneven, measuring again")
        result, spread = _measure_watching_spread(server, measure, settle)
    return result, spread


def _measure_watching_spread(
    server: AppServer, measure: Callable[[], LoadResult], settle: float
) -> tuple[LoadResult, list[int] | None]:
    if server.workers == 1:
        return measure(), None
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(measure)
        time.sleep(settle)
        spread = server.connections_per_worker()
        return future.result(), spread


def _balanced(spread: list[int], workers: int) -> bool:
    """Every worker holds 2 connections or more (of 32). Measured with 2 workers on the no-op
    route: 16/16 and 4/28 serve the same, 1/31 7% less, 0/32 about half."""
    return len(spread) == workers and min(spread) >= CONNECTIONS / workers / 8


def _mean(*results: LoadResult) -> LoadResult:
    """Several runs of one row as one: requests and time summed, percentiles averaged."""
    count = len(results)
    return LoadResult(
        requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results),
        p50_ms=sum(r.p50_ms for r in results) / count,
        p90_ms=sum(r.p90_ms for r in results) / count,
        p99_ms=sum(r.p99_ms for r in results) / count,
        max_ms=max(r.max_ms for r in results),
        errors=sum(r.errors for r in results),
    )


def prepare(dsn: str, sizes: Sizes = Sizes()) -> Users:
    users = Users(
        read=[uuid.uuid4() for _ in range(READ_USERS)],
        append=[uuid.uuid4() for _ in range(APPEND_USERS)],
        ten=[uuid.uuid4() for _ in range(TEN_USERS)],
        cap=[uuid.uuid4() for _ in range(CAP_USERS)],
        one=[uuid.uuid4() for _ in range(sizes.one_users)],
        one_append=[uuid.uuid4() for _ in range(sizes.one_appends)],
        growth=[uuid.uuid4() for _ in range(sizes.growth_users)],
        cost=[uuid.uuid4() for _ in range(sizes.cost_appends)],
    )
    kb = Chatter(seed=3).episode  # one KB of words, different each call

    async def seed() -> None:
        await create_auth_users(dsn, users.all())
        await seed_memories(dsn, [*users.read, *users.append, *users.ten], episodes=10)
        await seed_memories(dsn, users.cap, episodes=LIST_CAP)
        await seed_memories(
            dsn, [*users.one, *users.one_append, *users.cost], episodes=10, items=kb
        )
        await seed_memories(dsn, users.growth, episodes=LIST_CAP, items=kb)
        await seed_memories(dsn, users.cost, episodes=10, items=kb, field="rewards")

    asyncio.run(seed())
    return users


def run(seconds: float, workers: list[int], parts: set[str], sizes: Sizes) -> Report:
    report = Report(
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine_description(),
        load_before=os.getloadavg(),
    )
    env = {"MEMORY_LIST_CAP": str(LIST_CAP), "DB_POOL_MAX_SIZE": "10"}
    with (
        tempfile.TemporaryDirectory(prefix="bench-data-") as tmp,
        embedded_postgres(Path(tmp)) as postgres,
    ):
        data_dir = Path(tmp)
        bench: Bench | None = None
        for count in workers if parts & {"throughput", "single"} else workers[:1]:
            _say(f"app with {count} worker(s)")
            with AppServer(data_dir, workers=count, env=env) as server:
                if bench is None:  # the schema exists once the app has started
                    users = prepare(postgres.dsn, sizes)
                    bench = Bench(data_dir, postgres.dsn, users, seconds, sizes)
                bench.warm_up(server, seconds=2 + count)
                if count == 1 and "single" in parts:
                    _say("one connection")
                    report.latency += bench.single_connection_rows(server)
                if "throughput" not in parts:
                    continue
                rows = bench.throughput_rows(server, count)
                report.rows += rows
                if count == 1:
                    report.append_by_size = bench.append_by_size(server, rows[-1].result.rps)
        assert bench is not None
        if "chat" in parts:
            _say("chat turn storage calls")
            report.latency += bench.chat_rows()
        if "search" in parts:
            with AppServer(data_dir, workers=1, env=env) as server:
                report.latency += bench.search_rows(server)
    if "micro" in parts:
        _say("micro-benchmarks")
        tokens = asyncio.run(verify_tokens.measure(iterations=2_000, batches=3))
        report.micro = [*client_setup(), *(MicroResult(t.name, t.microseconds) for t in tokens)]
    report.load_after = os.getloadavg()
    report.notes += [f"connections unevenly spread over workers: {u}" for u in bench.uneven]
    failed = [(r.label, r.result.errors) for r in [*report.rows, *report.append_by_size]]
    failed += [(r.label, r.errors) for r in report.latency]
    for label, errors in failed:
        if errors:
            report.notes.append(f"{label}: {errors} requests failed (socket errors, status >= 400)")
    return report


def compare_generators(seconds: float) -> None:
    """wrk vs. the asyncio generator on the no-op endpoint and GET /api/memory, with 1 and 2
    workers, with the CPU each generator used (the server has what is left of 2 cores)."""
    print("| generator | workers | endpoint | req/s | p50 ms | p99 ms | generator CPU |")
    print("|---|---:|---|---:|---:|---:|---:|")
    generators: list[tuple[str, Callable[..., LoadResult]]] = [
        ("wrk", run_wrk),
        ("asyncio (uvloop, raw sockets)", run_python),
    ]
    with (
        tempfile.TemporaryDirectory(prefix="bench-data-") as tmp,
        embedded_postgres(Path(tmp)) as postgres,
    ):
        tokens: list[str] = []
        for workers in (1, 2):
            with AppServer(Path(tmp), workers=workers) as server:
                if not tokens:
                    tokens = [bench_token(uid) for uid in prepare(postgres.dsn).read]
                for name, generator in generators:
                    for path in (NOOP_PATH, "/api/memory"):
                        generator(server.base_url, "GET", path, tokens, seconds=1)
                        cpu_used: list[float] = []
                        measure = partial(
                            _with_cpu, generator, server.base_url, path, tokens, seconds, cpu_used
                        )
                        r, _ = evenly_spread(server, measure, settle=1.0)
                        cpu = cpu_used[-1]
                        print(
                            f"| {name} | {workers} | GET {path} | {r.rps:.0f} | {r.p50_ms:.1f}"
                            f" | {r.p99_ms:.1f} | {100 * cpu:.0f}% of a core |"
                        )


def _with_cpu(
    generator: Callable[..., LoadResult],
    base_url: str,
    path: str,
    tokens: list[str],
    seconds: float,
    cpu_used: list[float],
) -> LoadResult:
    """One run of `generator`; appends the share of a core it used to `cpu_used`."""
    before = _generator_cpu()
    result = generator(base_url, "GET", path, tokens, seconds=seconds)
    cpu_used.append((_generator_cpu() - before) / result.seconds)
    return result


def _generator_cpu() -> float:
    """CPU seconds of this process (the asyncio generator) and its finished children (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def format_report(report: Report) -> str:
    lines = [
        f"Measured {report.started} on {report.machine}; load generator wrk"
        f" ({CONNECTIONS} keep-alive connections, 1 thread), embedded PostgreSQL, loopback."
        f" Load average before/after: {report.load_before[0]:.2f} / {report.load_after[0]:.2f}.",
    ]
    if report.rows:
        lines += [
            "",
            "| endpoint (32 connections) | workers | req/s | p50 ms | p99 ms | vs no-op |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for row in report.rows:
        r = row.result
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        lines.append(
            f"| {row.label} | {row.workers} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f}"
            f" | {ratio} |"
        )
    if report.append_by_size:
        lines += [
            "",
            "| append, 1 worker | connections | appends | p50 ms | p99 ms | p50 vs 10 stored |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for row in report.append_by_size:
        r = row.result
        base = next(
            x.result.p50_ms
            for x in report.append_by_size
            if x.connections == row.connections and x.label.startswith("10 ")
        )
        lines.append(
            f"| {row.label} | {row.connections} | {r.requests:,} | {r.p50_ms:.1f}"
            f" | {r.p99_ms:.1f} | {r.p50_ms / base:.2f}x |"
        )
    lines += latency_tables(report)
    if report.micro:
        lines += ["", "| per call (one core) | µs | ratio |", "|---|---:|---:|"]
    micro = {m.name: m.microseconds for m in report.micro}
    for m in report.micro:
        ratio = ""
        if m.name.startswith("seed"):
            ours = next(v for k, v in micro.items() if k.startswith("per-request"))
            ratio = f"{m.microseconds / ours:,.0f}x the per-request client"
        lines.append(f"| {m.name} | {m.microseconds:,.1f} | {ratio} |")
    lines += ["", *goals(report)]
    lines += [f"Note: {note}" for note in report.notes]
    return "\n".join(lines)


LATENCY_TABLES = {
    ONE_CONNECTION: (
        "one connection, 1 worker (sequential, one keep-alive client)",
        "p50 vs GET /api/me",
    ),
    GROWTH: ("growth with what is stored (one at a time)", "p50 vs 10 stored"),
    LOG_COST: ("append with and without the log (one connection)", "p50 vs not logged"),
    SEARCH: ("GET /api/memory/search, one connection, varied questions", ""),
}


def latency_tables(report: Report) -> list[str]:
    lines: list[str] = []
    for table, (title, ratio_title) in LATENCY_TABLES.items():
        rows = [r for r in report.latency if r.table == table]
        if not rows:
            continue
        lines += [
            "",
            f"| {title} | requests | p50 ms | p99 ms | {ratio_title} | note |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for row in rows:
            ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
            lines.append(
                f"| {row.label} | {row.count:,} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | {ratio}"
                f" | {row.note} |"
            )
    return lines


def goals(report: Report) -> list[str]:
    """The issue's goals (not assertions): met or not, with the figure."""
    one = [r for r in report.rows if r.workers == 1]
    reads = [r for r in one if r.label.startswith("GET /api/memory")]
    read_ratio = min((r.ratio or 0.0) for r in reads) if reads else 0.0
    all_reads = [r for r in report.rows if r.label.startswith("GET /api/memory")]
    read_p99 = max((r.result.p99_ms for r in all_reads), default=0.0)
    worst_p99 = max((r.result.p99_ms for r in report.rows), default=0.0)

    def cap_ratio(connections: int) -> float:
        pair = [r.result.p50_ms for r in report.append_by_size if r.connections == connections]
        return pair[1] / pair[0] if len(pair) == 2 and pair[0] else 0.0

    micro = {m.name: m.microseconds for m in report.micro}
    ours = next((v for k, v in micro.items() if k.startswith("per-request")), 0.0)
    seed = next((v for k, v in micro.items() if k.startswith("seed")), 0.0)
    setup_ratio = seed / ours if ours else 0.0

    def latency(table: str, start: str) -> list[LatencyRow]:
        return [r for r in report.latency if r.table == table and r.label.startswith(start)]

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    extra = []
    one_reads = latency(ONE_CONNECTION, "GET /api/memory")
    if one_reads:
        worst = max(r.ratio or 0.0 for r in one_reads)
        extra.append(
            f"| read p50 ≤ 1.4 x GET /api/me (one connection, worst read) | {worst:.2f}x"
            f" | {mark(worst <= 1.4)} |"
        )
    for row in latency(ONE_CONNECTION, "POST"):
        ratio = row.ratio or 0.0
        extra.append(
            f"| append p50 ≤ 1.8 x GET /api/me (one connection, 10 stored) | {ratio:.2f}x"
            f" | {mark(ratio <= 1.8)} |"
        )
    # issue 9: 32-connection reads against the no-op, worst read, per worker count (the
    # issue's "now 0.37" was the 1-worker figure)
    for workers in sorted({r.workers for r in all_reads}):
        ratio = min((r.ratio or 0.0) for r in all_reads if r.workers == workers)
        extra.append(
            f"| reads ≥ 0.6 x no-op req/s (32 connections, {workers} worker(s), worst read row)"
            f" | {ratio:.2f} | {mark(ratio >= 0.6)} |"
        )
    for start, what in (("GET", "?limit=10"), ("chat", "a chat turn's storage calls")):
        for row in latency(GROWTH, start)[1:]:
            ratio = row.ratio or 0.0
            extra.append(
                f"| {what}: 500 stored ≤ 1.25 x 10 stored (p50) | {ratio:.2f}x"
                f" | {mark(ratio <= 1.25)} |"
            )
    for row in [r for r in report.latency if r.table == LOG_COST]:
        if "episodic_memory" not in row.label:
            continue
        ratio = row.ratio or 0.0
        where = "API" if row.label.startswith("POST") else "repository"
        extra.append(
            f"| logged append ≤ 1.3 x the append without the log (p50, {where}) | {ratio:.2f}x"
            f" | {mark(ratio <= 1.3)} |"
        )
    for row in latency(SEARCH, "1 user"):
        extra.append(
            f"| search p99 < 20 ms, one user of 20,000 episodes | {row.p99_ms:.1f} ms"
            f" | {mark(row.p99_ms < 20)} |"
        )

    throughput = [
        f"| reads ≥ 0.5 x no-op (1 worker, worst read) | {read_ratio:.2f}"
        f" | {mark(read_ratio >= 0.5)} |",
        f"| p99 < 25 ms at 32 connections: reads (worst read row) | {read_p99:.1f} ms"
        f" | {mark(read_p99 < 25)} |",
        f"| p99 < 25 ms at 32 connections: every row | {worst_p99:.1f} ms"
        f" | {mark(worst_p99 < 25)} |",
        f"| append at cap ≤ 2 x append at 10 (p50, 1 connection) | {cap_ratio(1):.2f}x"
        f" | {mark(cap_ratio(1) <= 2)} |",
        f"| append at cap ≤ 2 x append at 10 (p50, 32 connections) | {cap_ratio(32):.2f}x"
        f" | {mark(cap_ratio(32) <= 2)} |",
    ]
    setup = [
        f"| client setup ≥ 1000x cheaper than create_client() | {setup_ratio:,.0f}x |"
        f" {mark(setup_ratio >= 1000)} |"
    ]
    return [
        "| goal | measured | |",
        "|---|---:|---|",
        *(throughput if report.rows else []),
        *(setup if report.micro else []),
        *extra,
        "",
    ]


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="throughput: 32-connection rows and appends by size; single: one-connection rows;"
        " chat: a chat turn's storage calls; search: the log's search; micro: per-call costs",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data sets and short runs (try, not measure)"
    )
    parser.add_argument(
        "--compare-generators", action="store_true", help="wrk vs. asyncio generator, then exit"
    )
    args = parser.parse_args(argv)
    if args.compare_generators:
        compare_generators(args.seconds)
        return 0
    if os.getloadavg()[0] > 1.0:
        load = os.getloadavg()[0]
        _say(f"warning: load average {load:.2f}: the machine is busy, figures will be low")
    sizes = QUICK if args.quick else Sizes()
    seconds = min(args.seconds, 1.0) if args.quick else args.seconds
    report = run(seconds, args.workers, set(args.parts), sizes)
    text = format_report(report)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"bench-{stamp}.md").write_text(text + "\n")
    (RESULTS_DIR / f"bench-{stamp}.json").write_text(
        json.dumps(asdict(report), default=str, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
