"""The config loader: YAML in, frozen Settings or every problem with file:line: key out."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from watcher.config.loader import (
    ConfigError,
    load_settings,
)
from watcher.core.model import EventType
from watcher.core.secret import Secret
from watcher.core.settings import (
    DeliveryLimits,
    DiscoverFilter,
    DiscoverSettings,
    PollSettings,
    Rule,
    Settings,
    SlackTarget,
    SlackWebhookTarget,
    TargetKind,
    WatchedSession,
    WebhookTarget,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"

API_KEY = "fk-test-0123456789"
BOT_TOKEN = "xoxb-test-bot-token"
SLACK_HOOK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {
    "FACTORY_API_KEY": API_KEY,
    "SLACK_BOT_TOKEN": BOT_TOKEN,
    "SLACK_WEBHOOK_URL": SLACK_HOOK,
    "WEBHOOK_SECRET": WHSEC,
}
FACTORY = "factory:\n  api_key: ${FACTORY_API_KEY}\n"
# A self-signed CA certificate (EC P-256, valid to 2126), for `ca_file`, which must load.
TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUNbtI0Vp5yIlGrNoP/sdWQBLl4n0wCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXZmFjdG9yeS13YXRjaGVyIHRlc3QgQ0EwIBcNMjYxMjA1MTE1
NzI4WhgPMjEyNjExMTExMTU3MjhaMCIxIDAeBgNVBAMMF2ZhY3Rvcnktd2F0Y2hl
ciB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEkIOIDuNVsMY8QA8u
bLtWpuBHdTuzIY00xE9ygVMUUMvd219U26U71MzFAiqH19plyN2gsAVRHQBq9HM8
012J3aNTMFEwHQYDVR0OBBYEFHzdSY5UCg5I6AIIfCcDRhUCduiwMB8GA1UdIwQY
MBaAFHzdSY5UCg5I6AIIfCcDRhUCduiwMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDSAAwRQIhANjX/2yHvzUA/Gf/B5ImVdkFgkfrukeFo6mBHhq3+THsAiB4
WdmuZ0SV4+7U9B3tEpBHCvLNbs7oFfL9AcnLen5PfA==
-----END CERTIFICATE-----
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory, so problems name plain `config.yaml`."""
    monkeypatch.chdir(tmp_path)


def write(text: str | bytes, mode: int = 0o600, name: str = "config.yaml") -> Path:
    """Write a config file in the current directory with the given permission bits."""
    path = Path(name)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def load(
    text: str, env: dict[str, str] | None = None, credentials_dir: Path | None = None
) -> Settings:
    """Load `text` as config.yaml (mode 600) with ENV unless told otherwise."""
    env = ENV if env is None else env
    return load_settings(write(text), env=env, credentials_dir=credentials_dir)


def problems_of(
    path: Path, env: dict[str, str] | None = None, credentials_dir: Path | None = None
) -> list[str]:
    """The rendered problems of loading `path`, which must fail."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=ENV if env is None else env, credentials_dir=credentials_dir)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


def problems(
    text: str, env: dict[str, str] | None = None, credentials_dir: Path | None = None
) -> list[str]:
    """The rendered problems of loading `text` as config.yaml (mode 600)."""
    return problems_of(write(text), env, credentials_dir)


# --- the brief's own example -----------------------------------------------


def test_unknown_target_in_rule_names_line_key_and_suggestion() -> None:
    """A typo in a rule's target is reported exactly as `file:line: key: message`."""
    text = (
        FACTORY  # lines 1-2
        + "targets:\n"  # 3
        + "  team-slack:\n"  # 4
        + "    type: slack\n"  # 5
        + "    token: ${SLACK_BOT_TOKEN}\n"  # 6
        + "    channel: C1\n"  # 7
        + "rules:\n"  # 8
        + "  - {name: a, on: session.completed, notify: team-slack}\n"  # 9
        + "  - name: b\n"  # 10
        + "    on: session.deleted\n"  # 11
        + "    notify: [team-slack]\n"  # 12
        + "  - name: c\n"  # 13
        + "    notify: [team-slak]\n"  # 14
        + "    on: session.archived\n"  # 15
    )
    assert problems(text) == [
        "config.yaml:14: rules[2].notify[0]: unknown target 'team-slak' "
        "(did you mean 'team-slack'?)"
    ]


# --- one case per kind of problem --------------------------------------------

