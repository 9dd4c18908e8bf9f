"""A deterministic stand-in for an OpenAI-compatible `/embeddings` API (respx), in OpenAI's real
request and response shapes.

Its vectors are a hashed bag of words, with a few synonym groups folded into one dimension, so
it "understands" some paraphrases full-text search can not match (puppy ~ dog). That is what a
real embedder adds in hybrid search, and what the retrieval-quality test measures.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import httpx
import respx

EMBED_BASE_URL = "http://embeddings.test/v1"
EMBED_MODEL = "stand-in-embedder"
DIMENSIONS = 64

SYNONYMS = [
    {"dog", "dogs", "puppy", "puppies", "pup"},
    {"cat", "cats", "kitten", "kitty"},
    {"grandma", "grandmother", "granny", "nana"},
    {"birthday", "born"},
    {"scared", "afraid", "frightened", "fear"},
    {"favourite", "favorite", "love", "loves", "like", "likes"},
    {"doctor", "hospital", "sick", "ill"},
    {"school", "class", "teacher"},
    {"food", "eat", "eats", "meal", "dinner"},
    {"sport", "football", "soccer", "swimming"},
]
_CANONICAL = {word: min(group) for group in SYNONYMS for word in group}
_WORD = re.compile(r"[a-z]+")
_STOP = {
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "my",
    "i",
    "you",
    "what",
    "who",
    "of",
    "to",
    "and",
    "do",
    "did",
    "does",
    "your",
    "me",
    "in",
    "on",
    "at",
    "it",
    "we",
    "with",
    "has",
}


def embed_text(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        word = _CANONICAL.get(word, word)
        slot = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % DIMENSIONS
        vector[slot] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class EmbedderStandIn:
    """Answers POST /embeddings; records each request's inputs. `failing` answers 500."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.inputs: list[list[str]] = []
        self.failing = False
        router.post(f"{EMBED_BASE_URL}/embeddings").mock(side_effect=self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        texts = body["input"]
        self.inputs.append(texts)
        if self.failing:
            return httpx.Response(500, json={"error": {"message": "overloaded"}})
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": n, "embedding": embed_text(text)}
            for n, text in enumerate(texts)
        ]
        tokens = sum(len(text.split()) for text in texts)
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )
