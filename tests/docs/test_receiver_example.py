"""The README's webhook receiver example, run against the real webhook notifier."""

from __future__ import annotations

import base64
import importlib.util
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.core.factories import event
from watcher.core.message import FailureKind, SendFailed, Sent
from watcher.core.model import EventType
from watcher.core.render import render_webhook
from watcher.core.secret import Secret
from watcher.core.settings import WebhookTarget
from watcher.notifiers.webhook import WebhookNotifier

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "receiver.py"
SECRET = "whsec_" + base64.b64encode(b"example-receiver-key-0042").decode()


def load_example() -> ModuleType:
    """docs/examples/receiver.py as a module."""
    spec = importlib.util.spec_from_file_location("receiver_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def handled() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The example receiver on 127.0.0.1, and the events it handed to its handler."""
    seen: list[dict[str, Any]] = []
    server = load_example().make_server(SECRET, 0, seen.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def post(url: str, sequence: int, *, secret: str = SECRET, kind: str = "e") -> object:
    """Send one rendered event body through the real notifier."""
    target = WebhookTarget(name="ex", url=url, secret=Secret(secret), allow_http=True)
    notifier = WebhookNotifier(target)
    the_event = event(
        EventType.MESSAGES_ADDED,
        id=f"evt_{kind}{sequence}",
        sequence=sequence,
        data={"added": 1, "total": sequence},
    )
    try:
        return await notifier.send(render_webhook(the_event, "r"), now=datetime.now(UTC))
    finally:
        await notifier.aclose()


def test_the_readme_shows_the_example_verbatim() -> None:
    """The receiver in the README is the file the tests run."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert EXAMPLE.read_text(encoding="utf-8") in readme


@pytest.mark.anyio
async def test_the_example_handles_each_event_once_in_order(
    handled: tuple[str, list[dict[str, Any]]],
) -> None:
    """Retries and stale updates are acknowledged but handled only once, in sequence order."""
    url, seen = handled
    outcomes = [await post(url, n) for n in (1, 3, 2, 3, 4)]
    assert outcomes == [Sent()] * 5
    assert [e["sequence"] for e in seen] == [1, 3, 4]


@pytest.mark.anyio
async def test_the_example_refuses_a_wrong_signature(
    handled: tuple[str, list[dict[str, Any]]],
) -> None:
    """A body signed with another secret gets 401, which the watcher treats as permanent."""
    url, seen = handled
    other = "whsec_" + base64.b64encode(b"not-the-receivers-key").decode()
    outcome = await post(url, 1, secret=other)
    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.PERMANENT
    assert seen == []


def test_sessions_are_ordered_apart() -> None:
    """One session's high sequence does not hide another session's events."""
    ordering = load_example().Ordering()
    seen: list[int] = []
    for session, sequence in (("a", 5), ("b", 1), ("a", 2), ("b", 2)):
        body = {"sequence": sequence, "session": {"id": session}}
        ordering.deliver(body, lambda e: seen.append(e["sequence"]))
    assert seen == [5, 1, 2]
