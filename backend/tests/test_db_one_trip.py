"""The one-round-trip path of the Postgres repository, on both PostgreSQL servers:
`memory_private.call_as_user` is out of reach of anon and authenticated, every operation is one
statement after which the pooled connection is the login role again with no claims (failed
operations too), users stay isolated, and bounded reads are sliced in SQL as the API promises."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from errors import (
    IdempotencyConflict,
    InvalidValue,
    ItemNotFound,
    StorageUnavailable,
    VersionMismatch,
)
from models import MemoryField, Recall, User
from repositories.postgres import CALL_AS_USER_SQL, PostgresMemoryRepository
from services.storage.database import create_pool
from tests.conftest import create_auth_user, make_settings
from tests.db_helpers import acting_as, sqlstate_as

ENTRY = "memory_private.call_as_user(text, text, jsonb)"
API_ROLES = ("anon", "authenticated", "service_role")
REWARDS = MemoryField.REWARDS


class CountingConnection(asyncpg.Connection):
    """Counts the statements sent (extended or simple protocol)."""

    statements = 0

    async def _execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingConnection.statements += 1
        return await super()._execute(*args, **kwargs)  # type: ignore[misc]  # asyncpg's private hook

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingConnection.statements += 1
        return await super().execute(*args, **kwargs)


@pytest.fixture(scope="module")
async def one_connection(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of exactly one connection: whatever an operation leaves behind, the next sees."""
    pool = await create_pool(
        database_dsn,
        make_settings(),
        min_size=1,
        max_size=1,
        connection_class=CountingConnection,
    )
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def repo(one_connection: asyncpg.Pool) -> PostgresMemoryRepository:
    return PostgresMemoryRepository(one_connection, make_settings())


def user(user_id: uuid.UUID) -> User:
    claims = {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"}
    return User(id=user_id, claims=claims, token=f"token-of-{user_id}")


async def session_state(pool: asyncpg.Pool) -> tuple[Any, ...]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "select current_user, session_user, current_setting('role'),"
            " coalesce(current_setting('request.jwt.claims', true), ''),"
            " pg_catalog.txid_current_if_assigned() is null as no_open_write"
        )
    assert row is not None
    return tuple(row)


class TestOutOfReach:
    @pytest.mark.parametrize("role", [*API_ROLES, "public"])
    async def test_no_api_role_may_use_the_schema_or_execute(
        self, admin_pool: asyncpg.Pool, role: str
    ) -> None:
        if role == "public":
            acl = await admin_pool.fetchval(
                "select array(select a.grantee from pg_catalog.pg_proc as p,"
                " aclexplode(p.proacl) as a where p.oid = $1::regprocedure)",
                ENTRY,
            )
            assert 0 not in acl  # 0 is PUBLIC; a NULL ACL would mean PUBLIC too
            assert acl
            return
        assert not await admin_pool.fetchval(
            "select has_schema_privilege($1, 'memory_private', 'USAGE')", role
        )
        assert not await admin_pool.fetchval(
            "select has_function_privilege($1, $2, 'EXECUTE')", role, ENTRY
        )

    @pytest.mark.parametrize("role", ["anon", "authenticated"])
    async def test_impersonated_as_postgrest_does_it_is_refused(
        self, admin_pool: asyncpg.Pool, role: str
    ) -> None:
        victim = await create_auth_user(admin_pool)
        caller = None if role == "anon" else await create_auth_user(admin_pool)
        claims = json.dumps({"sub": str(victim), "role": "authenticated"})
        state = await sqlstate_as(
            admin_pool, caller, CALL_AS_USER_SQL, claims, "read_document", "{}", role=role
        )
        assert state == "42501"

    async def test_no_exposed_function_takes_claims(self, admin_pool: asyncpg.Pool) -> None:
        names = await admin_pool.fetch(
            "select p.proname, p.proargnames from pg_catalog.pg_proc as p"
            " where p.pronamespace = 'public'::regnamespace"
        )
        for row in names:
            assert not any("claim" in (arg or "") for arg in row["proargnames"] or []), row

    @pytest.mark.parametrize(
        "claims",
        [
            {"sub": "00000000-0000-4000-8000-000000000001", "role": "anon"},
            {"sub": "00000000-0000-4000-8000-000000000001", "role": "service_role"},
            {"role": "authenticated"},
        ],
    )
    async def test_claims_of_no_signed_in_user_are_refused(
        self, admin_pool: asyncpg.Pool, claims: dict[str, str]
    ) -> None:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await admin_pool.fetchval(CALL_AS_USER_SQL, json.dumps(claims), "read_document", {})


