"""The `factory-watcher` command: run, check, once, test-notify, outbox, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import anyio

from watcher import __version__
from watcher.config import ConfigError, load_settings
from watcher.core.cadence import budget_warnings
from watcher.core.diff import event_id
from watcher.core.message import Sent, SlackMessage
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.render import render_for
from watcher.core.secret import redact
from watcher.core.settings import Settings
from watcher.daemon import Watcher
from watcher.logs import RedactingFilter, configure_logging
from watcher.notifiers import build_notifier
from watcher.store import OutboxStatus, SqliteStore, StoreError

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_CONFIG = 78  # sysexits.h EX_CONFIG; the unit's RestartPreventExitStatus=78
EX_CANTCREAT = 73

DEFAULT_CONFIG = "config.yaml"


def _load(path: Path, err: TextIO) -> Settings | None:
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
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(DEFAULT_CONFIG),
        help=f"path to the YAML config (default: ./{DEFAULT_CONFIG})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[config], help="watch until stopped (the service)")
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
    demo = commands.add_parser("demo", help="run against a local simulator; no credentials")
    demo.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    demo.add_argument("--sessions", type=int, default=4, help="simulated sessions")
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Entry point; returns the process exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from watcher.demo import run_demo  # noqa: PLC0415 - only the demo needs the fakes

        configure_logging(args.log_level, stream=err)
        return run_demo(duration=args.duration or None, sessions=args.sessions, out=out)
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
        for warning in budget_warnings(settings):
            print(f"{args.config}: warning: {warning}", file=out)
        return EX_OK
    redactor = configure_logging(args.log_level, stream=err, secrets=settings.secret_values())
    try:
        if args.command == "outbox":
            return _outbox(settings, args.action, args.ids, args.status, out)
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
    def reload() -> Settings:
        new = load_settings(config_path)
        # Old values stay masked too: in-flight errors may still quote them.
        redactor.update((*redactor.secrets, *new.secret_values()))
        return new

    watcher = Watcher(settings, reload=reload)
    await watcher.run()
    return EX_OK


async def _once(settings: Settings, dry_run: bool, out: TextIO) -> int:
    watcher = Watcher(settings)
    try:
        reports = await watcher.poll_all(dry_run=dry_run)
        failed = [r for r in reports if r.failure is not None]
        for report in failed:
            assert report.failure is not None
            print(f"{report.session_id}: poll failed: {report.failure.reason}", file=out)
        if dry_run:
            for report in reports:
                for event, route in report.routes:
                    target = settings.targets[route.target]
                    message = render_for(target.kind, event, route.rule)
                    shown = (
                        message.text
                        if isinstance(message, SlackMessage)
                        else (message.body.decode())
                    )
                    print(f"would send to {route.target} (rule {route.rule}): {shown}", file=out)
            if not any(r.routes for r in reports):
                print("nothing to send", file=out)
            return EX_FAILURE if failed else EX_OK
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
    )


async def _test_notify(settings: Settings, target_name: str, out: TextIO) -> int:
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


def _outbox(
    settings: Settings, action: str, ids: list[int], status: str | None, out: TextIO
) -> int:
    store = SqliteStore(settings.state_path)
    try:
        if action == "list":
            rows = store.list_outbox(OutboxStatus(status) if status else None)
            for row in reversed(rows):
                session = row.event.session.id if row.event.session else "-"
                print(
                    json.dumps(
                        {
                            "id": row.id,
                            "status": str(row.status),
                            "target": row.target,
                            "rule": row.rule,
                            "event": str(row.event.type),
                            "session": session,
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
