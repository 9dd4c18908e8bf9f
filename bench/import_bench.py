"""`make bench-import`: the importer's throughput on the goal's shape, 1,000 users x 500
episodes (plus an identity each), into a throwaway embedded PostgreSQL; then the same source
again (everything unchanged). The import command prints its own episodes/s each time.

    PYTHONPATH=backend python -m bench.import_bench [--users N] [--episodes N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from bench.server import episode


def write_tree(root: Path, *, users: int, episodes: int) -> int:
    """A folder of `users` user folders in the old layout; returns the bytes written."""
    total = 0
    for n in range(users):
        folder = root / str(uuid.UUID(int=n + 1, version=4))
        folder.mkdir(parents=True)
        files = {
            "identity.json": {"child_name": f"child {n}", "companion_name": "Pip"},
            "episodic_memory.json": [episode(i) for i in range(episodes)],
        }
        for name, value in files.items():
            text = json.dumps(value)
            (folder / name).write_text(text, encoding="utf-8")
            total += len(text)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        source = Path(tmp) / "source"
        started = time.perf_counter()
        size = write_tree(source, users=args.users, episodes=args.episodes)
        print(
            f"source: {args.users} users x {args.episodes} episodes, {size / 1e6:.0f} MB"
            f" (written in {time.perf_counter() - started:.1f} s)"
        )
        os.environ.update(MEMORY_BACKEND="embedded", DATA_DIR=str(Path(tmp) / "data"))
        os.environ.pop("DATABASE_URL", None)
        from services.migration import import_cli

        argv = [str(source), "--concurrency", str(args.concurrency)]
        for run in ("first import", "second import (nothing to change)"):
            print(f"\n== {run}")
            import_cli.main(argv)


if __name__ == "__main__":
    main()
