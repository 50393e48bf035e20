"""Rule evaluation over time: settle, conditions, repeat, resolved, thresholds, cooldown,
quiet hours and mutes, each driven by a script of polls and timer ticks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta

import pytest

from tests.core.factories import T0, ref, snap
from watcher.core.model import Event, EventType, Snapshot, TokenUsage
from watcher.core.rulestate import (
    Mute,
    MuteKind,
    Observation,
    Outcome,
    SessionMemory,
    digest_event,
    evaluate,
)
from watcher.core.settings import QuietHours, Rule

S = timedelta(seconds=1)
M = timedelta(minutes=1)


def rule(on: str, **options: object) -> Rule:
    """A rule named after its event, notifying target `t`."""
    return Rule(name=on.removeprefix("session."), on=(on,), notify=("t",), **options)  # type: ignore[arg-type]


@dataclass
class Script:
    """Feeds polls and ticks to `evaluate`, keeping memory and the last snapshot like the store."""

    rules: Sequence[Rule]
    quiet: dict[str, QuietHours] = field(default_factory=dict)
    mutes: list[Mute] = field(default_factory=list)
    memory: SessionMemory = field(default_factory=SessionMemory)
    last: Snapshot | None = None
    sent: list[tuple[timedelta, str, Event]] = field(default_factory=list)
    outcomes: list[tuple[timedelta, Outcome, str]] = field(default_factory=list)
    wake_at: datetime | None = None

    def _run(self, at: timedelta, observed: Observation | None) -> None:
        now = T0 + at
        result = evaluate(self.rules, self.quiet, self.mutes, self.memory, ref(), now, observed)
        self.memory = result.memory
        self.wake_at = result.wake_at
        for decision in result.decisions:
            self.outcomes.append((at, decision.outcome, decision.reason))
            if decision.outcome is Outcome.SENT:
                self.sent.append((at, decision.rule, decision.event))

    def poll(self, at: timedelta, **changes: object) -> None:
        """A poll at T0+`at` seeing the last snapshot with `changes` (updatedAt moves if any)."""
        base = self.last or snap(status="idle", message_count=1)
        current = replace(base, **changes)  # type: ignore[arg-type]
        if changes:
            current = replace(current, updated_at=T0 + at)
        self._run(at, Observation(self.last, current))
        self.last = current

    def tick(self, at: timedelta) -> None:
        """The timer at T0+`at`."""
        self._run(at, None)

    def kinds(self) -> list[tuple[timedelta, str, bool]]:
        """(time, event type, resolved) of every notification sent."""
        return [(at, str(e.type), bool(e.data.get("resolved"))) for at, _, e in self.sent]


def test_flapping_under_settle_fires_one_finished_when_it_really_finishes() -> None:
    """running <-> idle every few seconds under settle 20s: nothing, then one finished."""
    script = Script([rule("session.finished", settle=20 * S)])
    script.poll(0 * S, status="running")
    for n in range(1, 6):  # each idle is a completed run, followed 5 s later by a new start
        script.poll(10 * n * S, status="idle", completed_at=T0 + 10 * n * S)
        script.tick(10 * n * S + 4 * S)
        script.poll(10 * n * S + 5 * S, status="running")
    script.poll(100 * S, status="idle", completed_at=T0 + 100 * S)
    script.tick(119 * S)
    assert script.sent == []
    script.tick(120 * S)
    script.tick(130 * S)
    assert script.kinds() == [(120 * S, "session.finished", False)]
    assert [o for _, o, _ in script.outcomes].count(Outcome.DROPPED) == 5


def test_interrupt_settles_into_interrupted_and_never_finished() -> None:
    """running -> idle without completedAt is interrupted after 30 s by default, not finished."""
    rules = [rule("session.finished"), rule("session.interrupted")]
    script = Script(rules)
    script.poll(0 * S, status="running")
    script.poll(10 * S, status="idle")
    assert script.wake_at == T0 + 40 * S
    script.tick(39 * S)
    script.tick(40 * S)
    assert script.kinds() == [(40 * S, "session.interrupted", False)]


def test_completed_at_inside_the_settle_window_makes_it_finished() -> None:
    """idle shows before completedAt: the late completedAt cancels the interrupt."""
    script = Script([rule("session.finished"), rule("session.interrupted")])
    script.poll(0 * S, status="running")
    script.poll(10 * S, status="idle")
    script.poll(20 * S, completed_at=T0 + 15 * S)
    script.tick(60 * S)
    assert script.kinds() == [(20 * S, "session.finished", False)]


def test_a_run_between_two_polls_is_finished() -> None:
    """idle, then idle with a newer completedAt (the run was never seen) is still a finish."""
    script = Script([rule("session.finished"), rule("session.started")])
    script.poll(0 * S, status="idle")
    script.poll(30 * S, completed_at=T0 + 20 * S, message_count=5)
    assert script.kinds() == [(30 * S, "session.finished", False)]
    assert script.sent[0][2].data["between_polls"] is True


def test_started_is_not_sent_for_the_baseline() -> None:
    """The first poll of a running session is a baseline; a later start is an event."""
    script = Script([rule("session.started")])
    script.poll(0 * S, status="running")
    script.poll(10 * S, status="idle", completed_at=T0 + 9 * S)
    script.poll(20 * S, status="running")
    assert script.kinds() == [(20 * S, "session.started", False)]


@pytest.mark.parametrize(
    ("on", "status"),
    [("session.waiting", "pending"), ("session.long_running", "running")],
)
def test_waiting_and_long_running_fire_after_for(on: str, status: str) -> None:
    """A condition fires once it has held for `for`, measured from the status change."""
    script = Script([rule(on, hold_for=5 * M)])
    script.poll(0 * S, status="idle")
    script.poll(60 * S, status=status)
    assert script.wake_at == T0 + 6 * M
    script.tick(6 * M - S)
    assert script.sent == []
    script.tick(6 * M)
    script.poll(7 * M, message_count=50)  # progress does not end waiting or long-running
    script.tick(30 * M)
    assert script.kinds() == [(6 * M, on, False)]


def test_stuck_fires_once_reminds_after_repeat_and_resolves_when_it_moves() -> None:
    """One stuck, one reminder per repeat period, one resolved when progress resumes."""
    script = Script([rule("session.stuck", hold_for=15 * M, repeat=30 * M, resolved=True)])
    script.poll(0 * S, status="running")
    script.poll(5 * M, message_count=4)  # progress: the clock restarts here
    script.tick(19 * M)
    script.tick(20 * M)
    script.tick(21 * M)
    script.tick(49 * M)
    script.tick(50 * M)
    script.poll(55 * M)  # nothing changed: still stuck
    script.poll(60 * M, message_count=9)
    script.tick(74 * M)
    script.tick(75 * M)  # a new episode: stuck again 15 minutes after that progress
    assert script.kinds() == [
        (20 * M, "session.stuck", False),
        (50 * M, "session.stuck", False),
        (60 * M, "session.stuck", True),
        (75 * M, "session.stuck", False),
    ]
    assert script.sent[1][2].data["reminder"] == 1
    assert script.sent[0][2].data["for_s"] == 15 * 60


def test_reminders_after_downtime_do_not_burst() -> None:
    """A timer that wakes three periods late sends one reminder, not three."""
    script = Script([rule("session.stuck", hold_for=10 * M, repeat=10 * M)])
    script.poll(0 * S, status="running")
    script.tick(10 * M)
    script.tick(45 * M)
    script.tick(49 * M)
    assert script.kinds() == [(10 * M, "session.stuck", False), (45 * M, "session.stuck", False)]
    assert script.sent[1][2].data["reminder"] == 3


def usage(credits: float) -> TokenUsage:
    """Token usage with `credits` factory credits."""
    return TokenUsage(100, 50, 0, 0, 0, credits)


def test_a_credit_threshold_fires_once() -> None:
    """Crossing 100 credits fires once; later polls above it, or dips and re-crossings, do not."""
    script = Script([rule("session.usage_crossed", threshold={"factory_credits": 100.0})])
    script.poll(0 * S, status="running", token_usage=usage(10))
    script.poll(10 * S, token_usage=usage(99))
    script.poll(20 * S, token_usage=usage(101))
    script.poll(30 * S, token_usage=usage(150))
    script.poll(40 * S, token_usage=usage(50))
    script.poll(50 * S, token_usage=usage(120))
    assert script.kinds() == [(20 * S, "session.usage_crossed", False)]
    assert script.sent[0][2].data == {
        "counter": "factory_credits",
        "threshold": 100.0,
        "value": 101,
    }


def test_a_baseline_already_over_the_threshold_is_not_a_crossing() -> None:
    """A session first seen above the threshold did not cross it while watched."""
    script = Script([rule("session.usage_crossed", threshold={"total_tokens": 100.0})])
    script.poll(0 * S, status="running", token_usage=usage(1))
    script.poll(10 * S, token_usage=usage(2))
    assert script.sent == []


def test_cooldown_limits_notifications_per_session() -> None:
    """Within the cooldown a second finish is suppressed, with the reason recorded."""
    script = Script([rule("session.finished", cooldown=10 * M)])
    script.poll(0 * S, status="running")
    for n, at in enumerate((1 * M, 3 * M, 12 * M), start=1):
        script.poll(at - 30 * S, status="running")
        script.poll(at, status="idle", completed_at=T0 + at, message_count=n)
    assert [at for at, _, _ in script.kinds()] == [1 * M, 12 * M]
    assert any(o is Outcome.COOLDOWN and "cooldown" in why for _, o, why in script.outcomes)


def test_mutes_silence_a_session_or_a_rule_and_expire() -> None:
    """A mute suppresses while in force (recorded as muted) and stops at its end."""
    mute = Mute(MuteKind.SESSION, "night*", until=T0 + 5 * M, reason="deploy")
    script = Script([rule("session.finished")], mutes=[mute])
    script.poll(0 * S, status="running")
    script.poll(1 * M, status="idle", completed_at=T0 + 1 * M)
    script.poll(2 * M, status="running")
    script.poll(6 * M, status="idle", completed_at=T0 + 6 * M)
    assert script.kinds() == [(6 * M, "session.finished", False)]
    muted = [why for _, o, why in script.outcomes if o is Outcome.MUTED]
    assert muted == ["session 'night*' muted until 2026-11-28T12:05:00Z: deploy"]
    assert Mute(MuteKind.RULE, "fin*").covers("finished", None)


def test_unmatched_conditions_are_recorded() -> None:
    """An event of the rule's type that fails `when:` is recorded with the condition."""
    script = Script([rule("session.finished", title_globs=("release-*",))])
    script.poll(0 * S, status="running")
    script.poll(10 * S, status="idle", completed_at=T0 + 10 * S)
    assert script.sent == []
    assert script.outcomes[-1][1] is Outcome.UNMATCHED
    assert "matches none of ['release-*']" in script.outcomes[-1][2]


