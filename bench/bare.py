"""Bare polling loops: the floor the daemon's CPU per poll is compared with.

    python bench/bare.py KIND BASE_URL --sessions N --seconds S [--concurrency 16]

KIND is `httpx-aiohttp` (httpx.AsyncClient on httpx_aiohttp.AiohttpTransport,
configured as `watcher.api.FactoryClient` configures it), `httpx` (plain
httpx.AsyncClient) or `aiohttp` (aiohttp.ClientSession). Each of
`--concurrency` workers loops GET `/api/v0/sessions/{id}` + `.json()` over the
session ids round robin. After a one-second warm-up it counts requests and
the process's CPU (user + system, all threads) for `--seconds`, and prints
one JSON line: `{"kind", "requests", "cpu_s", "us_per_request"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

HEADERS = {"Authorization": "Bearer fk-bench", "Accept": "application/json"}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _loop(
    get_json: Callable[[str], Awaitable[Any]], ids: list[str], concurrency: int, seconds: float
) -> tuple[int, float]:
    counter = itertools.cycle(ids)
    count = 0
    stop_at = time.monotonic() + 1.0 + seconds
    measuring = False
    start_cpu = 0.0

    async def worker() -> None:
        nonlocal count, measuring, start_cpu
        while True:
            now = time.monotonic()
            if now >= stop_at:
                return
            if not measuring and now >= stop_at - seconds:
                measuring = True
                count = 0
                start_cpu = _cpu()
            await get_json(f"/api/v0/sessions/{next(counter)}")
            count += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count, _cpu() - start_cpu


async def run(
    kind: str, base: str, ids: list[str], concurrency: int, seconds: float
) -> dict[str, Any]:
    """Run one bare loop and return its figures."""
    if kind == "aiohttp":
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(base, headers=HEADERS, connector=connector) as session:

            async def get_aiohttp(path: str) -> Any:
                async with session.get(path) as response:
                    return await response.json()

            count, cpu = await _loop(get_aiohttp, ids, concurrency, seconds)
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        transport = AiohttpTransport(limits=limits) if kind == "httpx-aiohttp" else None
        async with httpx.AsyncClient(
            base_url=base, headers=HEADERS, limits=limits, transport=transport
        ) as client:

            async def get_httpx(path: str) -> Any:
                response = await client.get(path)
                return response.json()

            count, cpu = await _loop(get_httpx, ids, concurrency, seconds)
    return {
        "kind": kind,
        "requests": count,
        "cpu_s": cpu,
        "us_per_request": cpu / count * 1e6 if count else None,
        "rate": count / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["httpx-aiohttp", "httpx", "aiohttp"])
    parser.add_argument("base")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    ids = [f"s-{i:05d}" for i in range(args.sessions)]
    print(json.dumps(asyncio.run(run(args.kind, args.base, ids, args.concurrency, args.seconds))))


if __name__ == "__main__":
    main()
