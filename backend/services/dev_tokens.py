"""Dev tokens for the embedded backend: its HS256 secret and `python -m services.dev_tokens`.

The embedded backend stands in for Supabase Auth, so it needs a signing secret nobody has to
configure: one is generated on first run and kept in `DATA_DIR/dev_jwt_secret` (mode 0600).
A set `SUPABASE_JWT_SECRET` always wins. `make token` prints a token with the claim set
Supabase Auth issues, signed with whatever secret the app itself would verify against.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from config import Settings

DEV_SECRET_FILENAME = "dev_jwt_secret"  # noqa: S105 (a file name)
MIN_SECRET_CHARS = 32
DEV_ISSUER = "http://127.0.0.1:54321/auth/v1"  # what a local Supabase (the CLI) issues
DEV_USER_ID = uuid.UUID("d0d0d0d0-0000-4000-8000-000000000001")
TOKEN_LIFETIME_SECONDS = 3600


class DevSecretError(RuntimeError):
    """The dev secret file exists but can not be used; the message says what to do."""


def dev_secret_path(settings: Settings) -> Path:
    return settings.resolved_data_dir / DEV_SECRET_FILENAME


def load_or_create_dev_secret(path: Path) -> str:
    """The secret in `path`, created (0600, atomically: workers starting together agree) when
    missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise DevSecretError(
            f"{path} holds no usable dev JWT secret (fewer than {MIN_SECRET_CHARS} characters):"
            " delete the file to have a new one generated, or set SUPABASE_JWT_SECRET"
        )
    return secret


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
    from services.auth_service import resolve_auth_settings

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


def main(argv: list[str] | None = None) -> int:
    """Print a dev token as the last line of stdout (notes go to stderr)."""
    parser = argparse.ArgumentParser(prog="make token", description=__doc__)
    parser.add_argument("--user-id", type=uuid.UUID, default=DEV_USER_ID, help="the token's sub")
    args = parser.parse_args(argv)
    try:
        token = mint_dev_token(Settings(), args.user_id)
    except (DevSecretError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.user_id}, valid {TOKEN_LIFETIME_SECONDS // 60} minutes:", file=sys.stderr)
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
