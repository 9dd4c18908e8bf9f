"""The ASGI middleware on its own: an unexpected error is a logged JSON 500 with the request id."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import FastAPI

from main import create_app
from tests.conftest import asgi_client, make_settings


@pytest.fixture
def app_with_a_bug(tmp_path: Path) -> FastAPI:
    app = create_app(make_settings(memory_backend="embedded", data_dir=tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    return app


async def test_unexpected_error_is_json_500_without_details(
    app_with_a_bug: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async with asgi_client(app_with_a_bug) as http:
        with caplog.at_level(logging.ERROR):
            response = await http.get("/boom", headers={"X-Request-ID": "req-1"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert response.headers["x-request-id"] == "req-1"
    assert "hunter2" not in response.text
    assert any("unhandled error on GET /boom" in r.getMessage() for r in caplog.records)


async def test_cors_allows_the_configured_origin_only(tmp_path: Path) -> None:
    app = create_app(
        make_settings(
            memory_backend="embedded",
            data_dir=tmp_path,
            cors_origins="https://app.example, https://admin.example",
        )
    )
    preflight = {
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization, if-match, content-type",
    }
    async with asgi_client(app) as http:
        allowed = await http.options(
            "/api/memory/identity", headers={"Origin": "https://app.example", **preflight}
        )
        refused = await http.options(
            "/api/memory/identity", headers={"Origin": "https://evil.example", **preflight}
        )
        simple = await http.get("/healthz", headers={"Origin": "https://admin.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "PUT" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-origin" not in refused.headers
    assert simple.headers["access-control-allow-origin"] == "https://admin.example"
    assert "ETag" in simple.headers["access-control-expose-headers"]
