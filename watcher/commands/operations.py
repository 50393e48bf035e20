"""`status`, `schema` and `backup`: operator commands that need no credentials.

`status` and `backup` find the state database from `--db`, else from the
config (which then must load); `schema` prints the config file's JSON Schema.
What they read and copy is `watcher.commands.status` and
`watcher.commands.backup`; this module turns it into output and exit codes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from watcher.commands.exits import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_FAILURE,
    EX_OK,
    EX_USAGE,
    load_config,
)

# Each command imports what it needs: `schema` loads pydantic's models but no
# database code, `backup` no status report.
if TYPE_CHECKING:
    from watcher.core.settings import ReportSpec, Settings, WatchedSession


def operate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`status`, `schema` or `backup`, as `args.command` says; returns the exit code."""
    if args.command == "schema":
        from watcher.config.models import config_schema

        print(json.dumps(config_schema(), indent=2), file=out)
        return EX_OK
    configured: tuple[WatchedSession, ...] = ()
    reports: tuple[ReportSpec, ...] = ()
    secrets: tuple[str, ...] = ()
    database: Path | None = args.db
    if database is None:
        settings = load_config(args.config, err)
        if settings is None:
            print("(--db PATH reads the state database without the config)", file=err)
            return EX_CONFIG
        database, configured = settings.state_path, settings.sessions
        reports = settings.reports
        secrets = settings.secret_values()
        if settings.state_url is not None:
            return _postgres(args, settings, out, err)
    if args.command == "backup":
        return _backup(database, args.path, out, err)
    return _status(database, configured, reports, secrets, as_json=args.json, out=out, err=err)


def _postgres(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """`status` or `backup` of a PostgreSQL state (`state.url`): read-only, never the password."""
    from datetime import UTC, datetime

    from watcher.commands.status import build_report, next_runs, render_text, to_json
    from watcher.core.secret import redact
    from watcher.store import StoreError
    from watcher.store.open import open_read_only_for, state_location
    from watcher.store.postgres import pg_dump_advice

    secrets = settings.secret_values()
    if args.command == "backup":
        print(f"factory-watcher: {pg_dump_advice(state_location(settings))}", file=err)
        return EX_USAGE
    try:
        store = open_read_only_for(settings)
        try:
            rows = store.read_status([w.id for w in settings.sessions])
        finally:
            store.close()
    except StoreError as error:
        print(redact(f"factory-watcher: {error}", secrets), file=err)
        return EX_FAILURE
    now = datetime.now(UTC)
    runs = next_runs(settings.reports, now)  # each report's next run, as SQLite's status shows
    report = build_report(rows, state_location(settings), settings.sessions, now, runs)
    text = json.dumps(to_json(report), indent=2) if args.json else render_text(report)
    print(redact(text, secrets), file=out)
    return EX_OK


def _backup(database: Path, destination: Path, out: TextIO, err: TextIO) -> int:
    from watcher.commands.backup import BackupError, backup_database

    try:
        result = backup_database(database, destination)
    except BackupError as error:
        print(f"factory-watcher: {error}", file=err)
        return EX_CANTCREAT
    print(
        f"backed up {database} to {result.path} ({result.bytes} bytes, integrity check ok)",
        file=out,
    )
    return EX_OK


def _status(
    database: Path,
    configured: tuple[WatchedSession, ...],
    reports: tuple[ReportSpec, ...],
    secrets: tuple[str, ...],
    *,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    from watcher.commands.status import StatusError, read_status, render_text, to_json
    from watcher.core.secret import redact

    try:
        report = read_status(database, configured, reports=reports)
    except StatusError as error:
        print(f"factory-watcher: {error}", file=err)
        return EX_FAILURE
    text = json.dumps(to_json(report), indent=2) if as_json else render_text(report)
    # Stored errors were masked when written; mask again in case a secret changed since.
    print(redact(text, secrets), file=out)
    return EX_OK