SLACK = "targets:\n  s:\n    type: slack\n    token: ${SLACK_BOT_TOKEN}\n    channel: C1\n"
# FACTORY + SLACK fill lines 1-7; rules start on line 8.
RULES = FACTORY + SLACK + "rules:\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            FACTORY + "  api_kye: x\n",
            ["config.yaml:3: factory.api_kye: unknown key (did you mean 'api_key'?)"],
            id="unknown-key-suggestion",
        ),
        pytest.param(
            FACTORY + "poll:\n  zzz: 1\n",
            [
                "config.yaml:4: poll.zzz: unknown key; expected one of: interval, running, "
                "pending, idle, max_idle, archived, jitter"
            ],
            id="unknown-key-choices",
        ),
        pytest.param(
            FACTORY + "targts: {}\n",
            ["config.yaml:3: targts: unknown section 'targts' (did you mean 'targets'?)"],
            id="unknown-section",
        ),
        pytest.param(
            FACTORY + "  timeout: 10 seconds\n",
            [
                "config.yaml:3: factory.timeout: expected a duration such as 500ms, 30s, 5m, "
                "2h or 1d (a plain number means seconds)"
            ],
            id="bad-duration",
        ),
        pytest.param(
            FACTORY + "poll:\n  interval: 0s\n",
            ["config.yaml:4: poll.interval: duration must be longer than 0"],
            id="zero-duration",
        ),
        pytest.param(
            FACTORY + "  concurrency: 0\n",
            ["config.yaml:3: factory.concurrency: must be at least 1"],
            id="concurrency-low",
        ),
        pytest.param(
            FACTORY + "  concurrency: 257\n",
            ["config.yaml:3: factory.concurrency: must be at most 256"],
            id="concurrency-high",
        ),
        pytest.param(
            FACTORY + "  concurrency: many\n",
            ["config.yaml:3: factory.concurrency: expected a whole number"],
            id="not-an-integer",
        ),
        pytest.param(
            FACTORY + "poll:\n  jitter: 70%\n",
            ["config.yaml:4: poll.jitter: jitter must be between 0% and 50%"],
            id="jitter-percent",
        ),
        pytest.param(
            FACTORY + "poll: [30s]\n",
            ["config.yaml:3: poll: expected a mapping"],
            id="section-not-mapping",
        ),
        pytest.param(
            FACTORY + "sessions: {id: a}\n",
            ["config.yaml:3: sessions: expected a list of sessions"],
            id="sessions-not-list",
        ),
        pytest.param(
            "factory:\n  timeout: 5s\n",
            ["config.yaml:1: factory.api_key: is required (or api_key_file)"],
            id="api-key-missing",
        ),
        pytest.param(
            "poll: {interval: 5s}\n",
            ["config.yaml: factory.api_key: is required (or api_key_file)"],
            id="factory-missing",
        ),
        pytest.param(
            FACTORY + "  api_key_file: key.txt\n",
            ["config.yaml:3: factory.api_key_file: give either api_key or api_key_file, not both"],
            id="secret-and-file",
        ),
        pytest.param(
            FACTORY + "  base_url: ftp://api.factory.ai\n",
            ["config.yaml:3: factory.base_url: expected an http:// or https:// URL"],
            id="bad-url",
        ),
        pytest.param(
            FACTORY + "  session_url: https://app/{session}\n",
            ["config.yaml:3: factory.session_url: the only placeholder is {id}"],
            id="session-url-placeholder",
        ),
        pytest.param(
            FACTORY + "sessions:\n  - name: x\n",
            ["config.yaml:4: sessions[0].id: is required"],
            id="session-id-missing",
        ),
        pytest.param(
            FACTORY + "sessions:\n  - id: ''\n",
            ["config.yaml:4: sessions[0].id: must not be empty"],
            id="session-id-empty",
        ),
        pytest.param(
            FACTORY + "sessions:\n  - id: ../sessions\n",
            [
                "config.yaml:4: sessions[0].id: a session id cannot contain '/', '?', '#', '%' "
                "or spaces"
            ],
            id="session-id-path",
        ),
        pytest.param(
            FACTORY + "sessions:\n  - id: a\n  - id: a\n",
            ["config.yaml:5: sessions[1].id: duplicate session id 'a' (first on line 4)"],
            id="session-id-duplicate",
        ),
        pytest.param(
            FACTORY + "sessions:\n  - {id: a, name: n}\n  - {id: b, name: n}\n",
            ["config.yaml:5: sessions[1].name: duplicate session name 'n' (first on line 4)"],
            id="session-name-duplicate",
        ),
        pytest.param(
            FACTORY + "sessions:\n  - id: a\n    labels: {team: [a, b]}\n",
            ["config.yaml:5: sessions[0].labels.team: expected a string"],
            id="label-not-string",
        ),
        pytest.param(
            FACTORY + "sessions:\n  - id: a\n    labels: {'': platform}\n",
            ["config.yaml:5: sessions[0].labels['']: the key must not be empty"],
            id="label-key-empty",
        ),
        pytest.param(
            FACTORY + "targets:\n  t:\n    type: slak\n",
            [
                "config.yaml:5: targets.t.type: unknown target type 'slak' (did you mean "
                "'slack'?); use one of slack, slack_webhook, webhook"
            ],
            id="target-type-unknown",
        ),
        pytest.param(
            FACTORY + "targets:\n  t:\n    type: email\n",
            [
                "config.yaml:5: targets.t.type: unknown target type 'email'; "
                "use one of slack, slack_webhook, webhook"
            ],
            id="target-type-far",
        ),
        pytest.param(
            FACTORY + "targets:\n  t:\n    url: https://x\n",
            ["config.yaml:4: targets.t.type: is required: one of slack, slack_webhook, webhook"],
            id="target-type-missing",
        ),
        pytest.param(
            FACTORY
            + "targets:\n  team slack:\n    type: slack_webhook\n    url: ${SLACK_WEBHOOK_URL}\n",
            [
                "config.yaml:4: targets['team slack']: target names use only letters, digits, "
                "'_', '.' and '-'"
            ],
            id="target-name",
        ),
        pytest.param(
            FACTORY + "targets:\n  s:\n    type: slack\n    token: ${SLACK_BOT_TOKEN}\n",
            ["config.yaml:4: targets.s.channel: is required"],
            id="slack-channel-missing",
        ),
        pytest.param(
            FACTORY + "targets:\n  s:\n    type: slack\n    channel: C1\n",
            ["config.yaml:4: targets.s.token: is required (or token_file)"],
            id="slack-token-missing",
        ),
        pytest.param(
            FACTORY + "targets:\n  s:\n    type: slack_webhook\n    url: ${FACTORY_API_KEY}\n",
            [
                "config.yaml:6: targets.s.url: expected an http:// or https:// URL "
                "(the value is not shown)"
            ],
            id="slack-webhook-not-url",
        ),
        pytest.param(
            FACTORY + "targets:\n  w:\n    type: webhook\n    url: http://hooks.example.com\n",
            [
                "config.yaml:6: targets.w.url: plain http:// sends the payload unencrypted; "
                "use https:// or set 'allow_http: true'"
            ],
            id="webhook-http",
        ),
        pytest.param(
            FACTORY
            + "targets:\n  w:\n    type: webhook\n    url: https://h\n"
            + "    secret: ${SLACK_BOT_TOKEN}\n",
            [
                "config.yaml:7: targets.w.secret: malformed webhook secret: expected 'whsec_' "
                "followed by base64 (the value is not shown)"
            ],
            id="webhook-secret-malformed",
        ),
        pytest.param(
            FACTORY + "targets:\n  w:\n    type: webhook\n    url: https://h\n    max_attempts: 0\n"
            "    max_age: forever\n",
            [
                "config.yaml:7: targets.w.max_attempts: must be at least 1",
                "config.yaml:8: targets.w.max_age: expected a duration such as 500ms, 30s, 5m, "
                "2h or 1d (a plain number means seconds)",
            ],
            id="delivery-limits",
        ),
        pytest.param(
            FACTORY + "targets:\n  w:\n    type: webhook\n    url: https://h\n"
            "    headers: {X Team: a, Webhook-Signature: b}\n",
            [
                "config.yaml:7: targets.w.headers['X Team']: not a valid HTTP header name",
                "config.yaml:7: targets.w.headers.Webhook-Signature: this header is set by the "
                "watcher itself",
            ],
            id="webhook-headers",
        ),
        pytest.param(
            FACTORY
            + "targets:\n  w:\n    type: webhook\n    url: https://h\n    ca_file: ca.pem\n",
            ["config.yaml:7: targets.w.ca_file: CA file not found: ca.pem"],
            id="ca-file-missing",
        ),
        pytest.param(
            RULES + "  - {name: r, on: session.exploded, notify: s}\n",
            [
                "config.yaml:9: rules[0].on: unknown event type 'session.exploded'; expected "
                "one of: session.discovered, session.status_changed, session.completed, "
                "session.messages_added, session.archived, session.deleted, "
                "watcher.api_unavailable, watcher.api_recovered, session.started, "
                "session.finished, session.interrupted, session.waiting, session.stuck, "
                "session.long_running, session.usage_crossed"
            ],
            id="event-type-unknown",
        ),
        pytest.param(
            RULES + "  - name: r\n    on: [session.completed, session.archivd]\n    notify: s\n",
            [
                "config.yaml:10: rules[0].on[1]: unknown event type 'session.archivd' "
                "(did you mean 'session.archived'?)"
            ],
            id="event-type-suggestion",
        ),
        pytest.param(
            RULES + "  - name: r\n    on: session.completed\n    when: {from: running}\n"
            "    notify: s\n",
            [
                "config.yaml:11: rules[0].when.from: 'from' applies only to "
                "session.status_changed events; add that to 'on' or remove 'from'"
            ],
            id="from-without-status-changed",
        ),
        pytest.param(
            RULES + "  - {name: r, on: session.completed, notify: []}\n",
            ["config.yaml:9: rules[0].notify: must not be empty"],
            id="notify-empty",
        ),
        pytest.param(
            RULES + "  - {name: r, on: session.completed, notify: [s, s]}\n",
            ["config.yaml:9: rules[0].notify[1]: target 's' is listed twice"],
            id="notify-twice",
        ),
        pytest.param(
            RULES + "  - {name: r, on: session.completed, notify: nobody}\n",
            ["config.yaml:9: rules[0].notify: unknown target 'nobody'; expected one of: s"],
            id="notify-unknown",
        ),
        pytest.param(
            RULES + "  - {name: r, on: session.completed, notify: s}\n"
            "  - {name: r, on: session.deleted, notify: s}\n",
            ["config.yaml:10: rules[1].name: duplicate rule name 'r' (first on line 9)"],
            id="rule-name-duplicate",
        ),
        pytest.param(
            RULES + "  - {name: r, on: session.completed, notify: s, when: {sesion: a*}}\n",
            ["config.yaml:9: rules[0].when.sesion: unknown key (did you mean 'session'?)"],
            id="nested-unknown-key",
        ),
        pytest.param(
            RULES + "  - {name: r, on: {a: b}, notify: s}\n",
            ["config.yaml:9: rules[0].on: expected a string or a list of strings"],
            id="on-wrong-type",
        ),
        pytest.param(
            "",
            [
                "config.yaml: the top level must be a mapping of sections: factory, poll, "
                "discover, state, sessions, targets, quiet_hours, rules, reports, http, log_format"
            ],
            id="empty-file",
        ),
        pytest.param(
            "- factory\n",
            [
                "config.yaml:1: the top level must be a mapping of sections: factory, poll, "
                "discover, state, sessions, targets, quiet_hours, rules, reports, http, log_format"
            ],
            id="top-level-list",
        ),
        pytest.param(
            "factory:\n  api_key: [unclosed\n",
            [
                "config.yaml:3: invalid YAML: while parsing a flow sequence, expected ',' or "
                "']', but got '<stream end>'"
            ],
            id="yaml-syntax",
        ),
        pytest.param(
            FACTORY + "---\npoll: {}\n",
            [
                "config.yaml:3: invalid YAML: expected a single document in the stream, but "
                "found another document"
            ],
            id="two-documents",
        ),
    ],
)
def test_each_problem_is_reported_with_file_line_and_key(text: str, expected: list[str]) -> None:
    """Each kind of mistake yields exactly its problem, located by line and key path."""
    Path("key.txt").write_text("unused")
    assert problems(text) == expected


