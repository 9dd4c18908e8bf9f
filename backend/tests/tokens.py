"""Supabase-shaped access tokens for tests: the claim set Supabase Auth issues, signed with
HS256 (a legacy project secret) or an ES256/RS256 key served as a JWKS."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

TEST_JWT_SECRET = "test-secret-with-at-least-thirty-two-characters!"
TEST_ISSUER = "http://127.0.0.1:54321/auth/v1"


def supabase_claims(
    user_id: uuid.UUID | str | None = None, *, lifetime: int = 3600, **overrides: Any
) -> dict[str, Any]:
    """The claims of a Supabase access token for a signed-in (email) user."""
    now = int(time.time())
    user_id = str(user_id or uuid.uuid4())
    claims: dict[str, Any] = {
        "iss": TEST_ISSUER,
        "sub": user_id,
        "aud": "authenticated",
        "exp": now + lifetime,
        "iat": now,
        "email": f"{user_id[:8]}@example.test",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    claims.update(overrides)
    return claims


def hs256_token(claims: dict[str, Any], secret: str = TEST_JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})


def user_token(user_id: uuid.UUID | str | None = None, **overrides: Any) -> str:
    """A valid HS256 token (TEST_JWT_SECRET) for user_id (a new user when None)."""
    return hs256_token(supabase_claims(user_id, **overrides))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
