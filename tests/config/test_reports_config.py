"""The `reports:` section: parsed into ReportSpec, every mistake named by line and key, and
`check`'s next run times and retention warnings."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.commands.check import check_command
from watcher.config.lint import report_retention_warnings, report_window
from watcher.config.loader import ConfigError, load_settings
from watcher.core.settings import ReportSpec, SlackTemplate, WebhookTemplate

HEAD = """\
factory:
  api_key: fk-test-0123456789
targets:
  team:
    type: slack_webhook
    url: https://hooks.slack.com/services/T0/B0/abc
  ci:
    type: webhook
    url: https://hooks.example.com/factory
reports:
"""
# Line 11 onwards: the reports.
DAILY = """\
  - name: daily
    schedule: "0 9 * * mon-fri"
    notify: team
"""


def write(tmp_path: Path, text: str) -> Path:
    """A config file (mode 600) holding `text`."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def problems(tmp_path: Path, reports: str) -> list[str]:
    """The problems of the config with `reports` under `reports:`, file name only."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, HEAD + reports), env={})
    return [str(p).replace(str(tmp_path) + "/", "") for p in caught.value.problems]


def test_a_full_report_is_read_into_its_spec(tmp_path: Path) -> None:
    """Every key lands in ReportSpec: filters as rules have them, durations parsed."""
    text = HEAD + (
        "  - name: platform-weekly\n"
        '    schedule: "30 8 * * MON"\n'
        "    timezone: Europe/Berlin\n"
        "    window: 7d\n"
        "    session: [nightly-*, 8f1c*]\n"
        "    labels: {team: platform}\n"
        "    title: '*billing*'\n"
        "    tags: [backend]\n"
        "    notify: [team]\n"
        "    template:\n"
        "      text: 'Weekly: {{ data.counts.finished }} finished'\n"
        "    group_by: team\n"
        "    skip_empty: true\n"
        "    misfire_grace: 30m\n"
    )
    settings = load_settings(write(tmp_path, text), env={})
    assert settings.reports == (
        ReportSpec(
            name="platform-weekly",
            schedule="30 8 * * MON",
            timezone="Europe/Berlin",
            window=timedelta(days=7),
            session_globs=("nightly-*", "8f1c*"),
            labels={"team": "platform"},
            title_globs=("*billing*",),
            tags=("backend",),
            notify=("team",),
            template=SlackTemplate(text="Weekly: {{ data.counts.finished }} finished"),
            group_by="team",
            skip_empty=True,
            misfire_grace=timedelta(minutes=30),
        ),
    )


def test_defaults_are_utc_since_last_and_an_hour_of_grace(tmp_path: Path) -> None:
    """Only name, schedule and notify are needed."""
    settings = load_settings(write(tmp_path, HEAD + DAILY), env={})
    assert settings.reports == (ReportSpec("daily", "0 9 * * mon-fri", notify=("team",)),)
    assert settings.reports[0].window is None
    assert settings.reports[0].misfire_grace == timedelta(hours=1)


def test_a_webhook_body_template_is_read_for_a_webhook_report(tmp_path: Path) -> None:
    """`template.body` works for a report notifying webhooks, as for rules."""
    text = HEAD + (
        "  - name: hook\n"
        "    schedule: '*/5 * * * *'\n"
        "    notify: ci\n"
        "    template:\n"
        "      body: '{\"finished\": {{ data.counts.finished }}}'\n"
    )
    [spec] = load_settings(write(tmp_path, text), env={}).reports
    assert spec.template == WebhookTemplate('{"finished": {{ data.counts.finished }}}')


BAD = [
    (
        '  - name: daily\n    schedule: "0 25 * * *"\n    notify: team\n',
        'config.yaml:12: reports[0].schedule: "0 25 * * *" is not a cron expression: '
        "hour 25 out of range 0-23",
    ),
    (
        '  - name: daily\n    schedule: "0 9 * *"\n    notify: team\n',
        'config.yaml:12: reports[0].schedule: "0 9 * *" is not a cron expression: 4 fields,'
        " expected 5 (minute hour day-of-month month day-of-week)",
    ),
    (
        '  - name: daily\n    schedule: "0 9 * * mon-fry"\n    notify: team\n',
        'config.yaml:12: reports[0].schedule: "0 9 * * mon-fry" is not a cron expression: '
        "day of week 'fry' is not a number or a name (sun…sat)",
    ),
    (
        DAILY + "    timezone: Europe/Berlín\n",
        "config.yaml:14: reports[0].timezone: unknown time zone 'Europe/Berlín'; "
        "use an IANA name such as Europe/Berlin or UTC",
    ),
    (
        DAILY + "    window: fortnight\n",
        "config.yaml:14: reports[0].window: expected a duration such as 24h or 7d, or since_last",
    ),
    (
        DAILY + "    misfire_grace: soon\n",
        "config.yaml:14: reports[0].misfire_grace: expected a duration such as 500ms, 30s, 5m,"
        " 2h or 1d (a plain number means seconds)",
    ),
    (
        "  - name: daily\n    schedule: '0 9 * * *'\n    notify: [team, pager]\n",
        "config.yaml:13: reports[0].notify[1]: unknown target 'pager'; expected one of: team, ci",
    ),
    (
        DAILY + DAILY,
        "config.yaml:14: reports[1].name: duplicate report name 'daily' (first on line 11)",
    ),
    (DAILY + "    group_by: ''\n", "config.yaml:14: reports[0].group_by:"),
    (DAILY + "    skip_empty: maybe\n", "config.yaml:14: reports[0].skip_empty:"),
    (DAILY + "    when: {to: idle}\n", "config.yaml:14: reports[0].when: unknown key"),
    ("  - name: daily\n    notify: team\n", "config.yaml:11: reports[0].schedule:"),
    (
        DAILY + "    template:\n      body: '{}'\n      text: hi\n",
        "config.yaml:14: reports[0].template: give either 'body'",
    ),
    (
        DAILY + "    template:\n      body: '{\"n\": {{ data.counts.finished }}}'\n",
        "config.yaml:14: reports[0].template: this template does not suit every target the "
        "report notifies: 'body' is for webhook targets, not 'team' (slack_webhook)",
    ),
    (
        DAILY + "    template:\n      text: '{{ data.no_such_key.x }}'\n",
        "config.yaml:15: reports[0].template.text: fails on a sample watcher.report event: "
        "UndefinedError: 'dict object' has no attribute 'no_such_key'",
    ),
]


@pytest.mark.parametrize(("reports", "expected"), BAD)
def test_each_mistake_is_named_by_file_line_and_key(
    tmp_path: Path, reports: str, expected: str
) -> None:
    """A bad report is one problem, at its line and key, saying what was expected."""
    found = problems(tmp_path, reports)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_reports_must_be_a_list(tmp_path: Path) -> None:
    """`reports:` holding a mapping is refused."""
    assert problems(tmp_path, "  daily: {}\n") == [
        "config.yaml:10: reports: expected a list of reports"
    ]


def test_check_prints_the_next_three_runs_in_the_zone_and_utc(tmp_path: Path) -> None:
    """`check` lists each report's next three run times, local and UTC."""
    text = (
        HEAD
        + DAILY
        + (
            "  - name: berlin\n    schedule: '0 9 * * *'\n    timezone: Europe/Berlin\n"
            "    notify: ci\n"
        )
    )
    path = write(tmp_path, text)
    settings = load_settings(path, env={})
    out = io.StringIO()
    now = datetime(2026, 10, 23, 12, 0, tzinfo=UTC)  # a Friday; Berlin leaves DST on Sunday
    assert check_command(settings, path, out, now) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("ok (0 session(s), 0 rule(s), 2 target(s), 2 report(s))")
    assert lines[1:9] == [
        f"{path}: report 'daily' (0 9 * * mon-fri, UTC) runs next at:",
        "  Mon 2026-10-26 09:00 UTC (09:00 UTC)",
        "  Tue 2026-10-27 09:00 UTC (09:00 UTC)",
        "  Wed 2026-10-28 09:00 UTC (09:00 UTC)",
        f"{path}: report 'berlin' (0 9 * * *, Europe/Berlin) runs next at:",
        "  Sat 2026-10-24 09:00 CEST (07:00 UTC)",
        "  Sun 2026-10-25 09:00 CET (08:00 UTC)",
        "  Mon 2026-10-26 09:00 CET (08:00 UTC)",
    ]


