"""The embeddings client against an OpenAI-compatible `/embeddings` stand-in (respx), in the
real request and response shapes: what it sends, and every way an answer is refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from services.recall.embeddings import EmbeddingsClient, EmbeddingsFailed
from tests.conftest import make_settings

URL = "http://embeddings.test/v1"


@pytest.fixture
async def client() -> AsyncIterator[EmbeddingsClient]:
    settings = make_settings(
        embedding_base_url=URL,
        embedding_model="text-embedding-3-small",
        embedding_api_key="sk-embed-secret",
        embedding_dimensions=3,
    )
    async with httpx.AsyncClient() as http:
        yield EmbeddingsClient(http, settings)


def answer(*vectors: list[Any]) -> dict[str, Any]:
    data = [{"object": "embedding", "index": n, "embedding": v} for n, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 4}}


async def test_sends_model_input_dimensions_and_key_and_keeps_the_order(
    client: EmbeddingsClient,
) -> None:
    body = answer([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    body["data"].reverse()  # servers may answer out of order: `index` decides
    with respx.mock() as router:
        route = router.post(f"{URL}/embeddings").respond(200, json=body)
        vectors = await client.embed(["first", ""])
    assert vectors == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    sent = route.calls.last.request
    assert json.loads(sent.content) == {
        "model": "text-embedding-3-small",
        "input": ["first", " "],  # an empty text is sent as a space (some servers refuse "")
        "dimensions": 3,
    }
    assert sent.headers["authorization"] == "Bearer sk-embed-secret"


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(500, json={"error": "overloaded"}), "http_error"),
        (httpx.Response(200, text="not json"), "bad_answer"),
        (httpx.Response(200, json={"data": "nope"}), "bad_answer"),
        (httpx.Response(200, json=answer([1.0, 0.0, 0.0])), "bad_answer"),  # 1 vector for 2
        (httpx.Response(200, json=answer([1.0, 0.0], [0.0, 1.0])), "bad_answer"),  # not 3 dims
        (httpx.Response(200, json=answer([1.0, 0.0, 0.0], [1.0, 0.0, "x"])), "bad_answer"),
    ],
)
async def test_unusable_answers_are_refused(
    client: EmbeddingsClient, response: httpx.Response, code: str
) -> None:
    with respx.mock() as router:
        router.post(f"{URL}/embeddings").mock(return_value=response)
        with pytest.raises(EmbeddingsFailed) as info:
            await client.embed(["a", "b"])
    assert info.value.code == code


async def test_a_timeout_and_an_unreachable_server_are_refused(client: EmbeddingsClient) -> None:
    with respx.mock() as router:
        route = router.post(f"{URL}/embeddings")
        route.side_effect = httpx.ReadTimeout("slow")
        with pytest.raises(EmbeddingsFailed) as timed_out:
            await client.embed(["a"])
        route.side_effect = httpx.ConnectError("refused")
        with pytest.raises(EmbeddingsFailed) as unreachable:
            await client.embed(["a"])
    assert (timed_out.value.code, unreachable.value.code) == ("timeout", "unreachable")
