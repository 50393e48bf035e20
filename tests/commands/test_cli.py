"""The `factory-watcher` parser and dispatch: version, and a config that stops every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.commands.invoke import run_cli
from watcher import __version__
from watcher.commands.exits import EX_CONFIG


def test_version_prints_the_program_and_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints `factory-watcher VERSION` and exits 0 (argparse's own exit)."""
    with pytest.raises(SystemExit) as stop:
        run_cli("--version")
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"factory-watcher {__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],
        ["once"],
        ["run"],
        ["test-notify", "ci"],
        ["outbox", "list"],
        ["mute", "--list"],
        ["unmute", "s1"],
        ["explain", "s1"],
        ["replay", "polls.jsonl"],
        ["render", "done"],
        ["status"],
        ["backup", "copy.db"],
    ],
)
def test_missing_config_file_is_a_config_error(tmp_path: Path, argv: list[str]) -> None:
    """A config path that does not exist is reported, not raised, by every command that needs it."""
    code, _, err = run_cli(*argv, "-c", str(tmp_path / "nope.yaml"))
    assert code == EX_CONFIG
    assert "nope.yaml" in err
    assert "Traceback" not in err
