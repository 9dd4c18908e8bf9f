"""LLM call metrics: one `LLMCall` per chat-completions request records its latency, outcome
and the tokens the API reported (OpenAI's `usage`; streams carry it only when the server
sends a usage chunk)."""

from __future__ import annotations

import time
from typing import Any

from services.observability.metrics import (
    LLM_CALLS,
    LLM_DURATION,
    LLM_TOKENS,
    outcome_of,
)

_TOKEN_KINDS = {"prompt_tokens": "prompt", "completion_tokens": "completion"}


class LLMCall:
    """Started when the request is sent; `finish` (or `fail`) records it once, later calls
    are ignored (a stream may end by its last chunk and then be closed)."""

    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._start = time.perf_counter()
        self._recorded = False
        self.usage: Any = None

    def finish(self, outcome: str = "ok") -> None:
        if self._recorded:
            return
        self._recorded = True
        LLM_CALLS.labels(self._mode, outcome).inc()
        LLM_DURATION.labels(self._mode, outcome).observe(time.perf_counter() - self._start)
        if isinstance(self.usage, dict):
            for key, kind in _TOKEN_KINDS.items():
                tokens = self.usage.get(key)
                if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
                    LLM_TOKENS.labels(self._mode, kind).inc(tokens)

    def fail(self, exc: BaseException) -> None:
        """Record the call as failed with `exc`'s outcome (timeout, upstream_error, ...)."""
        self.finish(llm_outcome(exc))


def llm_outcome(exc: BaseException) -> str:
    outcome = outcome_of(exc)
    return {"502": "upstream_error", "504": "timeout"}.get(outcome, outcome)
