"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis).

Every operation gets generated requests, valid and invalid (positive and negative modes), sent
with a valid bearer token through the ASGI app on the embedded backend. Each reply must not be a
5xx (503 only if the document lists it and the database really is down: it is not, here) and
must match the document: a documented status, content type, headers and body schema.

The number of examples is bounded (FUZZ_MAX_EXAMPLES, default 100 per operation) so the suite
stays short; hypothesis' own deadline is off (no timed assertions).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckFunction
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from main import create_app
from services.storage.embedded_postgres import EmbeddedPostgres
from tests.conftest import make_settings
from tests.tokens import bearer, user_token

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))
BASE_URL = "http://testserver"
# Checks that judge the reply alone. Those that send requests of their own (ignored_auth,
# use_after_free, ...) are left out: they would bypass the ASGI transport and go to the network.
# "No 5xx" is asserted below (503 is the documented answer of an unconfigured /api/chat only),
# and "no token, no access" is checked by sending every request once more without the token.
RESPONSE_CHECKS: list[CheckFunction] = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    missing_required_header,
    unsupported_method,
    # allow_header_conformance is left out: a field's 405 lists what *that field* allows (a
    # list field has no PATCH), which the per-path document can not express. Routing 405s are
    # checked in test_405_lists_every_method_of_the_path.
]
# /demo/sign-in: the embedded backend's dev sign-in (tests/test_demo.py)
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/demo/sign-in"}
)

# The app's OpenAPI document does not depend on its lifespan: it is built here, at collection,
# from the same factory; a test below checks it is the document the running app serves.
OPENAPI = create_app(
    make_settings(memory_backend="embedded", supabase_jwt_secret="x" * 32)
).openapi()
# A schema-valid request may still be refused with 405: the path's {field} is a free string,
# and PATCH/POST on a field of the other kind (or DELETE of an item of an object field) is a
# 405 by design (DESIGN section 6), documented on those operations.
FUZZ_CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", 401, 403, 404, 405, 409, 429, "5xx"]
            }
        }
    }
)
schema = schemathesis.openapi.from_dict(OPENAPI, config=FUZZ_CONFIG)


@pytest.fixture(scope="session")
async def fuzz_loop() -> asyncio.AbstractEventLoop:
    """The session's event loop (the app's pool lives on it): generated cases are sent on it."""
    return asyncio.get_running_loop()


@pytest.fixture(scope="session")
async def fuzz_user(embedded_server: EmbeddedPostgres) -> uuid.UUID:
    """A signed-up user (in auth.users, as Supabase Auth would have it)."""
    user_id = uuid.uuid4()
    conn = await asyncpg.connect(embedded_server.dsn)
    try:
        await conn.execute(
            "insert into auth.users (id, aud, role, email) values ($1, 'authenticated',"
            " 'authenticated', $2) on conflict (id) do nothing",
            user_id,
            f"{user_id.hex[:8]}@fuzz.test",
        )
    finally:
        await conn.close()
    return user_id


@pytest.fixture(scope="session")
async def fuzz_client(embedded_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=embedded_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


def httpx_request_kwargs(case: Case[Any], headers: dict[str, str]) -> dict[str, Any]:
    """schemathesis' request arguments (shaped for `requests`) for an httpx client."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers"),
        "params": kwargs.get("params"),
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        request["content"] = kwargs["data"]
    return request


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_api_matches_its_openapi_document(
    case: Case[Any],
    fuzz_client: httpx.AsyncClient,
    fuzz_loop: asyncio.AbstractEventLoop,
    fuzz_user: uuid.UUID,
) -> None:
    request = httpx_request_kwargs(case, bearer(user_token(fuzz_user)))
    try:
        response = fuzz_loop.run_until_complete(fuzz_client.request(**request))
    except (UnicodeEncodeError, httpx.InvalidURL, httpx.LocalProtocolError):
        # A header value or URL no HTTP client can send (the server never sees it).
        return
    unconfigured_chat = response.status_code == 503 and case.operation.path == "/api/chat"
    assert response.status_code < 500 or unconfigured_chat, (response.status_code, response.text)
    case.validate_response(response, checks=RESPONSE_CHECKS, headers=request["headers"])

    if case.operation.path not in PUBLIC_PATHS:
        anonymous = {k: v for k, v in request["headers"].items() if k.lower() != "authorization"}
        refused = fuzz_loop.run_until_complete(
            fuzz_client.request(**{**request, "headers": anonymous})
        )
        # 401, or the same input error as with the token (FastAPI reads the body first)
        assert refused.status_code in (400, 401, 404, 405, 413, 415, 422), refused.status_code


async def test_fuzzed_document_is_the_served_one(fuzz_client: httpx.AsyncClient) -> None:
    response = await fuzz_client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == OPENAPI


async def test_405_lists_every_method_of_the_path(
    fuzz_client: httpx.AsyncClient, fuzz_user: uuid.UUID
) -> None:
    response = await fuzz_client.request(
        "PATCH", "/api/memory", headers=bearer(user_token(fuzz_user))
    )
    assert response.status_code == 405
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed == {"GET", "DELETE"}
