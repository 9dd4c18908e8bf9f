"""The browser demo (`DEMO_ENABLED`, on by default for the embedded backend only): plain static
files at /demo, and on the embedded backend a dev sign-in that mints a `make token`-style token
for a chosen or new user. The sign-in route does not exist on the other backends, and takes a
user id only, never a token."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from config import BACKEND_DIR, Backend, Settings
from deps import ServicesDep
from models import ErrorOut
from services.auth.dev_tokens import TOKEN_LIFETIME_SECONDS, mint_dev_token

STATIC_DIR = BACKEND_DIR / "static" / "demo"
ASSETS = frozenset(path.name for path in STATIC_DIR.iterdir() if path.is_file())

router = APIRouter(prefix="/demo", tags=["demo"])
# The page's files by explicit routes (not a catch-all mount): `/demo/{name}.{ext}` never
# matches `sign-in`, so its other methods are a 405, and off embedded it is a plain 404.
pages = APIRouter(prefix="/demo", include_in_schema=False)


@pages.get("")
async def demo_root() -> RedirectResponse:
    return RedirectResponse("/demo/")


@pages.get("/")
async def demo_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@pages.get("/{name}.{ext}", responses={404: {"model": ErrorOut}})
async def demo_asset(name: str, ext: str) -> FileResponse:
    filename = f"{name}.{ext}"
    if filename not in ASSETS:
        raise HTTPException(status_code=404, detail="Not Found")
    return FileResponse(STATIC_DIR / filename, headers={"Cache-Control": "no-cache"})


class SignInRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a user id or nothing: no pasted token

    user_id: uuid.UUID | None = Field(
        default=None, description="The user to sign in as; omitted: a new user"
    )


class SignInOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth token type)
    expires_in: int
    user_id: uuid.UUID


@router.post(
    "/sign-in",
    summary="Dev sign-in for the demo (embedded backend only): a token for a chosen or new user",
    response_model=SignInOut,
    responses={
        400: {"model": ErrorOut, "description": "the body can not be read as JSON text"},
        422: {"model": ErrorOut, "description": "not a user id, or other fields"},
    },
)
async def sign_in(services: ServicesDep, body: SignInRequest | None = None) -> SignInOut:
    user_id = (body.user_id if body else None) or uuid.uuid4()
    token = mint_dev_token(services.settings, user_id)
    return SignInOut(access_token=token, expires_in=TOKEN_LIFETIME_SECONDS, user_id=user_id)


def include(app: FastAPI, settings: Settings) -> None:
    """The demo's routes when enabled; the sign-in on the embedded backend only."""
    if not settings.demo:
        return
    if settings.backend is Backend.EMBEDDED:
        app.include_router(router)
    app.include_router(pages)
