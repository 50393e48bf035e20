"""`explain SESSION`: what each rule decided about a session, as text or JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.commands.invoke import run_cli
from watcher.commands.exits import EX_OK


def test_explain_a_session_never_polled(config: Path) -> None:
    """Explain says when nothing is stored yet, and reports every rule with its conditions."""
    code, out, _ = run_cli("explain", "nightly", "-c", str(config))
    assert code == EX_OK
    assert out.splitlines()[:2] == [
        "session s1 (nightly)",
        "  never polled successfully (nothing stored yet)",
    ]
    code, out, _ = run_cli("explain", "s1", "--json", "-c", str(config))
    report = json.loads(out)
    assert [r["name"] for r in report["rules"]] == ["done", "loop", "other", "teams", "api", "loud"]
    other = report["rules"][2]
    assert other["conditions_hold"] is False
    assert other["held_back_by"] == ["condition: session 's1' matches none of ['x-*']"]