def test_all_problems_are_reported_at_once_in_file_order() -> None:
    """One load reports every problem of every section, sorted by line."""
    text = (
        "factory:\n"  # 1
        "  api_key: ${FACTORY_API_KEY}\n"  # 2
        "  timeout: soon\n"  # 3
        "poll:\n"  # 4
        "  jitter: 60%\n"  # 5
        "sessions:\n"  # 6
        "  - id: a\n"  # 7
        "  - id: a\n"  # 8
        "targets:\n"  # 9
        "  w:\n"  # 10
        "    type: webhook\n"  # 11
        "    url: http://h\n"  # 12
        "rules:\n"  # 13
        "  - {name: r, on: session.gone, notify: v}\n"  # 14
        "colour: blue\n"  # 15
    )
    assert problems(text) == [
        "config.yaml:3: factory.timeout: expected a duration such as 500ms, 30s, 5m, 2h or 1d "
        "(a plain number means seconds)",
        "config.yaml:5: poll.jitter: jitter must be between 0% and 50%",
        "config.yaml:8: sessions[1].id: duplicate session id 'a' (first on line 7)",
        "config.yaml:12: targets.w.url: plain http:// sends the payload unencrypted; use "
        "https:// or set 'allow_http: true'",
        "config.yaml:14: rules[0].on: unknown event type 'session.gone'; expected one of: "
        "session.discovered, session.status_changed, session.completed, "
        "session.messages_added, session.archived, session.deleted, "
        "watcher.api_unavailable, watcher.api_recovered, session.started, "
        "session.finished, session.interrupted, session.waiting, session.stuck, "
        "session.long_running, session.usage_crossed",
        "config.yaml:14: rules[0].notify: unknown target 'v'; expected one of: w",
        "config.yaml:15: colour: unknown section 'colour'; expected one of: factory, poll, "
        "discover, state, sessions, targets, quiet_hours, rules, reports, http, log_format",
    ]


# --- defaults and a complete file --------------------------------------------


def test_minimal_file_gets_every_default() -> None:
    """Only the API key is required; everything else has the documented default."""
    settings = load(FACTORY, env={"FACTORY_API_KEY": API_KEY})
    factory = settings.factory
    assert factory.api_key.reveal() == API_KEY
    assert factory.base_url == "https://api.factory.ai"
    assert factory.timeout == timedelta(seconds=10)
    assert factory.session_url == "https://app.factory.ai/sessions/{id}"
    assert factory.concurrency == 64
    assert factory.unavailable_after == timedelta(minutes=2)
    assert settings.poll.interval == timedelta(seconds=30)
    assert settings.poll.jitter == pytest.approx(0.1)
    assert settings.state_path == Path.cwd() / "factory-watcher.db"
    assert (settings.sessions, settings.targets, settings.rules) == ((), {}, ())
    assert settings.source == Path("config.yaml")


