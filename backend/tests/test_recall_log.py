"""The conversation log and its search, on both PostgreSQL servers, through the service's own
entry point (memory_private.call_as_user) and directly as PostgREST would reach it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from errors import Forbidden, InvalidValue
from models import MemoryField, User
from repositories.postgres import PostgresMemoryRepository
from services.storage.database import create_pool
from services.storage.operator import acting_user
from tests.conftest import create_auth_user, make_settings
from tests.db_helpers import call_as, execute_as

EPISODES = MemoryField.EPISODIC_MEMORY
SUMMARY = MemoryField.LONG_TERM_SUMMARY


@pytest.fixture(scope="module")
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_dsn, make_settings(), min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def repo(pool: asyncpg.Pool) -> PostgresMemoryRepository:
    return PostgresMemoryRepository(pool, make_settings())


async def new_user(admin_pool: asyncpg.Pool) -> User:
    return acting_user(await create_auth_user(admin_pool))


async def logged_ids(admin_pool: asyncpg.Pool, user: User) -> list[str]:
    """The user's log as the superuser sees it (no RLS), oldest first."""
    rows = await admin_pool.fetch(
        "select id from public.memory_episodes where user_id = $1 order by seq", user.id
    )
    return [row["id"] for row in rows]


async def window_ids(repo: PostgresMemoryRepository, user: User) -> list[str]:
    items, _ = await repo.read_field(user, EPISODES)
    return [item["id"] for item in items]


def said(text: str, item_id: str | None = None, role: str = "user") -> dict[str, Any]:
    item: dict[str, Any] = {"role": role, "content": text}
    if item_id is not None:
        item["id"] = item_id
    return item


