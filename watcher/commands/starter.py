"""The starter config `factory-watcher init` writes: choices in, commented YAML text out.

Pure: no files, no environment. Secrets appear only as `${NAME}` or
`<key>_file: PATH`, never as values; every value a user typed is written as
a quoted YAML string with `${` escaped, so nothing they type is interpolated
or parsed as YAML syntax.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from watcher.config.values import is_http_url
from watcher.core.urls import is_loopback_url

DEFAULT_API_URL = "https://api.factory.ai"
DEFAULT_API_KEY_ENV = "FACTORY_API_KEY"
DEFAULT_SLACK_TOKEN_ENV = "SLACK_BOT_TOKEN"  # noqa: S105 (a variable's name, not a token)
DEFAULT_SLACK_WEBHOOK_ENV = "SLACK_WEBHOOK_URL"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TargetChoice(StrEnum):
    """Where the starter config sends notifications (one target of each chosen kind)."""

    SLACK = "slack"
    SLACK_WEBHOOK = "slack-webhook"
    WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where a secret is read from: an environment variable, or a file (`file` wins)."""

    env: str
    file: str | None = None

    def yaml_entry(self, key: str) -> str:
        """`key: ${ENV}` or `key_file: "PATH"`: the config line that names this secret."""
        if self.file is not None:
            return f"{key}_file: {quoted(self.file)}"
        return f"{key}: ${{{self.env}}}"


@dataclass(frozen=True, slots=True)
class StarterChoices:
    """Everything `init` asks for; a target is chosen when its identifying value is set."""

    api_key: SecretSource = SecretSource(DEFAULT_API_KEY_ENV)
    api_url: str = DEFAULT_API_URL
    slack_channel: str | None = None
    slack_token: SecretSource = SecretSource(DEFAULT_SLACK_TOKEN_ENV)
    slack_api_url: str | None = None
    slack_webhook: SecretSource | None = None
    webhook_url: str | None = None
    webhook_secret: SecretSource | None = None
    state_path: str | None = None

    @property
    def targets(self) -> tuple[TargetChoice, ...]:
        """The targets these choices configure, in the order the file lists them."""
        chosen = (
            (TargetChoice.SLACK, self.slack_channel is not None),
            (TargetChoice.SLACK_WEBHOOK, self.slack_webhook is not None),
            (TargetChoice.WEBHOOK, self.webhook_url is not None),
        )
        return tuple(kind for kind, on in chosen if on)


def quoted(value: str) -> str:
    """`value` as a double-quoted YAML scalar that reads back as exactly `value`.

    A JSON string is a valid double-quoted YAML scalar; `${` becomes `$${`, the
    config's literal dollar, so a typed value is never read as a variable.
    """
    return json.dumps(value.replace("${", "$${"), ensure_ascii=False)


def choice_problems(choices: StarterChoices) -> list[str]:
    """What is wrong with `choices`, one sentence each (empty: they make a valid file)."""
    problems: list[str] = []
    if not choices.targets:
        problems.append(
            "name at least one target: --slack-channel, --slack-webhook-env/-file or --webhook-url"
        )
    sources = [("--api-key-env", choices.api_key), ("--slack-token-env", choices.slack_token)]
    sources += [("--slack-webhook-env", s) for s in (choices.slack_webhook,) if s is not None]
    sources += [("--webhook-secret-env", s) for s in (choices.webhook_secret,) if s is not None]
    for flag, source in sources:
        if source.file is None and not ENV_NAME.fullmatch(source.env):
            problems.append(f"{flag}: {source.env!r} is not an environment variable name")
        if source.file is not None and not source.file.strip():
            problems.append(f"{flag.removesuffix('-env')}-file: must not be empty")
    urls = [("--api-url", choices.api_url), ("--slack-api-url", choices.slack_api_url)]
    urls.append(("--webhook-url", choices.webhook_url))
    for flag, url in urls:
        if url is not None and not is_http_url(url):
            problems.append(f"{flag}: {url!r} is not an http(s) URL")
    channel = choices.slack_channel
    if channel is not None and (not channel or any(c.isspace() for c in channel)):
        problems.append(f"--slack-channel: {channel!r} is not a channel id (like C0123ABCD)")
    return problems


