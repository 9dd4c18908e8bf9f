"""`make guardian` (services/guardians/links.py) on a real database: the operator links and
unlinks users who exist, and is told plainly what is wrong otherwise."""

from __future__ import annotations

import argparse
import uuid

import asyncpg
import pytest

from services.guardians.links import LinkError, run
from tests.conftest import create_auth_user


def args(guardian: uuid.UUID, child: uuid.UUID, **flags: bool) -> argparse.Namespace:
    return argparse.Namespace(
        guardian=guardian, child=child, remove=flags.get("remove", False), list=False
    )


async def linked(pool: asyncpg.Pool, guardian: uuid.UUID, child: uuid.UUID) -> bool:
    return bool(
        await pool.fetchval(
            "select exists (select from public.guardianships"
            " where guardian_id = $1 and child_id = $2)",
            guardian,
            child,
        )
    )


async def test_links_and_unlinks(database_dsn: str, admin_pool: asyncpg.Pool) -> None:
    guardian, child = await create_auth_user(admin_pool), await create_auth_user(admin_pool)
    assert await run(database_dsn, args(guardian, child), embedded=False) == [
        f"linked guardian {guardian} -> child {child}"
    ]
    assert await linked(admin_pool, guardian, child)
    await run(database_dsn, args(guardian, child), embedded=False)  # again: no error
    assert await run(database_dsn, args(guardian, child, remove=True), embedded=False) == [
        f"removed link {guardian} -> {child}"
    ]
    assert not await linked(admin_pool, guardian, child)


async def test_unknown_users_and_self_links_are_refused(
    database_dsn: str, admin_pool: asyncpg.Pool
) -> None:
    guardian, stranger = await create_auth_user(admin_pool), uuid.uuid4()
    with pytest.raises(LinkError, match=r"must exist in auth\.users"):
        await run(database_dsn, args(guardian, stranger), embedded=False)
    with pytest.raises(LinkError, match="its own guardian"):
        await run(database_dsn, args(guardian, guardian), embedded=False)
    assert not await linked(admin_pool, guardian, stranger)
