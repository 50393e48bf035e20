"""`replay FILE.jsonl`: a recorded poll stream through the config's rules on a simulated clock.

Nothing touches the network or the state database: the rules run against a
throwaway in-memory store, the clock is the recorded time of each poll, and
the rule timer runs at exactly the moments the rules asked to be woken. The
result is what the daemon would have queued, to which target, and when.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from watcher.commands.exits import EX_OK, EX_USAGE
from watcher.commands.explain import find_session
from watcher.config.values import parse_duration
from watcher.core.message import SlackMessage
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.poll import Fetched, FetchResult, NotFound
from watcher.core.render import digest_sessions
from watcher.core.settings import Settings, WatchedSession
from watcher.core.snapshot import SnapshotError, parse_snapshot
from watcher.core.template import render_message
from watcher.intake.poll import apply_poll
from watcher.intake.tick import apply_tick
from watcher.store import SqliteStore, UnreadableRow


class ReplayError(ValueError):
    """A line of the recording cannot be read; names the line."""


@dataclass(frozen=True, slots=True)
class RecordedPoll:
    """One line of a recording."""

    at: datetime
    session_id: str
    result: FetchResult


@dataclass(frozen=True, slots=True)
class Planned:
    """A notification the rules queued during the replay."""

    at: datetime
    target: str
    rule: str
    event: Event


def read_recording(lines: Iterable[str], source: str = "recording") -> Iterator[RecordedPoll]:
    """Parse recorded lines; blank lines are skipped, anything else wrong is a ReplayError."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            raw = json.loads(line)
            at = datetime.fromisoformat(raw["at"])
            session_id = raw["session"]
            status = raw["status"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ReplayError(f"{where}: not a recorded poll ({type(error).__name__})") from None
        if at.tzinfo is None or not isinstance(session_id, str):
            raise ReplayError(f"{where}: 'at' needs a time zone and 'session' a string")
        if status == 404:
            yield RecordedPoll(at, session_id, NotFound())
            continue
        try:
            snapshot = parse_snapshot(raw.get("body"))
        except SnapshotError as error:
            raise ReplayError(f"{where}: unreadable session body: {error}") from None
        yield RecordedPoll(at, session_id, Fetched(snapshot, raw.get("body")))


def _ticks_until(
    store: SqliteStore,
    settings: Settings,
    watched: Mapping[str, WatchedSession],
    until: datetime,
) -> None:
    """Run the rule timer at every moment it was asked for, up to and including `until`."""
    previous: datetime | None = None
    while (wake := store.next_wake()) is not None and wake <= until:
        if previous is not None and wake <= previous:
            wake = previous + timedelta(seconds=1)  # the daemon's timer would tick again
        apply_tick(store, settings, watched, wake)
        previous = wake


def replay(
    settings: Settings, polls: Iterable[RecordedPoll], extra: timedelta = timedelta(0)
) -> list[Planned]:
    """What the rules would queue for `polls`, in order; the clock runs `extra` past the end."""
    store = SqliteStore(":memory:")
    try:
        last: datetime | None = None
        # Every recorded session is watched (a discovered one too): the timer skips others.
        watched = {w.id: w for w in settings.sessions}
        for poll in polls:
            _ticks_until(store, settings, watched, poll.at)
            session = find_session(settings, poll.session_id)
            watched.setdefault(session.id, session)
            apply_poll(
                store,
                settings.rules,
                settings.factory.session_url,
                session,
                poll.result,
                poll.at,
                quiet=settings.quiet_hours,
            )
            last = poll.at
        if last is not None:
            _ticks_until(store, settings, watched, last + extra)
        rows = sorted(store.list_outbox(limit=1_000_000), key=lambda r: r.id)
        # An in-memory store written just now holds no unreadable rows; skip any all the same.
        return [
            Planned(r.created_at, r.target, r.rule, r.event)
            for r in rows
            if not isinstance(r, UnreadableRow)
        ]
    finally:
        store.close()


def name_of(session: SessionRef) -> str:
    """`nightly (s1)`: the session's name or title and its id (the id alone if that is all)."""
    shown = session.display_name
    return session.id if shown == session.id else f"{shown} ({session.id})"


def sessions_of(event: Event) -> str:
    """Which session a notification is about; a digest names every session it lists."""
    if event.session is not None:
        return name_of(event.session)
    if event.type is EventType.DIGEST:
        listed = ", ".join(name_of(s) for s in digest_sessions(event))
        return f"digest of {listed or 'no session'}"
    return "(no session)"


def describe(settings: Settings, planned: Planned) -> dict[str, Any]:
    """One planned notification as the JSON line `replay --json` prints."""
    target = settings.targets.get(planned.target)
    text = None
    if target is not None:
        message, _ = render_message(settings, target, planned.event, planned.rule)
        text = message.text if isinstance(message, SlackMessage) else message.body.decode()
    session = planned.event.session
    return {
        "at": planned.at.isoformat().replace("+00:00", "Z"),
        "target": planned.target,
        "rule": planned.rule,
        "type": str(planned.event.type),
        "event_id": planned.event.id,
        "session": None if session is None else session.id,
        "about": sessions_of(planned.event),
        "text": text,
    }


def replay_command(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`replay FILE.jsonl [--json] [--extra D]`: one line (or JSON object) per notification."""
    extra = timedelta(0)
    if args.extra is not None:
        try:
            extra = parse_duration(args.extra)
        except ValueError as error:
            print(f"factory-watcher: --extra: {error}", file=err)
            return EX_USAGE
    try:
        with args.recording.open(encoding="utf-8") as lines:
            planned = replay(settings, read_recording(lines, str(args.recording)), extra)
    except OSError as error:
        print(f"factory-watcher: cannot read {args.recording}: {error.strerror}", file=err)
        return EX_USAGE
    except ReplayError as error:
        print(f"factory-watcher: {error}", file=err)
        return EX_USAGE
    for item in planned:
        line = describe(settings, item)
        if args.json:
            print(json.dumps(line, ensure_ascii=False), file=out)
        else:
            text = (line["text"] or "").splitlines()[0] if line["text"] else ""
            if line["text"] and line["text"].startswith("{"):
                text = f"{line['type']} {line['event_id']}"
            print(
                f"{line['at']}  {line['target']}  (rule {line['rule']})  {line['about']}  {text}",
                file=out,
            )
    if not planned:
        print("nothing would be sent", file=out)
    return EX_OK
