"""A simulated Factory Public API on 127.0.0.1, for `demo`, the tests and the benchmarks.

`FactorySimulator` serves `GET /api/v0/sessions/{id}` and `GET /api/v0/sessions`
with the documented bodies, from sessions held in memory. Tests drive it from
Python (`add_session`, `update`, `complete_run`, ...) or, when the watcher runs
in another process, over HTTP under `/_sim/`. `Autopilot` moves sessions
through realistic lifecycles for the demo, deterministically for a seed.

Run standalone with `python -m watcher.testing.sim --port N --sessions K`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum, StrEnum, auto
from types import FrameType, TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qs, unquote, urlsplit

from watcher.core.model import KnownStatus, TokenUsage
from watcher.core.secret import Secret
from watcher.testing.fakehttp import FakeHandler, Fault, FaultRule, LoopbackServer

API_PREFIX: Final = "/api/v0/sessions"
CONTROL_PREFIX: Final = "/_sim/"
DEFAULT_API_KEY: Final = "fk-sim-key"
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
REQUEST_LOG_SIZE: Final = 100
ENDLESS_LIMIT: Final = 1 << 30
FORBIDDEN_DETAIL: Final = "This API key may not access sessions"


class SimulatorError(Exception):
    """A control operation the simulator cannot perform."""


class UnknownSessionError(SimulatorError):
    """The session was never created, or was deleted."""


class DuplicateSessionError(SimulatorError):
    """A session with this id already exists (deleted ids stay taken, as soft deletes do)."""


class InvalidRequestError(SimulatorError):
    """A control call or request carries a value the simulator cannot accept."""


@dataclass(frozen=True, slots=True)
class SimTag:
    """One entry of `sessionSettings.tags`."""

    name: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimSession:
    """The simulator's state of one session; timestamps are Unix milliseconds."""

    session_id: str
    status: str
    message_count: int
    created_at_ms: int
    updated_at_ms: int
    title: str = ""
    completed_at_ms: int | None = None
    computer_id: str | None = None
    model: str | None = None
    token_usage: TokenUsage | None = None
    inclusive_token_usage: TokenUsage | None = None
    archived_at: str | None = None
    tags: tuple[SimTag, ...] = ()
    deleted: bool = False
    interaction_mode: str | None = None
    autonomy_level: str | None = None
    assistant_active_ms: float | None = None


@dataclass(frozen=True, slots=True)
class RawBody:
    """Bytes served as-is for one session's `GET`, in place of its documented body.

    `endless` repeats `body` without a Content-Length until the client hangs up
    (or `ENDLESS_LIMIT` bytes have gone out): a body no client should read whole.
    """

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    endless: bool = False


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request the simulator answered: when (monotonic seconds), where, with what.

    `status` is 0 when the connection was reset before any response.
    """

    at: float
    path: str
    status: int


def _token_usage_body(usage: TokenUsage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "cacheCreationTokens": usage.cache_creation_tokens,
        "cacheReadTokens": usage.cache_read_tokens,
        "thinkingTokens": usage.thinking_tokens,
    }
    if usage.factory_credits is not None:
        body["factoryCredits"] = usage.factory_credits
    return body


def _tag_body(tag: SimTag) -> dict[str, Any]:
    if tag.metadata:
        return {"name": tag.name, "metadata": dict(tag.metadata)}
    return {"name": tag.name}


def session_body(session: SimSession) -> dict[str, Any]:
    """The `GET /api/v0/sessions/{id}` body for `session`; unset optional fields are absent."""
    body: dict[str, Any] = {"sessionId": session.session_id}
    if session.title:
        body["title"] = session.title
    body["status"] = session.status
    body["messageCount"] = session.message_count
    body["createdAt"] = session.created_at_ms
    body["updatedAt"] = session.updated_at_ms
    if session.completed_at_ms is not None:
        body["completedAt"] = session.completed_at_ms
    if session.computer_id is not None:
        body["computerId"] = session.computer_id
    settings: dict[str, Any] = {}
    if session.model is not None:
        settings["model"] = session.model
    if session.interaction_mode is not None:
        settings["interactionMode"] = session.interaction_mode
    if session.autonomy_level is not None:
        settings["autonomyLevel"] = session.autonomy_level
    if session.assistant_active_ms is not None:
        settings["assistantActiveTimeMs"] = session.assistant_active_ms
    if session.token_usage is not None:
        settings["tokenUsage"] = _token_usage_body(session.token_usage)
    if session.inclusive_token_usage is not None:
        settings["inclusiveTokenUsage"] = _token_usage_body(session.inclusive_token_usage)
    if session.archived_at is not None:
        settings["archivedAt"] = session.archived_at
    if session.tags:
        settings["tags"] = [_tag_body(tag) for tag in session.tags]
    if settings:
        body["sessionSettings"] = settings
    return body


def error_body(status: int, title: str, detail: str) -> dict[str, Any]:
    """The API's error body shape: `{detail, status, title}`."""
    return {"detail": detail, "status": status, "title": title}


