"""The published webhook body schema (docs/webhook-event.schema.json), as tests apply it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from watcher.testing.sinks import ReceivedWebhook

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "webhook-event.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_problems(body: Any) -> list[str]:
    """Every way `body` (parsed JSON) departs from the published schema."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
        for error in VALIDATOR.iter_errors(body)
    ]


class BodyChecker:
    """Checks every webhook a receiver gets: it validates against the published schema,
    and the `sequence` of each session's distinct events increases strictly in the
    order they arrive (a retry repeats an id with its sequence).

    It runs in the receiver's request threads, so it records problems for the test
    to assert on rather than raising there.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.problems: list[str] = []
        self.checked = 0
        self._seen: dict[str, int] = {}  # event id -> sequence
        self._last: dict[str, int] = {}  # session id ("" for none) -> highest sequence

    def __call__(self, received: ReceivedWebhook) -> None:
        """Check one received webhook."""
        body = received.json
        with self._lock:
            self.checked += 1
            found = schema_problems(body) if body is not None else ["body is not JSON"]
            self.problems.extend(f"{received.headers.get('webhook-id')}: {p}" for p in found)
            if found or not isinstance(body, dict):
                return
            event_id, sequence = body["id"], body["sequence"]
            if event_id in self._seen:
                if self._seen[event_id] != sequence:
                    self.problems.append(f"{event_id}: sequence changed on a retry")
                return
            self._seen[event_id] = sequence
            session = body.get("session")
            lane = session["id"] if isinstance(session, dict) else ""
            if sequence <= self._last.get(lane, 0):
                self.problems.append(
                    f"{event_id}: sequence {sequence} after {self._last[lane]} for {lane or '-'}"
                )
            self._last[lane] = max(sequence, self._last.get(lane, 0))