@pytest.mark.parametrize(
    ("state", "env", "expected"),
    [
        ("", {}, "{cwd}/factory-watcher.db"),
        ("", {"STATE_DIRECTORY": "/var/lib/fw"}, "/var/lib/fw/state.db"),
        ("", {"STATE_DIRECTORY": "/var/lib/fw:/var/lib/other"}, "/var/lib/fw/state.db"),
        ("state:\n  path: data/w.db\n", {"STATE_DIRECTORY": "/var/lib/fw"}, "{cwd}/data/w.db"),
        ("state:\n  path: /srv/w.db\n", {}, "/srv/w.db"),
        ("state:\n", {}, "{cwd}/factory-watcher.db"),
    ],
)
def test_state_path(state: str, env: dict[str, str], expected: str) -> None:
    """state.path, else $STATE_DIRECTORY/state.db, else ./factory-watcher.db; made absolute."""
    settings = load(FACTORY + state, env={"FACTORY_API_KEY": API_KEY, **env})
    assert settings.state_path == Path(expected.format(cwd=Path.cwd()))


FULL = """\
factory:
  base_url: http://127.0.0.1:8080/
  api_key: ${FACTORY_API_KEY}
  timeout: 3s
  session_url: http://127.0.0.1:9/s/{id}
  concurrency: 4
  unavailable_after: 90s
poll:
  interval: 15s
  jitter: 0.2
sessions:
  - id: 8f1c2a
    name: nightly
    interval: 500ms
    labels: {team: platform, on: no}
  - id: 0123
targets:
  team-slack:
    type: slack
    token: ${SLACK_BOT_TOKEN}
    channel: C0123ABCD
    api_url: http://127.0.0.1:9/api/
    max_attempts: 3
    max_age: 1h
  ops:
    type: slack_webhook
    url: ${SLACK_WEBHOOK_URL}
  ci.hook:
    type: webhook
    url: http://127.0.0.1:9/hook
    allow_http: yes
    secret: ${WEBHOOK_SECRET}
    headers: {X-Team: platform}
    ca_file: ca.pem
rules:
  - name: finished
    on: session.status_changed
    when:
      from: running
      to: [idle, pending]
      session: ["8f1c*", nightly-*]
      labels: {team: platform}
    notify: [team-slack, ci.hook]
  - name: gone
    on: [session.archived, session.deleted]
    notify: ops
"""


@pytest.mark.parametrize("content", ["", "ca", "-----BEGIN CERTIFICATE-----\n"])
def test_a_ca_file_without_a_certificate_is_a_problem(content: str) -> None:
    """A ca_file must load as CA certificates at check time, not first when run builds it."""
    Path("ca.pem").write_text(content)
    text = FACTORY + "targets:\n  w:\n    type: webhook\n    url: https://h\n    ca_file: ca.pem\n"
    assert problems(text) == [
        "config.yaml:7: targets.w.ca_file: no CA certificate in ca.pem "
        "(expected PEM: -----BEGIN CERTIFICATE-----)"
    ]


def test_complete_file_builds_every_value() -> None:
    """Every key of the v1 contract lands in the matching frozen value."""
    Path("ca.pem").write_text(TEST_CA_PEM)
    settings = load(FULL)
    assert settings.factory.base_url == "http://127.0.0.1:8080"
    assert settings.factory.timeout == timedelta(seconds=3)
    assert settings.factory.session_url == "http://127.0.0.1:9/s/{id}"
    assert settings.factory.concurrency == 4
    assert settings.factory.unavailable_after == timedelta(seconds=90)
    assert settings.poll.interval == timedelta(seconds=15)
    assert settings.poll.jitter == pytest.approx(0.2)
    assert settings.sessions == (
        WatchedSession(
            id="8f1c2a",
            name="nightly",
            interval=timedelta(milliseconds=500),
            labels={"team": "platform", "on": "no"},
        ),
        WatchedSession(id="0123"),
    )
    slack, ops, hook = (settings.targets[n] for n in ("team-slack", "ops", "ci.hook"))
    assert isinstance(slack, SlackTarget)
    assert (slack.name, slack.channel, slack.api_url) == (
        "team-slack",
        "C0123ABCD",
        "http://127.0.0.1:9/api/",
    )
    assert slack.token.reveal() == BOT_TOKEN
    assert slack.limits == DeliveryLimits(max_attempts=3, max_age=timedelta(hours=1))
    assert isinstance(ops, SlackWebhookTarget)
    assert ops.url.reveal() == SLACK_HOOK
    assert ops.limits == DeliveryLimits()
    assert isinstance(hook, WebhookTarget)
    assert hook.kind is TargetKind.WEBHOOK
    assert (hook.url, hook.allow_http, dict(hook.headers)) == (
        "http://127.0.0.1:9/hook",
        True,
        {"X-Team": "platform"},
    )
    assert hook.secret is not None
    assert hook.secret.reveal() == WHSEC
    assert hook.ca_file == Path("ca.pem")
    assert settings.rules == (
        Rule(
            name="finished",
            on=(EventType.STATUS_CHANGED,),
            notify=("team-slack", "ci.hook"),
            from_status=("running",),
            to_status=("idle", "pending"),
            session_globs=("8f1c*", "nightly-*"),
            labels={"team": "platform"},
        ),
        Rule(
            name="gone",
            on=(EventType.ARCHIVED, EventType.DELETED),
            notify=("ops",),
        ),
    )


def test_scalars_stay_the_text_that_was_written() -> None:
    """`on`, `no` and `0123` are strings, not YAML 1.1 booleans or octal numbers."""
    settings = load(FULL.replace("    ca_file: ca.pem\n", ""))
    assert settings.sessions[0].labels == {"team": "platform", "on": "no"}
    assert settings.sessions[1].id == "0123"
    assert settings.rules[0].on == ("session.status_changed",)


def test_anchors_and_merge_keys_share_settings() -> None:
    """Aliases and `<<` merges work; keys given explicitly win over merged ones."""
    text = (
        FACTORY
        + "targets:\n"
        + "  a: &base\n"
        + "    type: webhook\n"
        + "    url: https://a.example\n"
        + "    max_attempts: 5\n"
        + "  b:\n"
        + "    <<: *base\n"
        + "    url: https://b.example\n"
        + "    max_attempts: many\n"
    )
    assert problems(text) == ["config.yaml:11: targets.b.max_attempts: expected a whole number"]
    settings = load(text.replace("    max_attempts: many\n", ""))
    b = settings.targets["b"]
    assert isinstance(b, WebhookTarget)
    assert (b.url, b.limits.max_attempts) == ("https://b.example", 5)


# --- interpolation -------------------------------------------------------------


