"""Supabase clients: the seed's `get_supabase_client()`, built once per process, and the
per-request PostgREST client that acts as one user.

User data is only ever read or written with `user_postgrest_client`: `apikey` carries
SUPABASE_KEY (anon or `sb_publishable_…`), `Authorization` the user's own access token, so RLS
sees that user. Each request gets its own small client on the process's shared httpx pool;
no auth state is shared between concurrent requests and no client here closes that pool.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
import jwt
from postgrest import AsyncPostgrestClient
from postgrest.constants import DEFAULT_POSTGREST_CLIENT_HEADERS
from supabase import AsyncClient, AsyncClientOptions

from config import Settings

REST_PATH = "/rest/v1"


class SupabaseConfigError(ValueError):
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


# --- the seed's client, once per process ---------------------------------------------------

_lock = threading.Lock()
_client: AsyncClient | None = None
_owned_http: httpx.AsyncClient | None = None


def _build_client(credentials: SupabaseCredentials, http: httpx.AsyncClient) -> AsyncClient:
    options = AsyncClientOptions(
        httpx_client=http,
        postgrest_client_retry=False,
        auto_refresh_token=False,
        persist_session=False,
    )
    client = AsyncClient(credentials.url, credentials.key, options)
    # Like postgrest-py's own `schema()` clients: the shared pool is not this client's to close.
    client.postgrest._owns_session = False
    return client


def init_supabase_client(settings: Settings, http: httpx.AsyncClient) -> AsyncClient:
    """Build the process's client on the app's pool (call from the lifespan), replacing any."""
    global _client
    client = _build_client(SupabaseCredentials.from_settings(settings), http)
    with _lock:
        _client = client
    return client


def get_supabase_client() -> AsyncClient:
    """The process's supabase-py AsyncClient (the seed's name and contract), built once.

    Settings come from the environment and `.env`; without SUPABASE_URL and SUPABASE_KEY this
    raises `SupabaseConfigError` (a ValueError, as the seed's did). It carries only the API
    key, no user: RLS shows it no memory, so user data goes through `user_postgrest_client`.
    Never sign in with it (that would change its auth for every caller). Building it does no
    I/O; its calls are async, so it never blocks the event loop.
    """
    global _client, _owned_http
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            settings = Settings()
            credentials = SupabaseCredentials.from_settings(settings)
            http = httpx.AsyncClient(timeout=httpx.Timeout(settings.storage_timeout_seconds))
            _client, _owned_http = _build_client(credentials, http), http
        return _client


async def close_supabase_client() -> None:
    """Forget the process's client; close its pool only if this module opened it."""
    global _client, _owned_http
    with _lock:
        owned, _client, _owned_http = _owned_http, None, None
    if owned is not None:
        await owned.aclose()
