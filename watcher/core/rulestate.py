"""Rule evaluation: a pure function of (rules, stored history, now).

For one session, `evaluate` takes what the store remembers (`SessionMemory`:
the lifecycle track and each rule's settling transitions, condition
episodes, crossed thresholds and last notification), the mutes in force and,
after a poll, the new state; it returns the new memory, a decision for every
notification considered (sent, held for a digest, muted, cooled down,
settling, dropped, unmatched) with its reason, the outbox routes and held
items to commit with it, and when it next needs to be woken if nothing is
polled. The timer calls it with no observation; a poll calls it with one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase

from watcher.core.diff import event_id
from watcher.core.lifecycle import (
    CONDITION_EVENTS,
    Edge,
    Track,
    advance,
    condition_since,
    usage_value,
)
from watcher.core.model import Event, EventType, JSONValue, SessionRef, SessionState, Snapshot
from watcher.core.quiet import active_window
from watcher.core.render import webhook_payload
from watcher.core.rules import Route, judge, judge_session
from watcher.core.settings import QuietHours, Rule
from watcher.core.snapshot import from_unix_ms, to_unix_ms

DEFAULT_INTERRUPT_SETTLE = timedelta(seconds=30)
DIGEST_RULE_PREFIX = "quiet_hours:"


class Outcome(StrEnum):
    """What became of one notification a rule considered."""

    SENT = "sent"  # queued in the outbox
    HELD = "held"  # kept for the digest at the end of a quiet-hours window
    MUTED = "muted"
    COOLDOWN = "cooldown"
    SETTLING = "settling"  # waiting for the settle window to pass
    DROPPED = "dropped"  # the session changed inside the settle window
    UNMATCHED = "unmatched"  # a `when:` condition does not hold


class MuteKind(StrEnum):
    """What a mute silences."""

    SESSION = "session"
    RULE = "rule"


@dataclass(frozen=True, slots=True)
class Mute:
    """A mute from the command line: a session (id, name or glob) or a rule, until a time."""

    kind: MuteKind
    value: str
    until: datetime | None = None
    reason: str = ""
    id: int = 0

    def active(self, now: datetime) -> bool:
        """Whether the mute is in force at `now`."""
        return self.until is None or now < self.until

    def covers(self, rule: str, session: SessionRef | None) -> bool:
        """Whether this mute silences `rule` for `session`."""
        if self.kind is MuteKind.RULE:
            return fnmatchcase(rule, self.value)
        if session is None:
            return False
        names = [session.id] + ([session.name] if session.name else [])
        return any(fnmatchcase(name, self.value) for name in names)


@dataclass(frozen=True, slots=True)
class Settling:
    """A transition waiting out its settle window; it fires if the track's epoch is unchanged."""

    event: Event
    epoch: int
    due: datetime


@dataclass(frozen=True, slots=True)
class Episode:
    """One stretch of a condition (waiting, stuck, long-running) and how often it was notified."""

    since: datetime
    fired: int = 0


@dataclass(frozen=True, slots=True)
class RuleMemory:
    """What one rule remembers about one session."""

    settling: tuple[Settling, ...] = ()
    episodes: Mapping[str, Episode] = field(default_factory=dict)
    crossed: frozenset[str] = frozenset()
    last_sent: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionMemory:
    """Everything rule evaluation keeps about one session between evaluations."""

    track: Track | None = None
    rules: Mapping[str, RuleMemory] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """One notification considered by one rule, what became of it, and why."""

    rule: str
    event: Event
    outcome: Outcome
    reason: str
    targets: tuple[str, ...] = ()
    release_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """A notification kept for the digest of quiet-hours `window`, released at `release_at`."""

    target: str
    window: str
    release_at: datetime
    event: Event
    rule: str


