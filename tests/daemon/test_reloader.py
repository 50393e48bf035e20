"""The reloader's decisions: what a change of settings asks each part to do."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from tests.daemon.offline import T0, offline_settings, offline_watcher
from tests.rig import wait_for
from watcher.core.secret import Secret
from watcher.core.settings import (
    DiscoverSettings,
    HttpSettings,
    LogFormat,
    PollSettings,
    Settings,
    WebhookTarget,
)
from watcher.daemon.reloader import SettingsChange, settings_change

CI = WebhookTarget(name="ci", url="https://hooks.example/ci")
OPS = WebhookTarget(name="ops", url="https://hooks.example/ops")
OLD = replace(offline_settings(Path("unused")), targets={"ci": CI, "ops": OPS})


def changed(**what: object) -> Settings:
    """`OLD` with `what` replaced."""
    return replace(OLD, **what)


CASES = [
    ("nothing changed", OLD, SettingsChange()),
    (
        "a new API key: a new client",
        changed(factory=replace(OLD.factory, api_key=Secret("other"))),
        SettingsChange(client=True),
    ),
    (
        "a new rate: the budget's, and a new client",
        changed(factory=replace(OLD.factory, max_requests_per_second=5.0)),
        SettingsChange(client=True, rate=5.0),
    ),
    (
        "a changed target gets a new notifier, a removed one is retired",
        changed(targets={"ci": replace(CI, url="https://hooks.example/new")}),
        SettingsChange(notifiers=("ci",), retired=("ops",)),
    ),
    (
        "a new poll cadence",
        changed(poll=PollSettings(interval=timedelta(seconds=5))),
        SettingsChange(poll=True),
    ),
    ("discovery turned on", changed(discover=DiscoverSettings()), SettingsChange(discovery=True)),
    (
        "http and log format wait for a restart",
        changed(http=HttpSettings("127.0.0.1", 9464), log_format=LogFormat.JSON),
        SettingsChange(restart_only=("http", "log_format")),
    ),
    (
        "the state database and the poll recording wait for a restart",
        changed(state_path=Path("elsewhere.db"), record_path=Path("polls.jsonl")),
        SettingsChange(restart_only=("state.path", "state.record")),
    ),
]


@pytest.mark.parametrize(("new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_a_reload_changes(new: Settings, expected: SettingsChange) -> None:
    """Each kind of change is told to the part it concerns, and nothing else is."""
    assert settings_change(OLD, new, notifiers={"ci", "ops"}) == expected


def test_a_target_without_a_notifier_gets_one() -> None:
    """A target whose notifier is missing is built even when its definition is the same."""
    assert settings_change(OLD, OLD, notifiers={"ci"}).notifiers == ("ops",)


def test_discovery_turned_off_needs_no_pass() -> None:
    """Turning discovery off does not ask for a pass; changing its filter does."""
    on = changed(discover=DiscoverSettings())
    assert not settings_change(on, OLD, notifiers={"ci", "ops"}).discovery
    wider = changed(discover=DiscoverSettings(max_sessions=5))
    assert settings_change(on, wider, notifiers={"ci", "ops"}).discovery


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("what", "key"),
    [
        ({"state_path": Path("moved.db")}, "state.path"),
        ({"record_path": Path("polls.jsonl")}, "state.record"),
    ],
    ids=["state.path", "state.record"],
)
async def test_a_reload_says_what_waits_for_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, what: dict[str, Path], key: str
) -> None:
    """A reload that moves the state database or the recording warns that it waits for
    a restart, and the watcher goes on with the store it has."""
    settings = offline_settings(tmp_path, "s1")
    moved = replace(settings, **what)  # type: ignore[arg-type]
    watcher = offline_watcher(settings, [T0], reload=[moved].pop)
    caplog.set_level(logging.WARNING, logger="watcher.daemon")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watcher.run(handle_signals=False))
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: watcher.scheduler.running))
        assert await watcher.reload()
        watcher.request_stop()
    assert f"{key} changed: that takes effect on the next restart" in caplog.text
    assert watcher.store.location == str(settings.state_path)
    watcher.store.close()


@pytest.mark.anyio
async def test_a_reload_whose_target_cannot_be_built_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A notifier that fails to build (a CA file gone bad since `check`) fails the reload,
    switches nothing, and the daemon goes on; a good reload afterwards applies."""
    settings = offline_settings(tmp_path, "s1")
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate\n")
    hook = WebhookTarget(name="ci", url="https://127.0.0.1:9/hook", ca_file=bad_ca)
    broken = replace(settings, targets={"ci": hook}, sessions=())
    good = replace(settings, sessions=())
    watcher = offline_watcher(settings, [T0], reload=[good, broken].pop)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watcher.run(handle_signals=False))
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: watcher.scheduler.running))
        assert not await watcher.reload()
        assert watcher.settings is settings
        assert "ci" not in watcher.notifiers
        assert await watcher.reload()
        assert watcher.settings is good
        watcher.request_stop()
    assert "reload failed, keeping the running config" in caplog.text
    watcher.store.close()
