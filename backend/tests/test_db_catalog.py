"""What the schema leaves in the catalog: privileges, function attributes, policies (checked
with the rules of Supabase's database linter, splinter), and the field catalogue."""

from __future__ import annotations

import re

import asyncpg
import pytest

from models import FIELD_KINDS, FieldKind, MemoryField
from tests.db_helpers import API_CALLS

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")

# Every function in public that no extension owns (all of them are ours).
OUR_FUNCTIONS_SQL = """
select p.oid, p.oid::regprocedure::text as signature, p.proname, p.prosecdef, p.proconfig,
       p.proacl is null as default_acl,
       coalesce((select array_agg(a.grantee::regrole::text order by a.grantee::regrole::text)
                 from aclexplode(p.proacl) as a
                 where a.privilege_type = 'EXECUTE' and a.grantee <> 0), '{}') as executors,
       exists (select from aclexplode(p.proacl) as a where a.grantee = 0) as public_can_execute
from pg_catalog.pg_proc as p
where p.pronamespace = 'public'::regnamespace
  and not exists (select from pg_catalog.pg_depend as d
                  where d.classid = 'pg_catalog.pg_proc'::regclass and d.objid = p.oid
                    and d.deptype = 'e')
order by p.proname
"""

POLICIES_SQL = """
select c.relname, p.polname, p.polcmd::text as polcmd, p.polpermissive,
       (select array_agg(r::regrole::text order by r::regrole::text)
        from unnest(p.polroles) as r) as roles,
       pg_catalog.pg_get_expr(p.polqual, p.polrelid) as qual,
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) as with_check
from pg_catalog.pg_policy as p join pg_catalog.pg_class as c on c.oid = p.polrelid
where c.relnamespace = 'public'::regnamespace
order by c.relname, p.polname
"""

OWN_ROW = "(( SELECT auth.uid() AS uid) = user_id)"
# Own row, or (guardians) a linked child's row: the trigger limits what a guardian may change.
OWN_OR_CHILDS_ROW = "((( SELECT auth.uid() AS uid) = user_id) OR memory_is_guardian_of(user_id))"


