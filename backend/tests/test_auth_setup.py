"""Auth set-up through the app: start-up validation, the embedded dev secret, `make token`,
and which backends record users in `auth.users`."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from fastapi import FastAPI

from config import BACKEND_DIR
from main import create_app
from services.auth import dev_tokens
from services.auth.dev_secret import DevSecretError
from services.auth.keys import AuthConfigError
from services.storage.embedded_postgres import EmbeddedPostgres
from tests.conftest import asgi_client, make_settings
from tests.tokens import TEST_JWT_SECRET, bearer, hs256_token, supabase_claims

SUPABASE_CLAIMS = {
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "email",
    "phone",
    "app_metadata",
    "user_metadata",
    "role",
    "aal",
    "amr",
    "session_id",
    "is_anonymous",
}


async def _get_me(app: FastAPI, token: str) -> httpx.Response:
    """One request through the app with its lifespan run."""
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        return await client.get("/api/me", headers=bearer(token))


async def _auth_user(dsn: str, user_id: uuid.UUID) -> dict[str, Any] | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "select email, is_anonymous from auth.users where id = $1", user_id
        )
    finally:
        await conn.close()
    return dict(row) if row is not None else None


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """An environment that beats any developer `.env` (real variables win over it)."""
    env = {
        "MEMORY_BACKEND": "embedded",
        "DATA_DIR": str(tmp_path),
        "SUPABASE_URL": "",
        "SUPABASE_JWT_SECRET": "",
        "SUPABASE_JWKS_URL": "",
        "SUPABASE_JWT_ISSUER": "",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


class TestStartUpValidation:
    def test_no_secret_and_no_jwks_refuses_to_start(self) -> None:
        settings = make_settings(
            memory_backend="postgres", database_url="postgresql://u@127.0.0.1:1/none"
        )
        with pytest.raises(AuthConfigError) as refused:
            create_app(settings)
        message = str(refused.value)
        assert "SUPABASE_JWT_SECRET" in message
        assert "SUPABASE_JWKS_URL" in message and "SUPABASE_URL" in message

    def test_empty_secret_counts_as_unset(self) -> None:
        settings = make_settings(
            memory_backend="postgres",
            database_url="postgresql://u@127.0.0.1:1/none",
            supabase_jwt_secret="",
        )
        with pytest.raises(AuthConfigError):
            create_app(settings)

    @pytest.mark.parametrize(
        ("overrides", "jwks_url"),
        [
            ({"supabase_jwt_secret": TEST_JWT_SECRET}, None),
            (
                {"supabase_jwks_url": "https://keys.example/jwks.json"},
                "https://keys.example/jwks.json",
            ),
        ],
    )
    def test_a_secret_or_a_jwks_is_enough(
        self, overrides: dict[str, Any], jwks_url: str | None
    ) -> None:
        settings = make_settings(
            memory_backend="postgres", database_url="postgresql://u@127.0.0.1:1/none", **overrides
        )
        assert create_app(settings).state.settings.jwks_url == jwks_url

    def test_supabase_url_implies_its_jwks(self) -> None:
        settings = make_settings(supabase_url="https://ref.supabase.co/", supabase_key="sb_pub")
        app = create_app(settings)
        expected = "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
        assert app.state.settings.jwks_url == expected


class TestEmbeddedDevSecret:
    def test_generated_on_first_run_and_kept(self, tmp_path: Path) -> None:
        first = create_app(make_settings(data_dir=tmp_path)).state.settings.supabase_jwt_secret
        secret_file = tmp_path / "dev_jwt_secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert first.get_secret_value() == secret_file.read_text().strip()
        assert len(first.get_secret_value()) >= 32
        again = create_app(make_settings(data_dir=tmp_path)).state.settings.supabase_jwt_secret
        assert again.get_secret_value() == first.get_secret_value()

    def test_set_secret_wins(self, tmp_path: Path) -> None:
        settings = make_settings(data_dir=tmp_path, supabase_jwt_secret=TEST_JWT_SECRET)
        secret = create_app(settings).state.settings.supabase_jwt_secret
        assert secret.get_secret_value() == TEST_JWT_SECRET
        assert not (tmp_path / "dev_jwt_secret").exists()

    def test_unusable_secret_file_is_a_start_up_error(self, tmp_path: Path) -> None:
        (tmp_path / "dev_jwt_secret").write_text("short\n")
        with pytest.raises(DevSecretError, match="delete the file"):
            create_app(make_settings(data_dir=tmp_path))


class TestMakeToken:
    async def test_cli_token_is_accepted_by_the_embedded_app(
        self, embedded_server: EmbeddedPostgres, cli_env: dict[str, str]
    ) -> None:
        """`make token USER_ID=…`: a fresh process prints the token last; the app (same
        DATA_DIR, so the same dev secret) accepts it and records the user."""
        data_dir = embedded_server.pgdata.parent
        user_id = uuid.uuid4()
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "services.auth.dev_tokens", "--user-id", str(user_id)),
            cwd=BACKEND_DIR,
            env={**os.environ, **cli_env, "DATA_DIR": str(data_dir)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        token = stdout.decode().strip().splitlines()[-1]
        response = await _get_me(create_app(make_settings(data_dir=data_dir)), token)
        assert response.status_code == 200, response.text
        claims = response.json()["claims"]
        assert set(claims) == SUPABASE_CLAIMS
        assert claims["sub"] == str(user_id) and response.json()["id"] == str(user_id)
        assert claims["exp"] - claims["iat"] == 3600
        assert claims["role"] == "authenticated" and claims["aud"] == "authenticated"
        assert await _auth_user(embedded_server.dsn, user_id) is not None

    def test_default_user_and_configured_secret(
        self, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        monkeypatch.setenv("SUPABASE_JWT_SECRET", TEST_JWT_SECRET)
        monkeypatch.setenv("SUPABASE_JWT_ISSUER", "https://ref.supabase.co/auth/v1")
        assert dev_tokens.main([]) == 0
        token = capsys.readouterr().out.strip().splitlines()[-1]
        claims = jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"], audience="authenticated")
        assert claims["sub"] == str(dev_tokens.DEV_USER_ID)
        assert claims["iss"] == "https://ref.supabase.co/auth/v1"
        assert not (Path(cli_env["DATA_DIR"]) / "dev_jwt_secret").exists()

    def test_names_the_secret_file_and_warns_when_it_creates_it(
        self, cli_env: dict[str, str], capsys: Any
    ) -> None:
        """The README's trap: `make token` without the server's DATA_DIR quietly made a new
        secret the server did not know. It now says which file it used, and warns when it has
        just created that file."""
        secret_file = Path(cli_env["DATA_DIR"]) / "dev_jwt_secret"
        assert dev_tokens.main([]) == 0
        first = capsys.readouterr()
        assert f"dev secret in {secret_file}" in first.err
        assert "warning: that dev secret was created just now" in first.err
        assert "DATA_DIR" in first.err
        assert dev_tokens.main([]) == 0
        again = capsys.readouterr()
        assert f"dev secret in {secret_file}" in again.err
        assert "warning" not in again.err
        secret = secret_file.read_text().strip()
        assert secret not in first.err + again.err

    def test_a_settings_typo_is_one_line(
        self, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        monkeypatch.setenv("MEMORY_BACKEND", "embeded")
        assert dev_tokens.main([]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("error: MEMORY_BACKEND=embeded: Input should be")
        assert captured.err.count("\n") == 1

    def test_nothing_to_sign_with(
        self, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        monkeypatch.setenv("MEMORY_BACKEND", "postgres")
        monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/none")
        monkeypatch.setenv("SUPABASE_JWKS_URL", "https://keys.example/jwks.json")
        assert dev_tokens.main([]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "SUPABASE_JWT_SECRET" in captured.err


class TestAuthUsers:
    async def test_embedded_backend_records_users_once(
        self, embedded_server: EmbeddedPostgres
    ) -> None:
        app = create_app(
            make_settings(
                data_dir=embedded_server.pgdata.parent, supabase_jwt_secret=TEST_JWT_SECRET
            )
        )
        user_id = uuid.uuid4()
        token = hs256_token(supabase_claims(user_id, is_anonymous=True, email=""))
        async with app.router.lifespan_context(app), asgi_client(app) as client:
            assert (await client.get("/api/me", headers=bearer(token))).status_code == 200
            row = await _auth_user(embedded_server.dsn, user_id)
            assert row == {"email": None, "is_anonymous": True}
            conn = await asyncpg.connect(embedded_server.dsn)
            try:
                await conn.execute("delete from auth.users where id = $1", user_id)
            finally:
                await conn.close()
            assert (await client.get("/api/me", headers=bearer(token))).status_code == 200
            assert await _auth_user(embedded_server.dsn, user_id) is None, (
                "a user already seen costs no second query in this process"
            )

    async def test_postgres_backend_never_writes_auth_users(self, database_dsn: str) -> None:
        app = create_app(
            make_settings(
                memory_backend="postgres",
                database_url=database_dsn,
                supabase_jwt_secret=TEST_JWT_SECRET,
            )
        )
        user_id = uuid.uuid4()
        response = await _get_me(app, hs256_token(supabase_claims(user_id)))
        assert response.status_code == 200
        assert await _auth_user(database_dsn, user_id) is None