def operations(
    owner: User, stranger: User
) -> list[tuple[str, Callable[[PostgresMemoryRepository], Awaitable[Any]], type | None]]:
    """(name, call, expected error) for every operation, succeeding and failing."""
    items = [{"id": "r1", "star": 1}]
    return [
        ("set_field", lambda r: r.set_field(owner, REWARDS, items, expected_version=None), None),
        (
            "set_field stale",
            lambda r: r.set_field(owner, REWARDS, [], expected_version=1),
            VersionMismatch,
        ),
        (
            "merge_field",
            lambda r: r.merge_field(
                owner, MemoryField.IDENTITY, {"name": "Mia"}, expected_version=None
            ),
            None,
        ),
        ("append_items", lambda r: r.append_items(owner, REWARDS, [{"star": 2}], cap=10), None),
        (
            "append_items conflict",
            lambda r: r.append_items(owner, REWARDS, [{"id": "r1", "star": 9}], cap=10),
            IdempotencyConflict,
        ),
        ("read_document", lambda r: r.read_document(owner), None),
        ("read_field", lambda r: r.read_field(owner, REWARDS, limit=1), None),
        (
            "read_field unknown before",
            lambda r: r.read_field(owner, REWARDS, before="nope"),
            ItemNotFound,
        ),
        ("chat_context", lambda r: r.chat_context(owner, history=3, turn_ids=("a", "b")), None),
        ("chat_context bad", lambda r: r.chat_context(owner, history=-1), InvalidValue),
        ("remove_item", lambda r: r.remove_item(owner, REWARDS, "r1"), None),
        ("remove_item of a stranger", lambda r: r.remove_item(stranger, REWARDS, "r1"), None),
        (
            "compact bad",
            lambda r: r.compact_items(
                owner,
                MemoryField.EPISODIC_MEMORY,
                [],
                summary_field=MemoryField.LONG_TERM_SUMMARY,
                summary_patch={},
            ),
            InvalidValue,
        ),
        (
            "import_document",
            lambda r: r.import_document(
                owner, {"rewards": [{"id": "i1", "star": 3}]}, caps={"rewards": 10}
            ),
            None,
        ),
        (
            "import_document conflict",
            lambda r: r.import_document(
                owner, {"rewards": [{"id": "i1", "star": 4}]}, caps={"rewards": 10}
            ),
            IdempotencyConflict,
        ),
        ("export_document", lambda r: r.export_document(owner), None),
        (
            "append_items to the log",
            lambda r: r.append_items(
                owner, MemoryField.EPISODIC_MEMORY, [{"content": "my kite is red"}], cap=10
            ),
            None,
        ),
        ("search", lambda r: r.search(owner, "kite", limit=5), None),
        ("search bad", lambda r: r.search(owner, "kite", limit=0), InvalidValue),
        (
            "chat_context with recall",
            lambda r: r.chat_context(owner, history=1, recall=Recall("red kite?", 3)),
            None,
        ),
        (
            "begin_chat_turn with recall",
            lambda r: r.begin_chat_turn(
                owner, history=1, turns_per_minute=1000, recall=Recall("kite", 3)
            ),
            None,
        ),
        ("erase", lambda r: r.erase(owner), None),
    ]


class TestEveryOperation:
    async def test_one_statement_then_the_login_role_with_no_claims(
        self, one_connection: asyncpg.Pool, repo: PostgresMemoryRepository
    ) -> None:
        owner = user(await create_auth_user(one_connection))
        stranger = user(await create_auth_user(one_connection))
        clean = await session_state(one_connection)
        login, _, role_setting, claims, no_open_write = clean
        assert (role_setting, claims, no_open_write) == ("none", "", True)
        for name, call, error in operations(owner, stranger):
            before = CountingConnection.statements
            if error is None:
                await call(repo)
            else:
                with pytest.raises(error):
                    await call(repo)
            assert CountingConnection.statements - before == 1, name
            assert await session_state(one_connection) == clean, name
        assert login == clean[1]  # current_user is the session's own login role

    async def test_a_statement_cut_by_the_timeout_leaves_the_connection_clean(
        self, admin_pool: asyncpg.Pool, one_connection: asyncpg.Pool
    ) -> None:
        impatient = PostgresMemoryRepository(
            one_connection, make_settings(storage_timeout_seconds=0.3)
        )
        owner = user(await create_auth_user(admin_pool))
        await impatient.append_items(owner, REWARDS, [{"star": 1}], cap=10)
        clean = await session_state(one_connection)
        async with admin_pool.acquire() as locker, locker.transaction():
            await locker.execute(
                "select 1 from public.memories where user_id = $1 for update", owner.id
            )
            with pytest.raises(StorageUnavailable):
                await impatient.append_items(owner, REWARDS, [{"star": 2}], cap=10)
        assert await session_state(one_connection) == clean
        value, _ = await impatient.read_field(owner, REWARDS)
        assert [item["star"] for item in value] == [1]

    async def test_unknown_operation_is_refused(self, repo: PostgresMemoryRepository) -> None:
        with pytest.raises(InvalidValue, match="unknown memory operation"):
            await repo.call(user(uuid.uuid4()), "drop_everything")