class TestTheLogLosesNothing:
    async def test_every_appended_episode_is_logged_by_the_same_call(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        first = await repo.append_items(user, EPISODES, [said("a"), said("b")], cap=500)
        second = await repo.append_items(user, EPISODES, [said("c", "c-id")], cap=500)
        expected = [item["id"] for item in first.items + second.items]
        assert await logged_ids(admin_pool, user) == expected
        stored = await admin_pool.fetchval(
            "select item from public.memory_episodes where user_id = $1 and id = 'c-id'", user.id
        )
        assert stored == second.items[0]

    async def test_other_list_fields_are_not_logged(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        await repo.append_items(user, MemoryField.REWARDS, [{"text": "star"}], cap=500)
        assert await logged_ids(admin_pool, user) == []

    async def test_the_cap_shrinks_the_window_not_the_log(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        for n in range(5):
            await repo.append_items(user, EPISODES, [said(f"turn {n}", f"e{n}")], cap=3)
        assert await window_ids(repo, user) == ["e2", "e3", "e4"]
        assert await logged_ids(admin_pool, user) == [f"e{n}" for n in range(5)]

    async def test_a_keyed_retry_logs_nothing_twice(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        batch = [said("hello"), said("hi!", role="assistant")]
        first = await repo.append_items(user, EPISODES, batch, cap=500, idempotency_key="k1")
        again = await repo.append_items(user, EPISODES, batch, cap=500, idempotency_key="k1")
        assert again.items == first.items
        assert await logged_ids(admin_pool, user) == [item["id"] for item in first.items]

    async def test_compaction_shrinks_only_the_window(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        ids = [f"e{n}" for n in range(6)]
        await repo.append_items(
            user, EPISODES, [said(f"t{n}", i) for n, i in enumerate(ids)], cap=500
        )
        assert await repo.compact_items(
            user, EPISODES, ids[:4], summary_field=SUMMARY, summary_patch={"summary": "s"}
        )
        assert await window_ids(repo, user) == ids[4:]
        assert await logged_ids(admin_pool, user) == ids

    async def test_delete_by_id_forgets_in_window_and_log_also_once_compacted(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        await repo.append_items(user, EPISODES, [said(f"t{n}", f"e{n}") for n in range(4)], cap=500)
        await repo.compact_items(
            user, EPISODES, ["e0", "e1"], summary_field=SUMMARY, summary_patch={"summary": "s"}
        )
        assert await repo.remove_item(user, EPISODES, "e2")  # in the window
        assert await repo.remove_item(user, EPISODES, "e0")  # only in the log
        assert not await repo.remove_item(user, EPISODES, "e0")  # gone from both
        assert await window_ids(repo, user) == ["e3"]
        assert await logged_ids(admin_pool, user) == ["e1", "e3"]

    async def test_erase_erases_the_log(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        await repo.append_items(user, EPISODES, [said("secret")], cap=500)
        await repo.compact_items(
            user,
            EPISODES,
            await window_ids(repo, user),
            summary_field=SUMMARY,
            summary_patch={"summary": "s"},
        )
        assert await repo.erase(user)
        assert await logged_ids(admin_pool, user) == []
        assert not await repo.erase(user)

    async def test_put_adds_and_updates_in_the_log_and_keeps_what_it_drops(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        await repo.append_items(user, EPISODES, [said("one", "a"), said("two", "b")], cap=500)
        await repo.set_field(
            user, EPISODES, [said("two, edited", "b"), said("three", "c")], expected_version=None
        )
        assert await window_ids(repo, user) == ["b", "c"]
        assert await logged_ids(admin_pool, user) == ["a", "b", "c"]
        edited = await admin_pool.fetchval(
            "select item ->> 'content' from public.memory_episodes where user_id = $1 and id = 'b'",
            user.id,
        )
        assert edited == "two, edited"
        found = await repo.search(user, "edited", limit=5)
        assert [hit.id for hit in found.results] == ["b"]

    async def test_deleting_the_auth_user_deletes_the_log(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        await repo.append_items(user, EPISODES, [said("bye")], cap=500)
        await admin_pool.execute("delete from auth.users where id = $1", user.id)
        assert await logged_ids(admin_pool, user) == []


class TestLogIsolation:
    async def test_rls_own_rows_only_and_nothing_for_anon(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        alice, bob = await new_user(admin_pool), await new_user(admin_pool)
        await repo.append_items(alice, EPISODES, [said("alice's secret plan")], cap=500)
        count = "select count(*) from public.memory_episodes"
        assert await call_as(admin_pool, alice.id, count) == 1
        assert await call_as(admin_pool, bob.id, count) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await call_as(admin_pool, None, count, role="anon")
        # Bob can neither change nor delete Alice's rows, nor insert rows in her name.
        assert await execute_as(admin_pool, bob.id, "delete from public.memory_episodes") == (
            "DELETE 0"
        )
        assert await execute_as(
            admin_pool, bob.id, "update public.memory_episodes set item = '{}'"
        ) == ("UPDATE 0")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await execute_as(
                admin_pool,
                bob.id,
                "insert into public.memory_episodes (user_id, id, item, search)"
                " values ($1, 'x', '{}', '')",
                alice.id,
            )
        assert await logged_ids(admin_pool, alice) != []

    async def test_search_sees_only_the_callers_episodes(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        alice, bob = await new_user(admin_pool), await new_user(admin_pool)
        await repo.append_items(alice, EPISODES, [said("the treasure is under the oak")], cap=500)
        await repo.append_items(bob, EPISODES, [said("my treasure is a blue marble")], cap=500)
        found = await repo.search(bob, "where is the treasure", limit=10)
        assert [hit.episode["content"] for hit in found.results] == ["my treasure is a blue marble"]
        direct = await call_as(
            admin_pool,
            bob.id,
            "select public.memory_search('treasure oak', 10)",
        )
        assert [hit["episode"]["content"] for hit in direct["results"]] == [
            "my treasure is a blue marble"
        ]


class TestFullTextSearch:
    async def test_a_question_finds_episodes_holding_any_of_its_words(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        await repo.append_items(
            user,
            EPISODES,
            [
                said("My dog is called Biscuit", "dog"),
                said("We went swimming at the lake", "lake"),
                said("I like pizza", "pizza"),
            ],
            cap=500,
        )
        found = await repo.search(user, "What is the name of my dog?", limit=10)
        assert found.mode == "text"
        assert [hit.id for hit in found.results] == ["dog"]
        assert found.results[0].score > 0
        assert found.results[0].created_at is not None

    async def test_rarer_words_count_more(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        common = [said(f"we played football today, game {n}", f"f{n}") for n in range(8)]
        rare = said("grandma visited and we played chess", "chess")
        await repo.append_items(user, EPISODES, [*common, rare], cap=500)
        found = await repo.search(user, "did we play chess or football", limit=3)
        assert found.results[0].id == "chess"

    async def test_no_matching_word_finds_nothing(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        await repo.append_items(user, EPISODES, [said("hello there")], cap=500)
        assert (await repo.search(user, "xylophone", limit=5)).results == []
        assert (await repo.search(user, "the of and", limit=5)).results == []  # stop words only

    async def test_limit_and_order_by_score(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        user = await new_user(admin_pool)
        items = [said(" ".join(["robot"] * (n + 1)) + f" story {n}", f"r{n}") for n in range(6)]
        await repo.append_items(user, EPISODES, items, cap=500)
        found = await repo.search(user, "robot", limit=4)
        scores = [hit.score for hit in found.results]
        assert len(found.results) == 4 and scores == sorted(scores, reverse=True)

    @pytest.mark.parametrize("limit", [0, 101])
    async def test_a_limit_out_of_range_is_refused(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool, limit: int
    ) -> None:
        user = await new_user(admin_pool)
        with pytest.raises(InvalidValue):
            await repo.search(user, "anything", limit=limit)

    async def test_the_text_configuration_is_a_setting(
        self, pool: asyncpg.Pool, admin_pool: asyncpg.Pool
    ) -> None:
        """english stems ('running' finds 'runs'); simple keeps words as written, so other
        languages are not stemmed as English."""
        english = PostgresMemoryRepository(pool, make_settings(search_text_config="english"))
        simple = PostgresMemoryRepository(pool, make_settings(search_text_config="simple"))
        user_en, user_simple = await new_user(admin_pool), await new_user(admin_pool)
        await english.append_items(user_en, EPISODES, [said("she runs every day", "r")], cap=9)
        await simple.append_items(user_simple, EPISODES, [said("she runs every day", "r")], cap=9)
        assert [h.id for h in (await english.search(user_en, "running", limit=5)).results] == ["r"]
        assert (await simple.search(user_simple, "running", limit=5)).results == []
        assert [h.id for h in (await simple.search(user_simple, "runs", limit=5)).results] == ["r"]


class TestChatContextRecall:
    async def test_recalls_matches_outside_the_history_window(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        from models import Recall

        user = await new_user(admin_pool)
        old = said("my hamster is named Nibbles", "old")
        recent = said("I love my hamster", "recent")
        filler = [said(f"talking about weather {n}", f"w{n}") for n in range(3)]
        await repo.append_items(user, EPISODES, [old, *filler, recent], cap=500)
        context = await repo.chat_context(
            user, history=2, recall=Recall("what is my hamster called?", 5)
        )
        assert [e["id"] for e in context.recent_episodes] == ["w2", "recent"]
        assert [hit.id for hit in context.recalled] == ["old"]
        without = await repo.chat_context(user, history=2)
        assert without.recalled == []


class TestGuardianErase:
    async def test_a_guardian_erasing_a_child_erases_the_childs_log_and_only_theirs(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        guardian, child, other = [await new_user(admin_pool) for _ in range(3)]
        await admin_pool.execute(
            "insert into public.guardianships (guardian_id, child_id) values ($1, $2)",
            guardian.id,
            child.id,
        )
        await repo.append_items(child, EPISODES, [said("a secret")], cap=500)
        await repo.append_items(other, EPISODES, [said("another secret")], cap=500)
        assert await repo.guardian_erase_child(guardian, child.id)
        assert await logged_ids(admin_pool, child) == []
        assert len(await logged_ids(admin_pool, other)) == 1
        # The child's own token may not erase what its guardian answers for (its row).
        await repo.append_items(child, EPISODES, [said("again")], cap=500)
        with pytest.raises(Forbidden):
            await repo.erase(child)
        assert len(await logged_ids(admin_pool, child)) == 1


class TestIndexSchema:
    """memory_index.rank_text reads the log as its owner (RLS would forbid the GIN index), so
    it must answer the caller's own rows only, and nothing to anyone else."""

    RANK = "select count(*) from memory_index.rank_text('treasure', 'english', 10, '{}')"

    async def test_only_the_callers_rows_and_nothing_without_claims(
        self, repo: PostgresMemoryRepository, admin_pool: asyncpg.Pool
    ) -> None:
        alice, bob = await new_user(admin_pool), await new_user(admin_pool)
        await repo.append_items(alice, EPISODES, [said("the treasure map")], cap=500)
        assert await call_as(admin_pool, alice.id, self.RANK) == 1
        assert await call_as(admin_pool, bob.id, self.RANK) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await call_as(admin_pool, None, self.RANK, role="anon")
        async with admin_pool.acquire() as conn, conn.transaction():
            await conn.execute("set local role authenticated")  # no claims: no user
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(self.RANK)

    @pytest.mark.parametrize("role", ["anon", "service_role"])
    async def test_no_other_api_role_may_use_it(self, admin_pool: asyncpg.Pool, role: str) -> None:
        assert not await admin_pool.fetchval(
            "select has_schema_privilege($1, 'memory_index', 'USAGE')", role
        )
        assert not await admin_pool.fetchval(
            "select has_function_privilege($1,"
            " 'memory_index.rank_text(text, text, integer, text[])', 'EXECUTE')",
            role,
        )
