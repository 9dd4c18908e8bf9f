"""The key material access tokens are verified with, resolved and checked once at start-up."""

from __future__ import annotations

from pydantic import SecretStr

from config import Backend, Settings, StartupError
from services.auth.dev_secret import dev_secret_path, load_or_create_dev_secret


class AuthConfigError(StartupError):
    """No way to verify tokens: a start-up error, never a per-request 500."""


def resolve_auth_settings(settings: Settings) -> Settings:
    """`settings` with the key material the app verifies tokens with, checked once at start-up.

    The embedded backend without SUPABASE_JWT_SECRET gets its generated dev secret (kept in
    DATA_DIR). Any other backend without a secret or a JWKS source is refused, saying what to
    set.
    """
    secret = settings.supabase_jwt_secret
    if secret is not None and not secret.get_secret_value().strip():  # `SUPABASE_JWT_SECRET=`
        settings = settings.model_copy(update={"supabase_jwt_secret": None})
    if settings.supabase_jwt_secret is None and settings.backend is Backend.EMBEDDED:
        dev_secret = load_or_create_dev_secret(dev_secret_path(settings))
        settings = settings.model_copy(update={"supabase_jwt_secret": SecretStr(dev_secret)})
    if settings.supabase_jwt_secret is None and settings.jwks_url is None:
        raise AuthConfigError(
            "no way to verify access tokens: set SUPABASE_URL (its JWKS is used for ES256/RS256"
            " keys) or SUPABASE_JWKS_URL, and/or SUPABASE_JWT_SECRET for a project still on"
            " the legacy HS256 secret"
        )
    return settings
