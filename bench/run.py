"""`make bench`: throughput and latency of the memory API against a no-op authenticated
endpoint of the same app, append latency by list size, client setup and token verification
cost, with 1 and 2 uvicorn workers; prints a markdown table ready for the README.

Everything runs on this machine over loopback, bounded in time (about 2 minutes in all).
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
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from bench import verify_tokens
from bench.benchapp import NOOP_PATH, ROUND_TRIPS_PATH
from bench.loadgen import LoadResult, run_python, run_wrk
from bench.micro import MicroResult, client_setup
from bench.server import (
    RESULTS_DIR,
    AppServer,
    bench_token,
    create_auth_users,
    embedded_postgres,
    episode,
    seed_memories,
)

CONNECTIONS = 32
LIST_CAP = 500
READ_USERS = 64  # each with an identity and 10 episodes
APPEND_USERS = 256  # reset to 10 episodes before each append run
TEN_USERS = 1600  # 10 episodes each; one append per user: the list stays at 10-11
CAP_USERS = 64  # at the cap: every append trims the oldest
SINGLE_APPENDS = 300  # appends measured one at a time (1 connection), for each list size
SPREAD_ATTEMPTS = 3  # runs whose connections landed unevenly on the workers are repeated


@dataclass(frozen=True, slots=True)
class Users:
    read: list[uuid.UUID]
    append: list[uuid.UUID]
    ten: list[uuid.UUID]
    cap: list[uuid.UUID]

    def all(self) -> list[uuid.UUID]:
        return [*self.read, *self.append, *self.ten, *self.cap]


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
class Report:
    started: str
    machine: str
    load_before: tuple[float, float, float]
    rows: list[Row] = field(default_factory=list)
    append_by_size: list[Row] = field(default_factory=list)
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


class Bench:
    def __init__(self, data_dir: Path, dsn: str, users: Users, seconds: float) -> None:
        self.data_dir = data_dir
        self.dsn = dsn
        self.users = users
        self.seconds = seconds
        self.tokens = {uid: bench_token(uid) for uid in users.all()}
        self.episode_body = json.dumps(episode(7)).encode()
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
        """No-op, /api/me, reads and append at 32 connections; the no-op runs first and last
        and its mean is the baseline (a drifting machine shows as a gap between the two)."""
        read, append = self.users.read, self.users.append
        noop_first = self.throughput(server, "GET", NOOP_PATH, read, None)
        rows = [
            # the app's own auth-only route (it also serializes the verified claims)
            Row("GET /api/me", workers, self.throughput(server, "GET", "/api/me", read, None)),
            # the floor under every memory operation: its 3 round trips, nothing else
            Row(
                "3 round trips only (BEGIN+impersonation, select 1, COMMIT)",
                workers,
                self.throughput(server, "GET", ROUND_TRIPS_PATH, read, None),
            ),
            Row(
                "GET /api/memory",
                workers,
                self.throughput(server, "GET", "/api/memory", read, None),
            ),
            Row(
                "GET /api/memory/identity",
                workers,
                self.throughput(server, "GET", "/api/memory/identity", read, None),
            ),
        ]
        self.reset_append_users()
        rows.append(
            Row(
                "POST /api/memory/episodic_memory",
                workers,
                self.throughput(
                    server, "POST", "/api/memory/episodic_memory", append, self.episode_body
                ),
            )
        )
        noop_last = self.throughput(server, "GET", NOOP_PATH, read, None)
        baseline = (noop_first.rps + noop_last.rps) / 2
        noop = Row(f"GET {NOOP_PATH} (auth only)", workers, _mean(noop_first, noop_last))
        for row in [noop, *rows]:
            row.baseline = baseline
        return [noop, *rows]

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


def _mean(a: LoadResult, b: LoadResult) -> LoadResult:
    return LoadResult(
        requests=a.requests + b.requests,
        seconds=a.seconds + b.seconds,
        p50_ms=(a.p50_ms + b.p50_ms) / 2,
        p90_ms=(a.p90_ms + b.p90_ms) / 2,
        p99_ms=(a.p99_ms + b.p99_ms) / 2,
        max_ms=max(a.max_ms, b.max_ms),
        errors=a.errors + b.errors,
    )


def prepare(dsn: str) -> Users:
    users = Users(
        read=[uuid.uuid4() for _ in range(READ_USERS)],
        append=[uuid.uuid4() for _ in range(APPEND_USERS)],
        ten=[uuid.uuid4() for _ in range(TEN_USERS)],
        cap=[uuid.uuid4() for _ in range(CAP_USERS)],
    )

    async def seed() -> None:
        await create_auth_users(dsn, users.all())
        await seed_memories(dsn, [*users.read, *users.append, *users.ten], episodes=10)
        await seed_memories(dsn, users.cap, episodes=LIST_CAP)

    asyncio.run(seed())
    return users


def run(seconds: float, workers: list[int]) -> Report:
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
        for count in workers:
            _say(f"app with {count} worker(s)")
            with AppServer(data_dir, workers=count, env=env) as server:
                if bench is None:  # the schema exists once the app has started
                    users = prepare(postgres.dsn)
                    bench = Bench(data_dir, postgres.dsn, users, seconds)
                bench.warm_up(server, seconds=2 + count)
                rows = bench.throughput_rows(server, count)
                report.rows += rows
                if count == 1:
                    report.append_by_size = bench.append_by_size(server, rows[-1].result.rps)
    _say("micro-benchmarks")
    tokens = asyncio.run(verify_tokens.measure(iterations=2_000, batches=3))
    report.micro = [*client_setup(), *(MicroResult(t.name, t.microseconds) for t in tokens)]
    report.load_after = os.getloadavg()
    if bench is not None:
        report.notes += [f"connections unevenly spread over workers: {u}" for u in bench.uneven]
    errors = sum(r.result.errors for r in [*report.rows, *report.append_by_size])
    if errors:
        report.notes.append(f"{errors} requests failed (socket errors or status >= 400)")
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

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    return [
        "| goal | measured | |",
        "|---|---:|---|",
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
        f"| client setup ≥ 1000x cheaper than create_client() | {setup_ratio:,.0f}x |"
        f" {mark(setup_ratio >= 1000)} |",
        "",
    ]


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
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
    report = run(args.seconds, args.workers)
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
