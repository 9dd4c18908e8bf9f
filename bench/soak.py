"""`make soak`: a bounded reliability run. 2 uvicorn workers, many users appending, patching and
reading at once, while the embedded PostgreSQL is stopped and started again under the running
app. Afterwards every acknowledged (2xx) append must be stored exactly once, no reply may be a
5xx other than 503, and no user may hold another user's item. Exits 1 when any of that fails.

Appends carry an Idempotency-Key and are retried with it after a 503 or a lost connection (a
client that did not hear the answer can not know whether it was stored): that is what makes
"exactly once" possible, and what this run checks.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.server import RESULTS_DIR, AppServer, bench_token, create_auth_users, embedded_postgres

USERS = 32
LOOPS_PER_USER = 2  # two concurrent clients per user: appends to one row also race
REQUEST_TIMEOUT_SECONDS = 15.0
RETRY_GIVE_UP_SECONDS = 40.0  # an append not acknowledged by then counts as unacknowledged


@dataclass(slots=True)
class Stats:
    requests: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    acked_items: dict[uuid.UUID, list[str]] = field(default_factory=dict)
    acked_appends: int = 0
    unacked_appends: int = 0
    retries: int = 0
    foreign_seen: int = 0
    first_ok_after_restart: float | None = None
    errors_during_outage: int = 0
    unavailable_window: list[float] = field(default_factory=list)  # first and last 503 (s)


@dataclass(slots=True)
class Timeline:
    started: float
    outage_start: float | None = None
    outage_end: float | None = None

    @property
    def down(self) -> bool:
        return self.outage_start is not None and self.outage_end is None


class Client:
    """One user's client: its own keep-alive connections, its own token."""

    def __init__(self, base_url: str, user: uuid.UUID, stats: Stats, timeline: Timeline) -> None:
        self.user = user
        self.stats = stats
        self.timeline = timeline
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {bench_token(user)}"},
            timeout=REQUEST_TIMEOUT_SECONDS,
            limits=httpx.Limits(max_connections=LOOPS_PER_USER),
        )
        stats.acked_items.setdefault(user, [])

    async def request(
        self, kind: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One request, counted; None when the connection failed or timed out."""
        self.stats.requests += 1
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self.stats.transport_errors[type(exc).__name__] += 1
            return None
        self.stats.statuses[(kind, response.status_code)] += 1
        restarted_at = self.timeline.outage_end
        first_after_restart = self.stats.first_ok_after_restart is None and restarted_at is not None
        if response.is_success and first_after_restart and restarted_at is not None:
            self.stats.first_ok_after_restart = time.monotonic() - restarted_at
        if response.status_code >= 500 and self.timeline.down:
            self.stats.errors_during_outage += 1
        if response.status_code == 503:
            seen = time.monotonic() - self.timeline.started
            window = self.stats.unavailable_window
            self.stats.unavailable_window = [min([seen, *window[:1]]), max([seen, *window[1:]])]
        return response

    async def append(self, loop: int, seq: int) -> None:
        """Append 1-3 items with an Idempotency-Key, retrying with the same key until it is
        acknowledged or RETRY_GIVE_UP_SECONDS pass."""
        key = f"soak-{self.user}-{loop}-{seq}"
        items = [
            {"owner": str(self.user), "loop": loop, "seq": seq, "part": part, "text": "hi " * 20}
            for part in range(random.randint(1, 3))
        ]
        give_up = time.monotonic() + RETRY_GIVE_UP_SECONDS
        first = True
        while time.monotonic() < give_up:
            if not first:
                self.stats.retries += 1
            first = False
            response = await self.request(
                "append",
                "POST",
                "/api/memory/episodic_memory",
                json=items,
                headers={"Idempotency-Key": key},
            )
            if response is not None and response.status_code == 201:
                stored = response.json()
                self.stats.acked_items[self.user].extend(item["id"] for item in stored)
                self.stats.acked_appends += 1
                return
            if response is not None and response.status_code != 503:
                return  # an unexpected status: counted, not retried
            retry_after = float(response.headers.get("Retry-After", "0.5")) if response else 0.5
            await asyncio.sleep(min(retry_after, 1.0) * random.uniform(0.5, 1.5))
        self.stats.unacked_appends += 1

    async def patch(self, loop: int, seq: int) -> None:
        await self.request(
            "patch",
            "PATCH",
            "/api/memory/current_state",
            json={f"loop{loop}": seq, "mood": random.choice(["happy", "sleepy", None])},
        )

    async def read(self) -> None:
        path = random.choice(["/api/memory", "/api/memory/episodic_memory?limit=20"])
        response = await self.request("read", "GET", path)
        if response is not None and response.status_code == 200:
            body = response.json()
            items = body["episodic_memory"] if isinstance(body, dict) else body
            self.stats.foreign_seen += sum(1 for i in items if i.get("owner") != str(self.user))

    async def run(self, loop: int, until: float) -> None:
        seq = 0
        while time.monotonic() < until:
            seq += 1
            roll = random.random()
            if roll < 0.5:
                await self.append(loop, seq)
            elif roll < 0.7:
                await self.patch(loop, seq)
            else:
                await self.read()
            await asyncio.sleep(random.uniform(0, 0.01))


async def stop_and_start(postgres: Any, timeline: Timeline, at: float, down: float) -> None:
    """Stop the embedded PostgreSQL (pg_ctl stop -m fast) under the running app, keep it down
    for `down` seconds, then start it again (pg_ctl start); the app is not restarted."""
    await asyncio.sleep(at)
    _say("stopping PostgreSQL (pg_ctl stop -m fast)")
    timeline.outage_start = time.monotonic()
    await asyncio.to_thread(postgres.pause)
    await asyncio.sleep(down)
    _say("starting PostgreSQL again (pg_ctl start)")
    await asyncio.to_thread(postgres.resume)
    timeline.outage_end = time.monotonic()


async def verify(base_url: str, dsn: str, stats: Stats) -> dict[str, int]:
    """Read every user's episodes back through the API (as that user) and check them in SQL
    as the superuser too."""
    lost = duplicated = foreign = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for user, acked in stats.acked_items.items():
            response = await http.get(
                "/api/memory/episodic_memory",
                headers={"Authorization": f"Bearer {bench_token(user)}"},
            )
            response.raise_for_status()
            stored = response.json()
            ids = Counter(item["id"] for item in stored)
            lost += sum(1 for item_id in acked if ids[item_id] == 0)
            duplicated += sum(count - 1 for count in ids.values() if count > 1)
            logical = Counter((i.get("loop"), i.get("seq"), i.get("part")) for i in stored)
            duplicated += sum(count - 1 for count in logical.values() if count > 1)
            foreign += sum(1 for item in stored if item.get("owner") != str(user))
    conn = await asyncpg.connect(dsn)
    try:
        foreign_in_db: int = await conn.fetchval(
            "select count(*) from public.memories m, jsonb_array_elements(m.episodic_memory) e"
            " where e ->> 'owner' is distinct from m.user_id::text"
        )
    finally:
        await conn.close()
    return {"lost": lost, "duplicated": duplicated, "foreign": foreign + foreign_in_db}


async def soak(
    base_url: str, dsn: str, postgres: Any, seconds: float, outage_at: float, down: float
) -> tuple[Stats, dict[str, int], Timeline]:
    stats = Stats()
    timeline = Timeline(started=time.monotonic())
    users = [uuid.uuid4() for _ in range(USERS)]
    await create_auth_users(dsn, users)
    clients = [Client(base_url, user, stats, timeline) for user in users]
    until = time.monotonic() + seconds
    try:
        await asyncio.gather(
            stop_and_start(postgres, timeline, outage_at, down),
            *(c.run(loop, until) for c in clients for loop in range(LOOPS_PER_USER)),
        )
    finally:
        await asyncio.gather(*(c.http.aclose() for c in clients))
    _say("load finished; verifying")
    return stats, await verify(base_url, dsn, stats), timeline


def report(stats: Stats, checks: dict[str, int], timeline: Timeline) -> bool:
    """Print the figures; True when the run passed."""
    by_code = Counter[int]()
    for (_, code), count in stats.statuses.items():
        by_code[code] += count
    server_errors = {code: n for code, n in sorted(by_code.items()) if code >= 500}
    bad_5xx = {code: n for code, n in server_errors.items() if code != 503}
    acked = sum(len(ids) for ids in stats.acked_items.values())
    print(f"requests:              {stats.requests}")
    print(f"statuses:              {dict(sorted(by_code.items()))}")
    print(f"connection errors:     {dict(stats.transport_errors) or 0}")
    print(f"appends acknowledged:  {stats.acked_appends} ({acked} items)")
    print(f"appends retried:       {stats.retries} retries")
    print(f"appends never acked:   {stats.unacked_appends}")
    print(f"lost:                  {checks['lost']}")
    print(f"duplicated:            {checks['duplicated']}")
    print(f"foreign items:         {checks['foreign'] + stats.foreign_seen}")
    print(f"5xx by code:           {server_errors or 0}")
    print(f"5xx during the outage: {stats.errors_during_outage}")
    if timeline.outage_start is not None and timeline.outage_end is not None:
        down_from = timeline.outage_start - timeline.started
        down_to = timeline.outage_end - timeline.started
        print(f"database down:         {down_from:.1f} s to {down_to:.1f} s into the load")
    if stats.unavailable_window:
        first, last = stats.unavailable_window
        print(f"503s seen:             {first:.1f} s to {last:.1f} s into the load")
    recovered = stats.first_ok_after_restart
    print(
        "recovery:              "
        + (f"first 2xx {recovered:.2f} s after restart" if recovered is not None else "NONE")
    )
    failures = [
        name
        for name, failed in (
            ("acknowledged appends lost", checks["lost"] > 0),
            ("items duplicated", checks["duplicated"] > 0),
            ("foreign items", checks["foreign"] + stats.foreign_seen > 0),
            (f"5xx other than 503: {bad_5xx}", bool(bad_5xx)),
            ("no 2xx after the database came back", recovered is None),
            ("nothing acknowledged", acked == 0),
        )
        if failed
    ]
    print("result:                " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return not failures


def _say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=75.0, help="load duration")
    parser.add_argument("--outage-at", type=float, default=25.0, help="seconds into the load")
    parser.add_argument("--down", type=float, default=8.0, help="seconds the database is down")
    args = parser.parse_args(argv)
    env = {"MEMORY_LIST_CAP": "10000", "STORAGE_TIMEOUT_SECONDS": "5"}
    with tempfile.TemporaryDirectory(prefix="soak-data-") as tmp:
        data_dir = Path(tmp)
        with embedded_postgres(data_dir) as postgres:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            log_path = RESULTS_DIR / f"soak-{time.strftime('%Y%m%dT%H%M%S')}-app.log"
            with AppServer(data_dir, workers=2, env=env, log_path=log_path) as server:
                _say(f"app on {server.base_url} (2 workers); load for {args.seconds:.0f} s")
                stats, checks, timeline = asyncio.run(
                    soak(
                        server.base_url,
                        postgres.dsn,
                        postgres,
                        args.seconds,
                        args.outage_at,
                        args.down,
                    )
                )
    passed = report(stats, checks, timeline)
    print(f"app log:               {log_path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