def test_interpolation_fills_any_string_value() -> None:
    """`${NAME}` is replaced anywhere in a string, several times, in lists and mappings."""
    env = {**ENV, "ID": "8f1c2a", "TEAM": "platform", "HOST": "h.example", "IV": "7"}
    settings = load(
        FACTORY
        + "poll: {interval: '${IV}'}\n"
        + "sessions:\n  - id: ${ID}\n    labels: {team: '${TEAM}-${TEAM}'}\n"
        + "targets:\n  w: {type: webhook, url: 'https://${HOST}/p/${ID}'}\n",
        env=env,
    )
    assert settings.poll.interval == timedelta(seconds=7)
    assert settings.sessions[0].id == "8f1c2a"
    assert settings.sessions[0].labels == {"team": "platform-platform"}
    assert settings.targets["w"] == WebhookTarget(name="w", url="https://h.example/p/8f1c2a")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$${HOME}", "${HOME}"),
        ("a$${B}c${X}", "a${B}c1"),
        ("cost: $5", "cost: $5"),
        ("$$", "$$"),
        ("${X}${X}", "11"),
    ],
)
def test_double_dollar_escapes_interpolation(value: str, expected: str) -> None:
    """`$${` is a literal `${`; a `$` not followed by `{` is left alone."""
    settings = load(FACTORY + f"sessions:\n  - id: a\n    name: '{value}'\n", env={**ENV, "X": "1"})
    assert settings.sessions[0].name == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${MISSING}", "environment variable 'MISSING' is not set"),
        ("x${MISSING}y", "environment variable 'MISSING' is not set"),
        ("${1ABC}", "invalid variable reference: names are letters, digits and '_'"),
        ("${}", "invalid variable reference: names are letters, digits and '_'"),
        ("${OPEN", "unterminated '${' (write '$${' for a literal '${')"),
    ],
)
def test_interpolation_problems_name_line_key_and_variable(value: str, message: str) -> None:
    """A reference that cannot be filled is one problem at its line and key, not several."""
    text = FACTORY + f"poll:\n  interval: '{value}'\n"
    assert problems(text) == [f"config.yaml:4: poll.interval: {message}"]


def test_missing_variables_are_all_reported() -> None:
    """Every missing variable is reported, each at its own key, and nothing else about them."""
    text = "factory:\n  api_key: ${NO_KEY}\nsessions:\n  - id: ${NO_HOST}-${NO_ID}\n"
    assert problems(text, env={}) == [
        "config.yaml:2: factory.api_key: environment variable 'NO_KEY' is not set",
        "config.yaml:4: sessions[0].id: environment variable 'NO_HOST' is not set",
        "config.yaml:4: sessions[0].id: environment variable 'NO_ID' is not set",
    ]


# --- secrets from files ------------------------------------------------------


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    """A credentials directory like systemd's $CREDENTIALS_DIRECTORY."""
    directory = tmp_path / "creds"
    directory.mkdir()
    return directory


FILE_KEY = "factory:\n  api_key_file: api.key\n"


def test_credentials_directory_wins_over_config_directory(creds: Path) -> None:
    """A relative *_file is looked up in the credentials directory first."""
    (creds / "api.key").write_text("fk-from-creds\n")
    Path("api.key").write_text("fk-beside-config\n")
    settings = load(FILE_KEY, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert settings.factory.api_key.reveal() == "fk-from-creds"


def test_credentials_dir_argument_overrides_environment(creds: Path, tmp_path: Path) -> None:
    """An explicit credentials_dir is used instead of $CREDENTIALS_DIRECTORY."""
    (creds / "api.key").write_text("fk-argument")
    settings = load(
        FILE_KEY, env={"CREDENTIALS_DIRECTORY": str(tmp_path / "elsewhere")}, credentials_dir=creds
    )
    assert settings.factory.api_key.reveal() == "fk-argument"


def test_secret_file_falls_back_to_config_directory(creds: Path) -> None:
    """A relative *_file missing from credentials is read next to the config file."""
    Path("conf").mkdir()
    Path("conf/api.key").write_text("fk-beside-config\n")
    path = write(FILE_KEY, name="conf/config.yaml")
    settings = load_settings(path, env={}, credentials_dir=creds)
    assert settings.factory.api_key.reveal() == "fk-beside-config"


def test_absolute_secret_file(tmp_path: Path) -> None:
    """An absolute *_file is read as it is."""
    (tmp_path / "abs.key").write_text("fk-absolute")
    settings = load(f"factory:\n  api_key_file: {tmp_path / 'abs.key'}\n", env={})
    assert settings.factory.api_key.reveal() == "fk-absolute"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"fk-1\n", "fk-1"),
        (b"fk-1\n\n", "fk-1\n"),
        (b"fk-1", "fk-1"),
        (b" fk-1 \n", " fk-1 "),
    ],
)
def test_secret_file_loses_one_trailing_newline(content: bytes, expected: str) -> None:
    """Exactly one trailing newline is stripped; nothing else is touched."""
    Path("api.key").write_bytes(content)
    assert load(FILE_KEY, env={}).factory.api_key.reveal() == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "secret file not found: {creds}/api.key or api.key"),
        (b"\n", "secret file api.key is empty"),
        (b"\xff\xfe-not-utf8", "secret file api.key is not UTF-8 text"),
        (b"x" * (64 * 1024 + 1), "secret file api.key is larger than 64 KiB"),
    ],
)
def test_secret_file_problems_name_the_path(
    creds: Path, content: bytes | None, message: str
) -> None:
    """An unusable secret file is a problem naming its path and never its content."""
    if content is not None:
        Path("api.key").write_bytes(content)
    assert problems(FILE_KEY, env={}, credentials_dir=creds) == [
        f"config.yaml:2: factory.api_key_file: {message.format(creds=creds)}"
    ]


def test_unreadable_secret_file_is_a_problem() -> None:
    """A secret path that cannot be read (here a directory) is reported with the reason."""
    Path("api.key").mkdir()
    assert problems(FILE_KEY, env={}) == [
        "config.yaml:2: factory.api_key_file: cannot read secret file api.key: Is a directory"
    ]


def test_every_secret_can_come_from_a_file() -> None:
    """token_file, url_file and secret_file work like api_key_file."""
    for name, value in [
        ("api.key", API_KEY),
        ("bot.token", BOT_TOKEN),
        ("hook.url", SLACK_HOOK),
        ("hook.secret", WHSEC),
    ]:
        Path(name).write_text(value + "\n")
    settings = load(
        FILE_KEY
        + "targets:\n"
        + "  s: {type: slack, token_file: bot.token, channel: C1}\n"
        + "  o: {type: slack_webhook, url_file: hook.url}\n"
        + "  w: {type: webhook, url: 'https://h', secret_file: hook.secret}\n",
        env={},
    )
    s, o, w = settings.targets["s"], settings.targets["o"], settings.targets["w"]
    assert isinstance(s, SlackTarget)
    assert isinstance(o, SlackWebhookTarget)
    assert isinstance(w, WebhookTarget)
    assert w.secret is not None
    assert (s.token.reveal(), o.url.reveal(), w.secret.reveal()) == (BOT_TOKEN, SLACK_HOOK, WHSEC)