@dataclass(frozen=True, slots=True)
class Observation:
    """What a poll brought: the stored state before, the new state, and the v1 events."""

    previous: SessionState | None
    current: SessionState
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The result of evaluating every rule for one session at one moment."""

    memory: SessionMemory
    decisions: tuple[Decision, ...] = ()
    routes: tuple[tuple[Event, Route], ...] = ()
    held: tuple[Held, ...] = ()
    wake_at: datetime | None = None

    @property
    def events(self) -> tuple[Event, ...]:
        """Every distinct event a decision concerns, in order."""
        seen: dict[str, Event] = {}
        for decision in self.decisions:
            seen.setdefault(decision.event.id, decision.event)
        return tuple(seen.values())


def settle_for(rule: Rule, kind: EventType) -> timedelta | None:
    """The settle window of `rule` for events of `kind` (30 s by default for interrupts)."""
    if rule.settle is not None:
        return rule.settle if rule.settle > timedelta(0) else None
    return DEFAULT_INTERRUPT_SETTLE if kind is EventType.INTERRUPTED else None


def _edge_event(ref: SessionRef, edge: Edge) -> Event:
    return Event(
        id=event_id(ref.id, edge.type, edge.cause),
        type=edge.type,
        occurred_at=edge.occurred_at,
        session=ref,
        data=dict(edge.data),
    )


def _condition_event(
    rule: Rule, ref: SessionRef, kind: EventType, since: datetime, n: int
) -> Event:
    hold = rule.hold_for or timedelta(0)
    at = since + hold + (rule.repeat or timedelta(0)) * n
    data: dict[str, JSONValue] = {
        "since": since.isoformat(),
        "for_s": (at - since).total_seconds(),
    }
    if n:
        data["reminder"] = n
    cause = {"rule": rule.name, "since": to_unix_ms(since), "n": n}
    return Event(event_id(ref.id, kind, cause), kind, at, ref, data)


def _resolved_event(
    rule: Rule, ref: SessionRef, kind: EventType, since: datetime, now: datetime
) -> Event:
    cause = {"rule": rule.name, "since": to_unix_ms(since), "resolved": True}
    data = {
        "resolved": True,
        "since": since.isoformat(),
        "lasted_s": (now - since).total_seconds(),
    }
    return Event(event_id(ref.id, kind, cause), kind, now, ref, data)


def _usage_event(
    ref: SessionRef, counter: str, threshold: float, value: float, at: datetime
) -> Event:
    cause = {"counter": counter, "threshold": threshold}
    data = {"counter": counter, "threshold": threshold, "value": value}
    return Event(
        event_id(ref.id, EventType.USAGE_CROSSED, cause), EventType.USAGE_CROSSED, at, ref, data
    )


def active_mute(
    mutes: Iterable[Mute], rule: str, session: SessionRef | None, now: datetime
) -> Mute | None:
    """The first mute in force that silences `rule` for `session`."""
    return next((m for m in mutes if m.active(now) and m.covers(rule, session)), None)


def _fmt(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class _RuleRun:
    """Working state while one rule is evaluated (the result is frozen again)."""

    rule: Rule
    memory: RuleMemory
    decisions: list[Decision] = field(default_factory=list)
    routes: list[tuple[Event, Route]] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    wakes: list[datetime] = field(default_factory=list)

    def note(
        self,
        event: Event,
        outcome: Outcome,
        reason: str,
        targets: tuple[str, ...] = (),
        release_at: datetime | None = None,
    ) -> None:
        self.decisions.append(Decision(self.rule.name, event, outcome, reason, targets, release_at))

    def deliver(
        self,
        event: Event,
        mutes: Sequence[Mute],
        quiet: Mapping[str, QuietHours],
        now: datetime,
    ) -> None:
        """Mute, cooldown, quiet hours, then the outbox: the last gate a notification passes."""
        rule = self.rule
        mute = active_mute(mutes, rule.name, event.session, now)
        if mute is not None:
            until = "until unmuted" if mute.until is None else f"until {_fmt(mute.until)}"
            why = f": {mute.reason}" if mute.reason else ""
            self.note(event, Outcome.MUTED, f"{mute.kind} {mute.value!r} muted {until}{why}")
            return
        last = self.memory.last_sent
        if rule.cooldown is not None and last is not None and now < last + rule.cooldown:
            self.note(
                event,
                Outcome.COOLDOWN,
                f"cooldown: last notified {_fmt(last)}, quiet until {_fmt(last + rule.cooldown)}",
            )
            return
        self.memory = replace(self.memory, last_sent=now)
        window = None
        if rule.quiet_hours and not rule.urgent and rule.quiet_hours in quiet:
            window = active_window(quiet[rule.quiet_hours], now)
        if window is not None:
            for target in rule.notify:
                self.held.append(Held(target, window.name, window.end, event, rule.name))
            self.note(
                event,
                Outcome.HELD,
                f"quiet hours {window.name!r} until {_fmt(window.end)}: held for the digest",
                targets=rule.notify,
                release_at=window.end,
            )
            return
        for target in rule.notify:
            self.routes.append((event, Route(rule.name, target)))
        self.note(event, Outcome.SENT, "queued", targets=rule.notify)


def _observed_events(run: _RuleRun, observed: Observation | None) -> list[Event]:
    """v1 events of the poll that the rule's `on` and `when` accept."""
    ready: list[Event] = []
    for event in observed.events if observed is not None else ():
        if str(event.type) not in run.rule.on:
            continue
        verdict = judge(run.rule, event)
        if verdict.matched:
            ready.append(event)
        else:
            run.note(event, Outcome.UNMATCHED, verdict.reason)
    return ready


