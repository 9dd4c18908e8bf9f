"""`make import SRC=… [USER_ID=…] [MAP=…] [DRY_RUN=1]`: the old file-based memories in.

    python -m services.migration.import_cli SRC [--user-id ID] [--map CSV] [--dry-run]

SRC is one user's folder (then --user-id names the user), a folder of user folders named by
user id, or a zip made by an export. Exit status: 0 all imported or unchanged, 1 a user
failed, 2 the command could not run (source, mapping or database unusable).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from config import Settings
from models import LIST_FIELDS
from services.migration.catalogue import SOURCE_FILES
from services.migration.convert import SourceError
from services.migration.importer import Importer, Outcome, Report, Status
from services.migration.plan import Limits, MappingError, read_mapping, resolve_user
from services.migration.source import SourceTreeError, UserFolder, open_source
from services.storage.operator import NoDatabase, open_operator_storage


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="import", description="Import old one-file-per-field memories."
    )
    parser.add_argument("source", type=Path, help="a user's folder, a folder of them, or a zip")
    parser.add_argument("--user-id", help="the user of a one-user folder (or the one to import)")
    parser.add_argument("--map", type=Path, help="CSV of old_id,new_uuid rows")
    parser.add_argument("--dry-run", action="store_true", help="report, write nothing")
    parser.add_argument("--max-file-bytes", type=int, help="refuse larger files")
    parser.add_argument("--concurrency", type=int, default=4, help="users imported at a time")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or (args.max_file_bytes is not None and args.max_file_bytes < 1):
        parser.error("--concurrency and --max-file-bytes must be positive")
    return args


def assign_users(
    one_user: bool,
    folders: list[UserFolder],
    user_id: str | None,
    mapping: dict[str, uuid.UUID] | None,
) -> list[tuple[UserFolder, uuid.UUID | None, str]]:
    """Each folder with its user id, or None and why not. A one-user source takes --user-id;
    with several folders --user-id keeps the one of that name (or mapped id)."""
    if one_user:
        if not user_id:
            raise SourceTreeError("this is one user's folder: name the user with --user-id")
        names = [(folders[0], user_id)]
    else:
        names = [(folder, folder.name) for folder in folders]
    assigned: list[tuple[UserFolder, uuid.UUID | None, str]] = []
    seen: dict[uuid.UUID, str] = {}
    for folder, name in names:
        try:
            resolved: uuid.UUID | None = resolve_user(name, mapping)
        except SourceError as exc:
            assigned.append((folder, None, str(exc)))
            continue
        assert resolved is not None
        if not one_user and user_id and user_id not in (name, str(resolved)):
            continue
        if resolved in seen:
            assigned.append((folder, None, f"{name}: the same user as {seen[resolved]}"))
            continue
        seen[resolved] = name
        assigned.append((folder, resolved, ""))
    if not assigned:
        raise SourceTreeError(f"no user folder named {user_id!r}")
    return assigned


def summary(report: Report, *, dry_run: bool) -> list[Table]:
    users = Table(title="Users" + (" (dry run: nothing written)" if dry_run else ""))
    for column in ("imported", "would change", "unchanged", "failed"):
        users.add_column(column, justify="right")
    users.add_row(*(str(report.count(s)) for s in Status))
    fields = Table(title="Items per field")
    fields.add_column("field", no_wrap=True)
    for column in ("users changed", "items in", "already there", "over cap"):
        fields.add_column(column, justify="right")
    for spec in SOURCE_FILES:
        results = [
            o.result.fields[spec.target]
            for o in report.outcomes
            if o.result is not None and spec.target in o.result.fields
        ]
        changed = str(sum(1 for r in results if r.action != "unchanged"))
        if spec.is_list:
            counts = (sum(r.items for r in results), sum(r.stored for r in results))
            cells = [*(str(c) for c in counts), str(sum(r.over_cap for r in results))]
        else:
            cells = ["-", "-", "-"]
        fields.add_row(spec.target, changed, *cells)
    return [users, fields]


def print_report(console: Console, report: Report, *, dry_run: bool) -> None:
    """The tables, then one unwrapped line per problem (file and JSON path as given)."""
    for table in summary(report, dry_run=dry_run):
        console.print(table)

    def line(text: str) -> None:
        console.print(text, soft_wrap=True, markup=False, highlight=False)

    for label in report.ignored:
        line(f"ignored {label} (not a memory file of this layout)")
    for outcome in report.outcomes:
        if outcome.status is Status.FAILED or outcome.detail:
            line(f"{outcome.status.value} {outcome.source}: {outcome.detail}")
    if report.count(Status.IMPORTED) == 0 and not report.failed and not dry_run:
        line("nothing changed: everything in the source is imported already")
    rate = report.episodes / report.seconds if report.seconds else 0.0
    line(
        f"{report.episodes} episodes in {report.seconds:.2f} s: {rate:,.0f} episodes/s"
        f" ({len(report.outcomes)} users)"
    )


async def run(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    limits = Limits(
        max_file_bytes=args.max_file_bytes or settings.import_max_file_bytes,
        max_item_bytes=settings.max_item_bytes,
        max_object_bytes=settings.max_body_bytes,
    )
    caps = {field: settings.list_cap(field) for field in sorted(LIST_FIELDS)}
    try:
        mapping = read_mapping(args.map) if args.map else None
        with open_source(args.source) as (one_user, folders):
            assigned = assign_users(one_user, folders, args.user_id, mapping)
            async with open_operator_storage(settings, connections=args.concurrency) as storage:
                importer = Importer(
                    storage.repository,
                    storage.pool,
                    caps,
                    limits,
                    create_users=storage.embedded,
                    dry_run=args.dry_run,
                    concurrency=args.concurrency,
                )
                with Progress(
                    TextColumn("importing"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                ) as progress:
                    bar = progress.add_task("users", total=len(assigned))

                    def advance(_: Outcome) -> None:
                        progress.advance(bar)

                    report = await importer.run(assigned, on_done=advance)
    except (
        SourceTreeError,
        MappingError,
        NoDatabase,
        RuntimeError,
        OSError,
        asyncpg.PostgresError,
    ) as exc:
        console.print(f"import: {exc}", soft_wrap=True, markup=False, highlight=False)
        return 2
    print_report(console, report, dry_run=args.dry_run)
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(run(args, Console()))


if __name__ == "__main__":
    sys.exit(main())
