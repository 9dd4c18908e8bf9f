"""Applying plans: each user in ONE `memory_import_document` call made as that user (claims
of that user, role authenticated: the API's own path), several users at a time over the pool.

Users must exist in `auth.users` (the memory row references them). On the embedded backend a
missing user is created, as the API does for a verified token; elsewhere it is reported.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import asyncpg

from errors import Forbidden, ServiceError
from models import ImportResult
from repositories.base import MemoryRepository
from services.migration.convert import SourceError
from services.migration.plan import Limits, UserPlan, plan_user
from services.migration.source import UserFolder
from services.storage.operator import acting_user

NOT_IN_AUTH = "not in auth.users: create the user in Supabase Auth first"
IMPORT_FUNCTION = "public.memory_import_document(jsonb, jsonb, boolean, integer, text)"


class Status(StrEnum):
    IMPORTED = "imported"
    WOULD_CHANGE = "would change"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(slots=True)
class Outcome:
    source: str
    user_id: uuid.UUID | None
    status: Status
    detail: str = ""
    result: ImportResult | None = None
    episodes: int = 0


@dataclass(slots=True)
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status is status)

    @property
    def episodes(self) -> int:
        return sum(o.episodes for o in self.outcomes if o.status is not Status.FAILED)

    @property
    def failed(self) -> bool:
        return self.count(Status.FAILED) > 0


async def check_schema(pool: asyncpg.Pool) -> None:
    if await pool.fetchval("select to_regprocedure($1)::text", IMPORT_FUNCTION) is None:
        raise RuntimeError(
            "this database lacks memory_import_document: apply backend/supabase_schema.sql"
        )


async def missing_users(
    pool: asyncpg.Pool, user_ids: Iterable[uuid.UUID], *, create: bool
) -> set[uuid.UUID]:
    """The ids not in auth.users (after creating them, when `create`: then none)."""
    ids = list(set(user_ids))
    if create and ids:
        await pool.execute(
            "insert into auth.users (id, aud, role) select u, 'authenticated', 'authenticated'"
            " from unnest($1::uuid[]) as u on conflict do nothing",
            ids,
        )
    present = await pool.fetch("select id from auth.users where id = any($1::uuid[])", ids)
    return set(ids) - {row["id"] for row in present}


@dataclass(slots=True)
class Importer:
    repository: MemoryRepository
    pool: asyncpg.Pool
    caps: dict[str, int]
    limits: Limits
    create_users: bool
    dry_run: bool = False
    concurrency: int = 4

    async def run(
        self,
        folders: list[tuple[UserFolder, uuid.UUID | None, str]],
        *,
        on_done: Callable[[Outcome], None] = lambda outcome: None,
    ) -> Report:
        """Import every (folder, user id, reason it has none) in order; one failure never
        stops the others. Plans are built here (CPU) while earlier users' calls run."""
        report = Report()
        started = time.perf_counter()
        await check_schema(self.pool)
        wanted = [user_id for _, user_id, _ in folders if user_id is not None]
        absent = await missing_users(
            self.pool, wanted, create=self.create_users and not self.dry_run
        )
        slots = asyncio.Semaphore(self.concurrency)
        tasks: list[asyncio.Task[Outcome]] = []

        def finished(task: asyncio.Task[Outcome]) -> None:
            slots.release()
            on_done(task.result())

        for folder, user_id, reason in folders:
            report.ignored.extend(folder.ignored)
            source = folder.name or "."
            failure = reason
            if user_id is not None:
                try:
                    plan = plan_user(folder, user_id, self.limits)
                except SourceError as exc:
                    failure = str(exc)
                else:
                    if user_id in absent and not self.create_users:
                        failure = NOT_IN_AUTH
            if user_id is None or failure:
                outcome = Outcome(source, user_id, Status.FAILED, failure)
                report.outcomes.append(outcome)
                on_done(outcome)
                continue
            # Only a dry run on the embedded backend gets here with a user still absent.
            note = "would be created in auth.users" if user_id in absent else ""
            await slots.acquire()
            task = asyncio.create_task(self._apply(plan, note))
            task.add_done_callback(finished)
            tasks.append(task)
            await asyncio.sleep(0)  # let the call go out before the next plan takes the CPU
        report.outcomes.extend(await asyncio.gather(*tasks))
        report.seconds = time.perf_counter() - started
        return report

    async def _apply(self, plan: UserPlan, note: str) -> Outcome:
        if not plan.document:
            return Outcome(plan.source, plan.user_id, Status.UNCHANGED, "nothing to import")
        try:
            result = await self.repository.import_document(
                acting_user(plan.user_id), plan.document, caps=self.caps, dry_run=self.dry_run
            )
        except Forbidden as exc:
            detail = f"refused as this user ({exc.detail}): a policy or trigger forbids the write"
            return Outcome(plan.source, plan.user_id, Status.FAILED, detail)
        except ServiceError as exc:
            return Outcome(plan.source, plan.user_id, Status.FAILED, exc.detail)
        if not result.changed:
            status = Status.UNCHANGED
        else:
            status = Status.WOULD_CHANGE if self.dry_run else Status.IMPORTED
        return Outcome(plan.source, plan.user_id, status, note, result, plan.episodes)