def test_a_report_looking_back_further_than_retention_is_warned(tmp_path: Path) -> None:
    """A 60-day window with 30 days of events kept: one warning per retention it outlasts."""
    text = (
        HEAD.replace("reports:\n", "state:\n  keep_delivered: 30d\nreports:\n")
        + DAILY
        + ("    window: 60d\n")
    )
    settings = load_settings(write(tmp_path, text), env={})
    warnings = report_retention_warnings(settings)
    assert warnings == [
        "report 'daily' looks back 60d, longer than state.keep_delivered (30d): events older "
        "than that are deleted, so the report will undercount",
        "report 'daily' looks back 60d, longer than state.forget_sessions_after (30d): "
        "sessions no longer watched older than that are deleted, so the report will undercount",
    ]


@pytest.mark.parametrize(
    ("schedule", "window"),
    [
        ("0 9 * * *", timedelta(days=1)),
        ("0 9 * * mon", timedelta(days=7)),
        ("0 9 * * mon-fri", timedelta(days=3)),
        ("0 9 1 * *", timedelta(days=31)),
    ],
)
def test_a_since_last_window_is_the_longest_gap_between_runs(
    schedule: str, window: timedelta
) -> None:
    """since_last looks back as far as the previous run: the longest gap is what it needs."""
    spec = ReportSpec("r", schedule)
    assert report_window(spec, datetime(2026, 12, 1, tzinfo=UTC)) == window


