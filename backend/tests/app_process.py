"""`python main.py` (what `make run` runs) as a subprocess, for tests of start-up and shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from config import BACKEND_DIR, Settings

START_TIMEOUT = 60.0


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any setting of the app's, plus `settings`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    return {**env, **settings}


class AppProcess:
    """`python main.py` with `settings`; its stderr is read line by line as the test asks."""

    def __init__(self, **settings: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "main.py"],
            cwd=BACKEND_DIR,
            env=clean_env(**settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    def read_until(self, text: str) -> str:
        """The first line (from here on) holding `text`; fails when the process ends first."""
        assert self.process.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not logged:\n{''.join(self.lines)}")

    def wait_ready(self) -> str:
        """The server's base URL, once it logged that it is ready."""
        line = self.read_until("memory service ready on http://")
        return line.split(" on ", 1)[1].split()[0]

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=START_TIMEOUT)


def postgres_running(pgdata: Path) -> bool:
    """True while a PostgreSQL server runs on `pgdata` (its postmaster.pid names a live pid)."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return False
    return psutil.pid_exists(pid)
