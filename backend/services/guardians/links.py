"""`make guardian`: the operator links a guardian to a child (or removes the link).

Links are made only here (or with the SQL in supabase_schema.sql, in the Supabase SQL editor):
the database refuses them to every signed-in user. This connects as the service's own login
role — the embedded database (joining a running `make run`), or DATABASE_URL — never as a
user. On the embedded backend, which stands in for Supabase Auth, both users are created in
`auth.users` when missing; elsewhere they must exist (signed up with Supabase Auth).

    python -m services.guardians.links --guardian <uuid> --child <uuid> [--remove]
    python -m services.guardians.links --list
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

import asyncpg

from config import Backend, Settings
from services.storage.database import apply_schema
from services.storage.embedded_postgres import EmbeddedPostgres

LINK_SQL = (
    "insert into public.guardianships (guardian_id, child_id) values ($1, $2)"
    " on conflict do nothing"
)
UNLINK_SQL = "delete from public.guardianships where guardian_id = $1 and child_id = $2"
LIST_SQL = "select guardian_id, child_id, created_at from public.guardianships order by created_at"
ENSURE_USER_SQL = (
    "insert into auth.users (id, aud, role) values ($1, 'authenticated', 'authenticated')"
    " on conflict do nothing"
)


class LinkError(Exception):
    """A refusal to show the operator as it is."""


async def run(dsn: str, args: argparse.Namespace, *, embedded: bool) -> list[str]:
    """Do what `args` ask on the database at `dsn`; the lines to print."""
    conn = await asyncpg.connect(dsn)
    try:
        if embedded:
            await apply_schema(conn, bootstrap=True)
        if args.list:
            return [
                f"guardian {r['guardian_id']} -> child {r['child_id']} (since {r['created_at']})"
                for r in await conn.fetch(LIST_SQL)
            ]
        if args.guardian == args.child:
            raise LinkError("a user can not be its own guardian")
        if args.remove:
            status = await conn.execute(UNLINK_SQL, args.guardian, args.child)
            found = status != "DELETE 0"
            return [f"{'removed' if found else 'no'} link {args.guardian} -> {args.child}"]
        async with conn.transaction():
            if embedded:
                for user_id in (args.guardian, args.child):
                    await conn.execute(ENSURE_USER_SQL, user_id)
            try:
                await conn.execute(LINK_SQL, args.guardian, args.child)
            except asyncpg.ForeignKeyViolationError:
                raise LinkError(
                    "both users must exist in auth.users (sign them up first)"
                ) from None
        return [f"linked guardian {args.guardian} -> child {args.child}"]
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make guardian", description=__doc__)
    parser.add_argument("--guardian", type=uuid.UUID, help="the guardian's (parent's) user id")
    parser.add_argument("--child", type=uuid.UUID, help="the child's user id")
    parser.add_argument("--remove", action="store_true", help="remove the link instead")
    parser.add_argument("--list", action="store_true", help="list every link")
    args = parser.parse_args(argv)
    if not args.list and (args.guardian is None or args.child is None):
        parser.error("--guardian and --child are required (or --list)")
    settings = Settings()
    embedded: EmbeddedPostgres | None = None
    if settings.backend is Backend.EMBEDDED:
        embedded = EmbeddedPostgres(settings.resolved_data_dir)
        embedded.start()  # joins the server of a running `make run`
        dsn = embedded.dsn
    elif settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
    else:
        print(
            "error: no database to connect to (set DATABASE_URL, or run the SQL in"
            " supabase_schema.sql's Guardians section in the Supabase SQL editor)",
            file=sys.stderr,
        )
        return 2
    try:
        for line in asyncio.run(run(dsn, args, embedded=embedded is not None)):
            print(line)
    except LinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