HEADER = """\
# factory-watcher configuration, written by `factory-watcher init`.
# Every key is explained in config.example.yaml (`factory-watcher schema` prints the schema).
#   factory-watcher check -c {path}    # offline: is the file valid?
#   factory-watcher doctor -c {path}   # online: key, Slack, webhooks, state, clock
# Secrets are never written here: ${{NAME}} reads the environment variable NAME;
# <key>_file: PATH reads a file ($CREDENTIALS_DIRECTORY first, then next to this file).
"""

POLL_AND_DISCOVERY = """\
poll:
  interval: 30s                 # how often each session is read, unless its state says...
  running: 5s                   # ...while a session runs
  max_idle: 10m                 # a quiet session is read less often, down to this

discover:                       # watch every session the key can list (off when absent);
  interval: 60s                 # the first listing is the baseline: nothing is sent for it
"""

RULES = """\
rules:                          # session.* events: see "Rules" in the README
  - name: finished
    on: session.finished        # a run ended with a result
    notify: {targets}
  - name: interrupted
    on: session.interrupted     # a run was stopped before it finished (after 30s settle)
    notify: {targets}
  - name: stuck
    on: session.stuck           # running, but no new messages or tokens...
    for: 15m                    # ...for this long
    notify: {targets}
"""


def starter_config(choices: StarterChoices, path: str = "config.yaml") -> str:
    """The commented starter config for `choices` (check `choice_problems` first)."""
    lines = [HEADER.format(path=path)]
    lines.append("factory:")
    lines.append(f"  base_url: {quoted(choices.api_url)}")
    lines.append(f"  {choices.api_key.yaml_entry('api_key')}   # a Manager or Owner key")
    lines.append("")
    lines.append(POLL_AND_DISCOVERY)
    lines.append("state:")
    if choices.state_path is None:
        lines.append("  # path: ./factory-watcher.db  # default: $STATE_DIRECTORY/state.db")
        lines.append("                                # (systemd), else ./factory-watcher.db")
    else:
        lines.append(f"  path: {quoted(choices.state_path)}")
    lines.append("")
    lines.append("targets:")
    lines.extend(_target_lines(choices))
    lines.append("")
    names = [str(kind) for kind in choices.targets]
    shown = names[0] if len(names) == 1 else "[" + ", ".join(names) + "]"
    lines.append(RULES.format(targets=shown))
    return "\n".join(lines).rstrip("\n") + "\n"


def _target_lines(choices: StarterChoices) -> list[str]:
    lines: list[str] = []
    if choices.slack_channel is not None:
        lines.append(f"  {TargetChoice.SLACK}:")
        lines.append("    type: slack                 # a Slack app: docs/slack-app-manifest.yaml")
        lines.append(f"    {choices.slack_token.yaml_entry('token')}")
        lines.append(f"    channel: {quoted(choices.slack_channel)}")
        if choices.slack_api_url is not None:
            lines.append(f"    api_url: {quoted(choices.slack_api_url)}")
        lines.append("    card: true                  # one live message per session")
    if choices.slack_webhook is not None:
        lines.append(f"  {TargetChoice.SLACK_WEBHOOK}:")
        lines.append("    type: slack_webhook         # incoming webhook; the URL is secret")
        lines.append(f"    {choices.slack_webhook.yaml_entry('url')}")
    if choices.webhook_url is not None:
        lines.append(f"  {TargetChoice.WEBHOOK}:")
        lines.append("    type: webhook               # a JSON POST per notification")
        lines.append(f"    url: {quoted(choices.webhook_url)}")
        if urlsplit(choices.webhook_url).scheme == "http" and not is_loopback_url(
            choices.webhook_url
        ):
            lines.append("    allow_http: true            # plain http: sent unencrypted")
        if choices.webhook_secret is not None:
            lines.append(f"    {choices.webhook_secret.yaml_entry('secret')}   # whsec_...: signs")
    return lines
