"""`python main.py` (what `make run` runs) as a newcomer meets it: a start-up error is one line
naming the setting to fix and exit status 1 (no traceback); "memory service ready" is logged only
once the port answers; SIGHUP (a closed terminal) shuts down cleanly, embedded PostgreSQL too."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import jwt
import pytest
import respx

from config import BACKEND_DIR, StartupError
from services.container import open_services
from tests.app_process import START_TIMEOUT, AppProcess, clean_env, postgres_running
from tests.conftest import make_settings
from tests.tokens import TEST_JWT_SECRET


def start_error(**settings: str) -> str:
    """Run `python main.py` with `settings`; it must exit 1 printing one line, returned."""
    done = subprocess.run(
        [sys.executable, "main.py"],
        cwd=BACKEND_DIR,
        env=clean_env(**settings),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "memory service ready" not in done.stderr, "ready is never said of a failed start"
    errors = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("cannot start: "), errors[0]
    return errors[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TestStartupErrors:
    @pytest.mark.parametrize(
        ("setting", "value", "says"),
        [
            ("MEMORY_BACKEND", "supbase", "'supabase', 'postgres' or 'embedded'"),
            ("PORT", "abc", "valid integer"),
            ("SUPABASE_URL", "example.com", "http(s) URL"),
            ("PORT", "70000", "less than or equal to 65535"),
        ],
    )
    def test_a_setting_typo_names_the_setting(
        self, tmp_path: Path, setting: str, value: str, says: str
    ) -> None:
        line = start_error(**{setting: value, "DATA_DIR": str(tmp_path)})
        assert f"{setting}={value}" in line and says in line

    def test_a_secret_setting_is_not_repeated(self, tmp_path: Path) -> None:
        line = start_error(MEMORY_BACKEND="postgres", DATA_DIR=str(tmp_path))
        assert "DATABASE_URL" in line

    def test_a_service_role_key(self, tmp_path: Path) -> None:
        key = jwt.encode({"role": "service_role", "iss": "supabase"}, "k" * 40)
        line = start_error(
            SUPABASE_URL="https://abcdefghijklmnop.supabase.co",
            SUPABASE_KEY=key,
            DATA_DIR=str(tmp_path),
        )
        assert "SUPABASE_KEY" in line and "row level security" in line
        assert key not in line

    def test_an_unreachable_database(self, tmp_path: Path) -> None:
        url = f"postgresql://postgres:pw-not-shown@127.0.0.1:{free_port()}/nothing"
        line = start_error(
            DATABASE_URL=url, SUPABASE_JWT_SECRET=TEST_JWT_SECRET, DATA_DIR=str(tmp_path)
        )
        assert "DATABASE_URL" in line and "ConnectionRefusedError" in line
        assert "pw-not-shown" not in line

    def test_a_busy_port(self, tmp_path: Path) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            line = start_error(PORT=str(port), DATA_DIR=str(tmp_path))
        assert f"127.0.0.1:{port} is already in use" in line and "PORT" in line
        assert not (tmp_path / "postgres").exists(), "refused before starting anything"


class TestUnreachableSupabase:
    """One policy for every backend: storage that does not answer at start-up stops it."""

    URL = "https://abcdefghijklmnop.supabase.co"

    @pytest.mark.parametrize(
        "reply",
        [httpx.Response(503), httpx.ConnectError("connection refused")],
        ids=["503", "refused"],
    )
    async def test_start_up_fails_naming_the_setting(
        self, tmp_path: Path, reply: httpx.Response | Exception
    ) -> None:
        settings = make_settings(
            supabase_url=self.URL,
            supabase_key="sb_publishable_test_key_0123456789",
            supabase_jwt_secret=TEST_JWT_SECRET,
            data_dir=tmp_path,
            storage_timeout_seconds=1.0,
        )
        with respx.mock(base_url=f"{self.URL}/rest/v1") as router:
            route = router.get("/memories").mock(side_effect=[reply])
            with pytest.raises(StartupError, match="SUPABASE_URL"):
                async with open_services(settings):
                    pytest.fail("started with Supabase unreachable")
        assert route.call_count == 1


def test_ready_is_logged_once_the_port_answers_and_sighup_stops_everything(
    tmp_path: Path,
) -> None:
    app = AppProcess(PORT="0", DATA_DIR=str(tmp_path))
    try:
        url = app.wait_ready()
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:  # noqa: S310
            assert response.status == 200
        assert postgres_running(tmp_path / "postgres")
        app.process.send_signal(signal.SIGHUP)  # what a closed terminal sends
        app.read_until("embedded PostgreSQL handle released")
        assert app.stop() == 0
    finally:
        app.stop()
    assert not postgres_running(tmp_path / "postgres"), "the closed terminal stopped PostgreSQL"
