"""Live cards across SIGKILLs of a real `factory-watcher run`: never a second card."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import secret_env, start_daemon, write_config
from tests.rig import CHANNEL, Rig, running_rig, wait_for
from watcher.ops.failpoint import ENV_VAR, Failpoint

pytestmark = pytest.mark.slow

RULES = """\
rules:
  - name: story
    on: [session.discovered, session.status_changed, session.messages_added, session.finished]
    notify: team-slack
"""


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback, Slack enforcing one message per second."""
    with running_rig(tmp_path, slack_interval=1.0) as running:
        yield running


def card_config(rig: Rig, directory: Path) -> Path:
    """The process tests' config, with one rule telling s1's story to the Slack target."""
    path = write_config(rig, directory, ["s1"])
    path.write_text(path.read_text().split("rules:")[0] + RULES)
    return path


def card_rows(state: Path) -> list[tuple[str | None, float | None]]:
    """(ts, posting_since) of every stored card."""
    db = sqlite3.connect(state)
    try:
        return db.execute("SELECT ts, posting_since FROM cards").fetchall()
    finally:
        db.close()


def test_sigkill_never_makes_a_second_card(rig: Rig, tmp_path: Path) -> None:
    """Killed after Slack took the card but before its ts was stored, and again mid-run:
    the restarts find the card and keep updating it; exactly one card is ever posted.
    """
    rig.sim.add_session("s1", title="<!channel> nightly refactor", status="pending")
    config = card_config(rig, tmp_path)
    env = secret_env(rig)
    log = tmp_path / "daemon.log"

    crashing = start_daemon(config, env, log, {ENV_VAR: str(Failpoint.AFTER_CARD_POST)})
    assert crashing.process.wait(timeout=20) == -signal.SIGKILL
    assert len(rig.slack.cards) == 1
    ((ts, posting_since),) = card_rows(tmp_path / "state.db")
    assert ts is None  # the window: Slack has the card, we do not know its ts
    assert posting_since is not None

    daemon = start_daemon(config, env, log)
    card_ts = rig.slack.cards[0].ts
    wait_for(lambda: rig.slack.updates, timeout=20, what="the found card brought up to date")
    rig.sim.start_run("s1", messages=0)
    wait_for(lambda: len(rig.slack.replies(CHANNEL, card_ts)) >= 1, timeout=20, what="running line")
    daemon.process.kill()  # SIGKILL mid-run, with the card's ts stored
    assert daemon.process.wait(timeout=10) == -signal.SIGKILL

    rig.sim.add_messages("s1", 3)
    rig.sim.complete_run("s1")
    daemon = start_daemon(config, env, log)

    def finished() -> bool:
        latest = rig.slack.latest(CHANNEL, card_ts)
        return latest is not None and "This run:" in json.dumps(latest.blocks)

    wait_for(finished, timeout=30, what="the final card")
    assert daemon.stop() == 0

    assert len(rig.slack.cards) == 1
    assert {u.ts for u in rig.slack.updates} == {card_ts}
    assert rig.slack.calls("conversations.history") == 1
    replies = [r.text for r in rig.slack.replies(CHANNEL, card_ts)]
    assert any("is now running" in line for line in replies)
    assert any("finished" in line for line in replies)
    for post in rig.slack.messages + rig.slack.updates:
        assert "<!channel>" not in post.text + json.dumps(post.blocks)
    assert card_rows(tmp_path / "state.db") == [(card_ts, None)]
    db = sqlite3.connect(tmp_path / "state.db")
    pending = db.execute("SELECT COUNT(*) FROM outbox WHERE status != 'delivered'").fetchone()
    db.close()
    assert pending[0] == 0
    assert rig.slack.rate_limited == 0