def test_malformed_secret_from_file_names_the_file_key() -> None:
    """A bad webhook secret read from a file is reported at secret_file, without its value."""
    Path("hook.secret").write_text("whsec_not*base64\n")
    text = FACTORY + "targets:\n  w: {type: webhook, url: 'https://h', secret_file: hook.secret}\n"
    found = problems(text)
    assert found == [
        "config.yaml:4: targets.w.secret_file: malformed webhook secret: expected 'whsec_' "
        "followed by base64 (the value is not shown)"
    ]
    assert "not*base64" not in "\n".join(found)


# --- inline secrets and file permissions -------------------------------------

INLINE = {
    "api_key": "factory:\n  api_key: fk-inline-value\n",
    "token": FACTORY + "targets:\n  s: {type: slack, channel: C1, token: xoxb-inline}\n",
    "url": FACTORY + "targets:\n  s: {type: slack_webhook, url: 'https://hooks.slack.com/x'}\n",
    "secret": FACTORY + f"targets:\n  s: {{type: webhook, url: 'https://h', secret: {WHSEC}}}\n",
}
INLINE_KEYS = {
    "api_key": (2, "factory.api_key"),
    "token": (4, "targets.s.token"),
    "url": (4, "targets.s.url"),
    "secret": (4, "targets.s.secret"),
}


@pytest.mark.parametrize("key", sorted(INLINE))
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_inline_secret_in_readable_file_is_refused(key: str, mode: int) -> None:
    """A literal secret in a file group or others can read names the key and the chmod fix."""
    line, where = INLINE_KEYS[key]
    path = write(INLINE[key], mode=mode)
    assert problems_of(path) == [
        f"config.yaml:{line}: {where}: secret written inline in a file that group or others "
        f"can read; run 'chmod 600 config.yaml', or use ${{VAR}} or {key}_file instead"
    ]


@pytest.mark.parametrize("key", sorted(INLINE))
def test_inline_secret_in_private_file_is_accepted(key: str) -> None:
    """A literal secret is fine in a file only its owner can read."""
    load_settings(write(INLINE[key], mode=0o600), env=ENV)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(FACTORY, id="env"),
        pytest.param("factory:\n  api_key_file: api.key\n", id="file"),
        pytest.param(FACTORY + "sessions:\n  - id: a\n    name: not-a-secret\n", id="no-secret"),
    ],
)
def test_secrets_from_env_or_file_need_no_chmod(text: str) -> None:
    """A world-readable file is fine when secrets come from ${ENV} or *_file."""
    Path("api.key").write_text("fk-file")
    load_settings(write(text, mode=0o644), env=ENV)


# --- YAML hardening ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            FACTORY + "poll:\n  interval: 5s\n  jitter: 5%\n  interval: 9s\n",
            ["config.yaml:6: poll.interval: duplicate key 'interval' (first defined on line 4)"],
            id="duplicate-key",
        ),
        pytest.param(
            FACTORY + "poll: !!python/object/apply:os.system ['true']\n",
            [
                "config.yaml:3: poll: tag '!!python/object/apply:os.system' is not allowed; "
                "only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map are"
            ],
            id="python-tag",
        ),
        pytest.param(
            FACTORY + "poll:\n  interval: !custom 5s\n",
            [
                "config.yaml:4: poll.interval: tag '!custom' is not allowed; only !!str, "
                "!!int, !!float, !!bool, !!null, !!seq and !!map are"
            ],
            id="local-tag",
        ),
        pytest.param(
            FACTORY + "poll: {interval: !!int lots, jitter: !!float 10%}\n",
            [
                "config.yaml:3: poll.interval: value is not a valid !!int",
                "config.yaml:3: poll.jitter: value is not a valid !!float",
            ],
            id="bad-int-tag",
        ),
        pytest.param(
            FACTORY + "sessions: &s\n  - id: a\n    more: *s\n",
            ["config.yaml:3: sessions[0].more: recursive alias: a node cannot contain itself"],
            id="recursive-alias",
        ),
        pytest.param(
            FACTORY + "sessions: " + "[" * 70 + "]" * 70 + "\n",
            ["config.yaml:3: invalid YAML: nested deeper than 64 levels"],
            id="deep-nesting",
        ),
        pytest.param(
            FACTORY + "? [a, b]\n: c\n",
            ["config.yaml:3: mapping keys must be plain strings"],
            id="complex-key",
        ),
        pytest.param(
            FACTORY + "poll: *nothing\n",
            ["config.yaml:3: invalid YAML: found undefined alias 'nothing'"],
            id="undefined-alias",
        ),
        pytest.param(
            FACTORY + "poll:\n  interval: 5s\x07\n",
            ["config.yaml:4: invalid YAML: character #x0007 not allowed"],
            id="control-character",
        ),
    ],
)
def test_unsafe_yaml_is_refused(text: str, expected: list[str]) -> None:
    """Duplicate keys, foreign tags, recursive or deep structures are problems, not objects."""
    assert problems(text) == expected


def test_billion_laughs_fails_fast() -> None:
    """Aliases that would expand to a billion nodes are refused well under a second."""
    lines = ["factory:", "  api_key: ${FACTORY_API_KEY}", "a0: &a0 [lol, lol, lol, lol, lol]"]
    for level in range(1, 12):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    path = write("\n".join(lines) + "\n")
    started = time.perf_counter()
    found = problems_of(path)
    assert time.perf_counter() - started < 1.0
    assert len(found) == 1
    assert "aliases expand to more than 100000 nodes" in found[0]


def test_file_over_one_mib_is_refused_before_parsing() -> None:
    """A file over 1 MiB is refused by size, whatever it contains."""
    path = write(FACTORY + "# " + "x" * (1 << 20) + "\n: [\n")
    assert problems_of(path) == [
        f"config.yaml: file is larger than 1 MiB ({path.stat().st_size} bytes)"
    ]