class TestIsolation:
    async def test_a_user_reaches_only_their_own_row(
        self, admin_pool: asyncpg.Pool, repo: PostgresMemoryRepository
    ) -> None:
        a = user(await create_auth_user(admin_pool))
        b = user(await create_auth_user(admin_pool))
        await repo.set_field(a, MemoryField.IDENTITY, {"name": "a"}, expected_version=None)
        stored = await repo.append_items(a, REWARDS, [{"id": "a1", "star": 1}], cap=10)

        assert (await repo.read_document(b)).version == 0
        assert await repo.read_field(b, MemoryField.IDENTITY) == ({}, 0)
        assert (await repo.chat_context(b, history=5, turn_ids=("a1", "x"))).version == 0
        with pytest.raises(ItemNotFound):
            await repo.read_field(b, REWARDS, before="a1")
        assert await repo.remove_item(b, REWARDS, "a1") is False
        assert await repo.erase(b) is False

        document = await repo.read_document(a)
        assert document.identity == {"name": "a"}
        assert document.rewards == stored.items

    async def test_as_postgrest_the_read_functions_see_only_their_user(
        self, admin_pool: asyncpg.Pool, repo: PostgresMemoryRepository
    ) -> None:
        a = user(await create_auth_user(admin_pool))
        await repo.set_field(a, MemoryField.CURRENT_STATE, {"mood": "ok"}, expected_version=None)
        b = await create_auth_user(admin_pool)
        async with acting_as(admin_pool, b) as conn:
            assert await conn.fetchval("select public.memory_read_document()") is None
            field = await conn.fetchval("select public.memory_read_field('current_state')")
        assert field == {"value": {}, "version": 0}


PAGED_ITEMS = [{"id": f"i{n}", "n": n} for n in range(7)]


@pytest.fixture(scope="module")
async def owner(admin_pool: asyncpg.Pool, repo: PostgresMemoryRepository) -> User:
    """A user whose rewards are PAGED_ITEMS."""
    owner = user(await create_auth_user(admin_pool))
    await repo.set_field(owner, REWARDS, PAGED_ITEMS, expected_version=None)
    return owner


class TestBoundedReads:
    @staticmethod
    def reference(items: list[dict[str, Any]], limit: int | None, before: str | None) -> Any:
        if before is not None:
            items = items[: [i["id"] for i in items].index(before)]
        if limit is not None:
            items = items[-limit:] if limit > 0 else []
        return [i["n"] for i in items]

    @pytest.mark.parametrize("limit", [None, 0, 1, 3, 7, 10])
    @pytest.mark.parametrize("before", [None, "i0", "i1", "i4", "i6"])
    async def test_pages_match_the_python_slice(
        self,
        repo: PostgresMemoryRepository,
        owner: User,
        limit: int | None,
        before: str | None,
    ) -> None:
        value, version = await repo.read_field(owner, REWARDS, limit=limit, before=before)
        assert [item["n"] for item in value] == self.reference(PAGED_ITEMS, limit, before)
        assert version > 0

    async def test_paging_arguments_do_not_apply_to_an_object_field(
        self, repo: PostgresMemoryRepository, owner: User
    ) -> None:
        await repo.set_field(owner, MemoryField.IDENTITY, {"a": 1}, expected_version=None)
        value, _ = await repo.read_field(owner, MemoryField.IDENTITY, limit=0, before="i1")
        assert value == {"a": 1}

    async def test_negative_limit_is_refused(
        self, repo: PostgresMemoryRepository, owner: User
    ) -> None:
        with pytest.raises(InvalidValue):
            await repo.read_field(owner, REWARDS, limit=-1)


class TestChatContext:
    async def test_only_what_the_prompt_uses(
        self, admin_pool: asyncpg.Pool, repo: PostgresMemoryRepository
    ) -> None:
        owner = user(await create_auth_user(admin_pool))
        await repo.set_field(owner, MemoryField.IDENTITY, {"name": "Robo"}, expected_version=None)
        episodes = [{"id": f"e{n}", "role": "user", "content": f"m{n}"} for n in range(9)]
        await repo.set_field(owner, MemoryField.EPISODIC_MEMORY, episodes, expected_version=None)
        await repo.append_items(owner, REWARDS, [{"star": 1}], cap=10)

        context = await repo.chat_context(owner, history=4, turn_ids=("e2", "missing"))

        assert context.identity == {"name": "Robo"}
        assert [e["id"] for e in context.recent_episodes] == ["e5", "e6", "e7", "e8"]
        assert context.episode_count == 9
        assert [e["id"] for e in context.turn_episodes] == ["e2"]
        assert context.version == (await repo.read_document(owner)).version
        assert "rewards" not in context.model_dump()

    async def test_history_larger_than_the_list_and_zero(
        self, admin_pool: asyncpg.Pool, repo: PostgresMemoryRepository
    ) -> None:
        owner = user(await create_auth_user(admin_pool))
        await repo.append_items(owner, MemoryField.EPISODIC_MEMORY, [{"role": "user"}], cap=10)
        assert len((await repo.chat_context(owner, history=50)).recent_episodes) == 1
        assert (await repo.chat_context(owner, history=0)).recent_episodes == []