def _settle(
    run: _RuleRun, track: Track | None, ref: SessionRef, edges: Sequence[Edge], now: datetime
) -> list[Event]:
    """Settled transitions that fire now; new edges start settling or fire at once."""
    rule = run.rule
    ready: list[Event] = []
    still: list[Settling] = []
    for pending in run.memory.settling:
        if track is None or pending.epoch != track.epoch:
            status = track.status if track is not None else "?"
            run.note(
                pending.event,
                Outcome.DROPPED,
                f"the session changed inside the settle window (now {status or 'gone'})",
            )
        elif pending.due <= now:
            ready.append(pending.event)
        else:
            still.append(pending)
            run.wakes.append(pending.due)
    for edge in edges:
        if str(edge.type) not in rule.on:
            continue
        event = _edge_event(ref, edge)
        verdict = judge(rule, event)
        if not verdict.matched:
            run.note(event, Outcome.UNMATCHED, verdict.reason)
            continue
        settle = settle_for(rule, edge.type)
        if settle is None:
            ready.append(event)
            continue
        due = now + settle
        still.append(Settling(event, edge.epoch, due))
        run.wakes.append(due)
        run.note(event, Outcome.SETTLING, f"settling until {_fmt(due)} ({settle})")
    run.memory = replace(run.memory, settling=tuple(still))
    return ready


def _conditions(run: _RuleRun, track: Track | None, ref: SessionRef, now: datetime) -> list[Event]:
    """Onsets, reminders and resolutions of the conditions the rule watches."""
    rule = run.rule
    ready: list[Event] = []
    episodes = dict(run.memory.episodes)
    hold = rule.hold_for or timedelta(0)
    conditions_hold = judge_session(rule, ref).matched
    for kind in sorted(CONDITION_EVENTS):
        if str(kind) not in rule.on:
            continue
        since = condition_since(track, kind)
        episode = episodes.get(kind)
        if episode is not None and since != episode.since:
            del episodes[kind]
            if episode.fired and rule.resolved and conditions_hold:
                ready.append(_resolved_event(rule, ref, kind, episode.since, now))
            episode = None
        if since is None:
            continue
        episode = episode or Episode(since)
        onset = since + hold
        if conditions_hold and episode.fired == 0 and now >= onset:
            ready.append(_condition_event(rule, ref, kind, since, 0))
            episode = replace(episode, fired=1)
        elif conditions_hold and episode.fired and rule.repeat:
            # After downtime, one reminder for the latest period, not a burst.
            n = int((now - onset) / rule.repeat)
            if n >= episode.fired:
                ready.append(_condition_event(rule, ref, kind, since, n))
                episode = replace(episode, fired=n + 1)
        episodes[kind] = episode
        if not conditions_hold:
            continue  # nothing to wake for until a poll changes the session
        if episode.fired == 0:
            run.wakes.append(onset)
        elif rule.repeat:
            run.wakes.append(onset + rule.repeat * episode.fired)
    run.memory = replace(run.memory, episodes=episodes)
    return ready


