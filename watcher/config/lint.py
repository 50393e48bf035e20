"""Warnings about a valid config: rules that can never fire, targets and windows nothing
uses, a retention shorter than something that needs the history it deletes (a
rule's durations, a quiet-hours window, a report's window), and lease settings
that do nothing or cut sends short.

These do not stop the watcher (`check` still exits 0); they point at likely mistakes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from itertools import pairwise

from watcher.config.cron import fire_times
from watcher.config.values import format_duration
from watcher.core.settings import (
    DEFAULT_SEND_TIMEOUT,
    HaSettings,
    QuietHours,
    ReportSpec,
    Rule,
    Settings,
)

SINCE_LAST_SAMPLE = 30  # runs looked at for the longest gap of a since_last report

# The rule keys whose duration needs the session's rule memory (and its unsent events).
_RULE_DURATIONS = (
    ("for", "hold_for"),
    ("repeat", "repeat"),
    ("settle", "settle"),
    ("cooldown", "cooldown"),
)


def _session_conditions(rule: Rule) -> bool:
    return bool(
        rule.session_globs or rule.labels or rule.title_globs or rule.tags or rule.model_globs
    )


def rule_warnings(rule: Rule, settings: Settings) -> list[str]:
    """Why `rule` can never fire, or does less than it says; empty when nothing looks wrong."""
    found: list[str] = []
    where = f"rule '{rule.name}'"
    if all(kind.startswith("watcher.") for kind in rule.on) and _session_conditions(rule):
        found.append(
            f"{where} can never fire: {', '.join(rule.on)} concern no session, "
            "but the rule has session conditions under 'when'"
        )
    same = rule.from_status == rule.to_status and len(rule.from_status) == 1
    if same and not any(c in rule.from_status[0] for c in "*?["):
        status = rule.from_status[0]
        found.append(
            f"{where} can never fire: a status change never goes from '{status}' to '{status}'"
        )
    if settings.sessions and rule.session_globs:
        names = [n for w in settings.sessions for n in (w.id, w.name) if n]
        if not any(fnmatchcase(n, g) for n in names for g in rule.session_globs):
            found.append(
                f"{where} can never fire for the configured sessions: 'when.session' "
                f"{list(rule.session_globs)} matches none of them"
            )
    if (
        settings.sessions
        and rule.labels
        and not any(
            all(w.labels.get(k) == v for k, v in rule.labels.items()) for w in settings.sessions
        )
    ):
        found.append(
            f"{where} can never fire for the configured sessions: no session has the "
            f"labels {dict(rule.labels)}"
        )
    if rule.urgent and rule.quiet_hours:
        found.append(f"{where} is urgent, so its 'quiet_hours' has no effect")
    return found


def window_length(window: QuietHours) -> timedelta:
    """How long a quiet-hours window lasts (one ending at or before its start ends next day)."""
    day = datetime(2000, 1, 1)
    length = datetime.combine(day, window.end) - datetime.combine(day, window.start)
    return length if length > timedelta(0) else length + timedelta(days=1)


def _history_needs(settings: Settings) -> list[tuple[timedelta, str]]:
    """Every duration that needs the stored history to last at least as long, named."""
    needs = [
        (window_length(w), f"quiet-hours window '{name}' ({format_duration(window_length(w))})")
        for name, w in settings.quiet_hours.items()
    ]
    for rule in settings.rules:
        for key, attribute in _RULE_DURATIONS:
            value: timedelta | None = getattr(rule, attribute)
            if value is not None:
                needs.append((value, f"rule '{rule.name}' '{key}' ({format_duration(value)})"))
    return needs


def retention_warnings(settings: Settings) -> list[str]:
    """Each retention in `state:` shorter than the longest duration that needs its history."""
    needs = _history_needs(settings)
    if not needs:
        return []
    longest, what = max(needs, key=lambda need: need[0])
    retention = settings.retention
    found = []
    for key, kept, lost in (
        ("keep_delivered", retention.keep_delivered, "events waiting to settle or be sent"),
        ("forget_sessions_after", retention.forget_sessions_after, "the rules' memory"),
    ):
        if kept < longest:
            found.append(
                f"state.{key} ({format_duration(kept)}) is shorter than {what}: "
                f"{lost} may be deleted before it is used"
            )
    return found


def ha_warnings(settings: Settings) -> list[str]:
    """Lease settings that do nothing, and sends a lease cuts short."""
    ha = settings.ha
    if settings.state_url is None:
        if ha == HaSettings():
            return []
        return ["state.lease_ttl and state.renew_every have no effect without state.url"]
    cap = ha.send_cap
    # The default lease caps sends at 5s by design (docs/high-availability.md); only a
    # shorter lease, which cuts sends shorter still, is worth a warning on every check.
    if not settings.targets or cap >= HaSettings().send_cap:
        return []
    names = ", ".join(f"'{name}'" for name in settings.targets)
    return [
        f"with state.url every send is cut off after lease_ttl/2 ({format_duration(cap)}), "
        f"shorter than the {format_duration(DEFAULT_SEND_TIMEOUT)} send timeout of target(s) "
        f"{names}: a slower answer is retried later; set lease_ttl to "
        f"{format_duration(DEFAULT_SEND_TIMEOUT * 2)} or more to give sends their full time"
    ]


def report_warnings(spec: ReportSpec, settings: Settings) -> list[str]:
    """Why `spec` covers none of the configured sessions, or groups them all as one.

    Said only when the config lists every session (no discovery, which may find
    sessions with other names and labels).
    """
    if not settings.sessions or settings.discover is not None:
        return []
    found: list[str] = []
    where = f"report '{spec.name}'"
    names = [n for w in settings.sessions for n in (w.id, w.name) if n]
    if spec.session_globs and not any(fnmatchcase(n, g) for n in names for g in spec.session_globs):
        found.append(
            f"{where} covers none of the configured sessions: 'session' "
            f"{list(spec.session_globs)} matches none of them"
        )
    if spec.labels and not any(
        all(w.labels.get(k) == v for k, v in spec.labels.items()) for w in settings.sessions
    ):
        found.append(
            f"{where} covers none of the configured sessions: no session has the labels "
            f"{dict(spec.labels)}"
        )
    if spec.group_by and not any(spec.group_by in w.labels for w in settings.sessions):
        found.append(
            f"{where} groups by the label '{spec.group_by}', which no configured session "
            "has: every session falls in one group"
        )
    return found


def report_window(spec: ReportSpec, now: datetime) -> timedelta:
    """How far back `spec` looks at most: its `window`, or for since_last the longest gap
    between two of its next runs (a weekly report looks back a week).
    """
    if spec.window is not None:
        return spec.window
    times = fire_times(spec, now, SINCE_LAST_SAMPLE)
    gaps = [b - a for a, b in pairwise(times)]
    return max(gaps, default=timedelta(days=1))


def report_retention_warnings(settings: Settings, now: datetime | None = None) -> list[str]:
    """Each report whose window reaches further back than the store keeps what it reads."""
    retention = settings.retention
    found = []
    for spec in settings.reports:
        window = report_window(spec, now or datetime.now(UTC))
        shown = format_duration(window) + (" (since_last)" if spec.window is None else "")
        for key, kept, lost in (
            ("keep_delivered", retention.keep_delivered, "events"),
            (
                "forget_sessions_after",
                retention.forget_sessions_after,
                "sessions no longer watched",
            ),
        ):
            if kept < window:
                found.append(
                    f"report '{spec.name}' looks back {shown}, longer than state.{key} "
                    f"({format_duration(kept)}): {lost} older than that are deleted, so the "
                    "report will undercount"
                )
    return found


def config_warnings(settings: Settings) -> list[str]:
    """Every warning about `settings`, rules first, in file order."""
    found = [w for rule in settings.rules for w in rule_warnings(rule, settings)]
    used_targets = {t for rule in settings.rules for t in rule.notify}
    used_targets |= {t for spec in settings.reports for t in spec.notify}
    for name in settings.targets:
        if name not in used_targets:
            found.append(f"target '{name}' is not used by any rule or report")
    used_windows = {rule.quiet_hours for rule in settings.rules}
    for name in settings.quiet_hours:
        if name not in used_windows:
            found.append(f"quiet-hours window '{name}' is not used by any rule")
    found.extend(w for spec in settings.reports for w in report_warnings(spec, settings))
    found.extend(retention_warnings(settings))
    found.extend(report_retention_warnings(settings))
    found.extend(ha_warnings(settings))
    return found
