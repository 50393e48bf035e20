"""The `factory-watcher` command: run, check, once, test-notify, render, outbox, demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from watcher import __version__
from watcher.core.outbox import OutboxStatus

# Each command imports what it needs when it runs (see `main`): importing the
# daemon, the notifiers (slack-sdk, aiohttp, httpx), APScheduler or the config
# loader (pydantic) here made `--help` take half a second. tests/test_cli_imports.py
# keeps them out; bench/startup.py measures the start-up time.
if TYPE_CHECKING:
    from watcher.core.message import SlackMessage
    from watcher.core.model import Event
    from watcher.core.settings import Rule, Settings, WatchedSession
    from watcher.daemon import Watcher
    from watcher.ops.logs import RedactingFilter

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_CONFIG = 78  # sysexits.h EX_CONFIG; the unit's RestartPreventExitStatus=78
EX_CANTCREAT = 73

DEFAULT_CONFIG = "config.yaml"


def _load(path: Path, err: TextIO) -> Settings | None:
    from watcher.config.loader import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as error:
        print(f"factory-watcher: invalid configuration:\n{error}", file=err)
        return None


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
    return parser


def main(  # noqa: PLR0912 - one branch per command family
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
        return _outbox_command(args, out, err)
    if args.command in ("status", "schema", "backup"):
        return _operate(args, out, err)
    settings = _load(args.config, err)
    if settings is None:
        return EX_CONFIG
    if args.command == "check":
        discovery = ", discovery on" if settings.discover is not None else ""
        print(
            f"{args.config}: ok ({len(settings.sessions)} session(s), {len(settings.rules)} "
            f"rule(s), {len(settings.targets)} target(s){discovery})",
            file=out,
        )
        _print_warnings(settings, args.config, out)
        from watcher.core.cadence import budget_warnings

        for warning in budget_warnings(settings):
            print(f"{args.config}: warning: {warning}", file=out)
        return EX_OK
    if args.command in RULE_COMMANDS:
        return _rule_command(settings, args, out, err)
    if args.command == "run" and args.record is not None:
        settings = replace(settings, record_path=args.record.absolute())
    import anyio

    from watcher.ops.logs import configure_logging
    from watcher.store import StoreError

    redactor = configure_logging(
        args.log_level,
        stream=err,
        secrets=settings.secret_values(),
        fmt=args.log_format or settings.log_format,
    )
    try:
        if args.command == "test-notify":
            return anyio.run(_test_notify, settings, args.target, out, backend="asyncio")
        if args.command == "once":
            return anyio.run(_once, settings, args.dry_run, out, backend="asyncio")
        return anyio.run(_run, settings, args.config, redactor, backend="asyncio")
    except StoreError as error:
        print(f"factory-watcher: {error}", file=err)
        return EX_CANTCREAT
    except KeyboardInterrupt:
        return EX_OK


async def _run(settings: Settings, config_path: Path, redactor: RedactingFilter) -> int:
    from watcher.config.loader import load_settings
    from watcher.daemon import Watcher

    def reload() -> Settings:
        new = load_settings(config_path)
        # Old values stay masked too: in-flight errors may still quote them.
        redactor.update((*redactor.secrets, *new.secret_values()))
        return new

    from watcher.ops.endpoint import EndpointError
    from watcher.poll.recorder import RecordError

    try:
        watcher = Watcher(settings, reload=reload)
    except RecordError as error:
        print(f"factory-watcher: {error}", file=sys.stderr)
        return EX_CANTCREAT
    try:
        await watcher.run()
    except EndpointError as error:
        logging.getLogger("watcher.commands.cli").error("%s", error)  # noqa: TRY400 - no traceback
        return EX_FAILURE
    return EX_OK


def _dry_run_line(
    settings: Settings, watcher: Watcher, event: Event, target_name: str, rule: str
) -> str:
    """What `once --dry-run` says it would send for one routed event (a card or a message)."""
    from watcher.core.message import SlackMessage
    from watcher.core.settings import SlackTarget
    from watcher.core.template import render_card_for, render_message

    target = settings.targets[target_name]
    note = ""
    if isinstance(target, SlackTarget) and target.card and event.session is not None:
        card, problem = render_card_for(settings, target, event, rule)
        kept = watcher.store.card(target_name, event.session.id)
        verb = "update the card on" if kept is not None and kept.ts else "post a card to"
        if problem is not None:
            note = f"template failed, built-in card shown: {problem}\n"
        return f"{note}would {verb} {target_name} (rule {rule}): {card.text}"
    message, problem = render_message(settings, target, event, rule)
    if problem is not None:
        note = f"template failed, built-in message shown: {problem}\n"
    shown = message.text if isinstance(message, SlackMessage) else message.body.decode()
    return f"{note}would send to {target_name} (rule {rule}): {shown}"


async def _once(settings: Settings, dry_run: bool, out: TextIO) -> int:
    from watcher.core.text import describe_error
    from watcher.daemon import Watcher

    watcher = Watcher(settings)
    try:
        reports = await watcher.poll_all(dry_run=dry_run)
        if not dry_run:
            # Settle windows, conditions and quiet hours that came due since the last run.
            await watcher.tick_rules()
        failed = [r for r in reports if r.failure is not None]
        for report in failed:
            assert report.failure is not None
            print(f"{report.session_id}: poll failed: {report.failure.reason}", file=out)
        if dry_run:
            unrenderable = 0
            for report in reports:
                for event, route in report.routes:
                    try:
                        shown = _dry_run_line(settings, watcher, event, route.target, route.rule)
                    except Exception as error:  # one event our bug cannot render: report, go on
                        unrenderable += 1
                        print(
                            f"cannot render for {route.target}: {describe_error(error)}", file=out
                        )
                        continue
                    print(shown, file=out)
            if not any(r.routes for r in reports):
                print("nothing to send", file=out)
            return EX_FAILURE if failed or unrenderable else EX_OK
        attempted = await watcher.deliver_due()
        counts = watcher.store_counts()
        print(
            f"polled {len(reports)} session(s), {len(failed)} failed; sent {attempted} "
            f"notification(s); outbox: {counts[OutboxStatus.PENDING]} pending, "
            f"{counts[OutboxStatus.DEAD]} dead",
            file=out,
        )
        return EX_FAILURE if failed else EX_OK
    finally:
        await watcher.aclose()
        watcher.store.close()


def test_event(now: datetime) -> Event:
    """A synthetic notification that says plainly it is a test."""
    from watcher.core.diff import event_id
    from watcher.core.model import Event, EventType, SessionRef

    return Event(
        id=event_id("factory-watcher-test", EventType.STATUS_CHANGED, {"at": now.isoformat()}),
        type=EventType.STATUS_CHANGED,
        occurred_at=now,
        session=SessionRef(
            id="test-session",
            title="factory-watcher test notification",
            status="idle",
            name="test-notify",
        ),
        data={"from": "running", "to": "idle", "test": True},
        # Never stored, so numbered by the clock: each later test outranks the last
        # at a receiver that drops stale sequences.
        sequence=int(now.timestamp() * 1000),
    )


async def _test_notify(settings: Settings, target_name: str, out: TextIO) -> int:
    from watcher.core.message import Sent
    from watcher.core.render import render_for
    from watcher.core.secret import redact
    from watcher.notifiers import build_notifier

    target = settings.targets.get(target_name)
    if target is None:
        names = ", ".join(sorted(settings.targets)) or "none"
        print(f"unknown target {target_name!r} (defined: {names})", file=out)
        return EX_USAGE
    notifier = build_notifier(target)
    now = datetime.now(UTC)
    try:
        outcome = await notifier.send(
            render_for(target.kind, test_event(now), "test-notify"), now=now
        )
    finally:
        await notifier.aclose()
    if isinstance(outcome, Sent):
        print(f"{target_name}: delivered", file=out)
        return EX_OK
    reason = redact(outcome.reason, settings.secret_values())
    print(f"{target_name}: failed ({outcome.kind}): {reason}", file=out)
    return EX_FAILURE


def _outbox_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`outbox ACTION`: finds the database without the full config loader when it can."""
    from watcher.config.statepath import find_state_path
    from watcher.ops.logs import configure_logging
    from watcher.store import StoreError

    state_path = find_state_path(args.config)
    secrets: tuple[str, ...] = ()
    if state_path is None:  # the full loader names what is wrong, or finds the path
        settings = _load(args.config, err)
        if settings is None:
            return EX_CONFIG
        state_path, secrets = settings.state_path, settings.secret_values()
    configure_logging(args.log_level, stream=err, secrets=secrets)
    try:
        return _outbox(state_path, args.action, args.ids, args.status, out)
    except StoreError as error:
        print(f"factory-watcher: {error}", file=err)
        return EX_CANTCREAT
    except KeyboardInterrupt:
        return EX_OK


