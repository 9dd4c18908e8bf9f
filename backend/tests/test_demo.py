"""The demo page's server side: static files at /demo with a strict CSP, the dev sign-in only on
the embedded backend (a user id in, never a token), DEMO_ENABLED; and /docs, /redoc offline."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from services.storage.embedded_postgres import EmbeddedPostgres
from tests.conftest import asgi_client, make_settings, running_app
from tests.tokens import TEST_JWT_SECRET, bearer, user_token


class TestDemoOnEmbedded:
    async def test_page_and_assets_are_served_with_a_csp(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/demo/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self';" in csp
        for asset in re.findall(r'(?:src|href)="([^"#]+)"', page.text):
            assert not asset.startswith(("http:", "https:", "//")), asset  # nothing from a CDN
            assert (await client.get(f"/demo/{asset}")).status_code == 200, asset

    async def test_demo_redirects_and_unknown_files_are_404(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/demo")
        assert response.status_code == 307 and response.headers["location"] == "/demo/"
        assert (await client.get("/demo/secret.txt")).status_code == 404
        assert (await client.get("/demo/..%2Fmain.py")).status_code == 404

    async def test_sign_in_answers_post_only(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/demo/sign-in")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"

    async def test_sign_in_mints_a_token_for_a_new_user(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/demo/sign-in", json={})
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 3600
        me = await client.get("/api/me", headers=bearer(body["access_token"]))
        assert me.status_code == 200
        assert me.json()["id"] == body["user_id"]

    async def test_sign_in_as_a_chosen_user(self, client: httpx.AsyncClient) -> None:
        user_id = uuid.uuid4()
        token = (await client.post("/demo/sign-in", json={"user_id": str(user_id)})).json()
        assert token["user_id"] == str(user_id)
        me = await client.get("/api/me", headers=bearer(token["access_token"]))
        assert me.json()["id"] == str(user_id)

    @pytest.mark.parametrize(
        "body",
        [
            {"token": "eyJhbGciOiJIUzI1NiJ9.e30.sig"},
            {"access_token": "eyJhbGciOiJIUzI1NiJ9.e30.sig"},
            {"user_id": "not-a-uuid"},
        ],
    )
    async def test_sign_in_takes_no_token(
        self, client: httpx.AsyncClient, body: dict[str, str]
    ) -> None:
        response = await client.post("/demo/sign-in", json=body)
        assert response.status_code == 422
        assert set(response.json()) == {"detail"}  # no token minted


@pytest.fixture
def postgres_settings(database_dsn: str) -> dict[str, object]:
    return {
        "memory_backend": "postgres",
        "database_url": database_dsn,
        "supabase_jwt_secret": TEST_JWT_SECRET,
    }


@pytest.fixture
async def postgres_client(
    postgres_settings: dict[str, object], request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    demo_enabled = getattr(request, "param", None)
    settings = make_settings(demo_enabled=demo_enabled, **postgres_settings)
    async with running_app(settings) as app, asgi_client(app) as client:
        yield client


class TestDemoOnOtherBackends:
    async def test_off_by_default(self, postgres_client: httpx.AsyncClient) -> None:
        assert (await postgres_client.get("/demo/")).status_code == 404
        assert (await postgres_client.post("/demo/sign-in", json={})).status_code == 404

    @pytest.mark.parametrize("postgres_client", [True], indirect=True)
    async def test_enabled_page_has_no_sign_in(self, postgres_client: httpx.AsyncClient) -> None:
        assert (await postgres_client.get("/demo/")).status_code == 200
        for body in ({}, {"user_id": str(uuid.uuid4())}):
            response = await postgres_client.post("/demo/sign-in", json=body)
            assert response.status_code in (404, 405)
            assert "access_token" not in response.text
        # The API still takes a real token, from the page's token box as from anyone.
        me = await postgres_client.get("/api/me", headers=bearer(user_token()))
        assert me.status_code == 200

    @pytest.mark.parametrize("postgres_client", [False], indirect=True)
    async def test_embedded_can_turn_it_off(self, postgres_client: httpx.AsyncClient) -> None:
        assert (await postgres_client.get("/demo/")).status_code == 404


async def test_embedded_demo_disabled(embedded_server: EmbeddedPostgres) -> None:
    settings = make_settings(
        memory_backend="embedded",
        data_dir=embedded_server.pgdata.parent,
        supabase_jwt_secret=TEST_JWT_SECRET,
        demo_enabled=False,
    )
    async with running_app(settings) as app, asgi_client(app) as client:
        assert (await client.get("/demo/")).status_code == 404
        assert (await client.post("/demo/sign-in", json={})).status_code == 404


class TestDocsOffline:
    @pytest.mark.parametrize("page", ["/docs", "/redoc"])
    async def test_docs_use_local_assets_only(self, client: httpx.AsyncClient, page: str) -> None:
        response = await client.get(page)
        assert response.status_code == 200
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "https:" not in csp
        assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert any(asset.endswith(".js") for asset in assets)
        for asset in assets:
            assert asset.startswith("/"), asset  # from this app, not a CDN
            assert (await client.get(asset)).status_code == 200, asset
        assert (await client.get("/openapi.json")).status_code == 200
