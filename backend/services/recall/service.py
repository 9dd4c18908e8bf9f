"""Search of the conversation log, and the embeddings that go with it.

Full-text search needs nothing configured. With an embeddings API, the query (or a chat turn's
message) is embedded once and search is hybrid; if that call fails, search falls back to full
text for this request (logged), and storing goes on without the vector (`make backfill` adds
it later).
"""

from __future__ import annotations

import logging
from typing import Any

from config import Settings
from models import JsonObject, Recall, SearchResult, User
from repositories.base import MemoryRepository
from services.recall.embeddings import EmbeddingsClient, EmbeddingsFailed

logger = logging.getLogger(__name__)

_NOT_TEXT = ("id", "created_at", "role")  # as the log's search column leaves them out


def episode_text(item: JsonObject) -> str:
    """The words of an episode as the log indexes them: its string values (nested ones too),
    id, created_at and role aside."""
    parts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            for nested in value.values():
                collect(nested)
        elif isinstance(value, list):
            for nested in value:
                collect(nested)

    collect({k: v for k, v in item.items() if k not in _NOT_TEXT})
    return "\n".join(parts)


class RecallService:
    def __init__(
        self, repository: MemoryRepository, embedder: EmbeddingsClient | None, settings: Settings
    ) -> None:
        self._repository = repository
        self._embedder = embedder
        self._recall_k = settings.recall_k

    @property
    def hybrid(self) -> bool:
        return self._embedder is not None

    async def embed_query(self, text: str) -> list[float] | None:
        """`text`'s embedding, or None without an embeddings API or when it failed (logged):
        the caller searches by full text alone."""
        if self._embedder is None:
            return None
        try:
            return (await self._embedder.embed([text]))[0]
        except EmbeddingsFailed as exc:
            logger.warning("embeddings API %s: searching by full text only", exc)
            return None

    async def search(self, user: User, query: str, *, limit: int) -> SearchResult:
        embedding = await self.embed_query(query)
        return await self._repository.search(user, query, limit=limit, embedding=embedding)

    async def recall_for(self, message: str) -> Recall | None:
        """What a chat turn searches with (its message, embedded once); None with RECALL_K=0."""
        if self._recall_k == 0:
            return None
        return Recall(message, self._recall_k, await self.embed_query(message))

    async def embed_stored(self, user: User, episodes: list[JsonObject]) -> None:
        """Embed stored episodes and save their vectors (after the write that logged them).
        A failure is logged: those episodes stay searchable by full text, and `make backfill`
        embeds them later."""
        if self._embedder is None or not episodes:
            return
        try:
            vectors = await self._embedder.embed([episode_text(e) for e in episodes])
        except EmbeddingsFailed as exc:
            logger.warning("embeddings API %s: %d episodes left for backfill", exc, len(episodes))
            return
        await self._repository.save_embeddings(
            user, {str(e["id"]): v for e, v in zip(episodes, vectors, strict=True)}
        )
