"""Profile the app under load: py-spy samples one uvicorn worker while wrk drives one endpoint,
then the hottest functions are printed (own time and inclusive time, % of samples).

    PYTHONPATH=backend .venv/bin/python -m bench.profile --endpoint read|identity|append|noop

The raw collapsed stacks are kept in bench/results/ (load them in speedscope for a flame graph).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.benchapp import NOOP_PATH
from bench.loadgen import run_wrk
from bench.server import (
    RESULTS_DIR,
    AppServer,
    bench_token,
    create_auth_users,
    embedded_postgres,
    episode,
    seed_memories,
)

NATIVE: list[str] = []  # ["--native"] to see into Cython/C frames (asyncpg, uvloop)

ENDPOINTS = {
    "noop": ("GET", NOOP_PATH),
    "read": ("GET", "/api/memory"),
    "identity": ("GET", "/api/memory/identity"),
    "append": ("POST", "/api/memory/episodic_memory"),
}


def summarize(collapsed: Path, top: int) -> str:
    """Own and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own %   function"]
    lines += [f"{100 * n / total:5.1f}   {frame}" for frame, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:5.1f}   {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="read")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--native", action="store_true", help="C/Cython frames too")
    args = parser.parse_args(argv)
    if args.native:
        NATIVE.append("--native")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    method, path = ENDPOINTS[args.endpoint]
    body = json.dumps(episode(3)).encode() if method == "POST" else None
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"profile-{args.endpoint}-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    with (
        tempfile.TemporaryDirectory(prefix="profile-data-") as tmp,
        embedded_postgres(Path(tmp)) as postgres,
        AppServer(Path(tmp), workers=1) as server,
    ):
        users = [uuid.uuid4() for _ in range(256)]
        asyncio.run(create_auth_users(postgres.dsn, users))
        asyncio.run(seed_memories(postgres.dsn, users, episodes=10))
        tokens = [bench_token(u) for u in users]
        run_wrk(server.base_url, method, path, tokens, seconds=2, body=body)  # warm up
        load = threading.Thread(
            target=run_wrk,
            args=(server.base_url, method, path, tokens),
            kwargs={"seconds": args.seconds + 2, "body": body},
        )
        load.start()
        time.sleep(1)
        subprocess.run(
            [
                py_spy,
                "record",
                "--format",
                "raw",
                "--rate",
                "250",
                "--duration",
                str(int(args.seconds)),
                "--pid",
                str(server.pid),
                "--output",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        load.join()
    print(summarize(out, args.top))
    print(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
