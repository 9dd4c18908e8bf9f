"""`make export DEST=… [USER_ID=…]`: every user's memory (or one user's) as folders in the
layout the importer reads, for backups.

    python -m services.migration.export_cli DEST [--user-id UUID]

Which users have memory is read with the login role's own rights (the one query that is not
made as a user); each user's memory is then read as that user, through the API's SQL path.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import asyncpg
from rich.console import Console

from config import Settings
from services.migration.export import export_users, stored_users
from services.migration.plan import parse_uuid
from services.storage.operator import NoDatabase, open_operator_storage


async def run(args: argparse.Namespace, console: Console) -> int:
    user_id = parse_uuid(args.user_id) if args.user_id else None
    if args.user_id and user_id is None:
        console.print(f"export: {args.user_id!r} is not a UUID", markup=False)
        return 2
    try:
        async with open_operator_storage(Settings(), connections=args.concurrency) as storage:
            started = time.perf_counter()
            users = [user_id] if user_id else await stored_users(storage.pool)
            count = await export_users(
                storage.repository, users, args.dest, concurrency=args.concurrency
            )
    except (NoDatabase, OSError, asyncpg.PostgresError) as exc:
        console.print(f"export: {exc}", soft_wrap=True, markup=False)
        return 2
    seconds = time.perf_counter() - started
    console.print(f"exported {count} users to {args.dest} in {seconds:.2f} s")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="export", description="Export memories as folders.")
    parser.add_argument("dest", type=Path, help="folder to write (one folder per user inside)")
    parser.add_argument("--user-id", help="only this user")
    parser.add_argument("--concurrency", type=int, default=4)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv), Console()))


if __name__ == "__main__":
    sys.exit(main())