NIGHT = QuietHours("night", time(22), time(7), "Europe/Berlin")


def test_quiet_hours_hold_and_urgent_bypasses() -> None:
    """Inside the window a rule's notification is held until the window ends; urgent is sent."""
    quiet_rule = rule("session.finished", quiet_hours="night")
    urgent = replace(
        rule("session.interrupted", settle=timedelta(0)), quiet_hours="night", urgent=True
    )
    script = Script([quiet_rule, urgent], quiet={"night": NIGHT})
    # T0 is 12:00 UTC = 13:00 Berlin; 22:00 Berlin is T0 + 9h.
    night = 9 * 60 * M + 30 * M
    script.poll(night, status="running")
    script.poll(night + M, status="idle")
    script.poll(night + 2 * M, status="running")
    script.poll(night + 3 * M, status="idle", completed_at=T0 + night + 3 * M)
    assert script.kinds() == [(night + M, "session.interrupted", False)]
    held = [why for _, o, why in script.outcomes if o is Outcome.HELD]
    assert held == ["quiet hours 'night' until 2026-11-29T06:00:00Z: held for the digest"]


def test_digest_lists_items_in_order_with_a_stable_id() -> None:
    """A digest names its window and lists the held events in the order given."""
    first = Event("evt_a", EventType.FINISHED, T0, ref(), {})
    second = Event("evt_b", EventType.STUCK, T0 + M, ref(), {"for_s": 900})
    digest = digest_event("t", "night", T0 + 60 * M, [(first, "done"), (second, "stuck")])
    again = digest_event("t", "night", T0 + 60 * M, [(first, "done"), (second, "stuck")])
    assert digest.id == again.id
    assert digest.type is EventType.DIGEST
    assert [i["id"] for i in digest.data["items"]] == ["evt_a", "evt_b"]
    assert digest.data["count"] == 2