def test_file_of_exactly_one_mib_is_parsed() -> None:
    """The limit is inclusive: 1 MiB of valid YAML loads."""
    head = FACTORY + "# "
    path = write(head + "x" * ((1 << 20) - len(head) - 1) + "\n")
    assert path.stat().st_size == 1 << 20
    load_settings(path, env=ENV)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda: None, "config.yaml: cannot read the config file: No such file or directory"),
        (lambda: Path("config.yaml").mkdir(), "config.yaml: not a regular file"),
        (lambda: os.mkfifo("config.yaml"), "config.yaml: not a regular file"),
        (
            lambda: Path("config.yaml").write_bytes(b"factory:\n  api_key: \xe9t\xe9\n"),
            "config.yaml:2: not UTF-8 text",
        ),
    ],
)
def test_unusable_file_is_a_problem_not_a_traceback(
    setup: Callable[[], object], message: str
) -> None:
    """Missing, special or non-UTF-8 files become a ConfigError naming the file."""
    setup()
    assert problems_of(Path("config.yaml")) == [message]


def test_utf8_bom_is_accepted() -> None:
    """A UTF-8 byte order mark (Windows editors) is not a problem."""
    path = write(b"\xef\xbb\xbf" + FACTORY.encode())
    assert load_settings(path, env=ENV).factory.api_key.reveal() == API_KEY


# --- secrets never leak ------------------------------------------------------


def test_loaded_settings_never_show_secrets() -> None:
    """repr and str of the loaded settings mask every secret value."""
    Path("ca.pem").write_text(TEST_CA_PEM)
    settings = load(FULL)
    for shown in (repr(settings), str(settings)):
        for secret in (API_KEY, BOT_TOKEN, SLACK_HOOK, WHSEC):
            assert secret not in shown
    assert isinstance(settings.factory.api_key, Secret)


def test_problems_never_show_secret_values() -> None:
    """Even when a secret is wrong, no problem message quotes it."""
    secrets = {
        "FACTORY_API_KEY": "fk-zzz-visible",
        "SLACK_WEBHOOK_URL": "not a url secretvalue",
        "WEBHOOK_SECRET": "whsec_?secretvalue",
    }
    text = (
        "factory:\n"
        "  api_key: ${FACTORY_API_KEY}\n"
        "  api_key_file: also.key\n"
        "targets:\n"
        "  o: {type: slack_webhook, url: '${SLACK_WEBHOOK_URL}'}\n"
        "  w: {type: webhook, url: 'https://h', secret: '${WEBHOOK_SECRET}'}\n"
        "  i: {type: slack, channel: C1, token: !!int xoxb-inline-secretvalue}\n"
    )
    path = write(text, mode=0o644)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=secrets)
    shown = str(caught.value) + repr(caught.value)
    assert "secretvalue" not in shown
    assert "zzz-visible" not in shown
    assert "config.yaml:7: targets.i.token: value is not a valid !!int" in shown


# --- the example file --------------------------------------------------------

DOCUMENTED_KEYS = [
    # factory
    "base_url", "api_key", "api_key_file", "timeout", "session_url", "concurrency",
    "unavailable_after",
    "max_requests_per_second",
    # poll, state
    "poll", "interval", "jitter", "running", "pending", "idle", "max_idle", "archived",
    "state", "path",
    # discover
    "discover", "include", "title", "tags", "computer", "created_within", "max_sessions",
    # sessions
    "sessions", "id", "name", "labels",
    # targets
    "targets", "type", "token", "token_file", "channel", "api_url", "url", "url_file",
    "secret", "secret_file", "headers", "allow_http", "ca_file", "max_attempts", "max_age",
    # rules
    "rules", "on", "when", "from", "to", "session", "notify",
]  # fmt: skip


def test_example_file_loads_with_its_environment() -> None:
    """config.example.yaml is a valid config once its four variables are set."""
    settings = load_settings(EXAMPLE, env=ENV)
    assert settings.factory.api_key.reveal() == API_KEY
    assert {name: t.kind for name, t in settings.targets.items()} == {
        "team-slack": TargetKind.SLACK,
        "ops": TargetKind.SLACK_WEBHOOK,
        "ci": TargetKind.WEBHOOK,
    }
    assert [r.name for r in settings.rules] == [
        "finished",
        "gone",
        "done",
        "stuck",
        "spend",
        "answered",
    ]
    assert settings.source == EXAMPLE


def test_example_file_needs_its_environment() -> None:
    """Without the variables, the example names each one that is missing."""
    found = problems_of(EXAMPLE, env={})
    for name in ENV:
        assert any(f"environment variable '{name}' is not set" in p for p in found)


@pytest.mark.parametrize("key", DOCUMENTED_KEYS)
def test_example_file_documents_every_key(key: str) -> None:
    """Every key of the contract appears in the example with a comment on its line."""
    lines = [
        line.lstrip("#- ")
        for line in EXAMPLE.read_text().splitlines()
        if line.lstrip("#- ").startswith(f"{key}:")
    ]
    assert lines, key
    assert any("#" in line for line in lines), key


# --- robustness --------------------------------------------------------------


def _paths(value: object, at: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path of a plain YAML value."""
    found = [at] if at else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*at, index))
    return found


def _replaced(value: object, at: tuple[str | int, ...], new: object) -> object:
    if not at:
        return new
    if isinstance(value, dict):
        return {k: _replaced(v, at[1:], new) if k == at[0] else v for k, v in value.items()}
    assert isinstance(value, list)
    return [_replaced(v, at[1:], new) if i == at[0] else v for i, v in enumerate(value)]


# Every scalar reaches the loader as text, so one odd string stands for all numbers and booleans.
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present: 5x faster
JUNK: list[object] = [None, [], {"x": ["y"]}, "", "-1"]


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_any_wrong_value_anywhere_is_a_config_error(junk: object) -> None:
    """Replacing any value of a valid file by junk gives Settings or ConfigError, never a crash."""
    Path("ca.pem").write_text(TEST_CA_PEM)
    valid = yaml.load(FULL, Loader=yaml.BaseLoader)  # plain strings, like the loader's view
    for at in _paths(valid):
        path = write(yaml.dump(_replaced(valid, at, junk), Dumper=DUMPER))
        try:
            load_settings(path, env=ENV)
        except ConfigError as error:
            found = error.problems
        else:
            continue
        assert found, at
        assert all(p.line is None or p.line >= 1 for p in found), at


def test_slack_pacing_defaults_to_one_second_and_can_be_set() -> None:
    """Slack targets pace at Slack's one message per second unless told otherwise."""
    text = FACTORY + (
        "targets:\n"
        "  a: {type: slack, token: xoxb-1, channel: C1}\n"
        "  b: {type: slack, token: xoxb-1, channel: C1, min_interval: 50ms}\n"
        "  c: {type: slack_webhook, url: 'https://hooks.slack.com/x', min_interval: 2s}\n"
    )
    targets = load(text).targets
    assert [targets[n].min_interval for n in "abc"] == [
        timedelta(seconds=1),
        timedelta(milliseconds=50),
        timedelta(seconds=2),
    ]


def test_slack_cards_and_threads_are_on_unless_turned_off() -> None:
    """`card` and `thread` default to true on slack targets; each can be turned off."""
    text = FACTORY + (
        "targets:\n"
        "  a: {type: slack, token: xoxb-1, channel: C1}\n"
        "  b: {type: slack, token: xoxb-1, channel: C1, card: false}\n"
        "  c: {type: slack, token: xoxb-1, channel: C1, thread: false}\n"
    )
    targets = load(text).targets
    shown = [(t.card, t.thread) for t in (targets[n] for n in "abc") if isinstance(t, SlackTarget)]
    assert shown == [(True, True), (False, True), (True, False)]


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("{type: slack, token: xoxb-1, channel: C1, card: maybe}", "card"),
        ("{type: slack_webhook, url: 'https://hooks.slack.com/x', card: true}", "card"),
    ],
)
def test_card_settings_are_checked(entry: str, key: str) -> None:
    """A card switch that is not a boolean, or on a target that cannot edit, is refused."""
    (problem,) = problems(FACTORY + f"targets:\n  a: {entry}\n")
    assert f"targets.a.{key}" in problem


