"""The seed's `get_supabase_client()`: supabase-py's client, built once per process.

It carries only the API key, no user: user data goes through the per-request PostgREST clients
of `repositories/postgrest_clients.py`, which act as the user whose token they carry.
"""

from __future__ import annotations

import threading

import httpx
from supabase import AsyncClient, AsyncClientOptions

from config import Settings
from repositories.postgrest_clients import SupabaseConfigError, SupabaseCredentials

__all__ = [
    "SupabaseConfigError",
    "close_supabase_client",
    "get_supabase_client",
    "init_supabase_client",
]


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
