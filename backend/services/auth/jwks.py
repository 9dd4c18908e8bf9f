"""The Supabase project's JWKS: the public keys (ES256, RS256) that verify its access tokens.

Fetched over the app's shared httpx client, never with PyJWT's urllib-based `PyJWKClient` (it
would block the event loop). The key set is cached for the configured time, never longer than
the server's `Cache-Control: max-age` nor 600 s. A token naming a `kid` the cache lacks makes
one refetch at most once per cache interval, and concurrent requests share that fetch (one
asyncio lock): a flood of forged `kid`s costs one request. Whatever goes wrong (unreachable,
non-200, bad JSON, no such key) fails closed: the caller answers 401, never 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from services.auth.reasons import Reason, refused

logger = logging.getLogger(__name__)

# What Supabase signs with. HS* keys in a JWKS are ignored: a symmetric key must never verify
# a token through a channel meant for public keys.
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
_CURVE_OF = {"ES256": "P-256"}
MIN_RSA_BITS = 2048
MAX_CACHE_SECONDS = 600  # Supabase's own cache time for its JWKS
MIN_CACHE_SECONDS = 5  # a server saying `max-age=0` must not make us fetch on every request
FAILURE_BACKOFF_SECONDS = 2.0  # after a failed fetch, answer 401 at once for this long
FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 256 * 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def parse_max_age(cache_control: str | None) -> int | None:
    """`max-age` of a Cache-Control header in seconds (0 for no-store/no-cache), else None."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None


def usable_key(jwk: Mapping[str, Any]) -> jwt.PyJWK | None:
    """A verification key from one JWK, or None when it is not an ES256/RS256 signing key."""
    if jwk.get("use", "sig") != "sig":
        return None
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    if jwk.get("kty") not in ("EC", "RSA"):
        return None
    try:
        key = jwt.PyJWK(dict(jwk))
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    algorithm = key.algorithm_name
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        return None
    if algorithm in _CURVE_OF and jwk.get("crv", _CURVE_OF[algorithm]) != _CURVE_OF[algorithm]:
        return None
    if isinstance(key.key, RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
        return None
    if not hasattr(key.key, "verify"):  # a private key published by mistake is not used either
        return None
    return key


class JwksCache:
    """The cached key set of one JWKS URL; `key_for` is the only thing verification needs."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        cache_seconds: int = MAX_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._http = http
        self._cache_seconds = min(cache_seconds, MAX_CACHE_SECONDS)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: dict[str | None, list[jwt.PyJWK]] = {}
        self._ttl = float(self._cache_seconds)
        self._expires_at = float("-inf")
        self._last_miss_fetch = float("-inf")
        self._retry_after = float("-inf")

    async def key_for(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        """The key for a token's `kid` and `alg`; InvalidToken when there is none (or the JWKS
        can not be had). A token without `kid` gets the set's only key of that algorithm."""
        key = self._fresh_lookup(kid, algorithm)
        if key is not None:
            return key
        if self._clock() < self._expires_at and not self._may_refetch_for_miss():
            raise refused(Reason.UNKNOWN_KEY)
        async with self._lock:
            key = self._fresh_lookup(kid, algorithm)  # a fetch we waited for may have brought it
            if key is not None:
                return key
            now = self._clock()
            if now < self._retry_after:  # the last fetch failed moments ago
                raise refused(Reason.JWKS_UNAVAILABLE)
            if now < self._expires_at:  # fresh, but this kid is unknown
                if not self._may_refetch_for_miss():
                    raise refused(Reason.UNKNOWN_KEY)
                self._last_miss_fetch = now
            await self._refresh()
            key = self._fresh_lookup(kid, algorithm)
        if key is None:
            failed = self._clock() < self._retry_after  # the fetch just now failed
            raise refused(Reason.JWKS_UNAVAILABLE if failed else Reason.UNKNOWN_KEY)
        return key

    def _may_refetch_for_miss(self) -> bool:
        """An unknown kid may refetch once per cache interval (what a burst of forged ones gets)."""
        return self._clock() - self._last_miss_fetch >= self._ttl

    def _fresh_lookup(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        return self._lookup(kid, algorithm) if self._clock() < self._expires_at else None

    def _lookup(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        candidates = [k for k in self._keys.get(kid, ()) if k.algorithm_name == algorithm]
        if kid is None and len(candidates) != 1:
            return None
        return candidates[0] if candidates else None

    async def _refresh(self) -> None:
        """Fetch and replace the key set. On failure keep what is still fresh (expired keys are
        never used) and back off, so an unreachable JWKS is not asked on every request."""
        try:
            keys, max_age = await self._fetch()
        except Exception as exc:  # any failure at all: no new keys, and a 401 upstream
            logger.warning("JWKS fetch from %s failed: %s: %s", self.url, type(exc).__name__, exc)
            self._retry_after = self._clock() + FAILURE_BACKOFF_SECONDS
            return
        ttl = float(self._cache_seconds)
        if max_age is not None:
            ttl = min(ttl, max(max_age, MIN_CACHE_SECONDS))
        self._keys, self._ttl = keys, ttl
        self._expires_at = self._clock() + ttl
        count = len(keys.get(None, ()))  # every key is listed under None as well
        logger.info("JWKS from %s: %d usable key(s), cached %.0f s", self.url, count, ttl)

    async def _fetch(self) -> tuple[dict[str | None, list[jwt.PyJWK]], int | None]:
        response = await self._http.get(
            self.url, timeout=FETCH_TIMEOUT_SECONDS, headers={"Accept": "application/json"}
        )
        if response.status_code != 200:
            raise ValueError(f"status {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("response too large")
        document = response.json()
        raw_keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw_keys, list):
            raise ValueError("no `keys` list")
        keys: dict[str | None, list[jwt.PyJWK]] = {}
        for jwk in raw_keys:
            key = usable_key(jwk) if isinstance(jwk, dict) else None
            if key is not None:
                kid = key.key_id if isinstance(key.key_id, str) else None
                keys.setdefault(kid, []).append(key)
                if kid is not None:
                    keys.setdefault(None, []).append(key)
        return keys, parse_max_age(response.headers.get("cache-control"))
