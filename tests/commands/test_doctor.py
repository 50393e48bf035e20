"""`factory-watcher doctor`: each cause named in one line, over real HTTP on 127.0.0.1.

The checks run against the loopback rig (the Factory API simulator, fake Slack,
a Slack incoming webhook and a webhook receiver) with a config written by
`init`'s starter text; the verdict wording is tested pure as well.
"""

from __future__ import annotations

import io
import json
import re
import socket
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import anyio
import pytest
import yaml

from tests.process import cli, start_daemon
from tests.rig import (
    API_KEY,
    CHANNEL,
    HOOK_PATH,
    SLACK_TOKEN,
    WEBHOOK_SECRET,
    Rig,
    wait_for,
)
from watcher.commands.diagnosis import (
    Finding,
    NoAnswer,
    SlackReply,
    Verdict,
    clock_finding,
    needed_scopes,
    render_text,
    slack_findings,
    to_json,
)
from watcher.commands.doctor import diagnose, run_doctor
from watcher.commands.starter import SecretSource, StarterChoices, starter_config
from watcher.config.loader import load_settings
from watcher.core.secret import Secret
from watcher.core.settings import SlackTarget
from watcher.store import SqliteStore
from watcher.testing.slackaccess import APP_SCOPES

LINE = re.compile(r"^(ok|warning|problem) +([^:]+): (.+)$")
NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)
MANIFEST = Path(__file__).parents[2] / "docs" / "slack-app-manifest.yaml"


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def env_for(rig: Rig) -> dict[str, str]:
    """The environment the starter config's `${NAME}`s read."""
    return {
        "FACTORY_API_KEY": API_KEY,
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_WEBHOOK_URL": rig.slack_hook.url + HOOK_PATH,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


def choices_for(rig: Rig, tmp_path: Path) -> StarterChoices:
    """A starter config with one target of each kind, all pointing at the rig."""
    return StarterChoices(
        api_url=rig.sim.url,
        slack_channel=CHANNEL,
        slack_api_url=rig.slack.api_url,
        slack_webhook=SecretSource("SLACK_WEBHOOK_URL"),
        webhook_url=rig.receiver.url + "/factory",
        webhook_secret=SecretSource("WEBHOOK_SECRET"),
        state_path=str(tmp_path / "state.db"),
    )


def doctor(
    tmp_path: Path,
    choices: StarterChoices,
    env: dict[str, str],
    *,
    as_json: bool = False,
    send: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[int, str]:
    """Write `choices` as config.yaml and run doctor on it; (exit code, output)."""
    config = tmp_path / "config.yaml"
    config.unlink(missing_ok=True)
    config.write_text(starter_config(choices))
    config.chmod(0o600)
    out = io.StringIO()
    code = run_doctor(config, out=out, as_json=as_json, send=send, now=now, env=env)
    return code, out.getvalue()


def verdicts(text: str) -> list[tuple[str, str, str]]:
    """(verdict, what, detail) of every check line; every line but the summary must be one."""
    lines = text.strip().splitlines()
    found = []
    for line in lines[:-1]:
        match = LINE.match(line)
        assert match, f"not a check line: {line!r}"
        found.append((match[1], match[2], match[3]))
    return found


def test_a_clean_setup_is_all_ok_and_exits_0(rig: Rig, tmp_path: Path) -> None:
    """Every check of a working setup says ok, and the summary says no problems."""
    code, text = doctor(tmp_path, choices_for(rig, tmp_path), env_for(rig))
    assert code == 0, text
    found = verdicts(text)
    assert {verdict for verdict, _, _ in found} == {"ok"}, text
    whats = [what for _, what, _ in found]
    assert whats[:3] == [f"config {tmp_path / 'config.yaml'}", "Factory API", "Factory API key"]
    assert whats[3:8] == [
        "Slack token (target slack)",
        "Slack scopes (target slack)",
        f"Slack channel {CHANNEL} (target slack)",
        "Slack webhook (target slack-webhook)",
        "webhook (target webhook)",
    ]
    assert whats[-2:] == [f"state {tmp_path / 'state.db'}", "clock"]
    assert text.strip().splitlines()[-1] == "no problems"
    assert not (tmp_path / "state.db").exists()  # doctor does not create the database


Setup = Callable[[Rig, StarterChoices, dict[str, str]], StarterChoices]


def wrong_key(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    env["FACTORY_API_KEY"] = "fk-not-the-key-4711"
    return choices


def member_key(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    rig.sim.refuse_key(API_KEY, 403, "Only Managers and Owners may use the sessions API")
    return choices


def no_sessions_feature(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    rig.sim.refuse_key(API_KEY, 403, "The Sessions feature is not enabled for this organization")
    return choices


def api_down(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    return replace(choices, api_url=f"http://127.0.0.1:{free_port()}")


def slack_down(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    return replace(choices, slack_api_url=f"http://127.0.0.1:{free_port()}/api/")


def bad_slack_token(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    env["SLACK_BOT_TOKEN"] = "xoxb-revoked-0000"
    return choices


def no_chat_write(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    rig.slack.set_scopes(*(s for s in APP_SCOPES if s != "chat:write"))
    return choices


def not_in_channel(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    rig.slack.set_channel(CHANNEL, member=False)
    rig.slack.set_scopes(*(s for s in APP_SCOPES if s != "chat:write.public"))
    return choices


def unknown_channel(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    return replace(choices, slack_channel="C0NOSUCH")


def archived_channel(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    rig.slack.set_channel_archived(CHANNEL)
    return choices


def removed_slack_webhook(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    rig.slack_hook.revoke()
    return choices


def webhook_down(rig: Rig, choices: StarterChoices, env: dict[str, str]) -> StarterChoices:
    return replace(choices, webhook_url=f"http://127.0.0.1:{free_port()}/factory")


@pytest.mark.parametrize(
    ("setup", "what", "words"),
    [
        (wrong_key, "Factory API key", ("HTTP 401", "wrong, revoked or expired")),
        (member_key, "Factory API key", ("HTTP 403", "Member or guest", "Sessions API feature")),
        (
            no_sessions_feature,
            "Factory API key",
            ("HTTP 403", "Manager or Owner", "Sessions API feature", "not enabled"),
        ),
        (api_down, "Factory API", ("connection refused", "factory.base_url")),
        (slack_down, "Slack token (target slack)", ("no answer from Slack", "connection refused")),
        (bad_slack_token, "Slack token (target slack)", ("invalid_auth", "Bot User OAuth Token")),
        (no_chat_write, "Slack scopes (target slack)", ("lacks chat:write", "reinstall")),
        (
            not_in_channel,
            f"Slack channel {CHANNEL} (target slack)",
            ("cannot post", "/invite @watcher"),
        ),
        (unknown_channel, "Slack channel C0NOSUCH (target slack)", ("not found", "Channel ID")),
        (archived_channel, f"Slack channel {CHANNEL} (target slack)", ("archived",)),
        (removed_slack_webhook, "Slack webhook (target slack-webhook)", ("HTTP 403",)),
        (webhook_down, "webhook (target webhook)", ("connection refused", "receiver running")),
    ],
)
def test_each_cause_is_named_in_exactly_one_problem_line(
    rig: Rig, tmp_path: Path, setup: Setup, what: str, words: tuple[str, ...]
) -> None:
    """One broken thing gives one problem line naming it and what to do, and exit 1."""
    env = env_for(rig)
    choices = setup(rig, choices_for(rig, tmp_path), env)
    code, text = doctor(tmp_path, choices, env)
    assert code == 1, text
    problems = [(w, d) for verdict, w, d in verdicts(text) if verdict == "problem"]
    assert len(problems) == 1, text
    assert problems[0][0] == what, text
    for word in words:
        assert word in problems[0][1], (word, text)


def test_nothing_printed_contains_a_secret(rig: Rig, tmp_path: Path) -> None:
    """Key, token, webhook URL and secret stay masked, even when a server echoes them."""
    rig.sim.refuse_key(API_KEY, 403, f"key {API_KEY} may not list sessions")
    rig.slack_hook.respond_with(404, f"no_service for {HOOK_PATH}", times=-1)
    rig.receiver.respond_with(500, body=f"refused {WEBHOOK_SECRET}", times=-1)
    secrets = (API_KEY, SLACK_TOKEN, HOOK_PATH, WEBHOOK_SECRET, rig.slack_hook.url + HOOK_PATH)
    for as_json in (False, True):
        code, text = doctor(
            tmp_path, choices_for(rig, tmp_path), env_for(rig), as_json=as_json, send=True
        )
        assert code == 1
        for secret in secrets:
            assert secret not in text
    assert "********" in text  # the echoed key was there, and masked


def test_send_delivers_a_signed_test_to_every_target(rig: Rig, tmp_path: Path) -> None:
    """`--send` posts one test notification per target; the webhook's signature verifies."""
    code, text = doctor(tmp_path, choices_for(rig, tmp_path), env_for(rig), send=True)
    assert code == 0, text
    sent = [(w, d) for v, w, d in verdicts(text) if w.startswith("test notification")]
    assert [d for _, d in sent] == ["delivered"] * 3
    assert len(rig.slack.messages) == 1
    assert len(rig.slack_hook.messages) == 1
    assert [r.signature_valid for r in rig.receiver.requests if r.body] == [True]


def test_a_target_whose_check_or_send_raises_is_its_own_problem_line(
    rig: Rig, tmp_path: Path
) -> None:
    """A target whose probe or notifier raises fails that target's lines, not doctor.

    The config refuses a ca_file without a certificate; one that stopped loading
    after the config was read stands for any error a check did not foresee.
    """
    config = tmp_path / "config.yaml"
    config.write_text(starter_config(choices_for(rig, tmp_path)))
    config.chmod(0o600)
    settings = load_settings(config, env=env_for(rig))
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    broken = replace(settings.targets["webhook"], ca_file=tmp_path / "ca.pem")
    settings = replace(settings, targets={**settings.targets, "webhook": broken})
    findings = anyio.run(diagnose, settings, True, lambda: datetime.now(UTC))
    problems = [f for f in findings if f.verdict is Verdict.PROBLEM]
    assert [(f.check, f.target) for f in problems] == [("target", "webhook"), ("send", "webhook")]
    assert "SSLError" in problems[0].detail
    assert "cannot be built (SSLError)" in problems[1].detail
    sent = [f.detail for f in findings if f.check == "send" and f.verdict is Verdict.OK]
    assert sent == ["delivered"] * 2  # the Slack targets still got theirs


def test_without_send_nothing_is_posted(rig: Rig, tmp_path: Path) -> None:
    """The plain checks post nothing anywhere (the Slack webhook gets an empty payload only)."""
    code, _ = doctor(tmp_path, choices_for(rig, tmp_path), env_for(rig))
    assert code == 0
    assert rig.slack.messages == []
    assert rig.slack_hook.messages == []
    assert [r.body for r in rig.receiver.requests if r.body] == []


@pytest.mark.parametrize(
    ("offset", "verdict", "code"),
    [
        (timedelta(0), "ok", 0),
        (timedelta(minutes=2), "warning", 0),
        (timedelta(minutes=9), "problem", 1),
    ],
)
def test_clock_skew_against_the_servers_date(
    rig: Rig, tmp_path: Path, offset: timedelta, verdict: str, code: int
) -> None:
    """A machine clock minutes off the API's Date header warns, then is a problem past 5 min."""
    got, text = doctor(
        tmp_path,
        choices_for(rig, tmp_path),
        env_for(rig),
        now=lambda: datetime.now(UTC) + offset,
    )
    assert got == code, text
    assert [v for v, what, _ in verdicts(text) if what == "clock"] == [verdict]


def test_json_has_a_stable_shape(rig: Rig, tmp_path: Path) -> None:
    """`--json`: format, ok, counts per verdict, and checks with fixed keys in order."""
    env = env_for(rig)
    choices = webhook_down(rig, choices_for(rig, tmp_path), env)
    code, text = doctor(tmp_path, choices, env, as_json=True)
    document = json.loads(text)
    assert code == 1
    assert set(document) == {"format", "ok", "counts", "checks"}
    assert document["format"] == 1
    assert document["ok"] is False
    assert document["counts"] == {"ok": len(document["checks"]) - 1, "warning": 0, "problem": 1}
    for check in document["checks"]:
        assert set(check) == {"check", "verdict", "target", "what", "detail"}
    problem = next(c for c in document["checks"] if c["verdict"] == "problem")
    assert (problem["check"], problem["target"]) == ("webhook.url", "webhook")


def test_an_invalid_config_is_a_problem_per_line_and_nothing_is_probed(
    rig: Rig, tmp_path: Path
) -> None:
    """A missing variable is reported as the loader words it; no request reaches the API."""
    env = env_for(rig)
    del env["SLACK_BOT_TOKEN"]
    code, text = doctor(tmp_path, choices_for(rig, tmp_path), env)
    assert code == 1
    found = verdicts(text)
    assert [v for v, _, _ in found] == ["problem"]
    assert "SLACK_BOT_TOKEN" in found[0][2]
    assert rig.sim.total_requests == 0


def test_state_database_healthy_or_not(rig: Rig, tmp_path: Path) -> None:
    """An existing store passes the integrity check; a file that is no database is a problem."""
    state = tmp_path / "state.db"
    SqliteStore(state).close()
    code, text = doctor(tmp_path, choices_for(rig, tmp_path), env_for(rig))
    assert code == 0
    assert "integrity check passed" in text
    state.unlink()
    state.write_bytes(b"this is not a database" * 200)
    code, text = doctor(tmp_path, choices_for(rig, tmp_path), env_for(rig))
    assert code == 1
    assert [w for v, w, _ in verdicts(text) if v == "problem"] == [f"state {state}"]


# --- the verdicts, pure --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dates", "verdict", "words"),
    [
        ([("api", format_datetime(NOW - timedelta(seconds=20)))], Verdict.OK, "within 30s"),
        ([("api", format_datetime(NOW + timedelta(minutes=3)))], Verdict.WARNING, "3m00s behind"),
        ([("api", format_datetime(NOW - timedelta(hours=2)))], Verdict.PROBLEM, "2h00m ahead"),
        ([("api", None), ("Slack", format_datetime(NOW))], Verdict.OK, "of Slack"),
        ([("api", "yesterday")], Verdict.WARNING, "not checked"),
        ([], Verdict.WARNING, "not checked"),
    ],
)
def test_clock_finding(dates: list[tuple[str, str | None]], verdict: Verdict, words: str) -> None:
    """The first readable Date header decides; 30 s is ok, 5 min a warning, beyond a problem."""
    found = clock_finding(dates, NOW)
    assert found.verdict is verdict
    assert words in found.detail


@pytest.mark.parametrize(
    ("card", "private", "needed"),
    [
        (False, None, [("chat:write",)]),
        (True, None, [("chat:write",), ("channels:history", "groups:history")]),
        (True, False, [("chat:write",), ("channels:history",)]),
        (True, True, [("chat:write",), ("groups:history",)]),
    ],
)
def test_needed_scopes_follow_the_target_features(
    card: bool, private: bool | None, needed: list[tuple[str, ...]]
) -> None:
    """Posts need chat:write; cards also read history, of the channel's kind."""
    target = SlackTarget(name="s", token=Secret("xoxb-1"), channel=CHANNEL, card=card)
    assert needed_scopes(target, private) == needed


def test_render_text_and_json_agree_on_each_finding() -> None:
    """Each finding is one aligned line; the summary counts problems and warnings."""
    findings = [
        Finding("config", Verdict.OK, "config c.yaml", "valid"),
        Finding("clock", Verdict.WARNING, "clock", "2m00s ahead"),
        Finding("webhook.url", Verdict.PROBLEM, "webhook (target w)", "no answer", "w"),
    ]
    assert render_text(findings).splitlines() == [
        "ok       config c.yaml: valid",
        "warning  clock: 2m00s ahead",
        "problem  webhook (target w): no answer",
        "1 problem, 1 warning",
    ]
    assert to_json(findings)["counts"] == {"ok": 1, "warning": 1, "problem": 1}


# --- the first five minutes, as a new user would go through them -----------------------------


@pytest.mark.slow
def test_init_doctor_run_gives_a_first_notification(rig: Rig, tmp_path: Path) -> None:
    """`init` with flags, `check`, `doctor` (exit 0), then `run` posts the first card to Slack."""
    rig.sim.add_session("first-run", title="Upgrade the parser", status="running")
    env = {"FACTORY_API_KEY": API_KEY, "SLACK_BOT_TOKEN": SLACK_TOKEN}
    init = cli(
        [
            "init",
            "--api-url",
            rig.sim.url,
            "--slack-channel",
            CHANNEL,
            "--slack-api-url",
            rig.slack.api_url,
        ],
        env,
        tmp_path,
    )
    assert init.returncode == 0, init.stderr
    assert "export SLACK_BOT_TOKEN=" in init.stdout
    config = tmp_path / "config.yaml"
    assert config.stat().st_mode & 0o777 == 0o600
    check = cli(["check"], env, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    checked = cli(["doctor"], env, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().splitlines()[-1] == "no problems"
    daemon = start_daemon(config, env, tmp_path / "daemon.log")
    try:
        # The first listing is the baseline; the running session is then polled.
        wait_for(lambda: rig.sim.request_count("first-run") >= 1, 30, "the first poll")
        rig.sim.complete_run("first-run")
        wait_for(lambda: rig.slack.messages, 30, "the first notification")
    finally:
        assert daemon.stop() == 0, daemon.text()
    first = rig.slack.messages[0]
    assert first.channel == CHANNEL
    assert "Upgrade the parser" in first.text


def test_the_manifest_asks_for_exactly_the_scopes_the_features_use() -> None:
    """docs/slack-app-manifest.yaml holds the fake's default scopes: every needed one, no more."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert sorted(scopes) == sorted(APP_SCOPES)
    target = SlackTarget(name="s", token=Secret("xoxb-1"), channel=CHANNEL, card=True)
    used = {s for private in (True, False) for alts in needed_scopes(target, private) for s in alts}
    # Beyond what posting and cards need: chat:write.public (no /invite) and the read scopes
    # doctor's channel lookup uses.
    assert set(scopes) == used | {"chat:write.public", "channels:read", "groups:read"}


@pytest.mark.parametrize(
    ("auth", "info", "verdicts_seen"),
    [
        (
            SlackReply(ok=False, error="HTTP 502"),
            None,
            [("slack.token", "auth.test failed (HTTP 502)")],
        ),
        (
            SlackReply(ok=False, error="echo /services/T0/B0/secret"),
            None,
            [("slack.token", "auth.test failed (no error named)")],
        ),
        (
            SlackReply(ok=True, data={"user": "fw"}, scopes=None),
            NoAnswer("timed out"),
            [
                ("slack.token", "valid: @fw"),
                ("slack.scopes", "not checked"),
                ("slack.channel", "not checked: timed out"),
            ],
        ),
    ],
)
def test_slack_findings_never_quote_what_is_not_an_error_name(
    auth: SlackReply, info: SlackReply | NoAnswer | None, verdicts_seen: list[tuple[str, str]]
) -> None:
    """Odd Slack answers still give one finding each; only error names are quoted."""
    target = SlackTarget(name="s", token=Secret("xoxb-1"), channel=CHANNEL)
    found = slack_findings(target, auth, info)
    assert [
        (f.check, f.detail[: len(words)])
        for f, (_, words) in zip(found, verdicts_seen, strict=True)
    ] == verdicts_seen
