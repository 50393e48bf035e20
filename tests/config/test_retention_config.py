"""Retention in `state:`: defaults, parsing, the example file, and `check`'s warnings."""

from __future__ import annotations

import io
from datetime import time, timedelta
from pathlib import Path

import pytest

from watcher.commands.check import check_command
from watcher.config.lint import retention_warnings, window_length
from watcher.config.loader import ConfigError, load_settings
from watcher.core.secret import Secret
from watcher.core.settings import FactorySettings, QuietHours, Retention, Rule, Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
FACTORY = "factory:\n  api_key: fk-test-0123456789\n"
D = timedelta(days=1)
H = timedelta(hours=1)


def write(tmp_path: Path, text: str) -> Path:
    """A config file (mode 600) holding `text`."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("", Retention(timedelta(days=30), timedelta(days=90), timedelta(days=30))),
        ("state:\n", Retention()),
        ("state:\n  path: x.db\n", Retention()),
        (
            "state:\n  keep_delivered: 2h\n  keep_dead: 7d\n  forget_sessions_after: 45m\n",
            Retention(2 * H, 7 * D, timedelta(minutes=45)),
        ),
        ("state:\n  keep_dead: 600\n", Retention(keep_dead=timedelta(seconds=600))),
    ],
)
def test_retention_is_read_from_the_state_section(
    tmp_path: Path, state: str, expected: Retention
) -> None:
    """Absent keys take the defaults (30d, 90d, 30d); durations parse as elsewhere."""
    settings = load_settings(write(tmp_path, FACTORY + state), env={})
    assert settings.retention == expected


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ("state:\n  keep_delivered: soon\n", "config.yaml:5: state.keep_delivered: expected"),
        ("state:\n  keep_dead: 0s\n", "config.yaml:5: state.keep_dead: duration must be"),
        ("state:\n  forget_after: 1d\n", "config.yaml:5: state.forget_after: unknown key"),
    ],
)
def test_a_bad_retention_is_a_problem_at_its_line(tmp_path: Path, state: str, problem: str) -> None:
    """A retention that is no duration is reported once, with file, line and key."""
    path = write(tmp_path, FACTORY + "\n" + state)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    found = [str(p) for p in caught.value.problems]
    assert len(found) == 1, found
    assert Path(found[0]).name.startswith(problem), found


@pytest.mark.parametrize("key", ["keep_delivered", "keep_dead", "forget_sessions_after"])
def test_the_example_documents_each_retention(key: str) -> None:
    """config.example.yaml shows each retention key, commented, with its default."""
    lines = [line for line in EXAMPLE.read_text().splitlines() if f"# {key}:" in line]
    assert len(lines) == 1, key
    assert lines[0].split(f"{key}:")[1].split("#")[1].strip(), key


@pytest.mark.parametrize(
    ("start", "end", "length"),
    [(time(22), time(7), 9 * H), (time(9), time(17), 8 * H), (time(7), time(7), 24 * H)],
)
def test_a_window_that_ends_before_it_starts_ends_the_next_day(
    start: time, end: time, length: timedelta
) -> None:
    """A quiet-hours window's length wraps past midnight."""
    assert window_length(QuietHours("w", start, end)) == length


def settings(retention: Retention, *rules: Rule, quiet: QuietHours | None = None) -> Settings:
    """Settings with `retention`, `rules` and an optional quiet-hours window."""
    return Settings(
        factory=FactorySettings(api_key=Secret("k")),
        state_path=Path("x.db"),
        rules=rules,
        quiet_hours={} if quiet is None else {quiet.name: quiet},
        retention=retention,
    )


def rule(**durations: timedelta) -> Rule:
    """A rule named r with the given durations."""
    return Rule(name="r", on=("session.stuck",), notify=("t",), **durations)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (settings(Retention()), []),
        (settings(Retention(), rule(repeat=D, hold_for=2 * H)), []),
        (
            settings(Retention(keep_delivered=H), rule(settle=2 * H)),
            [
                "state.keep_delivered (1h) is shorter than rule 'r' 'settle' (2h): events "
                "waiting to settle or be sent may be deleted before it is used"
            ],
        ),
        (
            settings(Retention(forget_sessions_after=D), rule(repeat=2 * D, cooldown=H)),
            [
                "state.forget_sessions_after (1d) is shorter than rule 'r' 'repeat' (2d): "
                "the rules' memory may be deleted before it is used"
            ],
        ),
        (
            settings(
                Retention(keep_delivered=H, forget_sessions_after=H, keep_dead=timedelta(1)),
                rule(hold_for=30 * timedelta(minutes=1)),
                quiet=QuietHours("night", time(22), time(7)),
            ),
            [
                "state.keep_delivered (1h) is shorter than quiet-hours window 'night' (9h): "
                "events waiting to settle or be sent may be deleted before it is used",
                "state.forget_sessions_after (1h) is shorter than quiet-hours window 'night' "
                "(9h): the rules' memory may be deleted before it is used",
            ],
        ),
        (settings(Retention(keep_dead=timedelta(minutes=1)), rule(cooldown=H)), []),
    ],
)
def test_retention_shorter_than_a_need_for_history_warns(
    config: Settings, expected: list[str]
) -> None:
    """Each retention shorter than the longest window or rule duration warns once, naming it."""
    assert retention_warnings(config) == expected


def test_check_prints_the_retention_warning_and_exits_0(tmp_path: Path) -> None:
    """`check` shows the warning with the file, like every other warning, and exits 0."""
    text = (
        FACTORY
        + "state:\n  forget_sessions_after: 1h\n"
        + "targets:\n  t:\n    type: webhook\n    url: https://hooks.example.com/x\n"
        + "rules:\n  - name: nag\n    on: session.waiting\n    for: 10m\n    repeat: 2h\n"
        + "    notify: t\n"
    )
    path = write(tmp_path, text)
    out = io.StringIO()
    assert check_command(load_settings(path, env={}), path, out) == 0
    assert (
        f"{path}: warning: state.forget_sessions_after (1h) is shorter than rule 'nag' "
        "'repeat' (2h): the rules' memory may be deleted before it is used"
    ) in out.getvalue().splitlines()
