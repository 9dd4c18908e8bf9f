"""The Makefile as a newcomer reads it: `make help` names every target one would type, and
`make wait` (the README's Try it) returns once the server answers, or fails saying why."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from config import PROJECT_DIR
from tests.app_process import clean_env

MAKE = shutil.which("make")
INTERNAL_TARGETS = {"help", "venv", "dev-venv", "wrk"}  # help itself, and prerequisites


@pytest.mark.skipif(MAKE is None, reason="needs make")
def test_make_help_lists_every_target() -> None:
    assert MAKE is not None
    makefile = (PROJECT_DIR / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony is not None
    targets = set(phony.group(1).split()) - INTERNAL_TARGETS
    assert {"run", "test", "token", "wait", "clean"} <= targets
    shown = subprocess.run(  # noqa: S603
        [MAKE, "-s", "-C", str(PROJECT_DIR), "help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    listed = set(re.findall(r"^make (\S+)", shown, re.MULTILINE))
    assert listed == targets, listed ^ targets


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def wait_ready(port: int, timeout: str) -> subprocess.CompletedProcess[str]:
    """`make wait`'s command, with the settings a server on `port` would read."""
    return subprocess.run(  # noqa: S603
        [sys.executable, "tools/wait_ready.py", "--timeout", timeout],
        cwd=PROJECT_DIR,
        env=clean_env(PORT=str(port), PYTHONPATH="backend"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_wait_returns_once_readyz_answers(ready_server: int) -> None:
    done = wait_ready(ready_server, "30")
    assert done.returncode == 0, done.stderr
    assert f"ready: http://127.0.0.1:{ready_server}" in done.stderr


def test_make_wait_gives_up_saying_where_it_looked() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = wait_ready(port, "0.5")
    assert done.returncode == 1
    assert f"nothing ready on http://127.0.0.1:{port}" in done.stderr
    assert "make run" in done.stderr
