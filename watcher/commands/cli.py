"""The `factory-watcher` command line: the argument parser and the dispatch to each command.

Each command's body lives in its own module in `watcher.commands` (`run`,
`check`, `outbox`, `mute`, `explain`, `replay`, `render`, `report`,
`operations`, `demo`), imported only when that command runs: importing the daemon, the
notifiers (slack-sdk, aiohttp, httpx) or the config loader (pydantic) here
made `--help` take half a second. tests/commands/test_cli_imports.py keeps
them out; bench/startup.py measures the start-up time.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from watcher import __version__
from watcher.commands.exits import EX_CONFIG, load_config, store_error_exit
from watcher.core.outbox import OutboxStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from watcher.core.settings import Settings

    RuleCommand = Callable[[Settings, argparse.Namespace, TextIO, TextIO], int]

DEFAULT_CONFIG = "config.yaml"

# The rule tools: they run on loaded settings and may open the state database.
RULE_COMMANDS = frozenset({"render", "mute", "unmute", "explain", "replay"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factory-watcher",
        description="Watch Factory agent sessions and notify Slack or webhooks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("FACTORY_WATCHER_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("FACTORY_WATCHER_LOG_FORMAT") or None,
        choices=["text", "json"],
        help="text (default) or json lines; overrides log_format in the config",
    )
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(DEFAULT_CONFIG),
        help=f"path to the YAML config (default: ./{DEFAULT_CONFIG})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from watcher.commands.firstrun import add_first_run_commands  # stdlib only

    add_first_run_commands(commands, config)
    run = commands.add_parser("run", parents=[config], help="watch until stopped (the service)")
    run.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="append every successful poll's body and time to FILE (for replay)",
    )
    commands.add_parser(
        "check", parents=[config], help="validate the config; exit 0, or 78 listing every problem"
    )
    once = commands.add_parser(
        "once", parents=[config], help="poll every session once and deliver what is due"
    )
    once.add_argument(
        "--dry-run", action="store_true", help="print what would be sent; store and send nothing"
    )
    test = commands.add_parser(
        "test-notify", parents=[config], help="send a test notification to one target"
    )
    test.add_argument("target", help="target name from the config")
    outbox = commands.add_parser("outbox", parents=[config], help="inspect or retry notifications")
    outbox.add_argument("action", choices=["list", "retry", "purge"])
    outbox.add_argument("ids", nargs="*", type=int, help="outbox ids (default: all that apply)")
    outbox.add_argument(
        "--status",
        choices=[s.value for s in OutboxStatus],
        default=None,
        help="list: only this status; purge: delivered or dead (default dead)",
    )
    _rule_commands(commands, config)
    render = commands.add_parser(
        "render",
        parents=[config],
        help="print the message a rule would send for an event; sends nothing",
    )
    render.add_argument("rule", help="rule name from the config")
    render.add_argument(
        "--event",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="an event as a webhook body carries it (default: a sample of the rule's first type)",
    )
    render.add_argument(
        "--target", default=None, help="one of the rule's targets (default: its first)"
    )
    demo = commands.add_parser("demo", help="run against a local simulator; no credentials")
    demo.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    demo.add_argument("--sessions", type=int, default=4, help="simulated sessions")
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--db",
        type=Path,
        default=None,
        help="the state database itself (default: the config's state.path)",
    )
    status = commands.add_parser(
        "status",
        parents=[config, database],
        help="watched sessions, outbox and API state, from the state database",
    )
    status.add_argument("--json", action="store_true", help="one JSON document with stable keys")
    commands.add_parser("schema", help="print the JSON Schema of the config file")
    backup = commands.add_parser(
        "backup",
        parents=[config, database],
        help="copy the state database online to a new file",
    )
    backup.add_argument("path", type=Path, help="the new file (never overwritten)")
    report = commands.add_parser(
        "report",
        parents=[config, database],
        help="print a scheduled report made now, for its window ending now; sends nothing",
    )
    report.add_argument("name", help="report name from the config")
    report.add_argument(
        "--window",
        default=None,
        help="look back this long instead (e.g. 24h, 7d; default: the report's window)",
    )
    report.add_argument(
        "--json", action="store_true", help="the report document, as a webhook's data carries it"
    )
    return parser


def _rule_commands(commands: Any, config: argparse.ArgumentParser) -> None:
    mute = commands.add_parser(
        "mute", parents=[config], help="silence a session or a rule (stored; the daemon obeys)"
    )
    mute.add_argument("session", nargs="?", help="session id, name or glob")
    mute.add_argument("--rule", help="mute this rule (for every session) instead")
    mute.add_argument("--for", dest="duration", help="how long, e.g. 2h (default: until unmuted)")
    mute.add_argument("--reason", default="", help="shown in logs and `explain`")
    mute.add_argument("--list", action="store_true", help="list the mutes in force")
    unmute = commands.add_parser("unmute", parents=[config], help="remove a mute")
    unmute.add_argument("session", nargs="?", help="the session as it was muted")
    unmute.add_argument("--rule", help="the rule as it was muted")
    explain = commands.add_parser(
        "explain", parents=[config], help="what each rule decided about a session, and why"
    )
    explain.add_argument("session", help="session id or configured name")
    explain.add_argument("--json", action="store_true", help="one JSON document for scripts")
    replay = commands.add_parser(
        "replay",
        parents=[config],
        help="run a recorded poll stream through the rules; prints what would be sent",
    )
    replay.add_argument("recording", type=Path, metavar="FILE.jsonl")
    replay.add_argument("--json", action="store_true", help="one JSON object per notification")
    replay.add_argument(
        "--extra",
        default=None,
        help="keep the simulated clock running this long after the last poll (e.g. 10m)",
    )


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Entry point; returns the process exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from watcher.commands.demo import run_demo  # the simulator and the fake sinks
        from watcher.ops.logs import configure_logging

        configure_logging(args.log_level, stream=err, fmt=args.log_format or "text")
        return run_demo(duration=args.duration or None, sessions=args.sessions, out=out)
    if args.command in ("init", "doctor"):
        from watcher.commands.firstrun import run_first_run_command

        return run_first_run_command(args, out, err)
    if args.command == "outbox":
        from watcher.commands.outbox import outbox_command

        return outbox_command(args, out, err)
    if args.command in ("status", "schema", "backup"):
        from watcher.commands.operations import operate

        return operate(args, out, err)
    settings = load_config(args.config, err)
    if settings is None:
        return EX_CONFIG
    if args.command == "check":
        from watcher.commands.check import check_command

        return check_command(settings, args.config, out)
    if args.command in RULE_COMMANDS:
        return _rule_command(settings, args, out, err)
    if args.command == "report":
        from watcher.commands.report import report_command

        return report_command(settings, args, out, err)
    from watcher.commands.run import start_watching

    return start_watching(settings, args, out, err)


def _rule_command(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from watcher.store import StoreError

    try:
        return _rule_command_body(args.command)(settings, args, out, err)
    except StoreError as error:
        return store_error_exit(error, err)


def _rule_command_body(name: str) -> RuleCommand:
    """The body of rule command `name`, imported now that it runs."""
    if name == "render":
        from watcher.commands.render import render_command

        return render_command
    if name == "mute":
        from watcher.commands.mute import mute_command

        return mute_command
    if name == "unmute":
        from watcher.commands.mute import unmute_command

        return unmute_command
    if name == "explain":
        from watcher.commands.explain import explain_command

        return explain_command
    assert name == "replay", name
    from watcher.commands.replay import replay_command

    return replay_command
