"""`factory-watcher check`: a summary and every warning, or every problem and exit 78."""

from __future__ import annotations

from pathlib import Path

from tests.commands.invoke import run_cli
from tests.process import write_config
from tests.rig import Rig
from watcher.commands.exits import EX_CONFIG, EX_OK


def test_check_accepts_a_good_config(rig: Rig, env: dict[str, str], tmp_path: Path) -> None:
    """`check` prints a summary and exits 0."""
    config = write_config(rig, tmp_path, ["a", "b"])
    code, out, _ = run_cli("check", "-c", str(config))
    assert code == 0
    assert "ok (2 session(s), 4 rule(s), 3 target(s))" in out


def test_check_warns_when_the_budget_is_short_but_exits_0(tmp_path: Path) -> None:
    """Sessions that cannot all be polled at their intervals within the budget: a warning."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "factory:\n  api_key: fk-x\n  max_requests_per_second: 1\n"
        "poll:\n  interval: 30s\n  running: 1s\n"
        "sessions:\n  - id: a\n  - id: b\n"
        "discover:\n  interval: 10s\n"
    )
    config.chmod(0o600)
    code, out, _ = run_cli("check", "-c", str(config))
    assert code == 0
    assert "ok (2 session(s), 0 rule(s), 0 target(s), discovery on)" in out
    assert (
        "warning: at their fastest intervals the configured sessions (and discovery) need "
        "2.10 requests/s, more than factory.max_requests_per_second (1)"
    ) in out


def test_check_lists_every_problem_and_exits_78(tmp_path: Path) -> None:
    """A broken config exits 78 with every problem on its own line and no traceback."""
    config = tmp_path / "config.yaml"
    config.write_text("factory:\n  api_key: x\n  timout: 5s\npoll:\n  interval: soon\n")
    config.chmod(0o600)
    code, _, err = run_cli("check", "-c", str(config))
    assert code == EX_CONFIG
    assert "config.yaml:3: factory.timout: unknown key (did you mean 'timeout'?)" in err
    assert "config.yaml:5: poll.interval:" in err
    assert "Traceback" not in err


def test_check_warns_about_rules_that_cannot_fire_and_unused_names(config: Path) -> None:
    """Warnings name each rule that can never fire and each unused target and window; exit 0."""
    code, out, _ = run_cli("check", "-c", str(config))
    assert code == EX_OK
    warnings = [line.split(": warning: ", 1)[1] for line in out.splitlines()[1:]]
    assert warnings == [
        "rule 'loop' can never fire: a status change never goes from 'idle' to 'idle'",
        "rule 'other' can never fire for the configured sessions: 'when.session' ['x-*'] "
        "matches none of them",
        "rule 'teams' can never fire for the configured sessions: no session has the labels "
        "{'team': 'api'}",
        "rule 'api' can never fire: watcher.api_unavailable concern no session, but the rule "
        "has session conditions under 'when'",
        "rule 'loud' is urgent, so its 'quiet_hours' has no effect",
        "target 'unused' is not used by any rule or report",
        "quiet-hours window 'never' is not used by any rule",
    ]
