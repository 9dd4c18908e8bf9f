"""Body mistakes answered the same way on every route that takes a body: a body that is not
sent as JSON is a 415 naming application/json; bytes that are not UTF-8 JSON text (a bad byte,
a byte order mark) are the same 422 `json_invalid` as malformed JSON. Nothing is stored."""

from __future__ import annotations

import codecs

import httpx
import pytest

from tests.test_api_memory import new_user

BODY_ROUTES = [
    ("PUT", "/api/memory/identity"),
    ("PATCH", "/api/memory/current_state"),
    ("POST", "/api/memory/episodic_memory"),
]


async def send(
    client: httpx.AsyncClient, method: str, path: str, body: bytes, content_type: str | None
) -> httpx.Response:
    headers = new_user()
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.request(method, path, content=body, headers=headers)


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", None, "application/xml"],
    ids=["curl-d", "text", "none", "xml"],
)
async def test_a_body_not_sent_as_json_is_415(
    client: httpx.AsyncClient, method: str, path: str, content_type: str | None
) -> None:
    response = await send(client, method, path, b'{"role": "user"}', content_type)
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert "Content-Type: application/json" in detail
    assert "dict[" not in detail


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"],
)
async def test_json_media_types_are_accepted(client: httpx.AsyncClient, content_type: str) -> None:
    response = await send(client, "PUT", "/api/memory/identity", b'{"a": 1}', content_type)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        b'{"role": "\xff"}',
        codecs.BOM_UTF8 + b'{"role": "user"}',
        codecs.BOM_UTF16_LE + '{"role": "user"}'.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + '{"role": "user"}'.encode("utf-16-be"),
        '{"role": "user"}'.encode("utf-16-le"),
        b'{"role": ',
        b"nope",
    ],
    ids=["bad-byte", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf16", "cut", "not-json"],
)
async def test_bytes_that_are_not_utf8_json_are_422_json_invalid(
    client: httpx.AsyncClient, method: str, path: str, body: bytes
) -> None:
    headers = new_user()
    response = await client.request(
        method, path, content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"][0] == "body"
    assert error["msg"].startswith("JSON decode error: ")
    stored = await client.get("/api/memory", headers=headers)
    assert stored.json()["version"] == 0, "nothing was stored"


async def test_an_empty_body_is_still_field_required(client: httpx.AsyncClient) -> None:
    response = await send(client, "PUT", "/api/memory/identity", b"", None)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "missing"


async def test_chat_checks_its_body_the_same_way(client: httpx.AsyncClient) -> None:
    form = await send(
        client, "POST", "/api/chat", b"message=hi", "application/x-www-form-urlencoded"
    )
    assert form.status_code == 415
    bad = await send(client, "POST", "/api/chat", b'{"message": "\xff"}', "application/json")
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "json_invalid"


async def test_a_get_needs_no_content_type(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/memory", headers=new_user())).status_code == 200