def iso_from_ms(value_ms: int) -> str:
    """Unix ms as the ISO 8601 UTC string the API uses for `archivedAt`."""
    moment = datetime.fromtimestamp(value_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def grow_tokens(usage: TokenUsage | None, messages: int) -> TokenUsage:
    """Token counters after `messages` more messages: every counter grows, credits too."""
    base = usage if usage is not None else TokenUsage()
    credits = base.factory_credits if base.factory_credits is not None else 0.0
    return TokenUsage(
        input_tokens=base.input_tokens + 1800 * messages,
        output_tokens=base.output_tokens + 420 * messages,
        cache_creation_tokens=base.cache_creation_tokens + 600 * messages,
        cache_read_tokens=base.cache_read_tokens + 5200 * messages,
        thinking_tokens=base.thinking_tokens + 150 * messages,
        factory_credits=round(credits + 0.35 * messages, 4),
    )


def _as_tags(tags: Sequence[SimTag | str]) -> tuple[SimTag, ...]:
    result = tuple(tag if isinstance(tag, SimTag) else SimTag(tag) for tag in tags)
    if any(not tag.name for tag in result):
        raise InvalidRequestError("tag names must be non-empty")
    return result


def _check_status(status: str) -> str:
    if not status:
        raise InvalidRequestError("status must be a non-empty string")
    return status


def _check_count(count: int) -> int:
    if count < 0:
        raise InvalidRequestError("message_count must not be negative")
    return count


class _Unset(Enum):
    UNSET = auto()


_UNSET: Final = _Unset.UNSET


class FactorySimulator(LoopbackServer):
    """The Factory Public API served from memory on 127.0.0.1.

    `clock` gives wall-clock seconds for the sessions' timestamps; `monotonic`
    timestamps the request log. Every public method is thread-safe.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        port: int = 0,
    ) -> None:
        super().__init__(_SimHandler, port)
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._api_key = Secret(api_key)
        # Keys the API knows but refuses: key -> (status, detail), e.g. a Member's key.
        self._refused: dict[str, tuple[int, str]] = {}
        self._sessions: dict[str, SimSession] = {}
        # Insertion order is the list endpoint's order; cursors are indexes into it.
        self._order: list[str] = []
        self._counts: dict[str, int] = {}
        self._log: dict[str, deque[RequestRecord]] = {}
        self._total_requests = 0
        self._raw: dict[str, RawBody] = {}
        # What GET /sessions/{id}/messages answers, oldest first.
        self._messages: dict[str, list[dict[str, Any]]] = {}
        # The list's item schema is not documented: a bare mode carries only ids.
        self.list_ids_only = False

    # -- reading ---------------------------------------------------------------

    def now(self) -> float:
        """The simulator's wall clock, in seconds since the epoch."""
        return self._clock()

    def session(self, session_id: str) -> SimSession:
        """The current state of a session, deleted ones included."""
        with self._lock:
            found = self._sessions.get(session_id)
        if found is None:
            raise UnknownSessionError(f"no session {session_id!r}")
        return found

    def sessions(self, *, include_deleted: bool = False) -> list[SimSession]:
        """Every session in creation order; deleted ones only when asked."""
        with self._lock:
            every = [self._sessions[sid] for sid in self._order]
        return every if include_deleted else [s for s in every if not s.deleted]

    def snapshot_json(self, session_id: str) -> dict[str, Any]:
        """The body `GET /api/v0/sessions/{id}` answers right now."""
        found = self.session(session_id)
        if found.deleted:
            raise UnknownSessionError(f"session {session_id!r} is deleted")
        return session_body(found)

    def request_count(self, session_id: str) -> int:
        """API requests received for this session's path, faulted and refused ones included."""
        return self.path_request_count(f"{API_PREFIX}/{session_id}")

    def path_request_count(self, path: str) -> int:
        """API requests received for a path (without query), faulted and refused ones included."""
        with self._lock:
            return self._counts.get(path, 0)

    @property
    def total_requests(self) -> int:
        """API requests received on any path (control routes excluded)."""
        with self._lock:
            return self._total_requests

    def request_log(self, path: str) -> list[RequestRecord]:
        """The latest requests to an API path (without query), oldest first, bounded."""
        with self._lock:
            return list(self._log.get(path, ()))

    def session_requests(self, session_id: str) -> list[RequestRecord]:
        """The latest requests for one session, oldest first (see `request_log`)."""
        return self.request_log(f"{API_PREFIX}/{session_id}")

    def stats(self) -> dict[str, Any]:
        """Counters for `GET /_sim/stats` and benchmarks."""
        with self._lock:
            every = list(self._sessions.values())
            total = self._total_requests
        statuses: dict[str, int] = {}
        for s in every:
            if not s.deleted:
                statuses[s.status] = statuses.get(s.status, 0) + 1
        return {
            "total_requests": total,
            "sessions": sum(1 for s in every if not s.deleted),
            "deleted": sum(1 for s in every if s.deleted),
            "archived": sum(1 for s in every if not s.deleted and s.archived_at is not None),
            "statuses": statuses,
            "faults_applied": len(self.faults.applied),
        }

    # -- control ---------------------------------------------------------------

    def serve_raw(self, session_id: str, raw: RawBody | bytes | None) -> None:
        """Answer `GET /api/v0/sessions/{session_id}` with `raw` from now on (None: stop).

        The override applies whether or not the session exists, and leaves the
        session's state alone: clearing it serves the documented body again.
        """
        with self._lock:
            if raw is None:
                self._raw.pop(session_id, None)
            else:
                self._raw[session_id] = RawBody(raw) if isinstance(raw, bytes) else raw

    def add_message(
        self,
        session_id: str,
        text: str,
        *,
        role: str = "assistant",
        phase: str | None = "final_answer",
        created_ms: int | None = None,
    ) -> dict[str, Any]:
        """Append a message to what `GET /sessions/{id}/messages` lists (an answer by default)."""
        with self._lock:
            listed = self._messages.setdefault(session_id, [])
            at = self._now_ms() if created_ms is None else created_ms
            message: dict[str, Any] = {
                "id": f"msg-{session_id}-{len(listed) + 1}",
                "role": role,
                "content": [{"type": "text", "text": text}],
                "createdAt": at,
                "updatedAt": at,
                "isError": False,
            }
            if role == "assistant" and phase is not None:
                message["phase"] = phase
            listed.append(message)
            return dict(message)

    def set_messages(self, session_id: str, messages: Sequence[Mapping[str, Any]]) -> None:
        """Replace the messages of a session with these raw objects (any shape, for faults)."""
        with self._lock:
            self._messages[session_id] = [dict(m) for m in messages]

    def _messages_of(self, session_id: str, role: str | None, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            listed = self._messages.get(session_id, [])
            chosen = [m for m in listed if role is None or m.get("role") == role]
            return chosen[-limit:]

    def set_list_ids_only(self, ids_only: bool) -> None:
        """Make list items carry only `sessionId` (True) or the full session (False)."""
        with self._lock:
            self.list_ids_only = ids_only

    def set_api_key(self, api_key: str) -> None:
        """Accept only this key from now on (key rotation, auth failure tests)."""
        with self._lock:
            self._api_key = Secret(api_key)

    def refuse_key(self, api_key: str, status: int = 403, detail: str = FORBIDDEN_DETAIL) -> None:
        """Answer every API request that carries `api_key` with `status` and `detail`.

        A 403 is what Factory answers for a Member's or guest's key, and for
        any key of an organisation without the Sessions feature.
        """
        if not 400 <= status < 500:
            raise InvalidRequestError(f"a refusal is a 4xx status, not {status}")
        with self._lock:
            self._refused[api_key] = (status, detail)

    def refusal(self, header: str | None) -> tuple[int, str] | None:
        """The (status, detail) a request with this Authorization header is refused with."""
        key = (header or "").removeprefix("Bearer ")
        with self._lock:
            return self._refused.get(key)

    def add_session(
        self,
        session_id: str,
        *,
        title: str = "",
        status: str = KnownStatus.PENDING,
        message_count: int = 0,
        computer_id: str | None = None,
        model: str | None = None,
        token_usage: TokenUsage | None = None,
        inclusive_token_usage: TokenUsage | None = None,
        tags: Sequence[SimTag | str] = (),
    ) -> SimSession:
        """Create a session; createdAt and updatedAt are now."""
        if not session_id or "/" in session_id:
            raise InvalidRequestError("session ids must be non-empty and contain no '/'")
        created = SimSession(
            session_id=session_id,
            status=_check_status(str(status)),
            message_count=_check_count(message_count),
            created_at_ms=0,
            updated_at_ms=0,
            title=title,
            computer_id=computer_id,
            model=model,
            token_usage=token_usage,
            inclusive_token_usage=inclusive_token_usage,
            tags=_as_tags(tags),
        )
        with self._lock:
            if session_id in self._sessions:
                raise DuplicateSessionError(f"session {session_id!r} already exists")
            now_ms = self._now_ms()
            created = replace(created, created_at_ms=now_ms, updated_at_ms=now_ms)
            self._sessions[session_id] = created
            self._order.append(session_id)
        return created

    def add_sessions(self, count: int, *, prefix: str = "sim-") -> list[str]:
        """Create `count` pending sessions named `{prefix}0001`...; returns their ids."""
        ids = []
        with self._lock:
            start = len(self._order)
        for n in range(start + 1, start + count + 1):
            session_id = f"{prefix}{n:04d}"
            self.add_session(
                session_id,
                title=f"Simulated session {n}",
                model="sim-model-1",
                token_usage=TokenUsage(factory_credits=0.0),
                inclusive_token_usage=TokenUsage(factory_credits=0.0),
            )
            ids.append(session_id)
        return ids

    def update(
        self,
        session_id: str,
        *,
        status: str | _Unset = _UNSET,
        title: str | _Unset = _UNSET,
        message_count: int | _Unset = _UNSET,
        computer_id: str | _Unset | None = _UNSET,
        model: str | _Unset | None = _UNSET,
        token_usage: TokenUsage | _Unset | None = _UNSET,
        inclusive_token_usage: TokenUsage | _Unset | None = _UNSET,
        tags: Sequence[SimTag | str] | _Unset = _UNSET,
        interaction_mode: str | _Unset | None = _UNSET,
        autonomy_level: str | _Unset | None = _UNSET,
        assistant_active_ms: float | _Unset | None = _UNSET,
        completed: bool = False,
        archived: bool | None = None,
    ) -> SimSession:
        """Change fields of a live session; always bumps updatedAt.

        `completed=True` sets completedAt to the new updatedAt; `archived=True`
        sets archivedAt (kept if already archived), `archived=False` clears it.
        """
        changes: dict[str, Any] = {}
        if not isinstance(status, _Unset):
            changes["status"] = _check_status(status)
        if not isinstance(title, _Unset):
            changes["title"] = title
        if not isinstance(message_count, _Unset):
            changes["message_count"] = _check_count(message_count)
        if not isinstance(computer_id, _Unset):
            changes["computer_id"] = computer_id
        if not isinstance(model, _Unset):
            changes["model"] = model
        if not isinstance(token_usage, _Unset):
            changes["token_usage"] = token_usage
        if not isinstance(inclusive_token_usage, _Unset):
            changes["inclusive_token_usage"] = inclusive_token_usage
        if not isinstance(tags, _Unset):
            changes["tags"] = _as_tags(tags)
        for key, value in (
            ("interaction_mode", interaction_mode),
            ("autonomy_level", autonomy_level),
            ("assistant_active_ms", assistant_active_ms),
        ):
            if not isinstance(value, _Unset):
                changes[key] = value
        return self._mutate(
            session_id,
            lambda s, now_ms: replace(
                s,
                **changes,
                completed_at_ms=now_ms if completed else s.completed_at_ms,
                archived_at=_archived_at(s.archived_at, archived, now_ms),
            ),
        )

    def start_run(self, session_id: str, *, messages: int = 1) -> SimSession:
        """A new prompt arrives: status running, `messages` more messages."""
        _check_count(messages)
        return self._mutate(
            session_id,
            lambda s, _now: replace(
                s, status=KnownStatus.RUNNING.value, message_count=s.message_count + messages
            ),
        )

    def add_messages(self, session_id: str, count: int = 1) -> SimSession:
        """The agent works: `count` more messages and the tokens they cost."""
        _check_count(count)
        return self._mutate(session_id, lambda s, _now: _with_messages(s, count))

    def complete_run(self, session_id: str, *, messages: int = 2) -> SimSession:
        """The run finishes: status idle, a new completedAt, more messages and tokens."""
        _check_count(messages)
        return self._mutate(
            session_id,
            lambda s, now_ms: replace(
                _with_messages(s, messages),
                status=KnownStatus.IDLE.value,
                completed_at_ms=now_ms,
            ),
        )

    def interrupt(self, session_id: str) -> SimSession:
        """A user interrupt: status idle with no new completedAt, as the real API shows it."""
        return self._mutate(session_id, lambda s, _now: replace(s, status=KnownStatus.IDLE.value))

    def archive(self, session_id: str) -> SimSession:
        """Archive the session (archivedAt is kept if it already was)."""
        return self.update(session_id, archived=True)

    def delete(self, session_id: str) -> None:
        """Soft-delete the session: it answers 404 and leaves the list from now on."""
        self._mutate(session_id, lambda s, _now: replace(s, deleted=True))

    # -- internals -------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _mutate(
        self, session_id: str, change: Callable[[SimSession, int], SimSession]
    ) -> SimSession:
        with self._lock:
            current = self._sessions.get(session_id)
            if current is None or current.deleted:
                raise UnknownSessionError(f"no live session {session_id!r}")
            # Pollers compare updatedAt: it must move even for two changes in one millisecond.
            now_ms = max(self._now_ms(), current.updated_at_ms + 1)
            changed = replace(change(current, now_ms), updated_at_ms=now_ms)
            self._sessions[session_id] = changed
        return changed

    def _authorized(self, header: str | None) -> bool:
        with self._lock:
            expected = f"Bearer {self._api_key.reveal()}"
        return header is not None and hmac.compare_digest(
            header.encode("utf-8", "surrogateescape"), expected.encode()
        )

    def _raw_body(self, session_id: str) -> RawBody | None:
        with self._lock:
            return self._raw.get(session_id)

    def _lookup(self, session_id: str) -> SimSession | None:
        with self._lock:
            found = self._sessions.get(session_id)
        return None if found is None or found.deleted else found

    def _page(self, cursor: int, limit: int) -> tuple[list[SimSession], int | None]:
        """Live sessions after index `cursor`; the next cursor when more remain."""
        page: list[SimSession] = []
        with self._lock:
            index = cursor + 1
            while index < len(self._order):
                found = self._sessions[self._order[index]]
                if not found.deleted:
                    if len(page) == limit:
                        return page, index - 1
                    page.append(found)
                index += 1
        return page, None

    def _record(self, path: str, status: int) -> None:
        record = RequestRecord(at=self._monotonic(), path=path, status=status)
        with self._lock:
            self._total_requests += 1
            self._counts[path] = self._counts.get(path, 0) + 1
            log = self._log.get(path)
            if log is None:
                log = self._log[path] = deque(maxlen=REQUEST_LOG_SIZE)
            log.append(record)


def _archived_at(current: str | None, archived: bool | None, now_ms: int) -> str | None:
    if archived is None:
        return current
    if not archived:
        return None
    return current if current is not None else iso_from_ms(now_ms)


def _with_messages(session: SimSession, count: int) -> SimSession:
    return replace(
        session,
        message_count=session.message_count + count,
        token_usage=grow_tokens(session.token_usage, count),
        inclusive_token_usage=None
        if session.inclusive_token_usage is None
        else grow_tokens(session.inclusive_token_usage, count),
    )


def encode_cursor(index: int) -> str:
    """An opaque pagination cursor for a position in the list order."""
    return base64.urlsafe_b64encode(f"after:{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Inverse of `encode_cursor`; raises InvalidRequestError for a cursor it did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequestError("invalid cursor") from exc
    prefix, _, number = text.partition(":")
    if prefix != "after" or not number.isdigit():
        raise InvalidRequestError("invalid cursor")
    return int(number)


def page_params(query: str) -> tuple[int, int]:
    """(cursor index, limit) from the list endpoint's query string; -1 is the start."""
    params = parse_qs(query)
    limit_text = params.get("limit", [str(DEFAULT_PAGE_SIZE)])[-1]
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"limit must be an integer in 1..{MAX_PAGE_SIZE}")
    cursor_text = params.get("cursor", [""])[-1]
    return (decode_cursor(cursor_text) if cursor_text else -1), int(limit_text)


# -- JSON control bodies --------------------------------------------------------

_TOKEN_KEYS: Final = {
    "inputTokens": "input_tokens",
    "outputTokens": "output_tokens",
    "cacheCreationTokens": "cache_creation_tokens",
    "cacheReadTokens": "cache_read_tokens",
    "thinkingTokens": "thinking_tokens",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def token_usage_from_json(raw: Any) -> TokenUsage | None:
    """Read a token usage object in the API's camelCase shape (None stays None)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequestError("token usage must be an object")
    unknown = set(raw) - set(_TOKEN_KEYS) - {"factoryCredits"}
    if unknown:
        raise InvalidRequestError(f"unknown token usage keys: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, attr in _TOKEN_KEYS.items():
        if not _is_number(raw.get(key)):
            raise InvalidRequestError(f"token usage needs a number for {key!r}")
        values[attr] = raw[key]
    credits = raw.get("factoryCredits")
    if credits is not None and not _is_number(credits):
        raise InvalidRequestError("factoryCredits must be a number")
    return TokenUsage(**values, factory_credits=credits)


def _tags_from_json(raw: Any) -> list[SimTag | str]:
    if not isinstance(raw, list):
        raise InvalidRequestError("tags must be a list")
    tags: list[SimTag | str] = []
    for item in raw:
        if isinstance(item, str):
            tags.append(item)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            metadata = item.get("metadata", {})
            if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
            ):
                raise InvalidRequestError("tag metadata must map strings to strings")
            tags.append(SimTag(item["name"], metadata))
        else:
            raise InvalidRequestError("each tag is a string or {name, metadata}")
    return tags


def _string(key: str, *, nullable: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str) or (nullable and value is None):
            return value
        raise InvalidRequestError(f"{key!r} must be a string")

    return check


def _integer(key: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InvalidRequestError(f"{key!r} must be an integer")

    return check


def _boolean(key: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        raise InvalidRequestError(f"{key!r} must be true or false")

    return check


_COMMON_FIELDS: Final[dict[str, Callable[[Any], Any]]] = {
    "status": _string("status"),
    "title": _string("title"),
    "message_count": _integer("message_count"),
    "computer_id": _string("computer_id", nullable=True),
    "model": _string("model", nullable=True),
    "token_usage": token_usage_from_json,
    "inclusive_token_usage": token_usage_from_json,
    "tags": _tags_from_json,
}
_CREATE_FIELDS: Final = {**_COMMON_FIELDS, "session_id": _string("session_id")}
_UPDATE_FIELDS: Final = {
    **_COMMON_FIELDS,
    "completed": _boolean("completed"),
    "archived": _boolean("archived"),
}


def _fields_from_json(raw: Any, allowed: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequestError("the body must be a JSON object")
    unknown = set(raw) - set(allowed)
    if unknown:
        raise InvalidRequestError(f"unknown fields: {sorted(unknown)}")
    return {key: allowed[key](value) for key, value in raw.items()}


def create_fields_from_json(raw: Any) -> dict[str, Any]:
    """Keyword arguments for `add_session` from a `POST /_sim/sessions` body."""
    fields = _fields_from_json(raw, _CREATE_FIELDS)
    if "session_id" not in fields:
        raise InvalidRequestError("'session_id' is required")
    return fields


def update_fields_from_json(raw: Any) -> dict[str, Any]:
    """Keyword arguments for `update` from a `PATCH /_sim/sessions/{id}` body."""
    return _fields_from_json(raw, _UPDATE_FIELDS)


def raw_body_from_json(raw: Any) -> RawBody:
    """A `RawBody` from a `PUT /_sim/sessions/{id}/raw` body.

    `{"body": "<text sent as UTF-8, lone surrogates kept as written>", "status": 200,
    "content_type": "...", "endless": false}`; only `body` is required.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("body"), str):
        raise InvalidRequestError('the body must be {"body": "...", ...}')
    unknown = set(raw) - {"body", "status", "content_type", "endless"}
    if unknown:
        raise InvalidRequestError(f"unknown fields: {sorted(unknown)}")
    status = raw.get("status", 200)
    content_type = raw.get("content_type", "application/json")
    endless = raw.get("endless", False)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidRequestError("'status' must be an HTTP status code")
    if not isinstance(content_type, str) or not isinstance(endless, bool):
        raise InvalidRequestError("'content_type' must be a string and 'endless' true or false")
    body = raw["body"].encode("utf-8", "surrogatepass")
    return RawBody(body, status, content_type, endless)


def _ids_only_from_json(raw: Any) -> bool:
    if not isinstance(raw, dict) or not isinstance(raw.get("ids_only"), bool):
        raise InvalidRequestError('the body must be {"ids_only": true|false}')
    return bool(raw["ids_only"])


def fault_rule_from_json(raw: Any) -> FaultRule:
    """A `FaultRule` from a `POST /_sim/faults` body."""
    if not isinstance(raw, dict):
        raise InvalidRequestError("the body must be a JSON object")
    allowed = {"fault", "path_prefix", "times", "retry_after", "stall_seconds"}
    unknown = set(raw) - allowed
    if unknown:
        raise InvalidRequestError(f"unknown fields: {sorted(unknown)}")
    try:
        fault = Fault(str(raw.get("fault")))
    except ValueError as exc:
        raise InvalidRequestError(f"'fault' must be one of {[f.value for f in Fault]}") from exc
    rule = FaultRule(fault)
    path_prefix = raw.get("path_prefix", rule.path_prefix)
    times = raw.get("times", rule.times)
    retry_after = raw.get("retry_after", rule.retry_after)
    stall_seconds = raw.get("stall_seconds", rule.stall_seconds)
    if not isinstance(path_prefix, str) or not isinstance(retry_after, str):
        raise InvalidRequestError("'path_prefix' and 'retry_after' must be strings")
    if isinstance(times, bool) or not isinstance(times, int) or times == 0 or times < -1:
        raise InvalidRequestError("'times' must be a positive integer or -1")
    if not _is_number(stall_seconds) or stall_seconds < 0:
        raise InvalidRequestError("'stall_seconds' must be a non-negative number")
    return FaultRule(fault, path_prefix, times, retry_after, float(stall_seconds))


# -- HTTP -----------------------------------------------------------------------


class _SimHandler(FakeHandler):
    """Routes API and control requests to the `FactorySimulator` that owns the server."""

    _status = 0
    _logging_path: str | None = None  # the API path whose answer is still to be logged
    # Headers and body go out in two writes; with Nagle on, the body then waits for
    # the client's delayed ACK (~40 ms per keep-alive request).
    disable_nagle_algorithm = True

    @property
    def sim(self) -> FactorySimulator:
        owner: FactorySimulator = self.owner
        return owner

    def send_response(self, code: int, message: str | None = None) -> None:
        # Logged before any byte of the answer leaves, so a client that has its
        # answer always finds the request in the log (faulted answers included).
        self._status = code
        if self._logging_path is not None:
            self.sim._record(self._logging_path, code)
            self._logging_path = None
        super().send_response(code, message)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        if path.startswith(CONTROL_PREFIX):
            # Control routes skip fault injection: a catch-all fault would otherwise
            # also block the request that clears it.
            self._control(method, path, split.query)
            return
        self._status = 0
        self._logging_path = path
        try:
            if not self.injected_fault():
                self._api(method, path, split.query)
        finally:
            if self._logging_path is not None:  # no answer at all: a reset connection
                self.sim._record(path, 0)
                self._logging_path = None

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, error_body(status, title, detail), headers)

    # -- the Factory API --

    def _api(self, method: str, path: str, query: str) -> None:
        if method != "GET":
            self.read_body()
            self._error(405, "Method Not Allowed", f"{method} is not simulated", {"Allow": "GET"})
            return
        refused = self.sim.refusal(self.headers.get("Authorization"))
        if refused is not None:
            self._error(refused[0], "Forbidden" if refused[0] == 403 else "Refused", refused[1])
            return
        if not self.sim._authorized(self.headers.get("Authorization")):
            self._error(401, "Unauthorized", "Invalid or missing API key")
            return
        if path == API_PREFIX:
            self._list(query)
            return
        session_id = path.removeprefix(API_PREFIX + "/")
        if session_id.endswith("/messages") and session_id.count("/") == 1:
            self._messages(session_id.removesuffix("/messages"), query)
            return
        if session_id == path or not session_id or "/" in session_id:
            self._error(404, "Not Found", "No such route")
            return
        raw = self.sim._raw_body(session_id)
        if raw is not None:
            self._send_raw_body(raw)
            return
        found = self.sim._lookup(session_id)
        if found is None:
            self._error(404, "Not Found", "Session not found")
            return
        self._send(200, session_body(found))

    def _send_raw_body(self, raw: RawBody) -> None:
        self.send_response(raw.status)
        self.send_header("Content-Type", raw.content_type)
        if not raw.endless:
            self.send_header("Content-Length", str(len(raw.body)))
            self.end_headers()
            self.wfile.write(raw.body)
            return
        # No length: the body ends when the connection does, which is never
        # unless the client hangs up.
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = 0
        closing = self.sim.faults.closing
        try:
            while sent < ENDLESS_LIMIT and not closing.is_set():
                self.wfile.write(raw.body)
                sent += len(raw.body)
        except OSError:
            return  # the client stopped reading: what the endless body is for

    def _messages(self, session_id: str, query: str) -> None:
        """`GET /sessions/{id}/messages?role=&limit=`: the newest `limit`, oldest first."""
        if self.sim._lookup(session_id) is None:
            self._error(404, "Not Found", "Session not found")
            return
        params = parse_qs(query)
        role = params.get("role", [None])[-1]
        try:
            limit = int(params.get("limit", ["50"])[-1])
        except ValueError:
            self._error(400, "Bad Request", "limit must be a whole number")
            return
        messages = self.sim._messages_of(session_id, role, max(1, min(limit, 100)))
        self._send(
            200, {"messages": messages, "pagination": {"hasMore": False, "nextCursor": None}}
        )

    def _list(self, query: str) -> None:
        try:
            cursor, limit = page_params(query)
        except InvalidRequestError as exc:
            self._error(400, "Bad Request", str(exc))
            return
        page, next_index = self.sim._page(cursor, limit)
        bare = self.sim.list_ids_only
        self._send(
            200,
            {
                "sessions": [
                    {"sessionId": s.session_id} if bare else session_body(s) for s in page
                ],
                "pagination": {
                    "hasMore": next_index is not None,
                    "nextCursor": None if next_index is None else encode_cursor(next_index),
                },
            },
        )

    # -- control routes --

    def _control(self, method: str, path: str, query: str) -> None:
        raw = self.read_body()
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._error(400, "Bad Request", "the body is not JSON")
            return
        parts = path.removeprefix(CONTROL_PREFIX).split("/")
        try:
            self._route_control(method, parts, body, query)
        except UnknownSessionError as exc:
            self._error(404, "Not Found", str(exc))
        except DuplicateSessionError as exc:
            self._error(409, "Conflict", str(exc))
        except InvalidRequestError as exc:
            self._error(400, "Bad Request", str(exc))

    def _route_control(  # noqa: PLR0912 - one branch per control route
        self, method: str, parts: list[str], body: Any, query: str
    ) -> None:
        sim = self.sim
        route = (method, *parts)
        match route:
            case ("GET", "stats"):
                self._send(200, sim.stats())
            case ("GET", "requests"):
                path = parse_qs(query).get("path", [""])[-1]
                self._send(
                    200,
                    {
                        "path": path,
                        "count": sim.path_request_count(path),
                        "requests": [
                            {"at": r.at, "status": r.status} for r in sim.request_log(path)
                        ],
                    },
                )
            case ("POST", "sessions"):
                created = sim.add_session(**create_fields_from_json(body))
                self._send(201, session_body(created))
            case ("PATCH", "sessions", session_id):
                self._send(
                    200, session_body(sim.update(session_id, **update_fields_from_json(body)))
                )
            case ("DELETE", "sessions", session_id):
                sim.delete(session_id)
                self._send(204, None)
            case ("POST", "sessions", session_id, action) if action in _ACTIONS:
                self._send(200, session_body(_ACTIONS[action](sim, session_id)))
            case ("POST", "sessions", session_id, "messages"):
                if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                    raise InvalidRequestError('the body must be {"text": "...", "phase"?: "..."}')
                sim.session(session_id)  # 404 for an unknown session
                phase = body.get("phase", "final_answer")
                if phase is not None and not isinstance(phase, str):
                    raise InvalidRequestError("phase must be a string or null")
                self._send(201, sim.add_message(session_id, body["text"], phase=phase))
            case ("PUT" | "DELETE" as verb, "sessions", session_id, "raw"):
                sim.serve_raw(session_id, raw_body_from_json(body) if verb == "PUT" else None)
                self._send(204, None)
            case ("POST", "faults"):
                sim.faults.add(fault_rule_from_json(body))
                self._send(201, {})
            case ("DELETE", "faults"):
                sim.faults.clear()
                self._send(204, None)
            case ("PUT", "list-mode"):
                sim.set_list_ids_only(_ids_only_from_json(body))
                self._send(204, None)
            case ("PUT", "api-key"):
                if not isinstance(body, dict) or not isinstance(body.get("api_key"), str):
                    raise InvalidRequestError('the body must be {"api_key": "..."}')
                sim.set_api_key(body["api_key"])
                self._send(204, None)
            case _:
                self._error(404, "Not Found", "No such control route")


