"""`status` shows the state's size and the rows retention pruned (text and `--json`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.core.factories import T0, event
from watcher.commands.status import build_report, read_status, render_text, storage_line, to_json
from watcher.core.rules import Route
from watcher.store import OutboxStatus, SqliteStore, StatusRows


def rows(database_bytes: int | None, pruned: dict[str, int]) -> StatusRows:
    """Status rows with nothing but the storage figures."""
    return StatusRows({}, {}, {}, {}, {}, database_bytes=database_bytes, rows_pruned=pruned)


@pytest.mark.parametrize(
    ("database_bytes", "pruned", "line"),
    [
        (None, {}, "state: size unknown; nothing pruned yet"),
        (900, {}, "state: 900 B; nothing pruned yet"),
        (
            3 * 1024 * 1024 + 1024 * 512,
            {"outbox": 7, "events": 5, "sessions": 0},
            "state: 3.5 MB; pruned 12 row(s) (events 5, outbox 7)",
        ),
        (5 * 1024**3, {"sessions": 1}, "state: 5.0 GB; pruned 1 row(s) (sessions 1)"),
    ],
)
def test_the_storage_line_says_size_and_rows_pruned(
    database_bytes: int | None, pruned: dict[str, int], line: str
) -> None:
    """One line: the database size, then rows pruned in all and per table."""
    report = build_report(rows(database_bytes, pruned), "state.db", (), T0)
    assert storage_line(report) == line
    assert render_text(report).splitlines()[-1] == line


def test_status_reads_what_the_store_pruned(tmp_path: Path) -> None:
    """Through the read-only view: the running totals and the database's size, text and JSON."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    try:
        e = event(id="e1")
        store.record_events([e], [(e, Route("r", "hook"))], T0)
        (row,) = store.list_outbox(OutboxStatus.PENDING)
        store.mark_delivered(row.id, T0, None)
        store.prune_finished(OutboxStatus.DELIVERED, T0 + timedelta(days=1), 500)
        size = store.database_bytes()
    finally:
        store.close()
    report = read_status(path, now=T0)
    assert (report.database_bytes, dict(report.rows_pruned)) == (size, {"events": 1, "outbox": 1})
    assert to_json(report)["storage"] == {
        "database_bytes": size,
        "rows_pruned": {"events": 1, "outbox": 1},
    }
