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
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import verify_tokens
from bench.benchapp import NOOP_PATH
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
        return run_wrk(server.base_url, method, path, tokens, seconds=self.seconds, body=body)

    def reset_append_users(self) -> None:
        asyncio.run(seed_memories(self.dsn, self.users.append, episodes=10))

    def throughput_rows(self, server: AppServer, workers: int) -> list[Row]:
        """No-op, reads and append at 32 connections; the no-op runs first and last and its
        mean is the baseline (a drifting machine shows as a gap between the two)."""
        read, append = self.users.read, self.users.append
        noop_first = self.throughput(server, "GET", NOOP_PATH, read, None)
        rows = [
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
        """Append latency with 10 stored vs. at the cap: the same number of appends at 32
        connections; the 10-episode users get one append each, so their lists stay at 10-11.
        (wrk runs for its whole -d even when the count is reached: -d is sized from the
        append throughput just measured.)"""
        count = len(self.users.ten)
        seconds = min(20.0, max(2.0, 2 * count / max(append_rps, 1.0)))
        rows = []
        for label, users in (
            ("10 episodes stored", self.users.ten),
            (f"{LIST_CAP} episodes stored (the cap)", self.users.cap),
        ):
            result = run_wrk(
                server.base_url,
                "POST",
                "/api/memory/episodic_memory",
                self.tokens_of(users),
                seconds=seconds,
                body=self.episode_body,
                max_requests=count,
            )
            rows.append(Row(label, 1, result))
        for row in rows:
            row.baseline = rows[0].result.rps
        return rows


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
    errors = sum(r.result.errors for r in [*report.rows, *report.append_by_size])
    if errors:
        report.notes.append(f"{errors} requests failed (socket errors or status >= 400)")
    return report


def compare_generators(seconds: float) -> None:
    """wrk vs. the asyncio generator on the no-op endpoint and GET /api/memory (1 worker)."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-data-") as tmp,
        embedded_postgres(Path(tmp)) as postgres,
        AppServer(Path(tmp), workers=1) as server,
    ):
        users = prepare(postgres.dsn)
        tokens = [bench_token(uid) for uid in users.read]
        print("| generator | endpoint | req/s | p50 ms | p99 ms |")
        print("|---|---|---:|---:|---:|")
        generators: list[tuple[str, Callable[..., LoadResult]]] = [
            ("wrk", run_wrk),
            ("asyncio (uvloop, raw sockets)", run_python),
        ]
        for name, generator in generators:
            for path in (NOOP_PATH, "/api/memory"):
                generator(server.base_url, "GET", path, tokens, seconds=1)
                r = generator(server.base_url, "GET", path, tokens, seconds=seconds)
                print(f"| {name} | GET {path} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} |")


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
        "| append, 1 worker, 32 connections | appends | p50 ms | p99 ms | p50 vs 10 stored |",
        "|---|---:|---:|---:|---:|",
    ]
    base_p50 = report.append_by_size[0].result.p50_ms if report.append_by_size else 0.0
    for row in report.append_by_size:
        r = row.result
        lines.append(
            f"| {row.label} | {r.requests:,} | {r.p50_ms:.1f} | {r.p99_ms:.1f}"
            f" | {r.p50_ms / base_p50:.2f}x |"
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
    worst_p99 = max((r.result.p99_ms for r in report.rows), default=0.0)
    size = report.append_by_size
    cap_ratio = size[1].result.p50_ms / size[0].result.p50_ms if len(size) == 2 else 0.0
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
        f"| p99 < 25 ms at 32 connections (worst row) | {worst_p99:.1f} ms"
        f" | {mark(worst_p99 < 25)} |",
        f"| append at cap ≤ 2 x append at 10 (p50) | {cap_ratio:.2f}x | {mark(cap_ratio <= 2)} |",
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
