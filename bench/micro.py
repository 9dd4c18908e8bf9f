"""In-process micro-benchmark: per-request Supabase client setup against the seed's way.

CPU-only, so timed with `time.process_time` over batches (median of a few batches), in the
bench driver while no server runs. (Token verification: `bench/verify_tokens.py`.)
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import jwt

from tests.tokens import supabase_claims

FAKE_PROJECT_URL = "https://abcdefghijklmnopqrst.supabase.co"  # never contacted: setup only


@dataclass(frozen=True, slots=True)
class MicroResult:
    name: str
    microseconds: float  # CPU time per call


def cpu_per_call(func: Callable[[], object], *, calls: int, batches: int = 5) -> float:
    """Median CPU microseconds per call over `batches` batches of `calls` calls."""
    func()  # warm caches and lazy imports
    samples = []
    for _ in range(batches):
        started = time.process_time()
        for _ in range(calls):
            func()
        samples.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(samples)


def _anon_key() -> str:
    """A legacy anon API key (a JWT with role anon), the kind the seed put in SUPABASE_KEY."""
    return jwt.encode(
        {"iss": "supabase", "role": "anon", "iat": 0, "exp": 2**31 - 1},
        "x" * 40,
        algorithm="HS256",
    )


def client_setup() -> tuple[MicroResult, MicroResult]:
    """The project's per-request user client on the shared pool vs. the seed's
    `supabase.create_client()` on every call (which also built a fresh pool each time)."""
    from supabase import create_client

    from repositories.postgrest_clients import SupabaseCredentials, user_postgrest_client

    key = _anon_key()
    credentials = SupabaseCredentials(url=FAKE_PROJECT_URL, key=key)
    token = jwt.encode(supabase_claims(uuid.uuid4()), "y" * 40, algorithm="HS256")
    shared = httpx.AsyncClient()  # the process's pool; never used for I/O here
    ours = cpu_per_call(lambda: user_postgrest_client(credentials, shared, token), calls=20_000)
    seed = cpu_per_call(lambda: create_client(FAKE_PROJECT_URL, key), calls=10, batches=3)
    return (
        MicroResult("per-request user_postgrest_client()", ours),
        MicroResult("seed: create_client() per call", seed),
    )
