"""Guardians in the database, on both PostgreSQL servers, as PostgREST runs statements (role
authenticated + request.jwt.claims): who may make links, guardian-owned fields refused to the
child on every write path, a guardian reaching only its own children and only their owned
fields, removed links revoking at once, chat usage that can only count up, and limits and
report storage that hold under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from tests.conftest import create_auth_user
from tests.db_helpers import acting_as, call_as, execute_as, memory_row, snapshot, sqlstate_as

OWNED_FIELDS = ("core_instructions", "parent_reports")


async def link(pool: asyncpg.Pool, guardian: uuid.UUID, child: uuid.UUID) -> None:
    """What `make guardian` does: the operator (the owner) inserts the link."""
    await pool.execute(
        "insert into public.guardianships (guardian_id, child_id) values ($1, $2)", guardian, child
    )


async def unlink(pool: asyncpg.Pool, guardian: uuid.UUID, child: uuid.UUID) -> None:
    await pool.execute(
        "delete from public.guardianships where guardian_id = $1 and child_id = $2",
        guardian,
        child,
    )


async def family(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID]:
    """A guardian and a linked child whose memory holds an identity, an instruction and a
    report (written by the guardian, as the system would)."""
    guardian, child = await create_auth_user(pool), await create_auth_user(pool)
    await link(pool, guardian, child)
    await call_as(pool, child, "select public.memory_set_field('identity', $1::jsonb)", {"n": 1})
    await call_as(
        pool,
        guardian,
        "select public.guardian_set_field($1, 'core_instructions', $2::jsonb)",
        child,
        [{"id": "rule-1", "text": "bedtime at 8"}],
    )
    await pool.execute(
        "update public.memories set parent_reports = $2::jsonb where user_id = $1",
        child,
        [{"id": "report-1", "report": "all good", "through_episode_id": "none"}],
    )
    return guardian, child


class TestLinks:
    @pytest.mark.parametrize(
        "sql",
        [
            "insert into public.guardianships (guardian_id, child_id) values ($1, $2)",
            "insert into public.guardianships (guardian_id, child_id) values ($2, $1)",
        ],
    )
    async def test_no_signed_in_user_can_make_a_link(
        self, admin_pool: asyncpg.Pool, sql: str
    ) -> None:
        """A stranger can not make itself anyone's guardian, nor a child pick a guardian."""
        me, other = await create_auth_user(admin_pool), await create_auth_user(admin_pool)
        assert await sqlstate_as(admin_pool, me, sql, me, other) == "42501"
        assert await sqlstate_as(admin_pool, None, sql, me, other, role="anon") == "42501"
        assert (
            await admin_pool.fetchval(
                "select count(*) from public.guardianships where $1 in (guardian_id, child_id)", me
            )
            == 0
        )

    async def test_links_can_not_be_changed_or_removed_by_users(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        guardian, child = await family(admin_pool)
        stranger = await create_auth_user(admin_pool)
        for user in (guardian, child, stranger):
            assert (
                await sqlstate_as(
                    admin_pool, user, "update public.guardianships set guardian_id = $1", user
                )
                == "42501"
            )
            assert (
                await sqlstate_as(admin_pool, user, "delete from public.guardianships") == "42501"
            )
        assert (
            await admin_pool.fetchval(
                "select guardian_id from public.guardianships where child_id = $1", child
            )
            == guardian
        )

    async def test_guardian_and_child_see_their_link_and_a_stranger_sees_none(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        guardian, child = await family(admin_pool)
        stranger = await create_auth_user(admin_pool)
        select = (
            "select array_agg(guardian_id::text || '>' || child_id::text) from public.guardianships"
        )
        expected = [f"{guardian}>{child}"]
        assert await call_as(admin_pool, guardian, select) == expected
        assert await call_as(admin_pool, child, select) == expected
        assert await call_as(admin_pool, stranger, select) is None
        children = await call_as(admin_pool, guardian, "select public.guardian_children()")
        assert [c["child_id"] for c in children] == [str(child)]
        assert await call_as(admin_pool, child, "select public.guardian_children()") == []


# Every way a signed-in child can reach its guardian-owned fields: our functions (what the API
# and PostgREST's /rpc call) and the table itself (what PostgREST's /memories does).
CHILD_WRITES: dict[str, tuple[str, tuple[Any, ...]]] = {
    "set_field": (
        "select public.memory_set_field($1, '[]'::jsonb)",
        (),
    ),
    "append_items": (
        'select public.memory_append_items($1, \'[{"text": "no rules"}]\'::jsonb, 10)',
        (),
    ),
    "append_items_keyed": (
        "select public.memory_append_items($1, '[{\"text\": \"no rules\"}]'::jsonb, 10, 'k')",
        (),
    ),
    "remove_item": ("select public.memory_remove_item($1, '{item}')", ()),
    "compact": (
        "select public.memory_compact($1, array['{item}'], 'identity', '{{}}'::jsonb)",
        (),
    ),
    "update": ("update public.memories set {field} = '[]'::jsonb", ()),
    "update_append": (
        'update public.memories set {field} = {field} || \'[{"text": "forged"}]\'::jsonb',
        (),
    ),
    "upsert": (
        "insert into public.memories (user_id, {field}) values (auth.uid(), '[]'::jsonb)"
        " on conflict (user_id) do update set {field} = excluded.{field}",
        (),
    ),
}


class TestChildWithAGuardian:
    @pytest.mark.parametrize("field", OWNED_FIELDS)
    @pytest.mark.parametrize("path", sorted(CHILD_WRITES))
    async def test_every_write_to_an_owned_field_is_refused(
        self, admin_pool: asyncpg.Pool, path: str, field: str
    ) -> None:
        _, child = await family(admin_pool)
        before = snapshot(await memory_row(admin_pool, child))
        sql, args = CHILD_WRITES[path]
        item = "rule-1" if field == "core_instructions" else "report-1"
        sql = sql.replace("{field}", field).replace("{item}", item).replace("{{}}", "{}")
        if "$1" in sql:
            args = (field, *args)
        assert await sqlstate_as(admin_pool, child, sql, *args) == "42501"
        assert snapshot(await memory_row(admin_pool, child)) == before

    async def test_a_first_row_can_not_carry_owned_fields(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await create_auth_user(admin_pool), await create_auth_user(admin_pool)
        await link(admin_pool, guardian, child)
        for field in OWNED_FIELDS:
            sql = f"insert into public.memories (user_id, {field}) values ($1, '[{{}}]'::jsonb)"  # noqa: S608
            assert await sqlstate_as(admin_pool, child, sql, child) == "42501"
        assert await memory_row(admin_pool, child) is None

    async def test_the_refusal_names_the_guardian(self, admin_pool: asyncpg.Pool) -> None:
        _, child = await family(admin_pool)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="set by your guardian"):
            await call_as(
                admin_pool, child, "select public.memory_set_field('core_instructions', '[]')"
            )

    async def test_the_childs_own_fields_stay_writable(self, admin_pool: asyncpg.Pool) -> None:
        _, child = await family(admin_pool)
        await call_as(
            admin_pool,
            child,
            "select public.memory_append_items('episodic_memory', '[{\"text\": \"hi\"}]', 10)",
        )
        status = await execute_as(
            admin_pool, child, "update public.memories set rewards = '[{\"star\": 1}]'"
        )
        assert status == "UPDATE 1"
        row = await memory_row(admin_pool, child)
        assert row is not None
        assert [e["text"] for e in row["episodic_memory"]] == ["hi"]
        assert [i["id"] for i in row["core_instructions"]] == ["rule-1"]

    async def test_the_child_reads_its_owned_fields(self, admin_pool: asyncpg.Pool) -> None:
        _, child = await family(admin_pool)
        document = await call_as(admin_pool, child, "select public.memory_read_document()")
        assert [i["text"] for i in document["core_instructions"]] == ["bedtime at 8"]
        assert [r["id"] for r in document["parent_reports"]] == ["report-1"]

    async def test_the_child_can_not_erase_its_guardians_fields(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        _, child = await family(admin_pool)
        before = snapshot(await memory_row(admin_pool, child))
        assert await sqlstate_as(admin_pool, child, "select public.memory_erase()") == "42501"
        assert await sqlstate_as(admin_pool, child, "delete from public.memories") == "42501"
        assert snapshot(await memory_row(admin_pool, child)) == before


class TestUserWithoutAGuardian:
    """Behaves exactly as before guardians: its own instructions and reports, and erase."""

    async def test_writes_its_own_owned_fields_and_erases(self, admin_pool: asyncpg.Pool) -> None:
        user = await create_auth_user(admin_pool)
        await call_as(
            admin_pool,
            user,
            "select public.memory_set_field('core_instructions', '[{\"id\": \"a\"}]')",
        )
        await call_as(
            admin_pool,
            user,
            "select public.memory_append_items('parent_reports', '[{\"id\": \"r\"}]', 10)",
        )
        assert (
            await execute_as(
                admin_pool, user, "update public.memories set core_instructions = '[]'"
            )
            == "UPDATE 1"
        )
        row = await memory_row(admin_pool, user)
        assert row is not None
        assert (row["core_instructions"], [r["id"] for r in row["parent_reports"]]) == ([], ["r"])
        assert await call_as(admin_pool, user, "select public.memory_erase()") is True
        assert await memory_row(admin_pool, user) is None

    async def test_a_guardian_of_someone_else_changes_nothing_for_it(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        """Being a guardian does not make one's own fields guardian-owned."""
        guardian, _ = await family(admin_pool)
        await call_as(
            admin_pool, guardian, "select public.memory_set_field('core_instructions', '[]')"
        )
        assert await call_as(admin_pool, guardian, "select public.memory_erase()") is True


class TestGuardian:
    async def test_reads_its_childs_memory(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await family(admin_pool)
        document = await call_as(
            admin_pool, guardian, "select public.guardian_read_document($1)", child
        )
        assert document["identity"] == {"n": 1}
        rows = await call_as(
            admin_pool, guardian, "select count(*) from public.memories where user_id = $1", child
        )
        assert rows == 1

    async def test_sets_appends_and_removes_instructions(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await family(admin_pool)
        appended = await call_as(
            admin_pool,
            guardian,
            "select public.guardian_append_items($1, 'core_instructions', $2::jsonb, 10)",
            child,
            [{"text": "be kind"}],
        )
        new_id = appended["items"][0]["id"]
        removed = await call_as(
            admin_pool,
            guardian,
            "select public.guardian_remove_item($1, 'core_instructions', 'rule-1')",
            child,
        )
        assert removed is not None
        row = await memory_row(admin_pool, child)
        assert row is not None
        assert [(i["id"], i["text"]) for i in row["core_instructions"]] == [(new_id, "be kind")]

    async def test_sets_instructions_before_the_child_has_a_row(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        guardian, child = await create_auth_user(admin_pool), await create_auth_user(admin_pool)
        await link(admin_pool, guardian, child)
        await call_as(
            admin_pool,
            guardian,
            "select public.guardian_set_field($1, 'core_instructions', $2::jsonb)",
            child,
            [{"text": "no scary stories"}],
        )
        row = await memory_row(admin_pool, child)
        assert row is not None
        assert [i["text"] for i in row["core_instructions"]] == ["no scary stories"]

    @pytest.mark.parametrize(
        "sql",
        [
            "update public.memories set identity = '{\"hacked\": true}' where user_id = $1",
            "update public.memories set episodic_memory = '[{\"x\": 1}]' where user_id = $1",
            "update public.memories set rewards = '[{\"x\": 1}]', core_instructions = '[]'"
            " where user_id = $1",
            "insert into public.memories (user_id, identity) values ($1, '{\"x\": 1}')"
            " on conflict (user_id) do update set identity = excluded.identity",
            "insert into public.memories (user_id, core_instructions) values ($1, '[]')"
            " on conflict (user_id) do update set episodic_memory = '[]', core_instructions = '[]'",
            "select public.guardian_set_field($1, 'identity', '{}'::jsonb)",
            "select public.guardian_append_items($1, 'episodic_memory', '[{}]'::jsonb, 10)",
        ],
    )
    async def test_can_not_change_the_childs_own_fields(
        self, admin_pool: asyncpg.Pool, sql: str
    ) -> None:
        guardian, child = await family(admin_pool)
        before = snapshot(await memory_row(admin_pool, child))
        assert await sqlstate_as(admin_pool, guardian, sql, child) in ("42501", "22023")
        assert snapshot(await memory_row(admin_pool, child)) == before

    async def test_owned_fields_directly_through_the_table(self, admin_pool: asyncpg.Pool) -> None:
        """What a guardian's PostgREST PATCH on /memories?user_id=eq.<child> does."""
        guardian, child = await family(admin_pool)
        status = await execute_as(
            admin_pool,
            guardian,
            'update public.memories set core_instructions = \'[{"id": "x"}]\' where user_id = $1',
            child,
        )
        assert status == "UPDATE 1"

    async def test_a_guardian_of_a_can_not_reach_b(self, admin_pool: asyncpg.Pool) -> None:
        guardian_a, _ = await family(admin_pool)
        _, child_b = await family(admin_pool)
        before = snapshot(await memory_row(admin_pool, child_b))
        for sql in (
            "select public.guardian_read_document($1)",
            "select public.guardian_set_field($1, 'core_instructions', '[]'::jsonb)",
            "select public.guardian_append_items($1, 'core_instructions', '[{}]'::jsonb, 10)",
            "select public.guardian_remove_item($1, 'core_instructions', 'rule-1')",
            "select public.guardian_report_context($1, 10)",
            'select public.guardian_store_report($1, \'{"through_episode_id": "e"}\', null, 10)',
            "select public.guardian_set_chat_limit($1, 1)",
            "select public.guardian_erase_child($1)",
        ):
            assert await sqlstate_as(admin_pool, guardian_a, sql, child_b) == "42501", sql
        seen = await call_as(
            admin_pool,
            guardian_a,
            "select count(*) from public.memories where user_id = $1",
            child_b,
        )
        assert seen == 0
        status = await execute_as(
            admin_pool,
            guardian_a,
            "update public.memories set core_instructions = '[]' where user_id = $1",
            child_b,
        )
        assert status == "UPDATE 0"
        assert (
            await execute_as(
                admin_pool, guardian_a, "delete from public.memories where user_id = $1", child_b
            )
            == "DELETE 0"
        )
        assert snapshot(await memory_row(admin_pool, child_b)) == before

    async def test_a_removed_link_revokes_access_at_once(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await family(admin_pool)
        async with acting_as(admin_pool, guardian) as conn:  # a guardian's open session
            assert await conn.fetchval("select public.guardian_read_document($1)", child)
        await unlink(admin_pool, guardian, child)
        read = "select public.guardian_read_document($1)"
        assert await sqlstate_as(admin_pool, guardian, read, child) == "42501"
        assert (
            await call_as(
                admin_pool,
                guardian,
                "select count(*) from public.memories where user_id = $1",
                child,
            )
            == 0
        )
        # ...and the child's fields are its own again.
        await call_as(
            admin_pool, child, "select public.memory_set_field('core_instructions', '[]')"
        )

    async def test_erases_the_childs_memory(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await family(admin_pool)
        assert (
            await call_as(admin_pool, guardian, "select public.guardian_erase_child($1)", child)
            is True
        )
        assert await memory_row(admin_pool, child) is None
        assert (
            await call_as(admin_pool, guardian, "select public.guardian_erase_child($1)", child)
            is False
        )


class TestChatLimits:
    TAKE = "select public.chat_take_turn($1)"

    async def test_the_child_can_not_set_its_own_limit(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await family(admin_pool)
        await call_as(admin_pool, guardian, "select public.guardian_set_chat_limit($1, 2)", child)
        # RLS: the child's update and delete see no row to change; the rest are refused.
        assert (
            await execute_as(admin_pool, child, "update public.chat_limits set daily_turns = null")
            == "UPDATE 0"
        )
        for sql in (
            "insert into public.chat_limits (child_id, daily_turns) values (auth.uid(), null)"
            " on conflict (child_id) do update set daily_turns = null",
            "delete from public.chat_limits",
            "select public.guardian_set_chat_limit(auth.uid(), null)",
        ):
            assert await sqlstate_as(admin_pool, child, sql) == "42501", sql
        assert (
            await admin_pool.fetchval(
                "select daily_turns from public.chat_limits where child_id = $1", child
            )
            == 2
        )

    async def test_the_daily_limit_refuses_with_retry_after(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await family(admin_pool)
        await call_as(admin_pool, guardian, "select public.guardian_set_chat_limit($1, 2)", child)
        assert await call_as(admin_pool, child, self.TAKE, None) is None
        assert await call_as(admin_pool, child, self.TAKE, None) is None
        refused = await call_as(admin_pool, child, self.TAKE, None)
        assert refused["refused"] == "daily" and refused["limit"] == 2
        assert 1 <= refused["retry_after"] <= 86_400
        assert (
            await admin_pool.fetchval(
                "select day_turns from public.chat_usage where user_id = $1", child
            )
            == 2
        )

    async def test_a_limit_of_zero_stops_chat(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await family(admin_pool)
        await call_as(admin_pool, guardian, "select public.guardian_set_chat_limit($1, 0)", child)
        assert (await call_as(admin_pool, child, self.TAKE, None))["refused"] == "daily"

    async def test_the_per_minute_limit(self, admin_pool: asyncpg.Pool) -> None:
        user = await create_auth_user(admin_pool)
        results = [await call_as(admin_pool, user, self.TAKE, 3) for _ in range(4)]
        assert results[:3] == [None, None, None]
        assert results[3]["refused"] == "minute" and 1 <= results[3]["retry_after"] <= 60

    @pytest.mark.parametrize(
        "sql",
        [
            "update public.chat_usage set day_turns = 0, minute_turns = 0",
            "update public.chat_usage set day_start = day_start - 1",
            "update public.chat_usage set minute_start = minute_start + interval '1 minute',"
            " minute_turns = 1",
            "delete from public.chat_usage",
            "insert into public.chat_usage values (auth.uid(), current_date, 0, now(), 0)"
            " on conflict (user_id) do update set day_turns = 0",
        ],
    )
    async def test_usage_can_only_count_up(self, admin_pool: asyncpg.Pool, sql: str) -> None:
        """A child resetting its own count (PostgREST on /chat_usage) is refused."""
        user = await create_auth_user(admin_pool)
        await call_as(admin_pool, user, self.TAKE, None)
        before = await admin_pool.fetchrow(
            "select * from public.chat_usage where user_id = $1", user
        )
        assert await sqlstate_as(admin_pool, user, sql) == "42501"
        after = await admin_pool.fetchrow(
            "select * from public.chat_usage where user_id = $1", user
        )
        assert before is not None and after is not None
        assert dict(after) == dict(before)

    async def test_concurrent_turns_at_the_limit_take_exactly_the_limit(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        guardian, child = await family(admin_pool)
        await call_as(admin_pool, guardian, "select public.guardian_set_chat_limit($1, 5)", child)
        results = await asyncio.gather(
            *(call_as(admin_pool, child, self.TAKE, None) for _ in range(20))
        )
        assert sum(r is None for r in results) == 5
        assert (
            await admin_pool.fetchval(
                "select day_turns from public.chat_usage where user_id = $1", child
            )
            == 5
        )

    async def test_a_stored_turns_retry_is_not_counted(self, admin_pool: asyncpg.Pool) -> None:
        user = await create_auth_user(admin_pool)
        begin = "select public.chat_begin_turn(4, $1::text[], 1)"
        assert "version" in await call_as(admin_pool, user, begin, ["u1", "a1"])
        await call_as(
            admin_pool,
            user,
            "select public.memory_append_items('episodic_memory', $1::jsonb, 10)",
            [
                {"id": "u1", "role": "user", "content": "hi"},
                {"id": "a1", "role": "assistant", "content": "hello"},
            ],
        )
        retried = await call_as(admin_pool, user, begin, ["u1", "a1"])
        assert [e["id"] for e in retried["turn_episodes"]] == ["u1", "a1"]
        assert (await call_as(admin_pool, user, begin, ["u2", "a2"]))["refused"] == "minute"


class TestReports:
    async def test_racing_stores_keep_one_report(self, admin_pool: asyncpg.Pool) -> None:
        guardian, child = await family(admin_pool)
        await call_as(
            admin_pool,
            child,
            "select public.memory_append_items('episodic_memory', $1::jsonb, 10)",
            [{"id": "e1", "role": "user", "content": "hi"}],
        )
        context = await call_as(
            admin_pool, guardian, "select public.guardian_report_context($1, 10)", child
        )
        assert [e["id"] for e in context["episodes"]] == ["e1"]
        after = context["after_episode_id"]
        assert after == "none"  # the report written by `family` covers an episode gone since
        store = "select public.guardian_store_report($1, $2::jsonb, $3, 10)"
        results = await asyncio.gather(
            *(
                call_as(
                    admin_pool,
                    guardian,
                    store,
                    child,
                    {"report": f"take {n}", "through_episode_id": "e1"},
                    after,
                )
                for n in range(8)
            )
        )
        assert sum(r is not None for r in results) == 1
        row = await memory_row(admin_pool, child)
        assert row is not None
        assert [r["id"] for r in row["parent_reports"][:-1]] == ["report-1"]
        assert row["parent_reports"][-1]["through_episode_id"] == "e1"
        context = await call_as(
            admin_pool, guardian, "select public.guardian_report_context($1, 10)", child
        )
        assert context["episodes"] == [] and context["after_episode_id"] == "e1"


class TestCatalog:
    TABLES = ("guardianships", "chat_limits", "chat_usage")

    async def test_anon_has_nothing_and_authenticated_only_what_it_needs(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        granted = {
            (table, role, privilege)
            for table in self.TABLES
            for role in ("anon", "authenticated", "public")
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES")
            if await admin_pool.fetchval(
                "select has_table_privilege($1::regrole, $2::regclass, $3)"
                if role != "public"
                else "select coalesce(bool_or(a.grantee = 0 and a.privilege_type = $3), false)"
                " from pg_catalog.pg_class as c, aclexplode(c.relacl) as a"
                " where c.oid = $2::regclass and $1 = 'public'",
                role,
                f"public.{table}",
                privilege,
            )
        }
        assert granted == {
            ("guardianships", "authenticated", "SELECT"),
            ("chat_limits", "authenticated", "SELECT"),
            ("chat_limits", "authenticated", "INSERT"),
            ("chat_limits", "authenticated", "UPDATE"),
            ("chat_usage", "authenticated", "SELECT"),
            ("chat_usage", "authenticated", "INSERT"),
            ("chat_usage", "authenticated", "UPDATE"),
        }

    async def test_the_ownership_trigger_skips_writes_to_other_fields(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        """A chat turn's append (episodic_memory only) does not fire the ownership check."""
        columns = await admin_pool.fetchval(
            "select array_agg(a.attname::text order by a.attname)"
            " from pg_catalog.pg_trigger as t"
            " join pg_catalog.pg_attribute as a"
            "   on a.attrelid = t.tgrelid and a.attnum = any (t.tgattr::int2[])"
            " where t.tgrelid = 'public.memories'::regclass"
            "   and t.tgname = 'memories_guard_fields'"
        )
        assert columns == ["core_instructions", "parent_reports"]

    @pytest.mark.parametrize(
        "function",
        ["memories_guard_fields", "memories_guard_child_fields", "chat_usage_count_only"],
    )
    async def test_trigger_functions_are_not_callable(
        self, admin_pool: asyncpg.Pool, function: str
    ) -> None:
        for role in ("anon", "authenticated"):
            assert not await admin_pool.fetchval(
                "select has_function_privilege($1, $2, 'EXECUTE')", role, f"public.{function}()"
            )