def test_plain_http_to_loopback_needs_no_opt_in() -> None:
    """A webhook on this host may use http:// without allow_http: nothing crosses a network."""
    text = FACTORY + "targets:\n  w:\n    type: webhook\n    url: http://127.0.0.1:9000/hook\n"
    assert load(text).targets["w"].url == "http://127.0.0.1:9000/hook"


# --- discovery, adaptive polling, the request budget --------------------------


def load_text(text: str) -> Settings:
    """Settings from `text` written as config.yaml."""
    return load_settings(write(text), env=ENV)


def test_v1_poll_section_keeps_one_interval_for_every_state() -> None:
    """A v1 config has no per-state intervals, no backoff, no discovery, the default budget."""
    settings = load_text(FACTORY + "poll:\n  interval: 20s\n")
    assert settings.poll == PollSettings(interval=timedelta(seconds=20))
    assert settings.poll.idle_cap == timedelta(seconds=20)
    assert settings.discover is None
    assert settings.factory.max_requests_per_second == 10.0


def test_adaptive_poll_and_discovery_sections_build_settings() -> None:
    """Per-state intervals, archived off, and a full discover section become frozen values."""
    settings = load_text(
        FACTORY
        + "  max_requests_per_second: 25.5\n"
        + "poll:\n  interval: 30s\n  running: 5s\n  pending: 10s\n  idle: 30s\n"
        + "  max_idle: 10m\n  archived: off\n  jitter: 10%\n"
        + "discover:\n  interval: 2m\n  include:\n    title: ['release-*']\n"
        + "    tags: nightly\n    computer: ['cmp_*']\n  created_within: 7d\n"
        + "  labels: {source: listed}\n  max_sessions: 500\n"
    )
    assert settings.factory.max_requests_per_second == 25.5
    assert settings.poll == PollSettings(
        interval=timedelta(seconds=30),
        jitter=0.1,
        running=timedelta(seconds=5),
        pending=timedelta(seconds=10),
        idle=timedelta(seconds=30),
        max_idle=timedelta(minutes=10),
        archived_off=True,
    )
    assert settings.discover == DiscoverSettings(
        interval=timedelta(minutes=2),
        include=DiscoverFilter(titles=("release-*",), tags=("nightly",), computers=("cmp_*",)),
        created_within=timedelta(days=7),
        labels={"source": "listed"},
        max_sessions=500,
    )


def test_an_empty_discover_section_turns_discovery_on_with_defaults() -> None:
    """`discover:` alone means discovery with every default."""
    settings = load_text(FACTORY + "discover:\n")
    assert settings.discover == DiscoverSettings()
    assert load_text(FACTORY + "poll:\n  archived: 1h\n").poll.archived == timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            FACTORY + "poll:\n  idle: 1m\n  max_idle: 30s\n",
            [
                "config.yaml:5: poll.max_idle: max_idle (30s) is shorter than idle (60s): an "
                "idle session backs off from idle up to max_idle, so max_idle must be at "
                "least as long"
            ],
            id="max-idle-below-idle",
        ),
        pytest.param(
            FACTORY + "poll:\n  interval: 1m\n  max_idle: 30s\n",
            [
                "config.yaml:5: poll.max_idle: max_idle (30s) is shorter than interval (60s): "
                "an idle session backs off from interval up to max_idle, so max_idle must be "
                "at least as long"
            ],
            id="max-idle-below-interval",
        ),
        pytest.param(
            FACTORY
            + "  max_requests_per_second: 1\n"
            + "sessions:\n  - {id: a, interval: 1s}\n  - {id: b, interval: 2s}\n",
            [
                "config.yaml:3: factory.max_requests_per_second: the sessions with their own "
                "interval need 1.50 requests/s, more than the budget of 1; raise "
                "max_requests_per_second or lengthen their intervals"
            ],
            id="budget-below-fixed-sessions",
        ),
        pytest.param(
            FACTORY + "  max_requests_per_second: 0\n",
            ["config.yaml:3: factory.max_requests_per_second: must be more than 0"],
            id="budget-zero",
        ),
        pytest.param(
            FACTORY + "  max_requests_per_second: lots\n",
            ["config.yaml:3: factory.max_requests_per_second: expected a number"],
            id="budget-not-a-number",
        ),
        pytest.param(
            FACTORY + "poll:\n  archived: never\n",
            [
                "config.yaml:4: poll.archived: expected a duration such as 30s, 5m or 1h, "
                "or 'off' to stop polling"
            ],
            id="archived-not-off",
        ),
        pytest.param(
            FACTORY + "discover:\n  include:\n    titel: ['x*']\n",
            ["config.yaml:5: discover.include.titel: unknown key (did you mean 'title'?)"],
            id="discover-include-typo",
        ),
        pytest.param(
            FACTORY + "discover:\n  max_sessions: 0\n",
            ["config.yaml:4: discover.max_sessions: must be at least 1"],
            id="discover-cap-zero",
        ),
        pytest.param(
            FACTORY + "discover:\n  include:\n    tags: []\n",
            ["config.yaml:5: discover.include.tags: must not be empty"],
            id="discover-empty-tags",
        ),
    ],
)
def test_contradictory_or_malformed_polling_settings_are_rejected(
    text: str, expected: list[str]
) -> None:
    """Each problem names file, line, key and what was expected."""
    assert problems(text) == expected