_ACTIONS: Final[dict[str, Callable[[FactorySimulator, str], SimSession]]] = {
    "start": lambda sim, sid: sim.start_run(sid),
    "complete": lambda sim, sid: sim.complete_run(sid),
    "interrupt": lambda sim, sid: sim.interrupt(sid),
    "archive": lambda sim, sid: sim.archive(sid),
}


# -- autopilot ------------------------------------------------------------------


class Move(StrEnum):
    """What the autopilot did to a session in one step."""

    START = "start"
    PROGRESS = "progress"
    FINISH = "finish"
    INTERRUPT = "interrupt"
    ARCHIVE = "archive"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class AutopilotOdds:
    """How sessions behave; probabilities are per decision, `mean_dwell_s` between decisions."""

    mean_dwell_s: float = 8.0
    progress: float = 0.6
    interrupt: float = 0.1
    rerun: float = 0.4
    archive: float = 0.3
    delete: float = 0.03


@dataclass(frozen=True, slots=True)
class AutopilotStep:
    """One move the autopilot applied."""

    session_id: str
    move: Move


def decide(session: SimSession, rng: random.Random, odds: AutopilotOdds) -> Move | None:
    """The next lifecycle move of a session whose dwell time is over (None: stay)."""
    if rng.random() < odds.delete:
        return Move.DELETE
    move: Move | None = None
    match session.status:
        case KnownStatus.PENDING:
            move = Move.START
        case KnownStatus.RUNNING:
            move = Move.INTERRUPT if rng.random() < odds.interrupt else Move.FINISH
        case KnownStatus.IDLE if session.archived_at is None:
            roll = rng.random()
            if roll < odds.rerun:
                move = Move.START
            elif roll < odds.rerun + odds.archive:
                move = Move.ARCHIVE
    return move


