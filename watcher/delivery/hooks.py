"""What the delivery worker is handed by its owner, and their built-in forms.

`Render` makes a row's message at send time (the daemon's consults templates),
`Enrich` adds send-time data to an event (e.g. `last_answer`) and never fails
a send (`enriched`), `SendGate` holds each outbound call until it may start (the
leader of replicas: only while its lease is trusted long enough), and `StoreCall`
runs one store call (the daemon's runs it
in a thread on the worker's own connection; by default it runs inline).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from watcher.core.message import Message
from watcher.core.model import Event
from watcher.core.render import render_for
from watcher.core.settings import Target
from watcher.core.text import describe_error

log = logging.getLogger("watcher.delivery")

P = ParamSpec("P")
R = TypeVar("R")

Render = Callable[[Target, Event, str], Awaitable[Message]]
"""Makes the message for (target, event, rule name); the daemon's consults templates
(off the event loop, within a time limit: `watcher.delivery.rendering`)."""
Enrich = Callable[[Event, str], Awaitable[Event]]
"""Adds send-time data to an event (e.g. `last_answer`); it must return promptly."""
SendGate = Callable[[], Awaitable[None]]
"""Awaited in a send's pacing slot, before the request leaves: returns once a send may
start (a replica's leader: its trust window holds the send timeout), else waits."""
StoreCall = Callable[..., Awaitable[Any]]
"""Runs `fn(*args)` against the store and returns its result: `await db(store.due, ...)`."""


async def render_builtin(target: Target, event: Event, rule: str) -> Message:
    """The built-in rendering for the target's kind (no templates)."""
    return render_for(target.kind, event, rule)


async def run_inline(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """The default `StoreCall`: call the store right here, on the event loop."""
    return fn(*args, **kwargs)


async def enriched(enrich: Enrich, event: Event, rule: str, where: str) -> Event:
    """`event` with its send-time data; as it was if adding it fails (never fatal)."""
    try:
        return await enrich(event, rule)
    except Exception as error:
        log.warning("sending %s without its extra data: %s", where, describe_error(error))
        return event
