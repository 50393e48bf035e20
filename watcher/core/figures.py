"""What operators see: bounded metric labels and the readiness decision (pure).

Every label value here comes from a small, fixed vocabulary: a metric label
never carries a session id, a title, an error text or a secret, so the
number of series stays bounded and the figures can be shown to anyone who
may see that the watcher exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from watcher.core.message import SendFailed
from watcher.core.model import KnownStatus
from watcher.core.poll import Answer, FetchFailed, FetchFailureKind, NotFound


class PollOutcome(StrEnum):
    """`factory_watcher_polls_total{outcome}`."""

    OK = "ok"
    NOT_FOUND = "not_found"
    AUTH_ERROR = "auth_error"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    ERROR = "error"  # timeouts, resets, unreadable bodies


def poll_outcome(result: Answer) -> PollOutcome:
    """The label of one poll's outcome."""
    if isinstance(result, NotFound):
        return PollOutcome.NOT_FOUND
    if not isinstance(result, FetchFailed):
        return PollOutcome.OK
    if result.kind is FetchFailureKind.AUTH:
        return PollOutcome.AUTH_ERROR
    if result.status == 429:
        return PollOutcome.RATE_LIMITED
    if result.status is not None and result.status >= 500:
        return PollOutcome.SERVER_ERROR
    return PollOutcome.ERROR


# Slack error names worth their own series: the ones an operator acts on.
# Anything else a destination says is folded into `slack_error`.
SLACK_ERRORS = frozenset(
    {
        "ratelimited",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "no_service",
        "no_team",
        "action_prohibited",
        "posting_to_general_channel_denied",
        "invalid_payload",
        "invalid_token",
        "channel_is_archived",
        "team_disabled",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)


def failure_reason(outcome: SendFailed) -> str:
    """The `reason` label of a failed send: a Slack error name, an HTTP class or a transport."""
    error = outcome.details.get("error")
    if isinstance(error, str) and error:
        return error if error in SLACK_ERRORS else "slack_error"
    status = outcome.details.get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        if status == 429:
            return "http_429"
        if 300 <= status < 400:
            return "http_3xx"
        if 400 <= status < 500:
            return "http_401" if status == 401 else "http_403" if status == 403 else "http_4xx"
        if status >= 500:
            return "http_5xx"
        return "bad_response"
    text = outcome.reason
    if "timed out" in text:
        return "timeout"
    if "connection failed" in text:
        return "connection"
    if "notifier error" in text:
        return "notifier_error"
    if "invalid URL" in text or "refused" in text or "unsupported scheme" in text:
        return "invalid_target"
    return "other"


class SessionBucket(StrEnum):
    """`factory_watcher_sessions{status}` beyond the documented API statuses."""

    GONE = "gone"  # answers 404
    UNKNOWN = "unknown"  # not polled successfully yet
    OTHER = "other"  # a status the API does not document (yet)


def status_bucket(status: str | None, *, gone: bool) -> str:
    """The `status` label of a watched session: a known status, gone, unknown or other."""
    if gone:
        return SessionBucket.GONE
    if status is None:
        return SessionBucket.UNKNOWN
    known = {s.value for s in KnownStatus}
    return status if status in known else SessionBucket.OTHER


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer of `/readyz`: ready or not, with a one-line reason."""

    ready: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ReadinessInputs:
    """What the daemon knows when asked: all times on its own clock."""

    started: bool
    sessions: int
    longest_interval: timedelta
    last_success: datetime | None
    last_failure_reason: str | None
    store_checked_at: datetime | None
    store_error: str | None
    store_check_period: timedelta
    stopping: bool = False


def readiness(inputs: ReadinessInputs, now: datetime) -> Readiness:
    """Ready when a poll succeeded within twice the longest interval and the store is writable.

    Not started, a store that refused its last write (or has not answered for
    three check periods), and no successful poll for too long each make the
    watcher not ready, with the first of those reasons.
    """
    if inputs.stopping:
        return Readiness(False, "stopping")
    if not inputs.started:
        return Readiness(False, "not started")
    if inputs.store_error is not None:
        return Readiness(False, f"store not writable: {inputs.store_error}")
    if inputs.store_checked_at is None:
        return Readiness(False, "store not checked yet")
    silent = now - inputs.store_checked_at
    if silent > 3 * inputs.store_check_period:
        return Readiness(False, f"store has not answered for {silent.total_seconds():.0f}s")
    if inputs.sessions == 0:
        return Readiness(True, "ok: no sessions to poll")
    limit = 2 * inputs.longest_interval
    if inputs.last_success is None:
        why = f"; last failure: {inputs.last_failure_reason}" if inputs.last_failure_reason else ""
        return Readiness(False, f"no successful poll yet{why}")
    age = now - inputs.last_success
    if age > limit:
        why = f": {inputs.last_failure_reason}" if inputs.last_failure_reason else ""
        return Readiness(
            False,
            f"API down: no successful poll for {age.total_seconds():.0f}s "
            f"(limit {limit.total_seconds():g}s){why}",
        )
    return Readiness(True, "ok")
