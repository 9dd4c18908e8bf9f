"""Storage metrics: every repository operation timed by operation and backend, and the pool's
connections in use and waiting sampled after each operation."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from repositories.base import StorageRepository
from services.observability.metrics import (
    observe_storage_operation,
    outcome_of,
    set_pool_usage,
)


class PooledRepository(Protocol):
    def pool_in_use(self) -> int: ...

    def pool_waiters(self) -> int: ...


class TimedRepository:
    """Wraps a repository: each coroutine method (including ones added to the protocol later)
    is timed under its own name as the `operation` label. Anything else passes through."""

    def __init__(self, inner: StorageRepository, backend: str) -> None:
        self._inner = inner
        self._backend = backend
        self._pool = cast("PooledRepository", inner) if hasattr(inner, "pool_waiters") else None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        timed = self._timed(name, attribute)
        setattr(self, name, timed)  # wrapped once per operation, not per call
        return timed

    def _timed(
        self, operation: str, method: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            outcome = "ok"
            try:
                return await method(*args, **kwargs)
            except BaseException as exc:
                outcome = outcome_of(exc)
                raise
            finally:
                observe_storage_operation(
                    operation, self._backend, time.perf_counter() - start, outcome
                )
                if self._pool is not None:
                    set_pool_usage(self._pool.pool_in_use(), self._pool.pool_waiters())

        return timed


def timed_repository(repository: StorageRepository, backend: str) -> StorageRepository:
    """`repository` with every operation timed (see `TimedRepository`)."""
    return cast("StorageRepository", TimedRepository(repository, backend))
