"""`run`, `once` and `test-notify`: the commands that poll or send, and how they end.

`start_watching` is their shared shell: it applies `run --record`, sets up
logging with the config's secrets masked, runs the command on the event loop
and maps what stops it to an exit code (a store failure through
`watcher.commands.exits.store_error_exit`, Ctrl-C to 0).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from watcher.commands.exits import (
    EX_CANTCREAT,
    EX_FAILURE,
    EX_OK,
    EX_USAGE,
    store_error_exit,
)
from watcher.core.outbox import OutboxStatus

# Imported inside each command: `test-notify` loads the notifiers but not the
# daemon, and nothing heavy loads before the config has been read.
if TYPE_CHECKING:
    from collections.abc import Callable

    from watcher.core.message import SendOutcome
    from watcher.core.model import Event
    from watcher.core.settings import Settings, Target
    from watcher.daemon import Watcher
    from watcher.ops.logs import RedactingFilter

# The name `run` logs under since it lived in the cli module; kept so log lines
# read as they did.
LOGGER_NAME = "watcher.commands.cli"


def start_watching(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`run`, `once` or `test-notify` with loaded `settings`; returns the exit code."""
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
        return anyio.run(_run, settings, args.config, redactor, args.record, backend="asyncio")
    except StoreError as error:
        return store_error_exit(error, err)
    except KeyboardInterrupt:
        return EX_OK


async def _run(
    settings: Settings, config_path: Path, redactor: RedactingFilter, record: Path | None
) -> int:
    from watcher.config.loader import load_settings
    from watcher.daemon import Watcher

    def reload() -> Settings:
        new = load_settings(config_path)
        if record is not None:  # `run --record` wins over the file, on a reload too
            new = replace(new, record_path=record.absolute())
        return new

    from watcher.ops.endpoint import EndpointError
    from watcher.poll.recorder import RecordError

    if settings.state_url is not None:
        return await _run_replica(settings, reload, redactor)
    try:
        watcher = Watcher(settings, reload=reload)
    except RecordError as error:
        print(f"factory-watcher: {error}", file=sys.stderr)
        return EX_CANTCREAT
    # The logs mask the secrets in force: the current config's, and a replaced one's
    # only while a client or notifier built from it is open (it may quote them).
    live = watcher.live
    redactor.follow(lambda: live.secrets)
    try:
        await watcher.run()
    except EndpointError as error:
        logging.getLogger(LOGGER_NAME).error("%s", error)  # noqa: TRY400 - no traceback
        return EX_FAILURE
    return EX_OK


async def _run_replica(
    settings: Settings, reload: Callable[[], Settings], redactor: RedactingFilter
) -> int:
    """`run` with a PostgreSQL state: one replica of several, leading while it holds
    the lease (watcher.daemon.replica)."""
    from functools import partial

    from watcher.daemon.replica import Replica, holder_id
    from watcher.ops.endpoint import EndpointError
    from watcher.store.open import open_leader_store
    from watcher.store.postgres.lease import PgLease

    assert settings.state_url is not None
    lease = PgLease(settings.state_url.reveal(), holder_id(), settings.ha.lease_ttl)
    replica = Replica(
        settings, lease=lease, open_store=partial(open_leader_store, settings), reload=reload
    )
    # The logs mask the secrets in force, including those of a term's reloaded config.
    redactor.follow(
        lambda: (
            replica.watcher.live.secrets if replica.watcher else replica.settings.secret_values()
        )
    )
    try:
        await replica.run()
    except EndpointError as error:
        logging.getLogger(LOGGER_NAME).error("%s", error)  # noqa: TRY400 - no traceback
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
    """The synthetic notification `test-notify` sends: it says plainly it is a test."""
    from watcher.core.samples import build_test_notification

    return build_test_notification(now, "test-notify", "factory-watcher test notification")


async def send_test_notification(target: Target, event: Event, rule: str) -> SendOutcome:
    """Send `target` the test `event` once through its notifier (`test-notify`, `doctor --send`).

    A notifier that cannot be built (a `ca_file` that holds no certificate) or
    that raises is a permanent failure naming the error's type, not a traceback.
    """
    from watcher.core.message import FailureKind, SendFailed
    from watcher.core.render import render_for
    from watcher.notifiers import build_notifier

    try:
        notifier = build_notifier(target)
    except Exception as error:  # reported as this target's failure
        reason = f"the notifier cannot be built ({type(error).__name__})"
        return SendFailed(FailureKind.PERMANENT, reason)
    try:
        return await notifier.send(render_for(target.kind, event, rule), now=event.occurred_at)
    except Exception as error:  # reported as this target's failure
        return SendFailed(FailureKind.PERMANENT, f"the send raised {type(error).__name__}")
    finally:
        await notifier.aclose()


async def _test_notify(settings: Settings, target_name: str, out: TextIO) -> int:
    from watcher.core.message import Sent
    from watcher.core.secret import redact

    target = settings.targets.get(target_name)
    if target is None:
        names = ", ".join(sorted(settings.targets)) or "none"
        print(f"unknown target {target_name!r} (defined: {names})", file=out)
        return EX_USAGE
    outcome = await send_test_notification(target, test_event(datetime.now(UTC)), "test-notify")
    if isinstance(outcome, Sent):
        print(f"{target_name}: delivered", file=out)
        return EX_OK
    reason = redact(outcome.reason, settings.secret_values())
    print(f"{target_name}: failed ({outcome.kind}): {reason}", file=out)
    return EX_FAILURE
