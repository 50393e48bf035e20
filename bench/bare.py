"""Bare polling loops: the floor the daemon's CPU per poll is compared with.

    python bench/bare.py KIND BASE_URL --sessions N --seconds S [--concurrency 16]

KIND is `httpx-aiohttp` (httpx.AsyncClient on httpx_aiohttp.AiohttpTransport),
`httpx` (plain httpx.AsyncClient), `aiohttp` (aiohttp.ClientSession), or
`transport` (an httpx.Request prepared once per session and handed straight to
the AiohttpTransport, as `watcher.api.FactoryClient` polls). Each of
`--concurrency` workers loops GET `/api/v0/sessions/{id}` + `.json()` over the
session ids round robin. After a one-second warm-up it counts requests and
the process's CPU (user + system, all threads) in one-second windows for
`--seconds`, and prints one JSON line: `{"kind", "requests", "cpu_s",
"us_per_request", "us_median", "rate"}`, where `us_per_request` is the CPU per
request of the least disturbed window (other work on a shared machine only
ever adds to it) and `us_median` that of the median window.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

HEADERS = {"Authorization": "Bearer fk-bench", "Accept": "application/json"}
WINDOW = 1.0  # seconds per measured window


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _loop(
    get_json: Callable[[str], Awaitable[Any]], ids: list[str], concurrency: int, seconds: float
) -> list[tuple[int, float]]:
    """Requests and CPU seconds per `WINDOW`-second window, after one second of warm-up."""
    counter = itertools.cycle(ids)
    count = 0
    stopping = False

    async def worker() -> None:
        nonlocal count
        while not stopping:
            await get_json(f"/api/v0/sessions/{next(counter)}")
            count += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await asyncio.sleep(1.0)
    windows: list[tuple[int, float]] = []
    for _ in range(max(1, round(seconds / WINDOW))):
        count0, cpu0 = count, _cpu()
        await asyncio.sleep(WINDOW)
        windows.append((count - count0, _cpu() - cpu0))
    stopping = True
    await asyncio.gather(*workers)
    return windows


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

            windows = await _loop(get_aiohttp, ids, concurrency, seconds)
    elif kind == "transport":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        transport = AiohttpTransport(limits=limits)
        headers = httpx.Headers(HEADERS)
        timeout = httpx.Timeout(10).as_dict()
        requests: dict[str, httpx.Request] = {}

        async def get_transport(path: str) -> Any:
            request = requests.get(path)
            if request is None:
                request = requests[path] = httpx.Request(
                    "GET", base + path, headers=headers, extensions={"timeout": timeout}
                )
            response = await transport.handle_async_request(request)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            return json.loads(body)

        try:
            windows = await _loop(get_transport, ids, concurrency, seconds)
        finally:
            await transport.aclose()
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        transport = AiohttpTransport(limits=limits) if kind == "httpx-aiohttp" else None
        async with httpx.AsyncClient(
            base_url=base, headers=HEADERS, limits=limits, transport=transport
        ) as client:

            async def get_httpx(path: str) -> Any:
                response = await client.get(path)
                return response.json()

            windows = await _loop(get_httpx, ids, concurrency, seconds)
    per_request = sorted(cpu / n * 1e6 for n, cpu in windows if n)
    total = sum(n for n, _ in windows)
    return {
        "kind": kind,
        "requests": total,
        "cpu_s": sum(cpu for _, cpu in windows),
        "us_per_request": per_request[0] if per_request else None,  # the least disturbed
        "us_median": per_request[len(per_request) // 2] if per_request else None,
        "rate": total / (len(windows) * WINDOW),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["httpx-aiohttp", "httpx", "aiohttp", "transport"])
    parser.add_argument("base")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    ids = [f"s-{i:05d}" for i in range(args.sessions)]
    print(json.dumps(asyncio.run(run(args.kind, args.base, ids, args.concurrency, args.seconds))))


if __name__ == "__main__":
    main()
