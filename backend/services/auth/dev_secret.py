"""The embedded backend's HS256 signing secret: generated on first run, kept in DATA_DIR.

The embedded backend stands in for Supabase Auth, so it needs a signing secret nobody has to
configure: one is generated on first run and kept in `DATA_DIR/dev_jwt_secret` (mode 0600).
A set `SUPABASE_JWT_SECRET` always wins (see `services.auth.keys`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from config import Settings, StartupError

DEV_SECRET_FILENAME = "dev_jwt_secret"  # noqa: S105 (a file name)
MIN_SECRET_CHARS = 32


class DevSecretError(StartupError):
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
