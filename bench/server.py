"""Start and stop the app as production runs it, for the bench and the soak run.

uvicorn in a subprocess (no reload, access log off, uvloop/httptools as `uvicorn[standard]`
picks them), on the embedded backend with a throwaway DATA_DIR and a known JWT secret. The
driver starts the embedded PostgreSQL itself first, so it survives app restarts (1 worker, then
2) and the driver can stop and start it under the running app (the soak run).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import jwt

from tests.tokens import supabase_claims

PROJECT_DIR = Path(__file__).resolve().parent.parent
BACKEND_DIR = PROJECT_DIR / "backend"
BENCH_JWT_SECRET = "bench-secret-with-at-least-thirty-two-characters-0123"  # noqa: S105
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 90.0
RESULTS_DIR = PROJECT_DIR / "bench" / "results"  # git-ignored: logs and raw results


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def bench_token(user_id: uuid.UUID, *, lifetime: int = 3 * 3600) -> str:
    """A Supabase-shaped HS256 access token the bench app accepts."""
    claims = supabase_claims(user_id, lifetime=lifetime)
    return jwt.encode(claims, BENCH_JWT_SECRET, algorithm="HS256", headers={"typ": "JWT"})


def app_environment(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment for the app: embedded backend, nothing from the caller's
    Supabase/LLM/database settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("SUPABASE_", "LLM_", "DATABASE_URL", "MEMORY_", "DB_", "EMBEDDING_", "RECALL_")
        )
    }
    env.update(
        {
            "MEMORY_BACKEND": "embedded",
            "DATA_DIR": str(data_dir),
            "SUPABASE_JWT_SECRET": BENCH_JWT_SECRET,
            "LOG_LEVEL": "warning",
            "PYTHONPATH": os.pathsep.join([str(BACKEND_DIR), str(PROJECT_DIR)]),
        }
    )
    env.update(extra or {})
    return env


class AppServer:
    """One uvicorn process (with `workers` worker processes) serving the bench app."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        app: str = "bench.benchapp:create_bench_app",
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self._env = app_environment(data_dir, env)
        self._app = app
        self._log_path = log_path or data_dir / f"uvicorn-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def worker_pids(self) -> list[int]:
        """The worker processes (the process itself when it serves without a supervisor)."""
        if self.workers == 1:
            return [self.pid]
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        # uvicorn's supervisor also has a multiprocessing resource tracker child
        return [p for p in pids if b"multiprocessing" not in _cmdline(p)]

    def connections_per_worker(self) -> list[int] | None:
        """Established client connections held by each worker process (None without `ss`).

        uvicorn's workers share one listening socket and the kernel hands each new connection
        to whichever worker accepts first: a load generator's 32 connections may all land on
        one of 2 workers. The bench checks this and measures again when they do."""
        if shutil.which("ss") is None:
            return None
        listing = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{self.port} )"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        counts = Counter(re.findall(r"pid=(\d+)", listing))
        return sorted(counts.values())

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            self._app,
            "--factory",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-access-log",
            # info only for uvicorn's start-up lines (no access log, the app logs warnings)
            "--log-level",
            "info",
        ]

    def start(self) -> None:
        log = self._log_path.open("ab")
        self._log_offset = log.tell()
        self._process = subprocess.Popen(
            self.command(), cwd=PROJECT_DIR, env=self._env, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the app exited at start-up; see {self._log_path}")
            # every worker must have finished its lifespan (each opens its own pool)
            if self._started_workers() >= self.workers and _ready(self.base_url):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the app was not ready within {STARTUP_TIMEOUT_SECONDS} s")

    def _started_workers(self) -> int:
        """uvicorn logs this line once per worker when its lifespan startup is done."""
        text = self._log_path.read_bytes()[self._log_offset :]
        return text.count(b"Application startup complete.")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> AppServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ready(base_url: str) -> bool:
    url = f"{base_url}/readyz"  # always http://127.0.0.1:<port>
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
        return bool(response.status == 200)
    return False


async def create_auth_users(dsn: str, user_ids: Iterable[uuid.UUID]) -> None:
    """Insert the users into the embedded `auth.users`, as Supabase Auth would on sign-up."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "insert into auth.users (id, aud, role, email) values ($1, 'authenticated',"
            " 'authenticated', $2) on conflict (id) do nothing",
            [(uid, f"{uid.hex[:8]}@bench.test") for uid in user_ids],
        )
    finally:
        await conn.close()


def episode(index: int) -> dict[str, Any]:
    """A conversation episode of a realistic size (~250 bytes stored)."""
    return {
        "role": "user" if index % 2 == 0 else "assistant",
        "text": f"episode {index}: we talked about dinosaurs, the moon and a lost red kite "
        "that got stuck in the old oak tree behind the school yesterday afternoon.",
        "mood": "curious",
    }


# Real words a child's conversation might use; the rest of the vocabulary is made-up words
# (syllables), so that random text has the spread of a real vocabulary.
_TOPICS = (
    "dinosaur moon kite school football sister brother grandma garden rocket puppy kitten"
    " pancake birthday teacher homework piano dragon castle ocean volcano rainbow bicycle"
    " library museum forest river mountain camping snowman treasure pirate robot planet"
    " spaceship pizza sandwich swimming dancing painting drawing butterfly elephant giraffe"
    " penguin turtle octopus shark whale tiger lion zebra monkey parrot holiday summer winter"
    " autumn spring thunder lightning shadow secret friend party costume lantern puzzle"
)
TOPIC_WORDS = tuple(_TOPICS.split())
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
VOCABULARY_SIZE = 30_000


def vocabulary(size: int = VOCABULARY_SIZE) -> list[str]:
    """`size` distinct words, most frequent first: the topic words, then made-up words of two
    and three syllables (fixed: every run writes and searches the same vocabulary)."""
    rng = random.Random(9)
    made_up = ["".join(p) for p in itertools.product(_SYLLABLES, repeat=2)]
    made_up += ["".join(p) for p in itertools.product(_SYLLABLES[:40], repeat=3)]
    rng.shuffle(made_up)
    words = list(dict.fromkeys([*TOPIC_WORDS, *made_up]))
    return words[:size]


class Chatter:
    """Random conversation text: words drawn from `vocabulary()` with Zipf-like frequencies
    (the k-th word 1/(k+50) as often), so ~1 KB of it compresses about as much as prose (zlib
    halves it) and search words range from common to rare as in real conversations: of 20,000
    such episodes the most frequent word is in about a third, the 1,000th in 2%, the last in
    a dozen."""

    def __init__(self, seed: int = 1) -> None:
        self.words = vocabulary()
        self._rng = random.Random(seed)
        self._cumulative = list(itertools.accumulate(1 / (k + 50) for k in range(len(self.words))))

    def text(self, size: int = 1000) -> str:
        """About `size` characters of words (cut at a word's end)."""
        words = self._rng.choices(self.words, cum_weights=self._cumulative, k=size // 4)
        text = " ".join(words)
        end = text.find(" ", size)
        return text if end < 0 else text[:end]

    def episode(self, index: int, size: int = 1000) -> dict[str, Any]:
        """An episode as chat stores one (role, content), ~`size` bytes of text."""
        return {"role": "user" if index % 2 == 0 else "assistant", "content": self.text(size)}

    def question(self) -> str:
        """A natural-language question about words present in the data: one of the 10,000 most
        frequent words (the topic words aside) and one drawn as the text draws them."""
        common = self.words[self._rng.randrange(len(TOPIC_WORDS), 10_000)]
        other = self._rng.choices(self.words, cum_weights=self._cumulative, k=1)[0]
        templates = (
            "Do you remember what I told you about the {a} and the {b}?",
            "What did we say about {a} last time?",
            "When did I talk about {a} with {b}?",
            "Can you tell me again the story of the {b} and the {a}?",
        )
        return self._rng.choice(templates).format(a=common, b=other)


_SEEDED_LISTS = ("episodic_memory", "rewards")


async def seed_memories(
    dsn: str,
    user_ids: Sequence[uuid.UUID],
    *,
    episodes: int,
    identity: bool = True,
    items: Callable[[int], dict[str, Any]] = episode,
    field: str = "episodic_memory",
) -> None:
    """Give each user a row with `episodes` stored items (made by `items`) in `field` (and an
    identity), in SQL as the superuser: setup, not a measured path, and not written to the
    conversation log. Items look as the API stores them."""
    if field not in _SEEDED_LISTS:
        raise ValueError(f"seed_memories fills {_SEEDED_LISTS}, not {field!r}")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            f"""
            insert into public.memories (user_id, identity, {field})
            select $1, $2::jsonb, coalesce(jsonb_agg(
              e || jsonb_build_object('id', gen_random_uuid(), 'created_at', now())
              order by o), '[]'::jsonb)
            from jsonb_array_elements($3::jsonb) with ordinality as t(e, o)
            on conflict (user_id) do update
              set identity = excluded.identity, {field} = excluded.{field}
            """,  # noqa: S608 - `field` is one of two fixed column names
            [
                (
                    uid,
                    json.dumps({"name": "Robo", "child": "Mia", "age": 8} if identity else {}),
                    json.dumps([items(i) for i in range(episodes)]),
                )
                for uid in user_ids
            ],
        )
    finally:
        await conn.close()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[Any]:
    """The embedded PostgreSQL in `data_dir` (the app joins it; the last handle stops it)."""
    from services.storage.embedded_postgres import EmbeddedPostgres

    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
