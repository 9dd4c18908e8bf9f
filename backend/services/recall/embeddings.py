"""An OpenAI-compatible `/embeddings` client (OpenAI, Ollama, vLLM, TEI) on the shared pool.

Embeddings only improve search: a failure here is reported as `EmbeddingsFailed` and the caller
carries on with full-text search.
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx

from config import Settings
from services.observability.metrics import observe_embeddings_call

MAX_BATCH = 64  # texts per request: well within what hosted and local servers accept
MAX_TEXT_CHARS = 8000  # longer texts are cut: an episode is searchable by its beginning


class EmbeddingsFailed(Exception):
    """The embeddings API failed, timed out or answered something unusable; `code` is the
    short outcome the metrics count."""

    def __init__(self, message: str, code: str = "bad_answer") -> None:
        super().__init__(message)
        self.code = code


class EmbeddingsClient:
    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        assert settings.embedding_base_url and settings.embedding_model
        self._http = http
        self._url = f"{settings.embedding_base_url}/embeddings"
        self._model = settings.embedding_model
        self._dimensions = settings.embedding_dimensions
        self._timeout = settings.embedding_timeout_seconds
        key = settings.embedding_api_key
        self._headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order (batched by MAX_BATCH)."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), MAX_BATCH):
            vectors += await self._embed_batch(texts[start : start + MAX_BATCH])
        return vectors

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {
            "model": self._model,
            "input": [text[:MAX_TEXT_CHARS] or " " for text in texts],
        }
        if self._dimensions is not None:
            body["dimensions"] = self._dimensions
        started = time.perf_counter()
        try:
            response = await self._http.post(
                self._url, json=body, headers=self._headers, timeout=self._timeout
            )
            if response.status_code != 200:
                raise EmbeddingsFailed(f"answered HTTP {response.status_code}", "http_error")
            payload = _json_of(response)
            vectors = _vectors_of(payload, len(texts), self._dimensions)
        except httpx.TimeoutException as exc:
            failed = EmbeddingsFailed("timed out", "timeout")
            observe_embeddings_call(time.perf_counter() - started, failed.code, None)
            raise failed from exc
        except httpx.HTTPError as exc:
            failed = EmbeddingsFailed(f"unreachable ({type(exc).__name__})", "unreachable")
            observe_embeddings_call(time.perf_counter() - started, failed.code, None)
            raise failed from exc
        except EmbeddingsFailed as exc:
            observe_embeddings_call(time.perf_counter() - started, exc.code, None)
            raise
        observe_embeddings_call(time.perf_counter() - started, "ok", _tokens_of(payload))
        return vectors


def _json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise EmbeddingsFailed("answered a body that is not JSON") from exc


def _tokens_of(payload: Any) -> int | None:
    """The tokens the API's `usage` reports, if it does."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else None


def _vectors_of(payload: Any, count: int, dimensions: int | None) -> list[list[float]]:
    """The `data[*].embedding` vectors in input order, checked: as many as texts, all of one
    length (EMBEDDING_DIMENSIONS when set), finite numbers."""
    try:
        data = payload["data"]
        ordered = sorted(data, key=lambda entry: entry["index"])
        vectors = [[float(x) for x in entry["embedding"]] for entry in ordered]
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddingsFailed("answered a body of another shape") from exc
    if len(vectors) != count or not vectors:
        raise EmbeddingsFailed(f"answered {len(vectors)} vectors for {count} texts")
    length = dimensions or len(vectors[0])
    if any(len(v) != length or not all(math.isfinite(x) for x in v) for v in vectors):
        raise EmbeddingsFailed("answered vectors of unequal length or non-finite numbers")
    return vectors
