"""PLACEHOLDER (being replaced by the Auth issue's full implementation): HS256 only."""

from __future__ import annotations

import uuid
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from errors import InvalidToken
from models import User

_bearer = HTTPBearer(auto_error=False)


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise InvalidToken()
    settings = request.app.state.settings
    secret = settings.supabase_jwt_secret
    if secret is None:
        raise InvalidToken()
    try:
        claims = jwt.decode(
            credentials.credentials,
            secret.get_secret_value(),
            algorithms=["HS256"],
            audience="authenticated",
        )
        user_id = uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise InvalidToken() from exc
    return User(id=user_id, claims=claims, token=credentials.credentials)