def _outbox(state_path: Path, action: str, ids: list[int], status: str | None, out: TextIO) -> int:
    from watcher.store import SqliteStore

    store = SqliteStore(state_path)
    try:
        if action == "list":
            rows = store.list_outbox(OutboxStatus(status) if status else None)
            for row in reversed(rows):
                print(
                    json.dumps(
                        {
                            "id": row.id,
                            "status": str(row.status),
                            "target": row.target,
                            "rule": row.rule,
                            "event": row.event_type,
                            "session": row.session_id or "-",
                            "attempts": row.attempts,
                            "created_at": row.created_at.isoformat(),
                            "last_error": row.last_error,
                        }
                    ),
                    file=out,
                )
            counts = store.counts()
            print(", ".join(f"{n} {s}" for s, n in counts.items()), file=out)
            return EX_OK
        if action == "retry":
            count = store.retry_dead(datetime.now(UTC), ids)
            print(f"{count} dead notification(s) queued again", file=out)
            return EX_OK
        which = OutboxStatus(status or OutboxStatus.DEAD)
        if which is OutboxStatus.PENDING:
            print("pending notifications cannot be purged", file=out)
            return EX_USAGE
        print(f"purged {store.purge(which, ids)} {which} notification(s)", file=out)
        return EX_OK
    finally:
        store.close()