class Autopilot:
    """Moves every live session through pending -> running -> idle, reruns, archives, deletes.

    Deterministic for a seeded `rng`, the same sessions and the same `now`
    values. Call `step` yourself, or `run_in_thread` for the demo, not both.
    """

    def __init__(
        self,
        sim: FactorySimulator,
        rng: random.Random,
        odds: AutopilotOdds = AutopilotOdds(),
    ) -> None:
        self._sim = sim
        self._rng = rng
        self._odds = odds
        self._due: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _dwell(self) -> float:
        return self._rng.expovariate(1 / self._odds.mean_dwell_s)

    def step(self, now: float) -> list[AutopilotStep]:
        """Advance every session whose dwell time is over; running ones make progress."""
        applied: list[AutopilotStep] = []
        live = self._sim.sessions()
        for session in live:
            sid = session.session_id
            due = self._due.get(sid)
            if due is None:
                due = self._due[sid] = now + self._dwell()
            move: Move | None
            if now < due:
                busy = session.status == KnownStatus.RUNNING
                move = Move.PROGRESS if busy and self._rng.random() < self._odds.progress else None
            else:
                move = decide(session, self._rng, self._odds)
                self._due[sid] = now + self._dwell()
            if move is not None and self._apply(sid, move):
                applied.append(AutopilotStep(sid, move))
        alive = {s.session_id for s in live}
        for sid in [sid for sid in self._due if sid not in alive]:
            del self._due[sid]
        return applied

    def _apply(self, session_id: str, move: Move) -> bool:
        sim = self._sim
        try:
            match move:
                case Move.START:
                    sim.start_run(session_id)
                case Move.PROGRESS:
                    sim.add_messages(session_id, self._rng.randint(1, 3))
                case Move.FINISH:
                    sim.complete_run(session_id)
                case Move.INTERRUPT:
                    sim.interrupt(session_id)
                case Move.ARCHIVE:
                    sim.archive(session_id)
                case Move.DELETE:
                    sim.delete(session_id)
        except UnknownSessionError:
            # Deleted through the control API between listing and applying.
            return False
        return True

    def run_in_thread(self, period_s: float) -> Self:
        """Call `step(sim.now())` every `period_s` seconds in a daemon thread until `close`."""
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        if self._thread is not None:
            raise RuntimeError("the autopilot is already running")

        def loop() -> None:
            while not self._stop.wait(period_s):
                self.step(self._sim.now())

        self._thread = threading.Thread(target=loop, name="Autopilot", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the `run_in_thread` thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread started by `run_in_thread`, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- command line ---------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m watcher.testing.sim",
        description="Serve a simulated Factory API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--sessions", type=int, default=3, help="sessions to create")
    parser.add_argument(
        "--autopilot", type=float, metavar="SECONDS", help="advance sessions every SECONDS"
    )
    parser.add_argument("--seed", type=int, default=0, help="autopilot random seed")
    parser.add_argument(
        "--api-key", default=DEFAULT_API_KEY, help="the key clients must send as a Bearer token"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT; prints the URL then the session ids."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.sessions < 0:
        parser.error("--sessions must not be negative")
    if args.autopilot is not None and args.autopilot <= 0:
        parser.error("--autopilot must be positive")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with FactorySimulator(args.api_key, port=args.port) as sim:
            ids = sim.add_sessions(args.sessions)
            print(f"listening on {sim.url}", flush=True)
            for session_id in ids:
                print(f"session {session_id}")
            sys.stdout.flush()
            with Autopilot(sim, random.Random(args.seed)) as pilot:
                if args.autopilot is not None:
                    pilot.run_in_thread(args.autopilot)
                stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
