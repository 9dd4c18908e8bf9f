"""Dev tokens: `make token` (`python -m services.auth.dev_tokens`) prints a token with the claim
set Supabase Auth issues, signed with whatever secret the app itself would verify against (a set
`SUPABASE_JWT_SECRET`, else the embedded backend's generated dev secret).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import jwt
from pydantic import ValidationError

from config import Backend, Settings, StartupError, describe_settings_error
from services.auth.dev_secret import DevSecretError, dev_secret_path
from services.auth.keys import resolve_auth_settings

DEV_ISSUER = "http://127.0.0.1:54321/auth/v1"  # what a local Supabase (the CLI) issues
DEV_USER_ID = uuid.UUID("d0d0d0d0-0000-4000-8000-000000000001")
TOKEN_LIFETIME_SECONDS = 3600


def dev_claims(
    user_id: uuid.UUID, *, issuer: str, lifetime: int = TOKEN_LIFETIME_SECONDS
) -> dict[str, Any]:
    """The claims Supabase Auth puts in an access token of a user signed in with a password."""
    now = int(time.time())
    return {
        "iss": issuer,
        "sub": str(user_id),
        "aud": "authenticated",
        "exp": now + lifetime,
        "iat": now,
        "email": f"dev-{str(user_id)[:8]}@example.com",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }


def mint_dev_token(settings: Settings, user_id: uuid.UUID = DEV_USER_ID) -> str:
    """A one-hour HS256 token the app configured by `settings` accepts."""
    settings = resolve_auth_settings(settings)
    if settings.supabase_jwt_secret is None:
        raise DevSecretError(
            "no HS256 secret to sign with: set SUPABASE_JWT_SECRET, or use the embedded"
            " backend (unset MEMORY_BACKEND, SUPABASE_URL and DATABASE_URL); with JWKS keys"
            " only, get a token from Supabase Auth instead"
        )
    issuer = settings.supabase_jwt_issuer or (
        f"{settings.supabase_url}/auth/v1" if settings.supabase_url else DEV_ISSUER
    )
    return jwt.encode(
        dev_claims(user_id, issuer=issuer),
        settings.supabase_jwt_secret.get_secret_value(),
        algorithm="HS256",
        headers={"typ": "JWT"},
    )


def signing_key_note(settings: Settings) -> tuple[str, bool]:
    """Where the token's signing secret comes from, and whether it is a dev secret file that
    does not exist yet (minting creates it: a server already running on another DATA_DIR will
    refuse the token)."""
    secret = settings.supabase_jwt_secret
    if (secret is not None and secret.get_secret_value().strip()) or (
        settings.backend is not Backend.EMBEDDED
    ):
        return "signed with SUPABASE_JWT_SECRET", False
    path = dev_secret_path(settings)
    return f"signed with the dev secret in {path} (DATA_DIR={settings.data_dir})", not path.exists()


def main(argv: list[str] | None = None) -> int:
    """Print a dev token as the last line of stdout (notes go to stderr)."""
    parser = argparse.ArgumentParser(prog="make token", description=__doc__)
    parser.add_argument("--user-id", type=uuid.UUID, default=DEV_USER_ID, help="the token's sub")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        note, creating = signing_key_note(settings)
        token = mint_dev_token(settings, args.user_id)
    except ValidationError as exc:
        print(f"error: {describe_settings_error(exc)}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"user {args.user_id}, valid {TOKEN_LIFETIME_SECONDS // 60} minutes, {note}",
        file=sys.stderr,
    )
    if creating:
        print(
            "warning: that dev secret was created just now: a server already running with"
            " another DATA_DIR refuses this token (give make token the server's DATA_DIR)",
            file=sys.stderr,
        )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