def test_a_monthly_since_last_report_is_warned_with_short_retention(tmp_path: Path) -> None:
    """A monthly since_last report with 7 days kept is warned about, naming since_last."""
    text = HEAD.replace(
        "reports:\n", "state:\n  keep_delivered: 7d\n  forget_sessions_after: 90d\nreports:\n"
    )
    text += "  - name: monthly\n    schedule: '0 9 1 * *'\n    notify: team\n"
    settings = load_settings(write(tmp_path, text), env={})
    [warning] = report_retention_warnings(settings, datetime(2026, 12, 5, tzinfo=UTC))
    assert warning.startswith("report 'monthly' looks back 31d (since_last), longer than")


def test_the_example_file_has_a_report() -> None:
    """config.example.yaml shows a working report with every key commented."""
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    env = {
        "FACTORY_API_KEY": "fk-test-0123456789",
        "SLACK_BOT_TOKEN": "xoxb-test-1",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/abc",
        "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }
    [spec] = load_settings(example, env=env).reports
    assert (spec.name, spec.schedule, spec.timezone, spec.group_by) == (
        "daily",
        "0 9 * * mon-fri",
        "Europe/Berlin",
        "team",
    )
    text = example.read_text()
    for key in ("schedule", "timezone", "window", "group_by", "skip_empty", "misfire_grace"):
        assert any(
            line.lstrip("#- ").startswith(f"{key}:") and "#" in line for line in text.splitlines()
        ), key


def test_a_report_matching_no_configured_session_is_warned(tmp_path: Path) -> None:
    """With every session configured, filters matching none and an unknown group_by label
    are pointed out; `check` still exits 0."""
    text = HEAD.replace(
        "reports:\n",
        "sessions:\n  - {id: s1, name: nightly, labels: {team: web}}\nreports:\n",
    )
    text += DAILY + "    session: [weekly-*]\n    labels: {team: platform}\n    group_by: owner\n"
    path = write(tmp_path, text)
    out = io.StringIO()
    assert check_command(load_settings(path, env={}), path, out) == 0
    warnings = [
        line.split(": warning: ", 1)[1]
        for line in out.getvalue().splitlines()
        if ": warning: " in line
    ]
    assert warnings == [
        "target 'ci' is not used by any rule or report",
        "report 'daily' covers none of the configured sessions: 'session' ['weekly-*'] "
        "matches none of them",
        "report 'daily' covers none of the configured sessions: no session has the labels "
        "{'team': 'platform'}",
        "report 'daily' groups by the label 'owner', which no configured session has: every "
        "session falls in one group",
    ]
