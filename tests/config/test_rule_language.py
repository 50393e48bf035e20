"""The rule language of agent sessions in YAML: quiet hours, settle, for, repeat, thresholds."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from watcher.config.loader import ConfigError, load_settings
from watcher.core.settings import QuietHours, Settings

ENV = {"FACTORY_API_KEY": "fk-test-0123456789"}
HEAD = """\
factory:
  api_key: ${FACTORY_API_KEY}
targets:
  team-slack: {type: webhook, url: "https://hooks.example.com/a"}
  ci: {type: webhook, url: "https://hooks.example.com/b"}
  ops: {type: webhook, url: "https://hooks.example.com/c"}
"""

ISSUE_EXAMPLE = (
    HEAD
    + """\
quiet_hours:
  night: {start: "22:00", end: "07:00", timezone: Europe/Berlin, days: [mon, tue, wed, thu, fri]}
state:
  record: polls.jsonl
rules:
  - name: done
    on: session.finished
    settle: 20s
    when:
      title: ["release-*"]
      tags: [nightly]
      model: ["claude-*"]
    cooldown: 10m
    quiet_hours: night
    notify: team-slack
  - name: stuck
    on: session.stuck
    for: 15m
    repeat: 30m
    resolved: true
    urgent: true
    notify: [team-slack, ci]
  - name: spend
    on: session.usage_crossed
    threshold: {factory_credits: 100}
    notify: ops
"""
)


def load(text: str, tmp_path: Path) -> Settings:
    """Load `text` as a config file in `tmp_path`."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return load_settings(path, env=ENV)


def problems(text: str, tmp_path: Path) -> list[str]:
    """The problems of loading `text`, which must fail."""
    with pytest.raises(ConfigError) as caught:
        load(text, tmp_path)
    return [f"{p.key}: {p.message}" for p in caught.value.problems]


def test_the_issue_example_loads_into_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every option of the issue's example lands in the frozen rules and quiet hours."""
    monkeypatch.chdir(tmp_path)
    settings = load(ISSUE_EXAMPLE, tmp_path)
    done, stuck, spend = settings.rules
    assert settings.quiet_hours == {
        "night": QuietHours("night", time(22), time(7), "Europe/Berlin", frozenset(range(5)))
    }
    assert settings.record_path == tmp_path / "polls.jsonl"
    assert (done.settle, done.cooldown, done.quiet_hours) == (
        timedelta(seconds=20),
        timedelta(minutes=10),
        "night",
    )
    assert (done.title_globs, done.tags, done.model_globs) == (
        ("release-*",),
        ("nightly",),
        ("claude-*",),
    )
    assert (stuck.hold_for, stuck.repeat, stuck.resolved, stuck.urgent) == (
        timedelta(minutes=15),
        timedelta(minutes=30),
        True,
        True,
    )
    assert spend.threshold == {"factory_credits": 100.0}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "{name: r, on: session.finished, for: 5m, notify: ci}",
            "rules[0].for: 'for' means nothing for session.finished; it applies only to "
            "session.long_running, session.stuck, session.waiting",
        ),
        (
            "{name: r, on: session.usage_crossed, threshold: {factory_credits: 1}, repeat: 5m,"
            " notify: ci}",
            "rules[0].repeat: 'repeat' means nothing for session.usage_crossed; it applies only"
            " to session.long_running, session.stuck, session.waiting",
        ),
        (
            "{name: r, on: session.stuck, for: 5m, threshold: {factory_credits: 1}, notify: ci}",
            "rules[0].threshold: 'threshold' means nothing for session.stuck; it applies only"
            " to session.usage_crossed",
        ),
        (
            "{name: r, on: session.finished, resolved: true, notify: ci}",
            "rules[0].resolved: 'resolved' means nothing for session.finished; it applies only"
            " to session.long_running, session.stuck, session.waiting",
        ),
        (
            "{name: r, on: session.stuck, for: 5m, settle: 10s, notify: ci}",
            "rules[0].settle: 'settle' means nothing for session.stuck; it applies only to "
            "session.finished, session.interrupted, session.started",
        ),
        (
            "{name: r, on: session.stuck, notify: ci}",
            "rules[0].on: session.stuck needs 'for': how long the condition must hold",
        ),
        (
            "{name: r, on: session.usage_crossed, notify: ci}",
            "rules[0].on: session.usage_crossed needs 'threshold', e.g. {factory_credits: 100}",
        ),
        (
            "{name: r, on: session.usage_crossed, threshold: {factory_credit: 1}, notify: ci}",
            "rules[0].threshold.factory_credit: unknown usage counter 'factory_credit' "
            "(did you mean 'factory_credits'?)",
        ),
        (
            "{name: r, on: session.finished, quiet_hours: nite, notify: ci}",
            "rules[0].quiet_hours: unknown quiet-hours window 'nite' (none are defined)",
        ),
        (
            "{name: r, on: [watcher.api_unavailable], cooldown: 5m, notify: ci}",
            "rules[0].cooldown: 'cooldown' means nothing for watcher.api_unavailable; it applies"
            " only to session.",
        ),
        (
            "{name: r, on: watcher.digest, notify: ci}",
            "rules[0].on: unknown event type 'watcher.digest'; expected one of: ",
        ),
    ],
)
def test_options_that_mean_nothing_are_rejected(rule: str, expected: str, tmp_path: Path) -> None:
    """`check` names the option, the event it means nothing for, and where it applies."""
    found = problems(HEAD + f"rules:\n  - {rule}\n", tmp_path)
    assert len(found) == 1
    assert found[0].startswith(expected)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ('{start: "25:00", end: "07:00"}', "quiet_hours.w.start: expected a time of day as HH:MM"),
        (
            '{start: "22:00", end: "07:00", timezone: Mars/Olympus}',
            "quiet_hours.w.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            '{start: "22:00", end: "07:00", days: [mon, funday]}',
            "quiet_hours.w.days[1]: expected a weekday",
        ),
        ('{start: "22:00", end: "22:00"}', "quiet_hours.w.end: end must differ from start"),
        ('{start: "22:00"}', "quiet_hours.w.end: "),
    ],
)
def test_bad_quiet_hours_are_explained(window: str, expected: str, tmp_path: Path) -> None:
    """Times, zones and days of a quiet-hours window are checked with a specific message."""
    found = problems(HEAD + f"quiet_hours:\n  w: {window}\n", tmp_path)
    assert len(found) == 1
    assert found[0].startswith(expected)


def test_settle_zero_switches_off_the_interrupt_default(tmp_path: Path) -> None:
    """`settle: 0s` is allowed and means no settle window."""
    settings = load(
        HEAD + "rules:\n  - {name: r, on: session.interrupted, settle: 0s, notify: ci}\n", tmp_path
    )
    assert settings.rules[0].settle == timedelta(0)


EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
RULE_KEYS = (
    "quiet_hours",
    "start",
    "end",
    "timezone",
    "days",
    "settle",
    "title",
    "tags",
    "model",
    "cooldown",
    "for",
    "repeat",
    "resolved",
    "urgent",
    "threshold",
    "record",
)


@pytest.mark.parametrize("key", RULE_KEYS)
def test_example_file_documents_the_rule_language(key: str) -> None:
    """Every new key appears in config.example.yaml with a comment on its line."""
    lines = [
        line.lstrip("#- ")
        for line in EXAMPLE.read_text().splitlines()
        if line.lstrip("#- ").startswith(f"{key}:")
    ]
    assert any("#" in line for line in lines), key