def _usage(run: _RuleRun, ref: SessionRef, observed: Observation | None) -> list[Event]:
    """Thresholds the poll's usage counters crossed for the first time."""
    rule = run.rule
    if observed is None or not rule.threshold or str(EventType.USAGE_CROSSED) not in rule.on:
        return []
    before = observed.previous if isinstance(observed.previous, Snapshot) else None
    after = observed.current if isinstance(observed.current, Snapshot) else None
    if before is None or after is None:
        return []  # a baseline crosses nothing
    ready: list[Event] = []
    crossed = set(run.memory.crossed)
    for counter, limit in rule.threshold.items():
        mark = f"{counter}>={limit:g}"
        old, new = usage_value(before, counter), usage_value(after, counter)
        if mark in crossed or new is None or new < limit or (old is not None and old >= limit):
            continue
        crossed.add(mark)
        event = _usage_event(ref, counter, limit, new, after.updated_at)
        verdict = judge(rule, event)
        if verdict.matched:
            ready.append(event)
        else:
            run.note(event, Outcome.UNMATCHED, verdict.reason)
    run.memory = replace(run.memory, crossed=frozenset(crossed))
    return ready


def evaluate(
    rules: Sequence[Rule],
    quiet: Mapping[str, QuietHours],
    mutes: Sequence[Mute],
    memory: SessionMemory,
    ref: SessionRef,
    now: datetime,
    observed: Observation | None = None,
) -> Evaluation:
    """Evaluate every rule for one session at `now`, after a poll (`observed`) or on the timer."""
    # Whole milliseconds, as the store keeps them, so remembered times compare equal later.
    now = from_unix_ms(to_unix_ms(now))
    track: Track | None = memory.track
    edges: tuple[Edge, ...] = ()
    if observed is not None:
        track, edges = advance(memory.track, observed.previous, observed.current, now)
    rule_memory: dict[str, RuleMemory] = {}
    decisions: list[Decision] = []
    routes: list[tuple[Event, Route]] = []
    held: list[Held] = []
    wakes: list[datetime] = []
    for rule in rules:
        run = _RuleRun(rule, memory.rules.get(rule.name, RuleMemory()))
        ready = [
            *_observed_events(run, observed),
            *_settle(run, track, ref, edges, now),
            *_conditions(run, track, ref, now),
            *_usage(run, ref, observed),
        ]
        for event in ready:
            run.deliver(event, mutes, quiet, now)
        if run.memory != RuleMemory():
            rule_memory[rule.name] = run.memory
        decisions += run.decisions
        routes += run.routes
        held += run.held
        wakes += run.wakes
    return Evaluation(
        memory=SessionMemory(track, rule_memory),
        decisions=tuple(decisions),
        routes=tuple(routes),
        held=tuple(held),
        wake_at=min(wakes, default=None),
    )


def digest_event(
    target: str, window: str, release_at: datetime, items: Sequence[tuple[Event, str]]
) -> Event:
    """One digest for `target`: the notifications held in `window`, in the order they happened."""
    cause = {
        "target": target,
        "window": window,
        "release_at": to_unix_ms(release_at),
        "items": [event.id for event, _ in items],
    }
    # Each held notification as the webhook body it would have had on its own, so
    # the digest's webhook body can list them as such (render.digest_payload).
    listed: list[JSONValue] = [webhook_payload(event, rule) for event, rule in items]
    return Event(
        id=event_id(target, EventType.DIGEST, cause),
        type=EventType.DIGEST,
        occurred_at=release_at,
        session=None,
        data={"window": window, "count": len(items), "items": listed},
    )


def digest_rule(window: str) -> str:
    """The rule name an outbox row of a digest carries."""
    return DIGEST_RULE_PREFIX + window
