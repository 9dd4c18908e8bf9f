"""The memory API end to end: ASGI app, embedded PostgreSQL, real signed tokens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx

from services.storage.embedded_postgres import EmbeddedPostgres
from tests.tokens import bearer, user_token

OBJECT_FIELDS = ["identity", "current_state", "long_term_summary"]
LIST_FIELDS = ["core_instructions", "episodic_memory", "rewards", "parent_reports"]


def new_user() -> dict[str, str]:
    return bearer(user_token(uuid.uuid4()))


class TestReadDocument:
    async def test_new_user_reads_defaults_and_nothing_is_created(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        first = await client.get("/api/memory", headers=auth)
        assert first.status_code == 200
        body = first.json()
        assert {f: body[f] for f in OBJECT_FIELDS} == {f: {} for f in OBJECT_FIELDS}
        assert {f: body[f] for f in LIST_FIELDS} == {f: [] for f in LIST_FIELDS}
        assert body["version"] == 0 and body["updated_at"] is None
        assert first.headers["etag"] == '"0"'
        # A read creates nothing: a conditional "only if nothing stored" write still succeeds.
        put = await client.put(
            "/api/memory/identity", json={"a": 1}, headers={**auth, "If-Match": '"0"'}
        )
        assert put.status_code == 200

    async def test_document_reflects_writes_and_version(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        put = await client.put("/api/memory/identity", json={"name": "Robo"}, headers=auth)
        post = await client.post("/api/memory/rewards", json={"star": "gold"}, headers=auth)
        response = await client.get("/api/memory", headers=auth)
        body = response.json()
        assert body["identity"] == {"name": "Robo"}
        assert [r["star"] for r in body["rewards"]] == ["gold"]
        assert response.headers["etag"] == f'"{body["version"]}"' == post.headers["etag"]
        assert body["version"] == int(put.headers["etag"].strip('"')) + 1
        assert body["updated_at"] is not None


class TestObjectFields:
    async def test_put_then_get(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        put = await client.put("/api/memory/current_state", json={"mood": "happy"}, headers=auth)
        assert put.status_code == 200
        assert put.json() == {"mood": "happy"}
        get = await client.get("/api/memory/current_state", headers=auth)
        assert get.json() == {"mood": "happy"}
        assert get.headers["etag"] == put.headers["etag"]

    async def test_patch_merges_shallowly_and_null_removes(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        await client.put(
            "/api/memory/identity", json={"name": "Robo", "age": 7, "pet": {"a": 1}}, headers=auth
        )
        patch = await client.patch(
            "/api/memory/identity",
            json={"age": None, "pet": {"b": 2}, "color": "red"},
            headers=auth,
        )
        assert patch.status_code == 200
        assert patch.json() == {"name": "Robo", "pet": {"b": 2}, "color": "red"}

    async def test_patch_on_new_user_creates_value(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        patch = await client.patch("/api/memory/identity", json={"x": 1, "y": None}, headers=auth)
        assert patch.status_code == 200 and patch.json() == {"x": 1}

    async def test_wrong_json_kind_is_422_and_changes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        await client.put("/api/memory/identity", json={"keep": True}, headers=auth)
        for body in ([{"a": 1}], "text", 3, None):
            response = await client.put("/api/memory/identity", json=body, headers=auth)
            assert response.status_code == 422, body
        assert (await client.get("/api/memory/identity", headers=auth)).json() == {"keep": True}

    async def test_post_on_object_field_is_405_whatever_the_body(
        self, client: httpx.AsyncClient
    ) -> None:
        for body in ({"a": 1}, [{"a": 1}], "text"):
            response = await client.post("/api/memory/identity", json=body, headers=new_user())
            assert response.status_code == 405, body
            assert response.headers["allow"] == "GET, PUT, PATCH"

    async def test_values_nested_too_deep_are_422_and_store_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        deep: dict[str, object] = {}
        for _ in range(300):
            deep = {"d": deep}
        for method, path, body in [
            ("PUT", "/api/memory/identity", deep),
            ("PATCH", "/api/memory/identity", deep),
            ("POST", "/api/memory/rewards", deep),
            ("PUT", "/api/memory/rewards", [deep]),
        ]:
            response = await client.request(method, path, json=body, headers=auth)
            assert response.status_code == 422, (method, path)
        document = await client.get("/api/memory", headers=auth)
        assert document.status_code == 200 and document.json()["version"] == 0


class TestIfMatch:
    async def test_stale_version_is_412_and_changes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        first = await client.put("/api/memory/identity", json={"v": 1}, headers=auth)
        tag = first.headers["etag"]
        second = await client.put(
            "/api/memory/identity", json={"v": 2}, headers={**auth, "If-Match": tag}
        )
        assert second.status_code == 200 and second.headers["etag"] != tag
        stale = await client.put(
            "/api/memory/identity", json={"v": 3}, headers={**auth, "If-Match": tag}
        )
        assert stale.status_code == 412
        stale_patch = await client.patch(
            "/api/memory/identity", json={"v": 4}, headers={**auth, "If-Match": tag}
        )
        assert stale_patch.status_code == 412
        assert (await client.get("/api/memory/identity", headers=auth)).json() == {"v": 2}

    async def test_an_etag_from_before_an_erase_is_412_and_changes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        before_erase = await client.put("/api/memory/identity", json={"v": "old"}, headers=auth)
        stale = before_erase.headers["etag"]
        assert (await client.delete("/api/memory", headers=auth)).status_code == 204
        renewed = await client.put("/api/memory/identity", json={"v": "new"}, headers=auth)
        assert renewed.status_code == 200 and renewed.headers["etag"] != stale
        overwrite = await client.put(
            "/api/memory/identity", json={"v": "lost"}, headers={**auth, "If-Match": stale}
        )
        assert overwrite.status_code == 412
        after = await client.get("/api/memory/identity", headers=auth)
        assert after.json() == {"v": "new"} and after.headers["etag"] == renewed.headers["etag"]

    async def test_a_well_formed_tag_not_ours_is_412(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        for tag in ['"abc"', '"' + "9" * 20 + '"', '"1", "2"', 'W/"x"']:
            response = await client.put(
                "/api/memory/identity", json={}, headers={**auth, "If-Match": tag}
            )
            assert response.status_code == 412, tag
        assert (await client.get("/api/memory", headers=auth)).json()["version"] == 0

    async def test_a_malformed_if_match_is_400_naming_the_header(
        self, client: httpx.AsyncClient
    ) -> None:
        """`If-Match: 12345` (unquoted) was taken as a version and answered "changed" (412):
        it is not an ETag at all, and the client is told so."""
        auth = new_user()
        stored = await client.put("/api/memory/identity", json={"v": 1}, headers=auth)
        version = stored.headers["etag"].strip('"')
        for tag in [version, "12345", '"1', "W/", "-1", 'W/"1"x']:
            for method in ("PUT", "PATCH"):
                response = await client.request(
                    method, "/api/memory/identity", json={}, headers={**auth, "If-Match": tag}
                )
                assert response.status_code == 400, (method, tag, response.text)
                assert "malformed If-Match" in response.json()["detail"]
        superscript_two = await client.put(
            "/api/memory/identity",
            json={},
            headers=[*((k.encode(), v.encode()) for k, v in auth.items()), (b"If-Match", b"\xb2")],
        )
        assert superscript_two.status_code == 400
        assert (await client.get("/api/memory/identity", headers=auth)).json() == {"v": 1}

    async def test_weak_and_star_tags(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        first = await client.put("/api/memory/identity", json={"v": 1}, headers=auth)
        weak = "W/" + first.headers["etag"]
        ok = await client.put(
            "/api/memory/identity", json={"v": 2}, headers={**auth, "If-Match": weak}
        )
        assert ok.status_code == 200
        star = await client.put(
            "/api/memory/identity", json={"v": 3}, headers={**auth, "If-Match": "*"}
        )
        assert star.status_code == 200


class TestListFields:
    async def test_append_one_and_many(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        one = await client.post("/api/memory/episodic_memory", json={"text": "hi"}, headers=auth)
        assert one.status_code == 201
        [item] = one.json()
        uuid.UUID(item["id"])
        assert item["text"] == "hi" and item["created_at"]
        many = await client.post(
            "/api/memory/episodic_memory", json=[{"text": "a"}, {"text": "b"}], headers=auth
        )
        assert many.status_code == 201 and [i["text"] for i in many.json()] == ["a", "b"]
        stored = (await client.get("/api/memory/episodic_memory", headers=auth)).json()
        assert [i["text"] for i in stored] == ["hi", "a", "b"]

    async def test_append_limits(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        assert (
            await client.post("/api/memory/episodic_memory", json=[], headers=auth)
        ).status_code == 422
        too_many = [{"n": i} for i in range(101)]
        assert (
            await client.post("/api/memory/episodic_memory", json=too_many, headers=auth)
        ).status_code == 422
        assert (
            await client.post("/api/memory/episodic_memory", json=[1, 2], headers=auth)
        ).status_code == 422
        huge_item = {"text": "x" * 5000}  # the test app allows 4096 bytes per item
        assert (
            await client.post("/api/memory/episodic_memory", json=huge_item, headers=auth)
        ).status_code == 413
        assert (await client.get("/api/memory/episodic_memory", headers=auth)).json() == []

    async def test_cap_drops_oldest(self, client: httpx.AsyncClient) -> None:
        auth = new_user()  # the test app caps rewards at 5
        for n in range(8):
            await client.post("/api/memory/rewards", json={"n": n}, headers=auth)
        stored = (await client.get("/api/memory/rewards", headers=auth)).json()
        assert [i["n"] for i in stored] == [3, 4, 5, 6, 7]

    async def test_put_list_assigns_ids_and_rejects_duplicates(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        put = await client.put(
            "/api/memory/core_instructions",
            json=[{"text": "be kind"}, {"id": "x", "text": "t"}],
            headers=auth,
        )
        assert put.status_code == 200
        assert put.json()[1]["id"] == "x" and uuid.UUID(put.json()[0]["id"])
        dup = await client.put(
            "/api/memory/core_instructions", json=[{"id": "a"}, {"id": "a"}], headers=auth
        )
        assert dup.status_code == 422
        assert len((await client.get("/api/memory/core_instructions", headers=auth)).json()) == 2

    async def test_patch_on_list_field_is_405_whatever_the_body(
        self, client: httpx.AsyncClient
    ) -> None:
        for body in ({"a": 1}, [{"a": 1}], 3):
            response = await client.patch("/api/memory/rewards", json=body, headers=new_user())
            assert response.status_code == 405, body
            assert response.headers["allow"] == "GET, PUT, POST"

    async def test_limit_and_before_paging(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        items = (
            await client.post(
                "/api/memory/parent_reports", json=[{"n": n} for n in range(6)], headers=auth
            )
        ).json()
        newest = await client.get("/api/memory/parent_reports?limit=2", headers=auth)
        assert [i["n"] for i in newest.json()] == [4, 5]
        page = await client.get(
            f"/api/memory/parent_reports?limit=2&before={items[4]['id']}", headers=auth
        )
        assert [i["n"] for i in page.json()] == [2, 3]
        first = await client.get(
            f"/api/memory/parent_reports?before={items[1]['id']}", headers=auth
        )
        assert [i["n"] for i in first.json()] == [0]
        missing = await client.get("/api/memory/parent_reports?before=nope", headers=auth)
        assert missing.status_code == 404
        assert (
            await client.get("/api/memory/parent_reports?limit=-1", headers=auth)
        ).status_code == 422

    async def test_remove_item(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        items = (
            await client.post("/api/memory/rewards", json=[{"n": 1}, {"n": 2}], headers=auth)
        ).json()
        gone = await client.delete(f"/api/memory/rewards/{items[0]['id']}", headers=auth)
        assert gone.status_code == 204 and gone.content == b""
        again = await client.delete(f"/api/memory/rewards/{items[0]['id']}", headers=auth)
        assert again.status_code == 404
        left = (await client.get("/api/memory/rewards", headers=auth)).json()
        assert [i["n"] for i in left] == [2]
        assert (
            await client.delete(f"/api/memory/identity/{items[1]['id']}", headers=auth)
        ).status_code == 405
        assert (await client.delete("/api/memory/rewards/%00", headers=auth)).status_code == 404


class TestIdempotency:
    async def test_retry_with_same_key_appends_nothing_and_answers_same_items(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        headers = {**auth, "Idempotency-Key": "turn-42"}
        body = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        first = await client.post("/api/memory/episodic_memory", json=body, headers=headers)
        retry = await client.post("/api/memory/episodic_memory", json=body, headers=headers)
        assert first.status_code == retry.status_code == 201
        assert retry.json() == first.json()
        stored = (await client.get("/api/memory/episodic_memory", headers=auth)).json()
        assert len(stored) == 2

    async def test_same_key_other_body_is_409(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        headers = {**auth, "Idempotency-Key": "k1"}
        await client.post("/api/memory/rewards", json={"star": 1}, headers=headers)
        conflict = await client.post("/api/memory/rewards", json={"star": 2}, headers=headers)
        assert conflict.status_code == 409
        assert len((await client.get("/api/memory/rewards", headers=auth)).json()) == 1

    async def test_same_key_longer_body_is_409_and_appends_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        auth = new_user()
        headers = {**auth, "Idempotency-Key": "turn-7"}
        body = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        first = await client.post("/api/memory/episodic_memory", json=body, headers=headers)
        assert first.status_code == 201
        longer = [*body, {"role": "user", "content": "and more"}]
        conflict = await client.post("/api/memory/episodic_memory", json=longer, headers=headers)
        assert conflict.status_code == 409 and "Idempotency-Key" in conflict.json()["detail"]
        stored = await client.get("/api/memory/episodic_memory", headers=auth)
        assert stored.json() == first.json() and stored.headers["etag"] == first.headers["etag"]

    async def test_same_key_shorter_body_is_409(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        headers = {**auth, "Idempotency-Key": "turn-8"}
        body = [{"n": 1}, {"n": 2}, {"n": 3}]
        first = await client.post("/api/memory/parent_reports", json=body, headers=headers)
        assert first.status_code == 201
        for shorter in (body[:2], body[0]):
            conflict = await client.post(
                "/api/memory/parent_reports", json=shorter, headers=headers
            )
            assert conflict.status_code == 409, shorter
        stored = await client.get("/api/memory/parent_reports", headers=auth)
        assert stored.json() == first.json() and stored.headers["etag"] == first.headers["etag"]
        retry = await client.post("/api/memory/parent_reports", json=body, headers=headers)
        assert retry.status_code == 201 and retry.json() == first.json()

    async def test_keys_are_per_field(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        headers = {**auth, "Idempotency-Key": "same"}
        rewards = await client.post("/api/memory/rewards", json={"n": 1}, headers=headers)
        reports = await client.post(
            "/api/memory/parent_reports", json=[{"n": 1}, {"n": 2}], headers=headers
        )
        assert rewards.status_code == reports.status_code == 201
        assert len(reports.json()) == 2
        stored = (await client.get("/api/memory", headers=auth)).json()
        assert stored["rewards"] == rewards.json() and stored["parent_reports"] == reports.json()

    async def test_keys_are_per_user(self, client: httpx.AsyncClient) -> None:
        a, b = new_user(), new_user()
        for auth in (a, b):
            response = await client.post(
                "/api/memory/rewards", json={"star": 1}, headers={**auth, "Idempotency-Key": "same"}
            )
            assert response.status_code == 201


class TestErase:
    async def test_erase_removes_everything(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        await client.put("/api/memory/identity", json={"name": "Robo"}, headers=auth)
        erased = await client.delete("/api/memory", headers=auth)
        assert erased.status_code == 204
        body = (await client.get("/api/memory", headers=auth)).json()
        assert body["identity"] == {} and body["version"] == 0
        assert (await client.delete("/api/memory", headers=auth)).status_code == 204


class TestErrors:
    async def test_unknown_field_is_404_for_every_method(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        for method, path in [
            ("GET", "/api/memory/secrets"),
            ("PUT", "/api/memory/secrets"),
            ("PATCH", "/api/memory/secrets"),
            ("POST", "/api/memory/user_id"),
            ("DELETE", "/api/memory/version/abc"),
        ]:
            response = await client.request(method, path, json={}, headers=auth)
            assert response.status_code == 404, (method, path)
            assert "detail" in response.json()

    async def test_missing_token_is_401_before_anything_else(
        self, client: httpx.AsyncClient
    ) -> None:
        for method, path in [("GET", "/api/memory"), ("PUT", "/api/memory/secrets")]:
            response = await client.request(method, path, json={})
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_invalid_json_body_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.put(
            "/api/memory/identity",
            content=b"{not json",
            headers={**new_user(), "Content-Type": "application/json"},
        )
        assert response.status_code == 422

    async def test_values_postgres_can_not_store_are_422(self, client: httpx.AsyncClient) -> None:
        auth = new_user()
        nul = await client.put(
            "/api/memory/identity",
            content=b'{"name": "a\\u0000b"}',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert nul.status_code == 422
        nan = await client.put(
            "/api/memory/identity",
            content=b'{"x": NaN}',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert nan.status_code == 422
        lone_surrogate = await client.put(
            "/api/memory/identity",
            content=b'{"x": "\\ud800"}',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert lone_surrogate.status_code == 422
        literal_backslash = await client.put(
            "/api/memory/identity", json={"x": "\\u0000 is how JSON writes NUL"}, headers=auth
        )
        assert literal_backslash.status_code == 200
        assert literal_backslash.json() == {"x": "\\u0000 is how JSON writes NUL"}

    async def test_invalid_bodies_that_can_not_be_echoed_are_422_not_500(
        self, client: httpx.AsyncClient
    ) -> None:
        """FastAPI's own 422 echoes the input, and NaN or a lone surrogate can not be encoded
        back: the app's handler names where and what without the input."""
        auth = {**new_user(), "Content-Type": "application/json"}
        for raw in (b"NaN", b'"\\ud800"', b"[NaN]", b'[{"a": 1}, "\\ud800"]'):
            response = await client.put("/api/memory/identity", content=raw, headers=auth)
            assert response.status_code == 422, raw
            assert all("input" not in error for error in response.json()["detail"])

    async def test_body_over_limit_is_413(self, client: httpx.AsyncClient) -> None:
        big = {"text": "x" * (70 * 1024)}  # the test app allows 64 KiB bodies
        response = await client.put("/api/memory/identity", json=big, headers=new_user())
        assert response.status_code == 413

    async def test_chunked_body_over_limit_is_413(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"text": "'
            for _ in range(70):
                yield b"x" * 1024
            yield b'"}'

        response = await client.put(
            "/api/memory/identity",
            content=chunks(),
            headers={**new_user(), "Content-Type": "application/json"},
        )
        assert response.status_code == 413

    async def test_request_id_is_echoed_or_made(self, client: httpx.AsyncClient) -> None:
        given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        made = await client.get("/healthz", headers={"X-Request-ID": "bad id\n"})
        assert made.headers["x-request-id"] != "bad id" and len(made.headers["x-request-id"]) == 32


class TestIsolationAndConcurrency:
    async def test_one_user_never_sees_another(self, client: httpx.AsyncClient) -> None:
        a, b = new_user(), new_user()
        await client.put("/api/memory/identity", json={"secret": "a"}, headers=a)
        items = (await client.post("/api/memory/rewards", json={"n": 1}, headers=a)).json()
        assert (await client.get("/api/memory/identity", headers=b)).json() == {}
        assert (await client.get("/api/memory", headers=b)).json()["rewards"] == []
        steal = await client.delete(f"/api/memory/rewards/{items[0]['id']}", headers=b)
        assert steal.status_code == 404
        await client.delete("/api/memory", headers=b)
        assert (await client.get("/api/memory/identity", headers=a)).json() == {"secret": "a"}

    async def test_parallel_appends_lose_nothing(self, client: httpx.AsyncClient) -> None:
        users = [new_user() for _ in range(4)]
        per_user = 50

        async def append(auth: dict[str, str], n: int) -> int:
            response = await client.post("/api/memory/episodic_memory", json={"n": n}, headers=auth)
            return response.status_code

        statuses = await asyncio.gather(
            *(append(auth, n) for n in range(per_user) for auth in users)
        )
        assert set(statuses) == {201}
        for auth in users:
            stored = (await client.get("/api/memory/episodic_memory", headers=auth)).json()
            assert sorted(i["n"] for i in stored) == list(range(per_user))


class TestHealth:
    async def test_health_and_ready(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["backend"] == "embedded"

    async def test_openapi_documents_every_route_and_error(self, client: httpx.AsyncClient) -> None:
        spec = (await client.get("/openapi.json")).json()
        field_path = spec["paths"]["/api/memory/{field}"]
        assert set(field_path) == {"get", "put", "patch", "post"}
        assert {"401", "404", "405", "409", "413", "422", "503"} <= set(
            field_path["post"]["responses"]
        )
        assert "412" in field_path["put"]["responses"]


class TestStoredDataOfAnotherShape:
    async def test_items_written_around_the_api_are_502_not_500(
        self, client: httpx.AsyncClient, embedded_server: EmbeddedPostgres
    ) -> None:
        """A user may write their own row straight through PostgREST (RLS allows it); list
        items that are not objects then read as a storage problem, never a 500 or as empty."""
        user_id = uuid.uuid4()
        auth = bearer(user_token(user_id))
        assert (
            await client.post("/api/memory/rewards", json={"n": 1}, headers=auth)
        ).status_code == 201
        conn = await asyncpg.connect(embedded_server.dsn)
        try:
            await conn.execute(
                "update public.memories set rewards = '[1, \"two\"]' where user_id = $1", user_id
            )
        finally:
            await conn.close()
        for path in ("/api/memory", "/api/memory/rewards", "/api/memory/rewards?limit=1"):
            response = await client.get(path, headers=auth)
            assert response.status_code == 502, path
            assert "detail" in response.json()
