"""Bounded metric labels and the readiness decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.core.factories import snap
from watcher.core.figures import (
    PollOutcome,
    Readiness,
    ReadinessInputs,
    failure_reason,
    poll_outcome,
    readiness,
    status_bucket,
)
from watcher.core.message import FailureKind, SendFailed
from watcher.core.poll import Fetched, FetchFailed, FetchFailureKind, FetchResult, NotFound

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (Fetched(snap()), PollOutcome.OK),
        (NotFound(), PollOutcome.NOT_FOUND),
        (FetchFailed(FetchFailureKind.AUTH, "401", status=401), PollOutcome.AUTH_ERROR),
        (FetchFailed(FetchFailureKind.RETRYABLE, "429", status=429), PollOutcome.RATE_LIMITED),
        (FetchFailed(FetchFailureKind.RETRYABLE, "503", status=503), PollOutcome.SERVER_ERROR),
        (FetchFailed(FetchFailureKind.RETRYABLE, "timed out"), PollOutcome.ERROR),
    ],
)
def test_poll_outcome(result: FetchResult, outcome: PollOutcome) -> None:
    """Each poll result maps to one label of a fixed set."""
    assert poll_outcome(result) == outcome


def failed(reason: str, **details: object) -> SendFailed:
    """A failed send with `details`."""
    return SendFailed(FailureKind.RETRYABLE, reason, details=details)


@pytest.mark.parametrize(
    ("outcome", "label"),
    [
        (
            failed("slack: not_in_channel", error="not_in_channel"),
            "not_in_channel",
        ),
        (failed("slack: channel_not_found", error="channel_not_found"), "channel_not_found"),
        (failed("slack webhook: HTTP 403: invalid_token", error="invalid_token"), "invalid_token"),
        (failed("slack: whatever <@U123> said", error="some-new-error-xyz"), "slack_error"),
        (failed("webhook: HTTP 429", status=429), "http_429"),
        (failed("webhook: HTTP 401", status=401), "http_401"),
        (failed("webhook: HTTP 403", status=403), "http_403"),
        (failed("webhook: HTTP 404: secret-echo", status=404), "http_4xx"),
        (failed("webhook: HTTP 307: redirect not followed", status=307), "http_3xx"),
        (failed("webhook: HTTP 502", status=502), "http_5xx"),
        (failed("webhook: timed out"), "timeout"),
        (failed("webhook: connection failed (ConnectError: refused)"), "connection"),
        (failed("notifier error: KeyError"), "notifier_error"),
        (failed("webhook: invalid URL"), "invalid_target"),
        (failed("something else entirely, with fk-secret"), "other"),
    ],
)
def test_failure_reason_is_from_a_fixed_vocabulary(outcome: SendFailed, label: str) -> None:
    """A destination's own words never become a label, only known names and classes."""
    assert failure_reason(outcome) == label


@pytest.mark.parametrize(
    ("status", "gone", "bucket"),
    [
        ("running", False, "running"),
        ("idle", False, "idle"),
        ("pending", False, "pending"),
        ("paused-for-lunch", False, "other"),
        (None, False, "unknown"),
        ("running", True, "gone"),
    ],
)
def test_status_bucket(status: str | None, gone: bool, bucket: str) -> None:
    """Unknown API statuses fold into `other`: the API cannot grow our series."""
    assert status_bucket(status, gone=gone) == bucket


def inputs(**changes: object) -> ReadinessInputs:
    """Readiness inputs of a healthy watcher, with `changes`."""
    base: dict[str, object] = {
        "started": True,
        "sessions": 2,
        "longest_interval": timedelta(seconds=30),
        "last_success": NOW - timedelta(seconds=10),
        "last_failure_reason": None,
        "store_checked_at": NOW - timedelta(seconds=2),
        "store_error": None,
        "store_check_period": timedelta(seconds=5),
    }
    base.update(changes)
    return ReadinessInputs(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (inputs(), Readiness(True, "ok")),
        (inputs(started=False), Readiness(False, "not started")),
        (inputs(stopping=True), Readiness(False, "stopping")),
        (
            inputs(store_error="attempt to write a readonly database"),
            Readiness(False, "store not writable: attempt to write a readonly database"),
        ),
        (inputs(store_checked_at=None), Readiness(False, "store not checked yet")),
        (
            inputs(store_checked_at=NOW - timedelta(seconds=16)),
            Readiness(False, "store has not answered for 16s"),
        ),
        (inputs(sessions=0, last_success=None), Readiness(True, "ok: no sessions to poll")),
        (
            inputs(last_success=None, last_failure_reason="HTTP 401"),
            Readiness(False, "no successful poll yet; last failure: HTTP 401"),
        ),
        (inputs(last_success=NOW - timedelta(seconds=60)), Readiness(True, "ok")),
        (
            inputs(last_success=NOW - timedelta(seconds=61), last_failure_reason="HTTP 503"),
            Readiness(False, "API down: no successful poll for 61s (limit 60s): HTTP 503"),
        ),
    ],
    ids=[
        "ok",
        "not-started",
        "stopping",
        "store-read-only",
        "store-unchecked",
        "store-silent",
        "nothing-to-poll",
        "never-polled",
        "at-the-limit",
        "api-down",
    ],
)
def test_readiness(given: ReadinessInputs, expected: Readiness) -> None:
    """Ready when a poll succeeded within twice the longest interval and the store writes."""
    assert readiness(given, NOW) == expected
