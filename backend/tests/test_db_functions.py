"""The write functions of supabase_schema.sql, called as the signed-in user: set, merge, append
(cap, idempotent ids), remove, erase, If-Match versions, kinds, field names, the write trigger
and the cascade from auth.users."""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from models import LIST_FIELDS, OBJECT_FIELDS
from tests.conftest import create_auth_user
from tests.db_helpers import (
    API_CALLS,
    acting_as,
    call_as,
    execute_as,
    memory_row,
    snapshot,
    sqlstate_as,
)

SET = "select public.memory_set_field($1, $2::jsonb, $3)"
MERGE = "select public.memory_merge_field($1, $2::jsonb, $3)"
APPEND = "select public.memory_append_items($1, $2::jsonb, $3)"
KEYED_APPEND = "select public.memory_append_items($1, $2::jsonb, $3, $4)"
REMOVE = "select public.memory_remove_item($1, $2)"
ERASE = "select public.memory_erase()"


@pytest.fixture
async def uid(admin_pool: asyncpg.Pool) -> uuid.UUID:
    """A fresh signed-up user with no memory row."""
    return await create_auth_user(admin_pool)


async def _db_micros(pool: asyncpg.Pool) -> int:
    """The database clock in microseconds since the epoch (what a new row's version is)."""
    micros: int = await pool.fetchval(
        "select (extract(epoch from clock_timestamp()) * 1000000)::bigint"
    )
    return micros


async def _stored(pool: asyncpg.Pool, user_id: uuid.UUID, field: str) -> Any:
    row = await memory_row(pool, user_id)
    assert row is not None
    return row[field]


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


class TestSetField:
    async def test_object(self, admin_pool: asyncpg.Pool, uid: uuid.UUID) -> None:
        since = await _db_micros(admin_pool)
        first = await call_as(admin_pool, uid, SET, "identity", {"name": "Ada"}, None)
        second = await call_as(admin_pool, uid, SET, "identity", {"age": 7}, None)
        assert first["value"] == {"name": "Ada"}
        assert since <= first["version"] <= await _db_micros(admin_pool)  # a new row: the clock
        assert second["value"] == {"age": 7} and second["version"] == first["version"] + 1
        assert await _stored(admin_pool, uid, "identity") == {"age": 7}

    async def test_list_items_get_id_and_created_at(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        given = {"id": "mine", "created_at": "2020-01-01T00:00:00+00:00", "text": "kept"}
        result = await call_as(
            admin_pool, uid, SET, "core_instructions", [{"text": "be kind"}, given], None
        )
        new, kept = result["value"]
        assert _is_uuid(new["id"]) and new["text"] == "be kind"
        assert datetime.fromisoformat(new["created_at"]).tzinfo is not None
        assert kept == given
        assert await _stored(admin_pool, uid, "core_instructions") == result["value"]

    async def test_empty_list(self, admin_pool: asyncpg.Pool, uid: uuid.UUID) -> None:
        first = await call_as(admin_pool, uid, SET, "rewards", [{"star": 1}], None)
        result = await call_as(admin_pool, uid, SET, "rewards", [], None)
        assert result["value"] == [] and result["version"] == first["version"] + 1
        assert await _stored(admin_pool, uid, "rewards") == []

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("identity", []),
            ("identity", "text"),
            ("identity", None),
            ("rewards", {"star": 1}),
            ("rewards", [{"star": 1}, "not an object"]),
            ("rewards", [{"id": 5}]),
            ("rewards", [{"id": ""}]),
            ("rewards", [[1]]),
            ("rewards", [{"id": "twice", "n": 1}, {"id": "twice", "n": 2}]),
        ],
    )
    async def test_bad_value_is_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, field: str, value: Any
    ) -> None:
        await call_as(admin_pool, uid, SET, "identity", {"name": "Ada"}, None)
        before = snapshot(await memory_row(admin_pool, uid))
        assert await sqlstate_as(admin_pool, uid, SET, field, value, None) == "22023"
        assert snapshot(await memory_row(admin_pool, uid)) == before


