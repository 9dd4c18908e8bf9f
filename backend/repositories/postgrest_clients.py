"""PostgREST clients for Supabase: the project's credentials, and the per-request client that
acts as one user on the process's shared httpx pool (what `repositories/supabase.py` sends with).

User data is only ever read or written with `user_postgrest_client`: `apikey` carries
SUPABASE_KEY (anon or `sb_publishable_…`), `Authorization` the user's own access token, so RLS
sees that user. Each request gets its own small client on the shared pool; no auth state is
shared between concurrent requests and no client here closes that pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import jwt
from postgrest import AsyncPostgrestClient
from postgrest.constants import DEFAULT_POSTGREST_CLIENT_HEADERS

from config import Settings, StartupError

REST_PATH = "/rest/v1"


class SupabaseConfigError(StartupError, ValueError):
    """SUPABASE_URL / SUPABASE_KEY missing or unusable: a start-up error, never a request's 500."""


@dataclass(frozen=True, slots=True)
class SupabaseCredentials:
    """The project URL and its low-privilege API key (the `apikey` header, nothing else)."""

    url: str
    key: str

    @property
    def rest_url(self) -> str:
        return f"{self.url}{REST_PATH}"

    @classmethod
    def from_settings(cls, settings: Settings) -> SupabaseCredentials:
        """Credentials from SUPABASE_URL and SUPABASE_KEY; refuses missing or secret keys."""
        url = (settings.supabase_url or "").rstrip("/")
        key = settings.supabase_key.get_secret_value() if settings.supabase_key else ""
        if not url or not key:
            raise SupabaseConfigError(
                "Supabase credentials not found: set SUPABASE_URL and SUPABASE_KEY"
                " (environment or .env)"
            )
        if not url.startswith(("https://", "http://")):
            raise SupabaseConfigError(f"SUPABASE_URL must be an http(s) URL, not {url!r}")
        if _is_secret_key(key):
            raise SupabaseConfigError(
                "SUPABASE_KEY must be the anon or publishable (sb_publishable_…) key: a"
                " service-role or sb_secret_… key would bypass row level security"
            )
        return cls(url=url, key=key)


def _is_secret_key(key: str) -> bool:
    """True for an `sb_secret_…` key or a legacy JWT key whose role is `service_role`."""
    if key.startswith("sb_secret_"):
        return True
    if key.count(".") != 2:
        return False
    try:
        claims = jwt.decode(key, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return isinstance(claims, dict) and claims.get("role") == "service_role"


class SharedPoolPostgrestClient(AsyncPostgrestClient):
    """An AsyncPostgrestClient that borrows the process's httpx pool.

    postgrest-py marks every client as owning its session, even one given `http_client`, so
    `aclose()` (or `async with`) would close the pool under every other request. This one
    never closes it: the pool belongs to the app's lifespan. GET retries are off, so a
    request's total time stays bounded by the caller's timeout.
    """

    def __init__(self, rest_url: str, *, headers: dict[str, str], http: httpx.AsyncClient) -> None:
        super().__init__(rest_url, headers=headers, http_client=http, retry_enabled=False)
        self._owns_session = False

    async def aclose(self) -> None:
        """Nothing to close: the shared pool outlives this client."""


def user_postgrest_client(
    credentials: SupabaseCredentials, http: httpx.AsyncClient, token: str
) -> AsyncPostgrestClient:
    """A PostgREST client acting as the user whose access token this is (cheap: one per request)."""
    if not token:
        raise ValueError("a user's access token is required")
    headers = {
        **DEFAULT_POSTGREST_CLIENT_HEADERS,
        "apikey": credentials.key,
        "Authorization": f"Bearer {token}",
    }
    return SharedPoolPostgrestClient(credentials.rest_url, headers=headers, http=http)


def anon_postgrest_client(
    credentials: SupabaseCredentials, http: httpx.AsyncClient
) -> AsyncPostgrestClient:
    """A PostgREST client with the API key only (PostgREST's `anon` role: sees no memory).

    For probes such as readiness, never for user data.
    """
    headers = {**DEFAULT_POSTGREST_CLIENT_HEADERS, "apikey": credentials.key}
    return SharedPoolPostgrestClient(credentials.rest_url, headers=headers, http=http)
