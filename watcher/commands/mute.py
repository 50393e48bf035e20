"""`mute`, `mute --list` and `unmute`: silences stored in the state database.

A mute names a session (id, name or glob) or a rule; the daemon reads the
mutes in force from the store, so a mute set here takes effect without a
reload.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, TextIO

from watcher.commands.exits import EX_OK, EX_USAGE
from watcher.config.values import parse_duration
from watcher.core.rulestate import Mute, MuteKind
from watcher.store.open import open_store

if TYPE_CHECKING:
    from watcher.core.settings import Settings


def mute_command(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`mute SESSION|--rule NAME [--for D]`, or `mute --list`: the mutes in force."""
    now = datetime.now(UTC)
    store = open_store(settings)
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


def unmute_command(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`unmute SESSION|--rule NAME`: remove the mute set with exactly that name."""
    if (args.session is None) == (args.rule is None):
        print("factory-watcher: name a SESSION or --rule NAME (one of them)", file=err)
        return EX_USAGE
    kind, value = ("rule", args.rule) if args.rule is not None else ("session", args.session)
    store = open_store(settings)
    try:
        removed = store.remove_mutes(MuteKind(kind), value)
    finally:
        store.close()
    if removed:
        print(f"unmuted {kind} {value}", file=out)
    else:
        print(f"no mute on {kind} {value}", file=out)
    return EX_OK
