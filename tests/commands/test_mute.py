"""`mute`, `mute --list` and `unmute`: stored with their end and reason, usage errors named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.commands.invoke import run_cli
from watcher.commands.exits import EX_OK, EX_USAGE


def test_mute_list_unmute_and_usage_errors(config: Path) -> None:
    """Mutes are stored with their end and reason; bad requests say what is wrong."""
    assert run_cli("mute", "--list", "-c", str(config))[1] == "no mutes in force\n"
    code, out, _ = run_cli("mute", "--rule", "done", "--for", "2h", "-c", str(config))
    assert code == EX_OK
    assert out.startswith("muted rule done until ")
    until = datetime.fromisoformat(out.split(" until ")[1].strip())
    assert timedelta(hours=1, minutes=59) < until - datetime.now(UTC) <= timedelta(hours=2)
    assert run_cli("mute", "nightly", "--reason", "deploy", "-c", str(config))[0] == EX_OK
    listed = run_cli("mute", "--list", "-c", str(config))[1].splitlines()
    assert listed[0].startswith("rule done until 20")
    assert listed[1] == "session nightly until unmuted (deploy)"
    assert run_cli("mute", "-c", str(config))[2] == (
        "factory-watcher: name a SESSION or --rule NAME (one of them)\n"
    )
    code, _, err = run_cli("mute", "--rule", "dnoe", "-c", str(config))
    assert code == EX_USAGE
    assert "no rule matches 'dnoe'" in err
    code, _, err = run_cli("mute", "s1", "--for", "soon", "-c", str(config))
    assert (code, err.split(":")[1].strip()) == (EX_USAGE, "--for")
    assert run_cli("unmute", "--rule", "done", "-c", str(config))[1] == "unmuted rule done\n"
    assert run_cli("unmute", "--rule", "done", "-c", str(config))[1] == "no mute on rule done\n"
    assert run_cli("mute", "--list", "-c", str(config))[1].splitlines() == [
        "session nightly until unmuted (deploy)"
    ]
