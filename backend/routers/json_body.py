"""`JsonBodyRoute`: the route class of every router taking a JSON body, so every body mistake
is answered the same way before the body is parsed.

- A body sent as another media type (`curl -d` sends `application/x-www-form-urlencoded`) is a
  415 naming `application/json`, not a 422 about internal type names.
- Bytes that are not UTF-8 JSON text (a bad byte inside a string, a UTF-16 or UTF-8 byte order
  mark) are the same 422 `json_invalid` as malformed JSON, not a 400 for some and a 422 for
  others. RFC 8259: JSON exchanged between systems is UTF-8, without a byte order mark.

An empty body is left to FastAPI ("Field required").
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

JSON_MEDIA_TYPE = "application/json"
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # UTF-32 LE starts as 16 LE


def is_json_media_type(content_type: str) -> bool:
    """`application/json` or any `application/…+json`, parameters (charset) allowed."""
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def json_invalid(position: int, reason: str) -> RequestValidationError:
    """FastAPI's own `json_invalid` error shape, with the reason."""
    return RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", position),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": reason},
            }
        ]
    )


async def check_json_body(request: Request) -> None:
    """415 or 422 for a body that is not UTF-8 JSON text; nothing for an empty body."""
    body = await request.body()  # cached on the request: FastAPI parses these same bytes
    if not body:
        return
    content_type = request.headers.get("content-type", "")
    if not is_json_media_type(content_type):
        sent = f"Content-Type {content_type[:100]}" if content_type else "no Content-Type"
        raise HTTPException(
            status_code=415,
            detail=f"send the body as JSON with Content-Type: {JSON_MEDIA_TYPE} (this request"
            f" had {sent})",
        )
    if body.startswith(_BOMS):
        raise json_invalid(0, "a byte order mark: JSON text must be UTF-8 without one")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json_invalid(exc.start, "the body is not UTF-8 text") from exc
    nul = body.find(b"\x00")  # never in UTF-8 JSON text; json.loads would take it as UTF-16/32
    if nul >= 0:
        raise json_invalid(nul, "a NUL byte: JSON text must be UTF-8 (not UTF-16 or UTF-32)")


class JsonBodyRoute(APIRoute):
    """An APIRoute whose requests, when it takes a body, pass `check_json_body` first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked_handler(request: Request) -> Response:
            await check_json_body(request)
            return await handler(request)

        return checked_handler
