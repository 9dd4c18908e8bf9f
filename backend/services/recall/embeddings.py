"""An OpenAI-compatible `/embeddings` client (OpenAI, Ollama, vLLM, TEI) on the shared pool.

Embeddings only improve search: a failure here is reported as `EmbeddingsFailed` and the caller
carries on with full-text search.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from config import Settings

MAX_BATCH = 64  # texts per request: well within what hosted and local servers accept
MAX_TEXT_CHARS = 8000  # longer texts are cut: an episode is searchable by its beginning


class EmbeddingsFailed(Exception):
    """The embeddings API failed, timed out or answered something unusable."""


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
        try:
            response = await self._http.post(
                self._url, json=body, headers=self._headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise EmbeddingsFailed("timed out") from exc
        except httpx.HTTPError as exc:
            raise EmbeddingsFailed(f"unreachable ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise EmbeddingsFailed(f"answered HTTP {response.status_code}")
        vectors = _vectors_of(response, len(texts), self._dimensions)
        return vectors


def _vectors_of(response: httpx.Response, count: int, dimensions: int | None) -> list[list[float]]:
    """The `data[*].embedding` vectors in input order, checked: as many as texts, all of one
    length (EMBEDDING_DIMENSIONS when set), finite numbers."""
    try:
        data = response.json()["data"]
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
