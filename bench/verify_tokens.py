"""The cost of verifying one access token with the app's own `TokenVerifier` (HS256 with the
legacy secret; ES256 and RS256 with a cached JWKS key): on first sight of a token (the full
check), again for a token seen within the last minute (the verified-token cache), and a bare
`jwt.decode` of the same token, so the price of our extra checks is visible.

Run from the project root with `backend` on PYTHONPATH: `python -m bench.verify_tokens`.
Wall-clock microseconds per call, median of several batches, on one core of this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import jwt
from pydantic import SecretStr

from config import Settings
from services.auth.jwks import JwksCache
from services.auth.verified_tokens import VerifiedTokenCache
from services.auth.verifier import TokenVerifier
from tests.tokens import ES256_KEY, RS256_KEY, jwks_document, supabase_claims

SECRET = "bench-secret-with-at-least-thirty-two-characters"  # noqa: S105 (a bench key)
JWKS_URL = "https://bench.supabase.test/auth/v1/.well-known/jwks.json"


@dataclass(frozen=True, slots=True)
class VerifyCost:
    name: str
    microseconds: float


async def _per_call(call: Callable[[], Awaitable[object]], iterations: int, batches: int) -> float:
    """Median wall-clock microseconds per call over `batches` batches."""
    await call()  # warm: JWKS fetched, lazy imports done
    samples = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(iterations):
            await call()
        samples.append((time.perf_counter() - started) / iterations * 1e6)
    return statistics.median(samples)


async def measure(iterations: int = 5_000, batches: int = 5) -> list[VerifyCost]:
    """One verification per algorithm through `TokenVerifier.verify`, plus bare PyJWT."""
    document = jwks_document(ES256_KEY, RS256_KEY)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=document))
    settings = Settings(
        _env_file=None, supabase_jwt_secret=SecretStr(SECRET), supabase_jwks_url=JWKS_URL
    )
    claims = supabase_claims(uuid.uuid4())
    hs_token = jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "JWT"})
    es_token = ES256_KEY.sign(claims)
    rs_token = RS256_KEY.sign(claims)
    es_public = ES256_KEY.private_key.public_key()

    async def bare_hs256() -> object:
        return jwt.decode(hs_token, SECRET, algorithms=["HS256"], audience="authenticated")

    async def bare_es256() -> object:
        return jwt.decode(es_token, es_public, algorithms=["ES256"], audience="authenticated")

    async with httpx.AsyncClient(transport=transport) as http:
        jwks = JwksCache(http, JWKS_URL)
        full = TokenVerifier(settings, jwks, verified=VerifiedTokenCache(seconds=0))
        cached = TokenVerifier(settings, jwks)
        slow = iterations // 5
        cases: list[tuple[str, Callable[[], Awaitable[object]], int]] = [
            ("HS256 verify, first sight", lambda: full.verify(hs_token), iterations),
            ("HS256 verify, seen token", lambda: cached.verify(hs_token), iterations),
            ("HS256 bare jwt.decode", bare_hs256, iterations),
            ("ES256 verify, first sight", lambda: full.verify(es_token), slow),
            ("ES256 verify, seen token", lambda: cached.verify(es_token), iterations),
            ("ES256 bare jwt.decode", bare_es256, slow),
            ("RS256 verify, first sight", lambda: full.verify(rs_token), slow),
        ]
        return [
            VerifyCost(name, await _per_call(call, max(n, 1), batches)) for name, call, n in cases
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify_tokens", description=__doc__)
    parser.add_argument("--iterations", type=int, default=5_000, help="HS256 calls per batch")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.iterations))
    print("token verification, µs per call (median of 5 batches)")
    for result in results:
        print(f"  {result.name:<30} {result.microseconds:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
