"""The README's first minute: `make run &` and `make token` started together on a fresh clone.

Both targets used to build `.venv` at the same moment (and upgrade pip in it), and `make run`
died half-way through the other's install. Here both start at once on a venv that does not
exist yet (a temporary VENV, so the project's own `.venv` is left alone): the venv is created
and installed once, the token comes out, and the server it was minted for accepts it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from config import PROJECT_DIR
from tests.app_process import clean_env

MAKE = shutil.which("make")
TIMEOUT = 300.0  # a fresh venv installs the runtime requirements (from pip's cache: ~15 s)


def read_until(stream: subprocess.Popen[str], text: str, seen: list[str]) -> str:
    assert stream.stderr is not None
    for line in stream.stderr:
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"{text!r} never logged:\n{''.join(seen)}")


@pytest.mark.skipif(MAKE is None, reason="needs make")
def test_make_run_and_make_token_at_once_on_a_fresh_venv(tmp_path: Path) -> None:
    assert MAKE is not None
    venv = tmp_path / "venv"
    env = clean_env(DATA_DIR=str(tmp_path / "data"), PORT="0")
    make = [MAKE, "-C", str(PROJECT_DIR), f"VENV={venv}"]
    run = subprocess.Popen(  # noqa: S603 (make, with our arguments)
        [*make, "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C reaches make and the server
    )
    seen: list[str] = []
    try:
        token = subprocess.run(  # noqa: S603
            [*make, "-s", "token"],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert token.returncode == 0, token.stderr
        jwt = token.stdout.strip().splitlines()[-1]
        assert jwt.count(".") == 2

        ready = read_until(run, "memory service ready on http://", seen)
        url = ready.split(" on ", 1)[1].split()[0]
        request = urllib.request.Request(  # noqa: S310 (http on loopback)
            f"{url}/api/me", headers={"Authorization": f"Bearer {jwt}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 200
            assert json.loads(response.read())["role"] == "authenticated"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
        out, err = run.communicate(timeout=TIMEOUT)
        seen.append(err)
    log = "".join(seen) + out + token.stderr
    assert log.count(f"creating {venv}") == 1, log
    assert log.count("installing backend/requirements.txt") == 1, log
    assert "Traceback" not in log and "ImportError" not in log, log
    # make passes Ctrl-C on by dying of it once the server has shut down cleanly
    assert run.returncode in (0, -signal.SIGINT), log
    assert "Finished server process" in log and "embedded PostgreSQL handle released" in log