def _operate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`status`, `schema` and `backup`: operator commands that need no credentials."""
    if args.command == "schema":
        from watcher.config.models import config_schema

        print(json.dumps(config_schema(), indent=2), file=out)
        return EX_OK
    configured: tuple[WatchedSession, ...] = ()
    secrets: tuple[str, ...] = ()
    database: Path | None = args.db
    if database is None:
        settings = _load(args.config, err)
        if settings is None:
            print("(--db PATH reads the state database without the config)", file=err)
            return EX_CONFIG
        database, configured = settings.state_path, settings.sessions
        secrets = settings.secret_values()
    if args.command == "backup":
        from watcher.commands.backup import BackupError, backup_database

        try:
            result = backup_database(database, args.path)
        except BackupError as error:
            print(f"factory-watcher: {error}", file=err)
            return EX_CANTCREAT
        print(
            f"backed up {database} to {result.path} ({result.bytes} bytes, integrity check ok)",
            file=out,
        )
        return EX_OK
    from watcher.commands.status import StatusError, read_status, render_text, to_json
    from watcher.core.secret import redact

    try:
        report = read_status(database, configured)
    except StatusError as error:
        print(f"factory-watcher: {error}", file=err)
        return EX_FAILURE
    text = json.dumps(to_json(report), indent=2) if args.json else render_text(report)
    # Stored errors were masked when written; mask again in case a secret changed since.
    print(redact(text, secrets), file=out)
    return EX_OK


# --- the rule tools: mute, unmute, explain, replay, check warnings ------------------
# Their modules are imported inside each command so the CLI starts fast.


def _print_warnings(settings: Settings, path: Path, out: TextIO) -> None:
    from watcher.config.lint import config_warnings

    for warning in config_warnings(settings):
        print(f"{path}: warning: {warning}", file=out)


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


def _rule_command(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from watcher.store import StoreError

    try:
        return RULE_COMMANDS[args.command](settings, args, out, err)
    except StoreError as error:
        print(f"factory-watcher: {error}", file=err)
        return EX_CANTCREAT


def _mute(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from watcher.config.loader import parse_duration
    from watcher.core.rulestate import Mute, MuteKind
    from watcher.store import SqliteStore

    now = datetime.now(UTC)
    store = SqliteStore(settings.state_path)
    try:
        if args.list:
            mutes = store.active_mutes(now)
            for mute in mutes:
                ends = "until unmuted" if mute.until is None else f"until {mute.until.isoformat()}"
                reason = f" ({mute.reason})" if mute.reason else ""
                print(f"{mute.kind} {mute.value} {ends}{reason}", file=out)
            if not mutes:
                print("no mutes in force", file=out)
            return EX_OK
        kind, value = _mute_target(settings, args, err)
        if value is None:
            return EX_USAGE
        until: datetime | None = None
        if args.duration is not None:
            try:
                until = now + parse_duration(args.duration)
            except ValueError as error:
                print(f"factory-watcher: --for: {error}", file=err)
                return EX_USAGE
        store.add_mute(Mute(MuteKind(kind), value, until, args.reason), now)
        shown = "until unmuted" if until is None else f"until {until.isoformat()}"
        print(f"muted {kind} {value} {shown}", file=out)
        return EX_OK
    finally:
        store.close()


def _mute_target(
    settings: Settings, args: argparse.Namespace, err: TextIO
) -> tuple[str, str | None]:
    """('session'|'rule', value), or a None value after saying what is wrong."""
    if (args.session is None) == (args.rule is None):
        print("factory-watcher: name a SESSION or --rule NAME (one of them)", file=err)
        return "session", None
    if args.rule is not None:
        names = [r.name for r in settings.rules]
        if not any(fnmatchcase(n, args.rule) for n in names):
            print(
                f"factory-watcher: no rule matches {args.rule!r} (rules: {', '.join(names)})",
                file=err,
            )
            return "rule", None
        return "rule", args.rule
    return "session", args.session


def _unmute(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from watcher.core.rulestate import MuteKind
    from watcher.store import SqliteStore

    if (args.session is None) == (args.rule is None):
        print("factory-watcher: name a SESSION or --rule NAME (one of them)", file=err)
        return EX_USAGE
    kind, value = ("rule", args.rule) if args.rule is not None else ("session", args.session)
    store = SqliteStore(settings.state_path)
    try:
        removed = store.remove_mutes(MuteKind(kind), value)
    finally:
        store.close()
    if removed:
        print(f"unmuted {kind} {value}", file=out)
    else:
        print(f"no mute on {kind} {value}", file=out)
    return EX_OK


def _explain(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from watcher.commands.explain import explain, explain_text
    from watcher.store import SqliteStore

    store = SqliteStore(settings.state_path)
    try:
        report = explain(settings, store, args.session, datetime.now(UTC))
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2), file=out)
    else:
        print(explain_text(report), file=out)
    return EX_OK


def _replay(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from datetime import timedelta

    from watcher.commands.replay import ReplayError, describe, read_recording, replay
    from watcher.config.loader import parse_duration

    extra = timedelta(0)
    if args.extra is not None:
        try:
            extra = parse_duration(args.extra)
        except ValueError as error:
            print(f"factory-watcher: --extra: {error}", file=err)
            return EX_USAGE
    try:
        with args.recording.open(encoding="utf-8") as lines:
            planned = replay(settings, read_recording(lines, str(args.recording)), extra)
    except OSError as error:
        print(f"factory-watcher: cannot read {args.recording}: {error.strerror}", file=err)
        return EX_USAGE
    except ReplayError as error:
        print(f"factory-watcher: {error}", file=err)
        return EX_USAGE
    for item in planned:
        line = describe(settings, item)
        if args.json:
            print(json.dumps(line, ensure_ascii=False), file=out)
        else:
            text = (line["text"] or "").splitlines()[0] if line["text"] else ""
            if line["text"] and line["text"].startswith("{"):
                text = f"{line['type']} {line['event_id']}"
            print(f"{line['at']}  {line['target']}  (rule {line['rule']})  {text}", file=out)
    if not planned:
        print("nothing would be sent", file=out)
    return EX_OK


MAX_EVENT_FILE = 1 << 20


def _read_event(path: Path, err: TextIO) -> Event | None:
    """The event in a captured webhook body, or None after saying what is wrong."""
    from watcher.core.captured import EventBodyError, event_from_body

    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_EVENT_FILE + 1)
    except OSError as error:
        print(f"factory-watcher: cannot read {path}: {error.strerror or error}", file=err)
        return None
    if len(raw) > MAX_EVENT_FILE:
        print(f"factory-watcher: {path}: larger than 1 MiB; not an event", file=err)
        return None
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        print(f"factory-watcher: {path}: not UTF-8 text", file=err)
        return None
    except json.JSONDecodeError as error:
        print(
            f"factory-watcher: {path}:{error.lineno}: not JSON: {error.msg} (column {error.colno})",
            file=err,
        )
        return None
    except ValueError as error:  # e.g. an integer too long to convert
        print(f"factory-watcher: {path}: not usable JSON: {error}", file=err)
        return None
    try:
        return event_from_body(body)
    except EventBodyError as error:
        print(f"factory-watcher: {path}: {error}", file=err)
        return None


def _render(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`render RULE`: the message the rule's target would get, on stdout; nothing is sent.

    For a Slack target that keeps live cards, that is the session's card and
    the line its thread gets.
    """
    from watcher.core.card import render_thread_reply
    from watcher.core.message import SlackMessage
    from watcher.core.render import render_for
    from watcher.core.settings import SlackTarget
    from watcher.core.template import (
        TemplateError,
        render_card_for,
        render_template,
        rule_named,
        template_for,
    )

    rule = rule_named(settings, args.rule)
    if rule is None:
        names = ", ".join(r.name for r in settings.rules) or "none"
        print(f"factory-watcher: unknown rule {args.rule!r} (rules: {names})", file=err)
        return EX_USAGE
    name = args.target or rule.notify[0]
    if name not in rule.notify:
        print(
            f"factory-watcher: rule {rule.name!r} does not notify {name!r} "
            f"(it notifies: {', '.join(rule.notify)})",
            file=err,
        )
        return EX_USAGE
    target = settings.targets[name]
    event = _render_event(rule, args, err)
    if event is None:
        return EX_USAGE
    if args.target is None and len(rule.notify) > 1:
        others = ", ".join(rule.notify[1:])
        print(f"factory-watcher: rendered for {name}; --target picks {others}", file=err)
    template = template_for(settings, target, rule.name, event.type)
    try:
        if template is None:
            message = render_for(target.kind, event, rule.name)
        else:
            message = render_template(template, event, rule.name, rule)
    except TemplateError as error:
        print(
            f"factory-watcher: the template fails on this event: {error}\n"
            "(the daemon would send the built-in message instead)",
            file=err,
        )
        return EX_FAILURE
    if isinstance(target, SlackTarget) and target.card and event.session is not None:
        card, _ = render_card_for(settings, target, event, rule.name)
        shown: dict[str, Any] = {"card": _slack_json(card)}
        if target.thread:
            shown["thread_reply"] = _slack_json(render_thread_reply(event, rule.name))
        print(json.dumps(shown, ensure_ascii=False, indent=2), file=out)
    elif isinstance(message, SlackMessage):
        print(json.dumps(_slack_json(message), ensure_ascii=False, indent=2), file=out)
    else:
        print(message.body.decode("utf-8"), file=out)
    return EX_OK


def _render_event(rule: Rule, args: argparse.Namespace, err: TextIO) -> Event | None:
    """The event `render` shows: the one in `--event`, or a sample of the rule's first type."""
    from watcher.core.model import EventType
    from watcher.core.samples import sample_event, with_answer

    if args.event is None:
        event = sample_event(EventType(rule.on[0]))
        return with_answer(event) if rule.include_last_answer else event
    read = _read_event(args.event, err)
    if read is not None and str(read.type) not in rule.on and read.type is not EventType.DIGEST:
        print(
            f"factory-watcher: note: rule {rule.name!r} does not listen to {read.type} "
            f"(it listens to: {', '.join(rule.on)})",
            file=err,
        )
    return read


def _slack_json(message: SlackMessage) -> dict[str, Any]:
    """A Slack message as the Web API gets it: text, and blocks when there are any."""
    shown: dict[str, Any] = {"text": message.text}
    if message.blocks:
        shown["blocks"] = [dict(b) for b in message.blocks]
    return shown


RULE_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace, TextIO, TextIO], int]] = {
    "render": _render,
    "mute": _mute,
    "unmute": _unmute,
    "explain": _explain,
    "replay": _replay,
}