class TestTablePrivileges:
    @pytest.mark.parametrize("privilege", TABLE_PRIVILEGES)
    async def test_anon_has_none(self, admin_pool: asyncpg.Pool, privilege: str) -> None:
        assert not await admin_pool.fetchval(
            "select has_table_privilege('anon', 'public.memories', $1)", privilege
        )
        if privilege in COLUMN_PRIVILEGES:
            assert not await admin_pool.fetchval(
                "select has_any_column_privilege('anon', 'public.memories', $1)", privilege
            )

    async def test_nothing_granted_to_public_or_anon(self, admin_pool: asyncpg.Pool) -> None:
        grantees = await admin_pool.fetchval(
            "select array_agg(distinct a.grantee) from pg_catalog.pg_class as c,"
            " aclexplode(c.relacl) as a where c.oid = 'public.memories'::regclass"
        )
        anon = await admin_pool.fetchval("select 'anon'::regrole::oid")
        assert grantees is not None  # an explicit ACL, not the owner-only default
        assert 0 not in grantees and anon not in grantees

    async def test_authenticated_has_exactly_the_row_privileges(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        granted = {
            privilege
            for privilege in TABLE_PRIVILEGES
            if await admin_pool.fetchval(
                "select has_table_privilege('authenticated', 'public.memories', $1)", privilege
            )
        }
        # No TRUNCATE (it ignores RLS), REFERENCES or TRIGGER.
        assert granted == {"SELECT", "INSERT", "UPDATE", "DELETE"}


class TestFunctions:
    async def test_the_api_functions_exist(self, admin_pool: asyncpg.Pool) -> None:
        names = {r["proname"] for r in await admin_pool.fetch(OUR_FUNCTIONS_SQL)}
        assert set(API_CALLS) <= names

    async def test_every_function_is_security_invoker_with_an_empty_search_path(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        rows = await admin_pool.fetch(OUR_FUNCTIONS_SQL)
        assert rows
        for row in rows:
            assert row["prosecdef"] is False, row["signature"]
            assert row["proconfig"] == ['search_path=""'], row["signature"]

    async def test_only_authenticated_may_execute(self, admin_pool: asyncpg.Pool) -> None:
        for row in await admin_pool.fetch(OUR_FUNCTIONS_SQL):
            signature = row["signature"]
            # A NULL ACL means the built-in default: EXECUTE for PUBLIC.
            assert row["default_acl"] is False, signature
            assert row["public_can_execute"] is False, signature
            assert not await admin_pool.fetchval(
                "select has_function_privilege('anon', $1::oid, 'EXECUTE')", row["oid"]
            ), signature
            assert "anon" not in row["executors"], signature

    @pytest.mark.parametrize("name", sorted(API_CALLS))
    async def test_authenticated_may_execute_the_api(
        self, admin_pool: asyncpg.Pool, name: str
    ) -> None:
        assert await admin_pool.fetchval(
            "select bool_and(has_function_privilege('authenticated', p.oid, 'EXECUTE'))"
            " from pg_catalog.pg_proc as p"
            " where p.pronamespace = 'public'::regnamespace and p.proname = $1",
            name,
        )

    async def test_the_trigger_function_is_not_callable(self, admin_pool: asyncpg.Pool) -> None:
        for role in ("anon", "authenticated"):
            assert not await admin_pool.fetchval(
                "select has_function_privilege($1, 'public.memories_track_write()', 'EXECUTE')",
                role,
            )


class TestSplinterRules:
    """The catalog-checkable rules of Supabase's database linter (supabase/splinter)."""

    async def test_rls_enabled_on_every_public_table(self, admin_pool: asyncpg.Pool) -> None:
        # rls_disabled_in_public, rls_enabled_no_policy, policy_exists_rls_disabled
        rows = await admin_pool.fetch(
            "select c.relname, c.relrowsecurity,"
            " (select count(*) from pg_catalog.pg_policy as p where p.polrelid = c.oid) as n"
            " from pg_catalog.pg_class as c"
            " where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')"
        )
        assert {r["relname"] for r in rows} >= {"memories"}
        for row in rows:
            assert row["relrowsecurity"], row["relname"]
            assert row["n"] > 0, row["relname"]

    async def test_auth_rls_initplan(self, admin_pool: asyncpg.Pool) -> None:
        call = re.compile(r"auth\.(uid|jwt|role|email)\(\)")
        wrapped = re.compile(r"select\s+auth\.(uid|jwt|role|email)\(\)")
        for policy in await admin_pool.fetch(POLICIES_SQL):
            for expr in (policy["qual"], policy["with_check"]):
                if expr is not None and call.search(expr):
                    assert wrapped.search(expr.lower()), (policy["polname"], expr)

    async def test_every_policy_is_permissive_for_authenticated_and_own_or_childs_rows(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        policies = {
            p["polcmd"]: p
            for p in await admin_pool.fetch(POLICIES_SQL)
            if p["relname"] == "memories"
        }
        assert set(policies) == {"r", "a", "w", "d"}  # select, insert, update, delete; no ALL
        for cmd, policy in policies.items():
            assert policy["roles"] == ["authenticated"], policy["polname"]
            assert policy["polpermissive"], policy["polname"]
            expected_qual = None if cmd == "a" else OWN_OR_CHILDS_ROW
            expected_check = OWN_OR_CHILDS_ROW if cmd in ("a", "w") else None
            assert (policy["qual"], policy["with_check"]) == (expected_qual, expected_check)

    async def test_no_multiple_permissive_policies(self, admin_pool: asyncpg.Pool) -> None:
        duplicates = await admin_pool.fetch(
            "select c.relname, r.rolname, p.polcmd::text, count(*)"
            " from pg_catalog.pg_policy as p"
            " join pg_catalog.pg_class as c on c.oid = p.polrelid"
            " join pg_catalog.pg_roles as r on p.polroles @> array[r.oid]"
            "   or p.polroles = array[0::oid]"
            " where c.relnamespace = 'public'::regnamespace and p.polpermissive"
            "   and not r.rolbypassrls"
            " group by 1, 2, 3 having count(*) > 1"
        )
        assert duplicates == []

    async def test_no_security_definer_function(self, admin_pool: asyncpg.Pool) -> None:
        # anon_/authenticated_security_definer_function_executable
        definers = await admin_pool.fetch(
            "select p.oid::regprocedure::text from pg_catalog.pg_proc as p"
            " where p.pronamespace = 'public'::regnamespace and p.prosecdef"
        )
        assert definers == []

    async def test_no_policy_reads_user_metadata(self, admin_pool: asyncpg.Pool) -> None:
        for policy in await admin_pool.fetch(POLICIES_SQL):
            for expr in (policy["qual"], policy["with_check"]):
                assert "metadata" not in (expr or ""), policy["polname"]

    async def test_no_extension_in_public(self, admin_pool: asyncpg.Pool) -> None:
        assert (
            await admin_pool.fetch(
                "select extname from pg_catalog.pg_extension"
                " where extnamespace = 'public'::regnamespace"
            )
            == []
        )

    async def test_foreign_keys_are_indexed(self, admin_pool: asyncpg.Pool) -> None:
        # unindexed_foreign_keys
        unindexed = await admin_pool.fetch(
            "select c.conname from pg_catalog.pg_constraint as c"
            " where c.contype = 'f' and c.connamespace = 'public'::regnamespace"
            "   and not exists (select from pg_catalog.pg_index as i"
            "                   where i.indrelid = c.conrelid"
            "                     and (i.indkey::int2[])[0:cardinality(c.conkey) - 1]"
            "                         = c.conkey)"
        )
        assert unindexed == []


class TestTableShape:
    async def test_user_id_cascades_from_auth_users(self, admin_pool: asyncpg.Pool) -> None:
        fk = await admin_pool.fetchrow(
            "select confrelid::regclass::text as target, confdeltype::text"
            " from pg_catalog.pg_constraint"
            " where conrelid = 'public.memories'::regclass and contype = 'f'"
        )
        assert fk is not None
        assert (fk["target"], fk["confdeltype"]) == ("auth.users", "c")

    async def test_field_catalogue_agrees_with_models(self, admin_pool: asyncpg.Pool) -> None:
        sql_kinds = {
            field.value: await admin_pool.fetchval(
                "select public.memory_field_kind($1)", field.value
            )
            for field in MemoryField
        }
        assert sql_kinds == {field.value: kind.value for field, kind in FIELD_KINDS.items()}
        for not_a_field in ("user_id", "id", "version", "created_at", "updated_at", "", "IDENTITY"):
            assert (
                await admin_pool.fetchval("select public.memory_field_kind($1)", not_a_field)
                is None
            )

    async def test_lists_are_stored_uncompressed_out_of_line(
        self, admin_pool: asyncpg.Pool
    ) -> None:
        """A bounded read of a long list fetches the whole value; decompressing it too made
        `?limit=10` with 500 episodes several times slower than with 10."""
        storage = {
            r["attname"]: r["attstorage"]
            for r in await admin_pool.fetch(
                "select attname, attstorage::text from pg_catalog.pg_attribute"
                " where attrelid = 'public.memories'::regclass and atttypid = 'jsonb'::regtype"
            )
        }
        assert storage == {
            field.value: "e" if kind is FieldKind.LIST else "x"
            for field, kind in FIELD_KINDS.items()
        }

    async def test_columns_and_checks_agree_with_models(self, admin_pool: asyncpg.Pool) -> None:
        columns = {
            r["attname"]: r
            for r in await admin_pool.fetch(
                "select a.attname, a.attnotnull,"
                " pg_catalog.pg_get_expr(d.adbin, d.adrelid) as default_value"
                " from pg_catalog.pg_attribute as a"
                " left join pg_catalog.pg_attrdef as d"
                "   on d.adrelid = a.attrelid and d.adnum = a.attnum"
                " where a.attrelid = 'public.memories'::regclass and a.attnum > 0"
                "   and not a.attisdropped and a.atttypid = 'jsonb'::regtype"
            )
        }
        checks = [
            r["def"]
            for r in await admin_pool.fetch(
                "select pg_catalog.pg_get_constraintdef(oid) as def from pg_catalog.pg_constraint"
                " where conrelid = 'public.memories'::regclass and contype = 'c'"
            )
        ]
        assert set(columns) == {field.value for field in MemoryField}
        for field, kind in FIELD_KINDS.items():
            object_field = kind is FieldKind.OBJECT
            json_kind = "object" if object_field else "array"
            empty = "'{}'::jsonb" if object_field else "'[]'::jsonb"
            assert columns[field.value]["attnotnull"], field
            assert columns[field.value]["default_value"] == empty, field
            expected = f"CHECK ((jsonb_typeof({field.value}) = '{json_kind}'::text))"
            assert expected in checks, field
