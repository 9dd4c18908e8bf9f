"""`make backfill`: embed the logged episodes that have no embedding yet (the API was running
without an embeddings API, or it failed at the time), with a progress bar.

Runs where the operator commands run (DATABASE_URL, else the embedded database). Which episodes
lack a vector is read with the operator's connection; each batch's vectors are then stored as
their user, through the same SQL function and impersonation as the API.
Exit status: 0 done (or nothing to do), 1 the embeddings API failed (what was stored stays), 2
not configured (no EMBEDDING_*, no pgvector, no database).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections import defaultdict

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config import Settings
from errors import ServiceError
from services.container import new_http_client
from services.recall.embeddings import MAX_BATCH, EmbeddingsClient, EmbeddingsFailed
from services.recall.service import episode_text
from services.storage.operator import NoDatabase, acting_user, open_operator_storage

MISSING_SQL = """
select l.user_id, l.id, l.item, l.seq
from public.memory_episodes as l
where not exists (
  select from public.memory_episode_vectors as v where v.user_id = l.user_id and v.id = l.id)
  and l.seq > $1
order by l.seq
limit $2
"""
MISSING_COUNT_SQL = """
select count(*) from public.memory_episodes as l
where not exists (
  select from public.memory_episode_vectors as v where v.user_id = l.user_id and v.id = l.id)
"""


class NotConfigured(Exception):
    pass


async def backfill(settings: Settings, console: Console, *, batch: int = MAX_BATCH) -> int:
    """Embed every logged episode without a vector; returns how many were stored."""
    if not settings.embeddings_configured:
        raise NotConfigured("set EMBEDDING_BASE_URL and EMBEDDING_MODEL (see README, Recall)")
    async with (
        open_operator_storage(settings, connections=2) as storage,
        new_http_client(settings) as http,
    ):
        has_vectors = await storage.pool.fetchval(
            "select to_regclass('public.memory_episode_vectors') is not null"
        )
        if not has_vectors:
            raise NotConfigured(
                "pgvector is not installed in this database: search stays full-text"
                " (Supabase: Database > Extensions > vector, then apply supabase_schema.sql)"
            )
        embedder = EmbeddingsClient(http, settings)
        total = await storage.pool.fetchval(MISSING_COUNT_SQL)
        stored = 0
        after = 0
        with Progress(
            TextColumn("embedding"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("episodes", total=total)
            while rows := await storage.pool.fetch(MISSING_SQL, after, batch):
                vectors = await embedder.embed([episode_text(row["item"]) for row in rows])
                by_user: dict[uuid.UUID, dict[str, list[float]]] = defaultdict(dict)
                for row, vector in zip(rows, vectors, strict=True):
                    by_user[row["user_id"]][row["id"]] = vector
                for user_id, embeddings in by_user.items():
                    stored += await storage.repository.save_embeddings(
                        acting_user(user_id), embeddings
                    )
                after = rows[-1]["seq"]  # an episode erased meanwhile is not asked for again
                progress.advance(bar, len(rows))
        return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make backfill", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=MAX_BATCH, help="episodes per API call")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        stored = asyncio.run(backfill(Settings(), console, batch=max(1, args.batch)))
    except (NotConfigured, NoDatabase) as exc:
        console.print(f"backfill: {exc}", markup=False, highlight=False)
        return 2
    except EmbeddingsFailed as exc:
        console.print(
            f"backfill: the embeddings API {exc}; what was stored stays, run it again later",
            markup=False,
            highlight=False,
        )
        return 1
    except ServiceError as exc:
        console.print(f"backfill: storing failed: {exc.detail}", markup=False, highlight=False)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        console.print(f"backfill: {exc}", markup=False, highlight=False)
        return 2
    console.print(f"backfill: {stored} episodes embedded", markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
