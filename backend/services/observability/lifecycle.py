"""What metrics need around the app's lifetime: the separate listener when METRICS_PORT is
set, and in multiprocess mode this worker's live gauges dropped when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from config import Settings
from services.observability.metrics import process_exited, start_listener


@asynccontextmanager
async def metrics_lifecycle(settings: Settings) -> AsyncIterator[None]:
    stop = None
    if settings.metrics_port is not None:
        stop = await asyncio.to_thread(start_listener, settings.metrics_host, settings.metrics_port)
    try:
        yield
    finally:
        if stop is not None:
            await asyncio.to_thread(stop)
        process_exited()
