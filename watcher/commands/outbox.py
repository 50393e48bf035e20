"""`outbox list|retry|purge`: the notifications in the state database, read or requeued.

It finds the database from the config's `state.path` with the YAML parser
alone when it can (no pydantic, no daemon: it is the quick look an operator
takes); a path the full loader must work out sends it through the loader.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TextIO

from watcher.commands.exits import (
    EX_CONFIG,
    EX_OK,
    EX_USAGE,
    load_config,
    store_error_exit,
)
from watcher.config.statepath import find_state_path
from watcher.core.outbox import OutboxStatus
from watcher.ops.logs import configure_logging
from watcher.store import SqliteStore, Store, StoreError
from watcher.store.open import open_store


def outbox_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`outbox ACTION`: finds the database without the full config loader when it can."""
    state_path = find_state_path(args.config)
    secrets: tuple[str, ...] = ()
    opener: Callable[[], Store]
    if state_path is None:  # the full loader names what is wrong, or finds the store
        settings = load_config(args.config, err)
        if settings is None:
            return EX_CONFIG
        secrets = settings.secret_values()
        opener = partial(open_store, settings)  # SQLite or PostgreSQL, as configured
    else:
        opener = partial(SqliteStore, state_path)
    configure_logging(args.log_level, stream=err, secrets=secrets)
    try:
        return _outbox(opener(), args.action, args.ids, args.status, out)
    except StoreError as error:
        return store_error_exit(error, err)
    except KeyboardInterrupt:
        return EX_OK


def _outbox(store: Store, action: str, ids: list[int], status: str | None, out: TextIO) -> int:
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
