"""A small in-process cache of tokens already verified, so a client sending the same access
token on every request pays for the signature check once a minute, not on every call.

Safe because the key is the exact token string (any change to header, claims or signature is
another key), an entry never outlives the token's own `exp` (nor `VERIFIED_TOKEN_SECONDS`), and
only tokens that passed every check are stored. The one thing it delays is noticing a key
revoked from the JWKS, by at most `VERIFIED_TOKEN_SECONDS` on top of the JWKS cache time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from models import User

VERIFIED_TOKEN_SECONDS = 60.0
MAX_VERIFIED_TOKENS = 10_000


class VerifiedTokenCache:
    """Token string → verified `User`, until min(exp, now + VERIFIED_TOKEN_SECONDS)."""

    def __init__(
        self, *, seconds: float = VERIFIED_TOKEN_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self._seconds = seconds  # 0 turns the cache off
        self._clock = clock  # wall clock: `exp` is wall-clock time
        self._entries: dict[str, tuple[float, User]] = {}

    def get(self, token: str) -> User | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[token]
            return None
        return entry[1]

    def put(self, user: User) -> None:
        exp = user.claims.get("exp")
        if self._seconds <= 0 or not isinstance(exp, int | float) or isinstance(exp, bool):
            return
        now = self._clock()
        if len(self._entries) >= MAX_VERIFIED_TOKENS:
            del self._entries[next(iter(self._entries))]  # the oldest entry
        self._entries[user.token] = (min(float(exp), now + self._seconds), user)
