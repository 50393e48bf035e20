"""`factory-watcher init [PATH]`: write a small, commented starter config.

The choices come from flags or, on a terminal with no target named, from a
few prompts (the input stream is injected, so tests answer them). The file
is created exclusively with mode 0600: an existing file is never touched.
Secrets appear in it only as `${NAME}` or `<key>_file`; the command prints
the variables to export and the next two commands to run. Imports only the
standard library and the pure starter text, so it is cheap to load.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from watcher.commands.exits import EX_CANTCREAT, EX_OK, EX_USAGE
from watcher.commands.starter import (
    DEFAULT_SLACK_WEBHOOK_ENV,
    SecretSource,
    StarterChoices,
    TargetChoice,
    choice_problems,
    starter_config,
)

CONFIG_MODE = 0o600


class NoAnswerError(Exception):
    """The input ended before every prompt was answered."""


class Prompter:
    """Asks one question at a time on `out` and reads the answer from `answers`."""

    def __init__(self, answers: TextIO, out: TextIO) -> None:
        self.answers = answers
        self.out = out

    def ask(self, question: str, default: str = "") -> str:
        """The answer to `question` (stripped), or `default` for an empty one."""
        shown = f" [{default}]" if default else ""
        print(f"{question}{shown}: ", end="", file=self.out, flush=True)
        line = self.answers.readline()
        if not line:
            raise NoAnswerError
        return line.strip() or default


def prompt_choices(choices: StarterChoices, prompter: Prompter) -> StarterChoices:
    """`choices` completed from answers: the key's variable, one target and its details."""
    api_env = prompter.ask(
        "Environment variable with the Factory API key (a Manager or Owner key)",
        choices.api_key.env,
    )
    choices = replace(choices, api_key=replace(choices.api_key, env=api_env))
    kinds = ", ".join(str(k) for k in TargetChoice)
    kind = prompter.ask(f"Where should notifications go? ({kinds})", str(TargetChoice.SLACK))
    if kind == TargetChoice.SLACK_WEBHOOK:
        env = prompter.ask(
            "Environment variable with the Slack incoming webhook URL", DEFAULT_SLACK_WEBHOOK_ENV
        )
        return replace(choices, slack_webhook=SecretSource(env))
    if kind == TargetChoice.WEBHOOK:
        url = prompter.ask("Webhook URL (https://...)")
        secret = prompter.ask("Environment variable with its whsec_ signing secret (empty: none)")
        return replace(
            choices, webhook_url=url, webhook_secret=SecretSource(secret) if secret else None
        )
    if kind != TargetChoice.SLACK:
        raise ValueError(f"{kind!r} is not one of {kinds}")
    channel = prompter.ask("Slack channel id (channel name -> About -> Channel ID, like C0123ABCD)")
    token_env = prompter.ask(
        "Environment variable with the Slack bot token (xoxb-...)", choices.slack_token.env
    )
    return replace(choices, slack_channel=channel, slack_token=SecretSource(token_env))


def run_init(
    path: Path,
    choices: StarterChoices,
    *,
    out: TextIO,
    err: TextIO,
    answers: TextIO | None = None,
) -> int:
    """Write the starter config for `choices` to `path`; with `answers`, prompt first.

    Prompts are asked only when no target was named. Returns 0 when written,
    2 for unusable choices, 73 when `path` exists or cannot be created.
    """
    if path.exists() or path.is_symlink():
        print(
            f"factory-watcher: {path} exists; init never overwrites a file "
            "(give another PATH, or move that one away)",
            file=err,
        )
        return EX_CANTCREAT
    if answers is not None and not choices.targets:
        try:
            choices = prompt_choices(choices, Prompter(answers, out))
        except NoAnswerError:
            print("\nfactory-watcher: init: the input ended; nothing written", file=err)
            return EX_USAGE
        except ValueError as error:
            print(f"factory-watcher: init: {error}; nothing written", file=err)
            return EX_USAGE
    problems = choice_problems(choices)
    if problems:
        for problem in problems:
            print(f"factory-watcher: init: {problem}", file=err)
        return EX_USAGE
    try:
        write_new_file(path, starter_config(choices, str(path)))
    except OSError as error:
        reason = "it exists" if isinstance(error, FileExistsError) else error.strerror
        print(f"factory-watcher: cannot create {path}: {reason}; nothing written", file=err)
        return EX_CANTCREAT
    print(next_steps(path, choices), file=out)
    return EX_OK


def write_new_file(path: Path, text: str) -> None:
    """Create `path` with mode 0600 and write `text`; FileExistsError if it is there already."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, CONFIG_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), CONFIG_MODE)  # whatever the umask left
        handle.write(text)


def next_steps(path: Path, choices: StarterChoices) -> str:
    """What `init` prints once the file is written: the secrets to provide, then two commands."""
    needed = [(choices.api_key, "...", "a Manager or Owner key of your Factory organisation")]
    if choices.slack_channel is not None:
        needed.append((choices.slack_token, "xoxb-...", "the bot token of your Slack app"))
    if choices.slack_webhook is not None:
        needed.append((choices.slack_webhook, "https://hooks.slack.com/...", "the webhook URL"))
    if choices.webhook_secret is not None:
        needed.append((choices.webhook_secret, "whsec_...", "the webhook signing secret"))
    steps: list[tuple[str, str]] = []
    for source, example, what in needed:
        if source.file is None:
            steps.append((f"export {source.env}={example}", what))
        else:
            steps.append((f"put {what} in {source.file} (chmod 600)", ""))
    shown = "" if str(path) == "config.yaml" else f" -c {path}"
    steps.append((f"factory-watcher doctor{shown}", "checks the key, Slack, webhooks and state"))
    steps.append((f"factory-watcher run{shown}", "watches until stopped (Ctrl-C)"))
    width = max(len(step) for step, why in steps if why)
    lines = [f"wrote {path} (mode 600); next:"]
    lines += [f"  {step:<{width}}   # {why}" if why else f"  {step}" for step, why in steps]
    return "\n".join(lines)
