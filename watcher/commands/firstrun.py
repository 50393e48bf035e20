"""The first-run commands on the command line: `init` and `doctor`, their flags and dispatch.

`watcher.commands.cli` registers them with `add_first_run_commands` and hands
a parsed `init` or `doctor` to `run_first_run_command`. This module imports
only the standard library when loaded, so `factory-watcher --help` stays
fast; each command's module is imported when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

FIRST_RUN_COMMANDS = ("init", "doctor")


def add_first_run_commands(commands: Any, config: argparse.ArgumentParser) -> None:
    """Add `init` and `doctor` to the `commands` subparsers; `config` gives `-c/--config`."""
    init = commands.add_parser(
        "init",
        help="write a small starter config (from flags, or prompts on a terminal)",
        description="Write a commented starter config; never overwrites a file. Secrets are "
        "referenced as ${ENV} or *_file, never written into it.",
    )
    init.add_argument(
        "path", nargs="?", type=Path, default=Path("config.yaml"), help="default: ./config.yaml"
    )
    factory = init.add_argument_group("Factory API")
    factory.add_argument("--api-key-env", default="FACTORY_API_KEY", metavar="NAME")
    factory.add_argument("--api-key-file", default=None, metavar="PATH")
    factory.add_argument(
        "--api-url",
        default="https://api.factory.ai",
        metavar="URL",
        help="the API's base URL (a proxy, or a local simulator); default %(default)s",
    )
    slack = init.add_argument_group("a Slack app (bot token) target")
    slack.add_argument("--slack-channel", default=None, metavar="ID", help="e.g. C0123ABCD")
    slack.add_argument("--slack-token-env", default="SLACK_BOT_TOKEN", metavar="NAME")
    slack.add_argument("--slack-token-file", default=None, metavar="PATH")
    slack.add_argument(
        "--slack-api-url",
        default=None,
        metavar="URL",
        help="Slack's Web API base URL (a proxy, or a local fake); default Slack's own",
    )
    hook = init.add_argument_group("a Slack incoming webhook target")
    hook.add_argument("--slack-webhook-env", default=None, metavar="NAME")
    hook.add_argument("--slack-webhook-file", default=None, metavar="PATH")
    webhook = init.add_argument_group("a generic webhook target")
    webhook.add_argument("--webhook-url", default=None, metavar="URL")
    webhook.add_argument("--webhook-secret-env", default=None, metavar="NAME")
    webhook.add_argument("--webhook-secret-file", default=None, metavar="PATH")
    init.add_argument("--state", default=None, metavar="PATH", help="state database path")
    init.add_argument("--no-input", action="store_true", help="never prompt, even on a terminal")
    doctor = commands.add_parser(
        "doctor",
        parents=[config],
        help="check the config online: API key, Slack, webhooks, state, clock",
    )
    doctor.add_argument("--json", action="store_true", help="one JSON document with stable keys")
    doctor.add_argument(
        "--send", action="store_true", help="also send every target a test notification"
    )


def run_first_run_command(
    args: argparse.Namespace, out: TextIO, err: TextIO, answers: TextIO | None = None
) -> int:
    """Run a parsed `init` or `doctor`; `answers` defaults to stdin when it is a terminal."""
    if args.command == "doctor":
        from watcher.commands.doctor import run_doctor  # noqa: PLC0415 - the HTTP stack

        return run_doctor(args.config, out=out, as_json=args.json, send=args.send)
    from watcher.commands.init import run_init  # noqa: PLC0415 - loaded when it runs
    from watcher.commands.starter import SecretSource, StarterChoices  # noqa: PLC0415

    if answers is None and not args.no_input and sys.stdin.isatty():
        answers = sys.stdin
    if args.no_input:
        answers = None

    def source(env: str | None, file: str | None) -> SecretSource | None:
        if env is None and file is None:
            return None
        return SecretSource(env or "", file)

    choices = StarterChoices(
        api_key=SecretSource(args.api_key_env, args.api_key_file),
        api_url=args.api_url,
        slack_channel=args.slack_channel,
        slack_token=SecretSource(args.slack_token_env, args.slack_token_file),
        slack_api_url=args.slack_api_url,
        slack_webhook=source(args.slack_webhook_env, args.slack_webhook_file),
        webhook_url=args.webhook_url,
        webhook_secret=source(args.webhook_secret_env, args.webhook_secret_file),
        state_path=args.state,
    )
    return run_init(args.path, choices, out=out, err=err, answers=answers)
