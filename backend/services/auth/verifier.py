"""Verifying Supabase Auth access tokens: the `TokenVerifier` behind `get_current_user`.

The token's `alg` picks the key source and the key fixes the algorithm: HS256 only with
SUPABASE_JWT_SECRET (legacy projects; the embedded dev secret), ES256/RS256 only with a key of
the project's JWKS. So `none` never verifies, a public key is never used as an HMAC secret and
the secret never verifies an asymmetric token. Then the claims: `exp`/`nbf` with leeway, `aud`
holds "authenticated", `iss` when configured, `role` "authenticated", `sub` a UUID, anonymous
sign-ins unless refused. `user_metadata` is never looked at (users can edit it). Every failure
is an `InvalidToken` (401) whose `reason` says why (`services.auth.reasons`); verification is
CPU-only apart from a JWKS (re)fetch, so it runs inline in an async dependency.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from typing import Any

import jwt

from config import Settings
from models import User
from services.auth.jwks import ASYMMETRIC_ALGORITHMS, JwksCache
from services.auth.reasons import Reason, reason_for, refused
from services.auth.verified_tokens import VerifiedTokenCache

logger = logging.getLogger(__name__)

AUDIENCE = "authenticated"
USER_ROLE = "authenticated"
HMAC_ALGORITHM = "HS256"
# Supabase tokens are 1-2 KB (4-8 with big metadata): a longer one is refused before any work.
MAX_TOKEN_CHARS = 16 * 1024
MAX_HEADER_CHARS = 1024
_REQUIRED_CLAIMS = ["exp", "sub", "aud", "role"]


def _routing_header(token: str) -> dict[str, Any]:
    """The token's header, read only to pick a key: `jwt.decode` parses the whole token again
    strictly and checks `alg` against that key. (PyJWT's `get_unverified_header` would decode
    all three segments, doubling the cost of every verification.)"""
    segment = token.partition(".")[0]
    if len(segment) > MAX_HEADER_CHARS:
        raise refused(Reason.TOO_LARGE)
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError) as exc:  # binascii, unicode and JSON errors are
        raise refused(Reason.MALFORMED) from exc
    if not isinstance(header, dict):
        raise refused(Reason.MALFORMED)
    return header


class TokenVerifier:
    """Turns a bearer token into a `User` or raises `InvalidToken`; one per process."""

    def __init__(
        self,
        settings: Settings,
        jwks: JwksCache | None,
        *,
        verified: VerifiedTokenCache | None = None,
    ) -> None:
        self._verified = verified if verified is not None else VerifiedTokenCache()
        secret = settings.supabase_jwt_secret
        self._secret = secret.get_secret_value().encode() if secret is not None else None
        self._jwks = jwks
        self._issuer = settings.supabase_jwt_issuer or None
        self._leeway = settings.auth_leeway_seconds
        self._allow_anonymous = settings.auth_allow_anonymous

    async def verify(self, token: str) -> User:
        if len(token) > MAX_TOKEN_CHARS:
            raise refused(Reason.TOO_LARGE)
        if token.count(".") != 2:
            raise refused(Reason.MALFORMED)
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        header = _routing_header(token)
        algorithm = header.get("alg")
        key: jwt.PyJWK | bytes
        if algorithm == HMAC_ALGORITHM and self._secret is not None:
            key = self._secret
        elif algorithm in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            key = await self._jwks.key_for(kid if isinstance(kid, str) else None, algorithm)
        else:
            raise refused(Reason.UNSUPPORTED_ALG)
        claims = self._decode(token, key)
        user = User(id=self._check_claims(claims), claims=claims, token=token)
        self._verified.put(user)
        return user

    def _decode(self, token: str, key: jwt.PyJWK | bytes) -> dict[str, Any]:
        algorithm = key.algorithm_name if isinstance(key, jwt.PyJWK) else HMAC_ALGORITHM
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise refused(reason_for(exc)) from exc
        except Exception as exc:  # whatever a hostile token triggers: a 401, never a 500
            logger.warning("token refused by an unexpected %s", type(exc).__name__)
            raise refused(Reason.INVALID) from exc
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> uuid.UUID:
        """The checks PyJWT does not do; returns the user id."""
        role = claims.get("role")
        if role == "service_role":
            raise refused(Reason.SERVICE_ROLE)
        if role != USER_ROLE:  # anon keys (and anything else) are not users
            raise refused(Reason.NOT_A_USER)
        anonymous = claims.get("is_anonymous", False)
        if not isinstance(anonymous, bool):
            raise refused(Reason.BAD_CLAIM)
        if anonymous and not self._allow_anonymous:
            raise refused(Reason.ANONYMOUS_REFUSED)
        sub = claims.get("sub")
        if not isinstance(sub, str) or len(sub) != 36:
            raise refused(Reason.BAD_SUBJECT)
        try:
            user_id = uuid.UUID(sub)
        except ValueError as exc:
            raise refused(Reason.BAD_SUBJECT) from exc
        if str(user_id) != sub.lower():  # the canonical 8-4-4-4-12 form only
            raise refused(Reason.BAD_SUBJECT)
        return user_id
