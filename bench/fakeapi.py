"""A fast fake Factory API and webhook sink for `make bench` (aiohttp, one process, loopback).

`watcher.testing.sim` is the faithful simulator for tests; it runs on
`http.server` threads and spends about 0.4 ms of CPU per request, which is
slower than the client under test. This server answers from pre-rendered
bytes (the simulator's own `session_body`), so one core serves several
thousand requests a second, and it also receives the daemon's webhooks and
times each one against the moment its session changed.

    python bench/fakeapi.py --sessions 2000 [--latency 0.1] [--port 0]

prints `PORT <n>` once listening. Control routes (JSON):

- `POST /_ctl/add {"count": n, "prefix": "s-", "status": "idle"}`: more sessions
- `POST /_ctl/complete {"ids": [...]} | {"count": n}`: a run completes now
  (status idle, `completedAt`, `updatedAt`, two more messages)
- `POST /_ctl/status {"ids": [...], "status": "running"}`
- `POST /_ctl/churn {"per_minute": 100}`: complete random sessions at that rate,
  each once at most
- `POST /_ctl/latency {"seconds": 0.1}`: delay added to every API answer
- `GET /_ctl/stats`: request counts, webhook receipts and their latencies
- `POST /_ctl/reset`: zero the counters and the receipts
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from typing import Any

from aiohttp import web

from watcher.testing.sim import SimSession, decode_cursor, encode_cursor, session_body

API = "/api/v0/sessions"


class World:
    """Sessions, their pre-rendered bodies, and what the webhook sink has received."""

    def __init__(self, seed: int) -> None:
        self.sessions: dict[str, SimSession] = {}
        self.bodies: dict[str, bytes] = {}
        self.order: list[str] = []
        self.latency = 0.0
        self.rng = random.Random(seed)
        self.changed_at: dict[str, float] = {}  # wall time of the last change, per session
        self.churn_task: asyncio.Task[None] | None = None
        self.reset()

    def reset(self) -> None:
        self.gets = 0
        self.gets_by_prefix: dict[str, int] = {}
        self.lists = 0
        self.hooks = 0
        self.hook_latencies: list[float] = []
        self.hook_ids: set[str] = set()
        self.duplicates = 0
        self.first_hook_at: float | None = None
        self.last_hook_at: float | None = None
        self.changes = 0

    def _put(self, session: SimSession) -> None:
        self.sessions[session.session_id] = session
        self.bodies[session.session_id] = json.dumps(session_body(session)).encode()

    def add(self, count: int, prefix: str, status: str) -> list[str]:
        now_ms = int(time.time() * 1000)
        ids = []
        start = len(self.order)
        for i in range(count):
            sid = f"{prefix}{start + i:05d}"
            self._put(
                SimSession(
                    session_id=sid,
                    status=status,
                    message_count=3,
                    created_at_ms=now_ms - 3_600_000,
                    updated_at_ms=now_ms - 60_000,
                    title=f"bench session {start + i}",
                    model="claude-sonnet-4",
                )
            )
            self.order.append(sid)
            ids.append(sid)
        return ids

    def complete(self, sid: str) -> None:
        now = time.time()
        now_ms = int(now * 1000)
        old = self.sessions[sid]
        self._put(
            SimSession(
                session_id=sid,
                status="idle",
                message_count=old.message_count + 2,
                created_at_ms=old.created_at_ms,
                updated_at_ms=now_ms,
                title=old.title,
                completed_at_ms=now_ms,
                model=old.model,
            )
        )
        self.changed_at[sid] = now
        self.changes += 1

    def set_status(self, sid: str, status: str) -> None:
        old = self.sessions[sid]
        now_ms = int(time.time() * 1000)
        self._put(
            SimSession(
                session_id=sid,
                status=status,
                message_count=old.message_count,
                created_at_ms=old.created_at_ms,
                updated_at_ms=now_ms,
                title=old.title,
                completed_at_ms=old.completed_at_ms,
                model=old.model,
            )
        )

    async def churn(self, per_minute: float) -> None:
        """Complete random sessions, `per_minute` of them a minute, evenly spaced.

        Each session changes once at most (while any is left unchanged): two
        completions of one session between two reads are one change to a poller,
        and would leave the bench waiting for a notification no watcher can send.
        """
        gap = 60.0 / per_minute
        while True:
            await asyncio.sleep(gap)
            sid = self.rng.choice(self.order)
            for _ in range(100):
                if sid not in self.changed_at:
                    break
                sid = self.rng.choice(self.order)
            self.complete(sid)


async def _wait(world: World) -> None:
    if world.latency > 0:
        await asyncio.sleep(world.latency)


def build_app(world: World) -> web.Application:
    """The aiohttp application: API, sink and control routes."""

    async def get_session(request: web.Request) -> web.Response:
        world.gets += 1
        sid = request.match_info["sid"]
        prefix = sid.split("-", 1)[0]
        world.gets_by_prefix[prefix] = world.gets_by_prefix.get(prefix, 0) + 1
        await _wait(world)
        body = world.bodies.get(sid)
        if body is None:
            return web.json_response(
                {"detail": "Session not found", "status": 404, "title": "Not Found"}, status=404
            )
        return web.Response(body=body, content_type="application/json")

    async def list_sessions(request: web.Request) -> web.Response:
        world.lists += 1
        await _wait(world)
        limit = min(max(int(request.query.get("limit", "100")), 1), 100)
        cursor = request.query.get("cursor")
        start = decode_cursor(cursor) + 1 if cursor else 0
        ids = world.order[start : start + limit]
        more = start + limit < len(world.order)
        payload = {
            "sessions": [session_body(world.sessions[sid]) for sid in ids],
            "pagination": {
                "hasMore": more,
                "nextCursor": encode_cursor(start + limit - 1) if more else None,
            },
        }
        return web.json_response(payload)

    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        now = time.time()
        world.hooks += 1
        body = json.loads(raw)
        if body["id"] in world.hook_ids:
            world.duplicates += 1
        world.hook_ids.add(body["id"])
        sid = (body.get("session") or {}).get("id")
        if sid in world.changed_at:
            world.hook_latencies.append(now - world.changed_at[sid])
        world.first_hook_at = world.first_hook_at or now
        world.last_hook_at = now
        return web.Response(status=204)

    async def ctl(request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body: dict[str, Any] = await request.json() if request.can_read_body else {}
        result: dict[str, Any] = {}
        if action == "add":
            ids = world.add(
                int(body["count"]), body.get("prefix", "s-"), body.get("status", "idle")
            )
            result["ids"] = ids
        elif action == "complete":
            ids = body.get("ids") or world.rng.sample(world.order, int(body["count"]))
            for sid in ids:
                world.complete(sid)
            result["ids"] = ids
            result["at"] = time.time()
        elif action == "status":
            for sid in body["ids"]:
                world.set_status(sid, body["status"])
        elif action == "churn":
            if world.churn_task is not None:
                world.churn_task.cancel()
            per_minute = float(body.get("per_minute", 0))
            world.churn_task = (
                asyncio.get_running_loop().create_task(world.churn(per_minute))
                if per_minute > 0
                else None
            )
        elif action == "latency":
            world.latency = float(body["seconds"])
        elif action == "reset":
            world.reset()
        elif action == "stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            result = {
                "gets": world.gets,
                "gets_by_prefix": world.gets_by_prefix,
                "lists": world.lists,
                "hooks": world.hooks,
                "duplicates": world.duplicates,
                "changes": world.changes,
                "hook_latencies": world.hook_latencies,
                "first_hook_at": world.first_hook_at,
                "last_hook_at": world.last_hook_at,
                "cpu": usage.ru_utime + usage.ru_stime,
                "sessions": len(world.order),
            }
        else:
            raise web.HTTPNotFound
        return web.json_response(result)

    app = web.Application()
    app.router.add_get(API, list_sessions)
    app.router.add_get(API + "/{sid}", get_session)
    app.router.add_post("/hook", hook)
    app.router.add_route("*", "/_ctl/{action}", ctl)
    return app


async def serve(port: int, sessions: int, latency: float, seed: int) -> None:
    world = World(seed)
    world.add(sessions, "s-", "idle")
    world.latency = latency
    runner = web.AppRunner(build_app(world), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"PORT {bound}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sessions", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.sessions, args.latency, args.seed))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
