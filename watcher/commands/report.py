"""`report NAME [--window 24h] [--json]`: a scheduled report made now, printed, never sent.

It reads the state database read-only (a daemon may be writing it): SQLite at
`state.path` (or `--db`), or PostgreSQL at `state.url`, opened as `status`
opens it (`watcher.store.open`). It builds the report exactly as a scheduled
run does (`watcher.core.report`), for the window ending now: `--window`, else
the report's own `window`, else (since_last) from its last recorded run, or
the last 24 hours before it ever ran. Text for people by default; `--json`
prints the document a webhook's `data` carries.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import TextIO

from watcher.commands.exits import EX_OK, EX_USAGE, store_error_exit
from watcher.config.values import parse_duration
from watcher.core.report import build_report
from watcher.core.reportclock import window
from watcher.core.reportview import report_text
from watcher.core.settings import ReportSpec, Settings
from watcher.store import ReportReader, StoreError, open_read_only
from watcher.store.open import open_read_only_for


def report_window(
    spec: ReportSpec, store: ReportReader, now: datetime, given: timedelta | None
) -> tuple[datetime, datetime]:
    """The window `(start, now]` the report covers when made at `now`: `given`, else
    what a scheduled run at `now` would cover (watcher.core.reportclock.window)."""
    if given is not None:
        return now - given, now
    return window(spec, store.report_runs().get(spec.name), now)


def report_command(
    settings: Settings,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    now: datetime | None = None,
) -> int:
    """Print the report called `args.name` for its window ending now; send nothing."""
    spec = next((r for r in settings.reports if r.name == args.name), None)
    if spec is None:
        names = ", ".join(r.name for r in settings.reports) or "none in the config"
        print(f"factory-watcher: unknown report {args.name!r} (reports: {names})", file=err)
        return EX_USAGE
    given = None
    if args.window is not None:
        try:
            given = parse_duration(args.window)
        except ValueError as error:
            print(f"factory-watcher: --window {args.window!r}: {error}", file=err)
            return EX_USAGE
    now = now or datetime.now(UTC)
    try:
        # --db names an SQLite file; otherwise the configured state, SQLite or PostgreSQL.
        store = open_read_only(args.db) if args.db is not None else open_read_only_for(settings)
        try:
            start, end = report_window(spec, store, now, given)
            history = store.report_history(start, end)
        finally:
            store.close()
    except StoreError as error:
        return store_error_exit(error, err)
    report = build_report(spec, history, start, end, now, settings.factory.session_url)
    if args.json:
        print(json.dumps(report.document, indent=2, ensure_ascii=False), file=out)
    else:
        print(report_text(report.document), end="", file=out)
    return EX_OK
