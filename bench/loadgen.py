"""Load generators on loopback: `wrk` (what `make bench` uses) and a lean asyncio one (kept to
show why: run `python -m bench.run --compare-generators`).

wrk is C with one epoll loop per thread; at the few thousand requests per second this app
serves on 2 cores it needs a few percent of one core, so the server keeps nearly both cores. A
Python generator doing the same work needs a large share of a core itself and compresses every
ratio towards 1 (the server is starved most when it is fastest, i.e. on the no-op endpoint).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.server import LOOPBACK

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "requests.lua"
WRK_THREADS = 1  # one epoll thread keeps up with this app and leaves the server both cores


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors, timeouts and statuses >= 400

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    return path


def run_wrk(
    base_url: str,
    method: str,
    path: str,
    tokens: list[str],
    *,
    seconds: float,
    connections: int = 32,
    body: bytes | None = None,
    max_requests: int = 0,
    paths: list[str] | None = None,
) -> LoadResult:
    """One wrk run: `connections` keep-alive connections, requests dealt round robin over the
    users' tokens, for `seconds` (or until `max_requests` responses, whichever comes first).
    With `paths`, each user's requests cycle through them instead of `path`."""
    if not base_url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError("the bench only loads loopback addresses")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        tokens_file = Path(tmp) / "tokens"
        tokens_file.write_text("\n".join(tokens) + "\n")
        env = {
            **os.environ,
            "BENCH_METHOD": method,
            "BENCH_PATH": path,
            "BENCH_TOKENS": str(tokens_file),
            "BENCH_MAX": str(max_requests),
            "BENCH_THREADS": str(WRK_THREADS),
        }
        if paths:
            paths_file = Path(tmp) / "paths"
            paths_file.write_text("\n".join(paths) + "\n")
            env["BENCH_PATHS"] = str(paths_file)
        if body is not None:
            body_file = Path(tmp) / "body"
            body_file.write_bytes(body)
            env["BENCH_BODY"] = str(body_file)
        command = [
            wrk_path(),
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            base_url,
        ]
        completed = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line.removeprefix("BENCH_RESULT "))
            errors = sum(v for k, v in data.items() if k.startswith("errors_"))
            return LoadResult(
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
                errors=errors,
            )
    raise RuntimeError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")


async def _python_connection(
    port: int,
    requests: list[bytes],
    offset: int,
    deadline: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    """One keep-alive connection sending requests back to back until the deadline."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    index = offset
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(requests[index % len(requests)])
            index += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                errors.append(status)
    finally:
        writer.close()


async def _python_load(
    port: int, requests: list[bytes], seconds: float, connections: int
) -> tuple[list[float], list[int], float]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _python_connection(port, requests, i, deadline, latencies, errors)
            for i in range(connections)
        )
    )
    return latencies, errors, time.perf_counter() - started


def run_python(
    base_url: str,
    method: str,
    path: str,
    tokens: list[str],
    *,
    seconds: float,
    connections: int = 32,
) -> LoadResult:
    """The same load as `run_wrk` (GET only) from a lean asyncio generator: raw sockets,
    pre-built requests, keep-alive, no HTTP library. uvloop when it is installed."""
    if not base_url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError("the bench only loads loopback addresses")
    port = int(base_url.rsplit(":", 1)[1])
    requests = [
        (
            f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        for token in tokens
    ]
    try:
        import uvloop

        latencies, errors, elapsed = uvloop.run(_python_load(port, requests, seconds, connections))
    except ImportError:
        latencies, errors, elapsed = asyncio.run(_python_load(port, requests, seconds, connections))
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000

    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(50),
        p90_ms=percentile(90),
        p99_ms=percentile(99),
        max_ms=latencies[-1] * 1000 if latencies else 0.0,
        errors=len(errors),
    )