class TestMergeField:
    async def test_null_removes_a_key_and_values_replace_shallowly(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        first = await call_as(
            admin_pool,
            uid,
            SET,
            "current_state",
            {"mood": "happy", "pet": {"kind": "cat", "age": 2}, "gone": 1},
            None,
        )
        result = await call_as(
            admin_pool,
            uid,
            MERGE,
            "current_state",
            {"pet": {"kind": "dog"}, "gone": None, "new": [1, None]},
            None,
        )
        expected = {"mood": "happy", "pet": {"kind": "dog"}, "new": [1, None]}
        assert result["value"] == expected and result["version"] == first["version"] + 1
        assert await _stored(admin_pool, uid, "current_state") == expected

    async def test_first_merge_creates_the_row_without_null_keys(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        since = await _db_micros(admin_pool)
        result = await call_as(
            admin_pool, uid, MERGE, "long_term_summary", {"a": 1, "b": None}, None
        )
        assert result["value"] == {"a": 1}
        assert since <= result["version"] <= await _db_micros(admin_pool)
        assert await _stored(admin_pool, uid, "long_term_summary") == {"a": 1}

    @pytest.mark.parametrize(
        ("field", "patch"),
        [("rewards", {"a": 1}), ("identity", [1]), ("identity", "x"), ("identity", None)],
    )
    async def test_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, field: str, patch: Any
    ) -> None:
        await call_as(admin_pool, uid, SET, "identity", {"name": "Ada"}, None)
        before = snapshot(await memory_row(admin_pool, uid))
        assert await sqlstate_as(admin_pool, uid, MERGE, field, patch, None) == "22023"
        assert snapshot(await memory_row(admin_pool, uid)) == before


class TestAppendItems:
    async def test_first_append_creates_the_row(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        result = await call_as(admin_pool, uid, APPEND, "episodic_memory", [{"t": "hi"}], 10)
        (item,) = result["items"]
        assert item["t"] == "hi" and _is_uuid(item["id"]) and "created_at" in item
        assert await _stored(admin_pool, uid, "episodic_memory") == [item]
        row = await memory_row(admin_pool, uid)
        assert row is not None and row["version"] == result["version"]
        assert row["updated_at"] == datetime.fromisoformat(result["updated_at"])

    async def test_cap_drops_the_oldest(self, admin_pool: asyncpg.Pool, uid: uuid.UUID) -> None:
        for n in range(1, 5):
            await call_as(admin_pool, uid, APPEND, "rewards", [{"n": n}], 3)
        assert [i["n"] for i in await _stored(admin_pool, uid, "rewards")] == [2, 3, 4]
        result = await call_as(admin_pool, uid, APPEND, "rewards", [{"n": 5}, {"n": 6}], 3)
        assert [i["n"] for i in result["items"]] == [5, 6]
        assert [i["n"] for i in await _stored(admin_pool, uid, "rewards")] == [4, 5, 6]

    async def test_one_batch_larger_than_the_cap_keeps_its_newest(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        await call_as(admin_pool, uid, APPEND, "rewards", [{"n": n} for n in range(5)], 2)
        assert [i["n"] for i in await _stored(admin_pool, uid, "rewards")] == [3, 4]

    async def test_a_lower_cap_trims_an_existing_list(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        await call_as(admin_pool, uid, APPEND, "rewards", [{"n": n} for n in range(6)], 100)
        await call_as(admin_pool, uid, APPEND, "rewards", [{"n": 6}], 2)
        assert [i["n"] for i in await _stored(admin_pool, uid, "rewards")] == [5, 6]

    async def test_same_id_twice_is_kept_once(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        first = await call_as(
            admin_pool, uid, APPEND, "parent_reports", [{"id": "r1", "text": "ok"}], 10
        )
        again = await call_as(
            admin_pool, uid, APPEND, "parent_reports", [{"id": "r1", "text": "ok"}], 10
        )
        assert again["items"] == first["items"]  # the stored copy, created_at included
        assert again["version"] == first["version"]  # nothing was written
        stored = await _stored(admin_pool, uid, "parent_reports")
        assert stored == first["items"]

    async def test_same_id_within_one_batch_is_kept_once(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        result = await call_as(
            admin_pool,
            uid,
            APPEND,
            "rewards",
            [{"id": "x", "n": 1}, {"id": "y", "n": 2}, {"id": "x", "n": 1}],
            10,
        )
        assert [i["id"] for i in result["items"]] == ["x", "y", "x"]
        assert result["items"][0] == result["items"][2]
        assert [i["id"] for i in await _stored(admin_pool, uid, "rewards")] == ["x", "y"]

    async def test_new_and_repeated_items_in_one_batch(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        await call_as(admin_pool, uid, APPEND, "rewards", [{"id": "a", "n": 1}], 10)
        await call_as(
            admin_pool, uid, APPEND, "rewards", [{"id": "a", "n": 1}, {"id": "b", "n": 2}], 10
        )
        assert [i["id"] for i in await _stored(admin_pool, uid, "rewards")] == ["a", "b"]

    async def test_same_id_with_other_content_conflicts(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        await call_as(admin_pool, uid, APPEND, "rewards", [{"id": "r1", "n": 1}], 10)
        before = snapshot(await memory_row(admin_pool, uid))
        state = await sqlstate_as(
            admin_pool, uid, APPEND, "rewards", [{"id": "new", "n": 0}, {"id": "r1", "n": 2}], 10
        )
        assert state == "PT409"
        assert snapshot(await memory_row(admin_pool, uid)) == before

    @pytest.mark.parametrize(
        ("field", "items"),
        [
            ("identity", [{"n": 1}]),
            ("rewards", []),
            ("rewards", {"n": 1}),
            ("rewards", None),
            ("rewards", [1]),
            ("rewards", [{"id": 7}]),
        ],
    )
    async def test_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, field: str, items: Any
    ) -> None:
        await call_as(admin_pool, uid, APPEND, "rewards", [{"n": 0}], 10)
        before = snapshot(await memory_row(admin_pool, uid))
        assert await sqlstate_as(admin_pool, uid, APPEND, field, items, 10) == "22023"
        assert snapshot(await memory_row(admin_pool, uid)) == before


def _key_id(user_id: uuid.UUID, field: str, key: str, position: int) -> str:
    """The id a keyed append gives the item at `position` that came without one."""
    seed = f"{user_id}/{field}/{key}/{position}".encode()
    return str(uuid.UUID(hashlib.md5(seed, usedforsecurity=False).hexdigest()))


class TestAppendWithIdempotencyKey:
    """With a key the append is all or nothing: the same body again is a retry (the stored
    items, nothing written); the key with any other body is PT409 and changes nothing."""

    BODY = ({"n": 1}, {"id": "mine", "n": 2}, {"n": 3})

    async def _first(self, pool: asyncpg.Pool, uid: uuid.UUID, items: Any, key: str = "k") -> Any:
        return await call_as(pool, uid, KEYED_APPEND, "rewards", list(items), 10, key)

    async def test_items_without_an_id_get_ids_from_user_field_key_and_position(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        result = await self._first(admin_pool, uid, self.BODY, key="turn-1")
        assert [i["id"] for i in result["items"]] == [
            _key_id(uid, "rewards", "turn-1", 0),
            "mine",
            _key_id(uid, "rewards", "turn-1", 2),
        ]
        assert [i["n"] for i in result["items"]] == [1, 2, 3]
        assert await _stored(admin_pool, uid, "rewards") == result["items"]

    async def test_a_retry_with_the_same_body_writes_nothing_and_answers_the_stored_items(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        first = await self._first(admin_pool, uid, self.BODY)
        before = snapshot(await memory_row(admin_pool, uid))
        for _ in range(2):
            retry = await self._first(admin_pool, uid, self.BODY)
            assert retry == first  # the stored items (created_at too), the same version
            assert snapshot(await memory_row(admin_pool, uid)) == before

    async def test_a_retry_with_created_at_given_is_still_a_retry(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        first = await self._first(admin_pool, uid, [{"n": 1}])
        again = [{"n": 1, "created_at": "2001-01-01T00:00:00+00:00"}]
        assert await self._first(admin_pool, uid, again) == first

    @pytest.mark.parametrize(
        "retry",
        [
            [*BODY, {"n": 4}],  # longer
            [*BODY, {"id": "theirs", "n": 4}],  # longer, the extra item with its own id
            list(BODY[:2]),  # shorter
            [{"n": 1}, {"id": "mine", "n": 2}, {"n": 30}],  # other content
            [{"n": 10}, {"id": "mine", "n": 2}, {"n": 3}],  # other content, first item
            [{"n": 1}, {"id": "other", "n": 2}, {"n": 3}],  # another id
            [{"n": 3}, {"id": "mine", "n": 2}, {"n": 1}],  # the same items in another order
        ],
        ids=[
            "longer",
            "longer-own-id",
            "shorter",
            "content",
            "first",
            "id",
            "order",
        ],
    )
    async def test_the_key_with_another_body_conflicts_and_changes_nothing(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, retry: list[dict[str, Any]]
    ) -> None:
        first = await self._first(admin_pool, uid, self.BODY)
        before = snapshot(await memory_row(admin_pool, uid))
        state = await sqlstate_as(admin_pool, uid, KEYED_APPEND, "rewards", retry, 10, "k")
        assert state == "PT409"
        assert snapshot(await memory_row(admin_pool, uid)) == before
        assert await self._first(admin_pool, uid, self.BODY) == first  # the retry still works

    async def test_a_batch_partly_stored_already_conflicts(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        await call_as(admin_pool, uid, APPEND, "rewards", [{"id": "mine", "n": 2}], 10)
        before = snapshot(await memory_row(admin_pool, uid))
        assert (
            await sqlstate_as(admin_pool, uid, KEYED_APPEND, "rewards", list(self.BODY), 10, "k")
            == "PT409"
        )
        assert snapshot(await memory_row(admin_pool, uid)) == before

    async def test_keys_are_per_user(self, admin_pool: asyncpg.Pool) -> None:
        a = await create_auth_user(admin_pool)
        b = await create_auth_user(admin_pool)
        first_a = await self._first(admin_pool, a, [{"n": 1}], key="same")
        first_b = await self._first(admin_pool, b, [{"n": 1}, {"n": 2}], key="same")  # longer
        assert [i["id"] for i in first_a["items"]] == [_key_id(a, "rewards", "same", 0)]
        assert [i["id"] for i in first_b["items"]] == [
            _key_id(b, "rewards", "same", p) for p in (0, 1)
        ]
        assert await _stored(admin_pool, a, "rewards") == first_a["items"]
        assert await _stored(admin_pool, b, "rewards") == first_b["items"]
        assert await self._first(admin_pool, a, [{"n": 1}], key="same") == first_a
        assert await self._first(admin_pool, b, [{"n": 1}, {"n": 2}], key="same") == first_b

    async def test_keys_are_per_field(self, admin_pool: asyncpg.Pool, uid: uuid.UUID) -> None:
        rewards = await call_as(admin_pool, uid, KEYED_APPEND, "rewards", [{"n": 1}], 10, "k")
        reports = await call_as(
            admin_pool, uid, KEYED_APPEND, "parent_reports", [{"n": 1}, {"n": 2}], 10, "k"
        )
        assert [i["id"] for i in reports["items"]] == [
            _key_id(uid, "parent_reports", "k", p) for p in (0, 1)
        ]
        assert reports["version"] == rewards["version"] + 1  # a write, not a conflict
        assert await _stored(admin_pool, uid, "rewards") == rewards["items"]
        assert await _stored(admin_pool, uid, "parent_reports") == reports["items"]
        again = await call_as(admin_pool, uid, KEYED_APPEND, "rewards", [{"n": 1}], 10, "k")
        assert again["items"] == rewards["items"]
        assert again["version"] == reports["version"]  # a retry: nothing written

    async def test_a_null_key_is_the_keyless_append(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        first = await call_as(admin_pool, uid, KEYED_APPEND, "rewards", [{"n": 1}], 10, None)
        second = await call_as(admin_pool, uid, KEYED_APPEND, "rewards", [{"n": 1}], 10, None)
        assert first["items"][0]["id"] != second["items"][0]["id"]
        partly = [{"id": first["items"][0]["id"], "n": 1}, {"n": 2}]
        result = await call_as(admin_pool, uid, KEYED_APPEND, "rewards", partly, 10, None)
        assert result["items"][0] == first["items"][0]  # the stored copy, one new item
        assert len(await _stored(admin_pool, uid, "rewards")) == 3

    @pytest.mark.parametrize("key", ["", "k" * 256])
    async def test_a_key_of_0_or_over_255_characters_is_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, key: str
    ) -> None:
        assert (
            await sqlstate_as(admin_pool, uid, KEYED_APPEND, "rewards", [{"n": 1}], 10, key)
            == "22023"
        )
        assert await memory_row(admin_pool, uid) is None
        longest = await call_as(admin_pool, uid, KEYED_APPEND, "rewards", [{"n": 1}], 10, "k" * 255)
        assert longest["items"][0]["id"] == _key_id(uid, "rewards", "k" * 255, 0)

    async def test_a_keyed_batch_is_checked_like_any_other(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        for items in ([1], [{"id": 7}], [{"n": 1}, "x"]):
            assert (
                await sqlstate_as(admin_pool, uid, KEYED_APPEND, "rewards", items, 10, "k")
                == "22023"
            )
        assert await memory_row(admin_pool, uid) is None


class TestRemoveItem:
    async def test_removes_by_id(self, admin_pool: asyncpg.Pool, uid: uuid.UUID) -> None:
        added = await call_as(
            admin_pool, uid, APPEND, "rewards", [{"n": 1}, {"n": 2}, {"n": 3}], 10
        )
        middle = added["items"][1]["id"]
        result = await call_as(admin_pool, uid, REMOVE, "rewards", middle)
        assert result["version"] == added["version"] + 1
        assert [i["n"] for i in await _stored(admin_pool, uid, "rewards")] == [1, 3]

    async def test_missing_item_is_null_and_changes_nothing(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        assert await call_as(admin_pool, uid, REMOVE, "rewards", "nope") is None  # no row
        await call_as(admin_pool, uid, APPEND, "rewards", [{"id": "a"}], 10)
        before = snapshot(await memory_row(admin_pool, uid))
        assert await call_as(admin_pool, uid, REMOVE, "rewards", "nope") is None
        assert await call_as(admin_pool, uid, REMOVE, "episodic_memory", "a") is None
        assert await call_as(admin_pool, uid, REMOVE, "rewards", "a' or '1'='1") is None
        assert snapshot(await memory_row(admin_pool, uid)) == before

    async def test_object_field_is_refused(self, admin_pool: asyncpg.Pool, uid: uuid.UUID) -> None:
        assert await sqlstate_as(admin_pool, uid, REMOVE, "identity", "a") == "22023"


class TestErase:
    async def test_erases_only_the_callers_row(self, admin_pool: asyncpg.Pool) -> None:
        a = await create_auth_user(admin_pool)
        b = await create_auth_user(admin_pool)
        await call_as(admin_pool, a, APPEND, "rewards", [{"n": 1}], 10)
        await call_as(admin_pool, b, APPEND, "rewards", [{"n": 1}], 10)
        assert await call_as(admin_pool, a, ERASE) is True
        assert await memory_row(admin_pool, a) is None
        assert await memory_row(admin_pool, b) is not None
        assert await call_as(admin_pool, a, ERASE) is False


class TestExpectedVersion:
    """p_expected_version is If-Match: null = always, 0 = only while no row, n = at version n.
    A mismatch raises PT412 and changes nothing."""

    @pytest.mark.parametrize(
        ("sql", "field", "value"),
        [(SET, "identity", {"a": 1}), (MERGE, "identity", {"a": 1})],
        ids=["set", "merge"],
    )
    async def test_zero_creates_only_when_there_is_no_row(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, sql: str, field: str, value: Any
    ) -> None:
        since = await _db_micros(admin_pool)
        created = await call_as(admin_pool, uid, sql, field, value, 0)
        assert since <= created["version"] <= await _db_micros(admin_pool)
        before = snapshot(await memory_row(admin_pool, uid))
        assert await sqlstate_as(admin_pool, uid, sql, field, {"b": 2}, 0) == "PT412"
        assert snapshot(await memory_row(admin_pool, uid)) == before

    @pytest.mark.parametrize("sql", [SET, MERGE], ids=["set", "merge"])
    async def test_matching_version_writes(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, sql: str
    ) -> None:
        await call_as(admin_pool, uid, SET, "identity", {"a": 1}, None)
        current = (await call_as(admin_pool, uid, SET, "identity", {"a": 2}, None))["version"]
        result = await call_as(admin_pool, uid, sql, "identity", {"b": 3}, current)
        assert result["version"] == current + 1
        assert (await _stored(admin_pool, uid, "identity"))["b"] == 3

    @pytest.mark.parametrize("sql", [SET, MERGE], ids=["set", "merge"])
    @pytest.mark.parametrize("stale", ["previous", "next", "one", "far"])
    async def test_stale_version_is_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, sql: str, stale: str
    ) -> None:
        await call_as(admin_pool, uid, SET, "identity", {"a": 1}, None)
        current = (await call_as(admin_pool, uid, SET, "identity", {"a": 2}, None))["version"]
        expected = {"previous": current - 1, "next": current + 1, "one": 1, "far": current + 97}
        before = snapshot(await memory_row(admin_pool, uid))
        assert (
            await sqlstate_as(admin_pool, uid, sql, "identity", {"b": 3}, expected[stale])
            == "PT412"
        )
        assert snapshot(await memory_row(admin_pool, uid)) == before

    @pytest.mark.parametrize("sql", [SET, MERGE], ids=["set", "merge"])
    async def test_a_version_when_there_is_no_row_is_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, sql: str
    ) -> None:
        assert await sqlstate_as(admin_pool, uid, sql, "identity", {"a": 1}, 1) == "PT412"
        assert await memory_row(admin_pool, uid) is None

    async def test_null_writes_unconditionally(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        versions = [
            (await call_as(admin_pool, uid, sql, "identity", {"n": n}, None))["version"]
            for n, sql in enumerate([SET, MERGE, SET])
        ]
        first = versions[0]
        assert first > 0 and versions == [first, first + 1, first + 2]

    @pytest.mark.parametrize("sql", [SET, MERGE], ids=["set", "merge"])
    @pytest.mark.parametrize("updates", [0, 2])
    async def test_a_version_from_before_an_erase_is_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, sql: str, updates: int
    ) -> None:
        """ETag ABA: versions of a row made after an erase never repeat the erased row's,
        however many writes either saw."""
        stale = await call_as(admin_pool, uid, SET, "identity", {"old": 0}, None)
        for n in range(updates):
            stale = await call_as(admin_pool, uid, SET, "identity", {"old": n + 1}, None)
        assert await call_as(admin_pool, uid, ERASE) is True
        renewed = await call_as(admin_pool, uid, SET, "identity", {"new": 0}, None)
        for n in range(updates):
            renewed = await call_as(admin_pool, uid, SET, "identity", {"new": n + 1}, None)
        assert renewed["version"] > stale["version"]
        before = snapshot(await memory_row(admin_pool, uid))
        assert (
            await sqlstate_as(admin_pool, uid, sql, "identity", {"b": 1}, stale["version"])
            == "PT412"
        )
        assert snapshot(await memory_row(admin_pool, uid)) == before


class TestFieldNames:
    NOT_FIELDS = (
        "user_id",
        "id",
        "version",
        "updated_at",
        "created_at",
        "",
        "Identity",
        "identity ",
        "identity\" = '{}'::jsonb, user_id = user_id --",
        "rewards; drop table public.memories; --",
    )

    @pytest.mark.parametrize("field", NOT_FIELDS)
    @pytest.mark.parametrize(
        ("sql", "value"),
        [
            (SET, {}),
            (MERGE, {}),
            (APPEND, [{"n": 1}]),
        ],
        ids=["set", "merge", "append"],
    )
    async def test_unknown_field_is_refused_and_changes_nothing(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, sql: str, value: Any, field: str
    ) -> None:
        await call_as(admin_pool, uid, SET, "identity", {"a": 1}, None)
        before = snapshot(await memory_row(admin_pool, uid))
        extra = (10,) if sql == APPEND else (None,)
        assert await sqlstate_as(admin_pool, uid, sql, field, value, *extra) == "22023"
        assert await sqlstate_as(admin_pool, uid, REMOVE, field, "x") == "22023"
        assert snapshot(await memory_row(admin_pool, uid)) == before
        assert await admin_pool.fetchval("select to_regclass('public.memories') is not null")

    async def test_null_field_is_refused(self, admin_pool: asyncpg.Pool, uid: uuid.UUID) -> None:
        assert await sqlstate_as(admin_pool, uid, SET, None, {}, None) == "22023"


class TestWriteTracking:
    """version and updated_at move on every write, however it is made; the user can not set
    them (nor id, created_at) by hand."""

    async def test_every_function_write_moves_both(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        added = await call_as(admin_pool, uid, APPEND, "rewards", [{"id": "a"}, {"id": "b"}], 10)
        results = [
            added,
            await call_as(admin_pool, uid, SET, "identity", {"a": 1}, None),
            await call_as(admin_pool, uid, MERGE, "identity", {"b": 1}, None),
            await call_as(admin_pool, uid, APPEND, "rewards", [{"id": "c"}], 10),
            await call_as(admin_pool, uid, REMOVE, "rewards", "a"),
        ]
        versions = [r["version"] for r in results]
        stamps = [datetime.fromisoformat(r["updated_at"]) for r in results]
        assert all(v2 == v1 + 1 for v1, v2 in itertools.pairwise(versions))
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

    async def test_two_writes_in_one_transaction_get_distinct_stamps(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        async with acting_as(admin_pool, uid) as conn:
            first = await conn.fetchval(SET, "identity", {"a": 1}, None)
            second = await conn.fetchval(SET, "identity", {"a": 2}, None)
        assert second["version"] == first["version"] + 1
        assert datetime.fromisoformat(second["updated_at"]) > datetime.fromisoformat(
            first["updated_at"]
        )

    async def test_direct_writes_as_the_user(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        past = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
        other_id = uuid.uuid4()
        since = await _db_micros(admin_pool)
        await execute_as(
            admin_pool,
            uid,
            "insert into public.memories (user_id, version, created_at, updated_at)"
            " values ($1, 42, $2, $2)",
            uid,
            past,
        )
        inserted = await memory_row(admin_pool, uid)
        assert inserted is not None
        assert since <= inserted["version"] <= await _db_micros(admin_pool)  # not 42
        assert inserted["created_at"] > past and inserted["updated_at"] > past

        status = await execute_as(
            admin_pool,
            uid,
            "update public.memories set identity = '{\"x\": 1}', version = 1000,"
            " updated_at = $2, created_at = $2, id = $3 where user_id = $1",
            uid,
            past,
            other_id,
        )
        assert status == "UPDATE 1"
        updated = await memory_row(admin_pool, uid)
        assert updated is not None
        assert updated["identity"] == {"x": 1}
        assert updated["version"] == inserted["version"] + 1  # not 1000
        assert updated["updated_at"] > inserted["updated_at"]
        assert updated["created_at"] == inserted["created_at"]
        assert updated["id"] == inserted["id"]

        await execute_as(
            admin_pool, uid, "update public.memories set rewards = rewards where user_id = $1", uid
        )
        touched = await memory_row(admin_pool, uid)
        assert touched is not None
        assert touched["version"] == inserted["version"] + 2
        assert touched["updated_at"] > updated["updated_at"]


class TestColumnKinds:
    """CHECK constraints refuse a wrong JSON kind written straight into the table."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            *((f, []) for f in sorted(OBJECT_FIELDS)),
            *((f, {}) for f in sorted(LIST_FIELDS)),
            ("identity", "text"),
            ("identity", 1),
            ("rewards", None),  # JSON null
        ],
    )
    async def test_wrong_kind_is_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, field: str, value: Any
    ) -> None:
        as_json = json.dumps(value)
        insert = f"insert into public.memories (user_id, {field}) values ($1, $2::text::jsonb)"  # noqa: S608
        assert await sqlstate_as(admin_pool, uid, insert, uid, as_json) == "23514"
        assert await memory_row(admin_pool, uid) is None

        await call_as(admin_pool, uid, SET, "identity", {"a": 1}, None)
        before = snapshot(await memory_row(admin_pool, uid))
        update = f"update public.memories set {field} = $2::text::jsonb where user_id = $1"  # noqa: S608
        assert await sqlstate_as(admin_pool, uid, update, uid, as_json) == "23514"
        assert snapshot(await memory_row(admin_pool, uid)) == before

    @pytest.mark.parametrize("field", sorted(OBJECT_FIELDS | LIST_FIELDS))
    async def test_sql_null_is_refused(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID, field: str
    ) -> None:
        await call_as(admin_pool, uid, SET, "identity", {"a": 1}, None)
        sql = f"update public.memories set {field} = null where user_id = $1"  # noqa: S608
        assert await sqlstate_as(admin_pool, uid, sql, uid) == "23502"


class TestCascade:
    async def test_deleting_the_auth_user_deletes_the_memory(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        a = await create_auth_user(admin_pool)
        b = await create_auth_user(admin_pool)
        for user in (a, b):
            await call_as(admin_pool, user, APPEND, "rewards", [{"n": 1}], 10)
        await admin_pool.execute("delete from auth.users where id = $1", a)
        assert await memory_row(admin_pool, a) is None
        assert await memory_row(admin_pool, b) is not None


class TestNamedArguments:
    """PostgREST calls `/rpc/<fn>` with the JSON body's keys as named arguments, and runs
    STABLE functions read-only: the parameter names are part of the API, the writers are
    VOLATILE."""

    async def test_every_write_is_callable_by_name(
        self, admin_pool: asyncpg.Pool, uid: uuid.UUID
    ) -> None:
        set_result = await call_as(
            admin_pool,
            uid,
            "select public.memory_set_field(p_field := $1, p_value := $2::jsonb,"
            " p_expected_version := $3)",
            "identity",
            {"a": 1},
            0,
        )
        merged = await call_as(
            admin_pool,
            uid,
            "select public.memory_merge_field(p_field := $1, p_patch := $2::jsonb,"
            " p_expected_version := $3)",
            "identity",
            {"b": 2},
            set_result["version"],
        )
        appended = await call_as(
            admin_pool,
            uid,
            "select public.memory_append_items(p_field := $1, p_items := $2::jsonb, p_cap := $3)",
            "rewards",
            [{"id": "s1"}],
            5,
        )
        keyed = await call_as(
            admin_pool,
            uid,
            "select public.memory_append_items(p_field := $1, p_items := $2::jsonb,"
            " p_cap := $3, p_idempotency_key := $4)",
            "rewards",
            [{"n": 1}],
            5,
            "key-1",
        )
        removed = await call_as(
            admin_pool,
            uid,
            "select public.memory_remove_item(p_field := $1, p_item_id := $2)",
            "rewards",
            "s1",
        )
        assert merged["value"] == {"a": 1, "b": 2}
        assert [i["id"] for i in appended["items"]] == ["s1"]
        assert [i["id"] for i in keyed["items"]] == [_key_id(uid, "rewards", "key-1", 0)]
        assert removed["version"] == keyed["version"] + 1
        assert await call_as(admin_pool, uid, "select public.memory_erase()") is True

    async def test_writers_are_volatile(self, admin_pool: asyncpg.Pool) -> None:
        writers = sorted(API_CALLS)
        rows = await admin_pool.fetch(
            "select proname, provolatile::text as volatility from pg_catalog.pg_proc"
            " where pronamespace = 'public'::regnamespace and proname = any($1::text[])",
            writers,
        )
        assert {r["proname"]: r["volatility"] for r in rows} == dict.fromkeys(writers, "v")
