"""Fake notification destinations on 127.0.0.1: Slack Web API, Slack webhooks, webhook receiver.

The tests drive the real slack-sdk and httpx clients against them, and `factory-watcher
demo` uses them (with `on_message` to print what arrived) so it needs no credentials.
Every server records what it accepted behind a lock, since requests are served on threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

from watcher.notifiers.signing import DEFAULT_TOLERANCE_S, secret_key, verify
from watcher.testing.fakehttp import FakeHandler, LoopbackServer, send_json
from watcher.testing.slackaccess import SlackAccess

Clock = Callable[[], float]
T = TypeVar("T")

# Slack `ts` values are epoch seconds with microseconds; ours start at 1700000000.000100.
FIRST_TS_US = 1_700_000_000_000_000
TS_STEP_US = 100


def _send_text(handler: FakeHandler, status: int, text: str) -> None:
    data = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@dataclass(frozen=True, slots=True)
class _Canned:
    status: int
    body: bytes
    headers: Mapping[str, str]


class _Queue(Generic[T]):
    """Thread-safe queue of canned answers, each for `times` requests (-1: until cleared)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[list[Any]] = []  # [answer, remaining]

    def add(self, answer: T, times: int) -> None:
        with self._lock:
            self._entries.append([answer, times])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def take(self) -> T | None:
        with self._lock:
            if not self._entries:
                return None
            entry = self._entries[0]
            if entry[1] > 0:
                entry[1] -= 1
                if entry[1] == 0:
                    self._entries.pop(0)
            return entry[0]  # type: ignore[no-any-return]


# --- Slack Web API ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlackPost:
    """One message FakeSlack accepted (`edited` for a `chat.update`); `received` is monotonic."""

    channel: str
    text: str
    blocks: tuple[Mapping[str, Any], ...]
    ts: str
    received: float
    edited: bool = False
    thread_ts: str | None = None  # a reply in the thread of this message
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _SlackReply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _slack_error(
    error: str, status: int = 200, headers: dict[str, str] | None = None
) -> _SlackReply:
    return _SlackReply(status, {"ok": False, "error": error}, headers or {})


def _parse_slack_args(content_type: str, query: str, body: bytes) -> dict[str, Any] | None:
    """Merge query and body arguments like Slack does; None when the JSON body is invalid."""
    args: dict[str, Any] = {key: values[-1] for key, values in parse_qs(query).items()}
    if content_type.startswith("application/json"):
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            return None
        if not isinstance(parsed, dict):
            return None
        args.update(parsed)
    elif body:
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        args.update({key: values[-1] for key, values in form.items()})
    blocks = args.get("blocks")
    if isinstance(blocks, str):
        # Form posts carry blocks as a JSON string, as the Slack docs describe.
        try:
            args["blocks"] = json.loads(blocks)
        except ValueError:
            args["blocks"] = None
    return args


class _FakeSlackHandler(FakeHandler):
    def do_POST(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's dispatch name)
        self._serve()

    def do_GET(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's dispatch name)
        self._serve()

    def _serve(self) -> None:
        if self.injected_fault():
            return
        body = self.read_body()
        parts = urlsplit(self.path)
        reply = self.owner.handle(
            parts.path,
            parts.query,
            self.headers.get("Content-Type", ""),
            self.headers.get("Authorization", ""),
            body,
        )
        send_json(self, reply.status, reply.body, reply.headers)


class FakeSlack(LoopbackServer):
    """The Slack Web API methods the watcher uses, served at `url + "/api/"`.

    Answers like Slack: errors are HTTP 200 with `ok: false` (`not_authed`,
    `invalid_auth`, `channel_not_found`, `is_archived`, `no_text`, ...), and a post to a
    channel sooner than `min_interval_s` (less `grace_s` of arrival jitter) after the last
    accepted one is HTTP 429 `ratelimited` with `Retry-After: 1`.
    """

    def __init__(
        self,
        token: str = "xoxb-test",  # noqa: S107 (the fake's own credential)
        channels: tuple[str, ...] = ("C0123ABCD",),
        min_interval_s: float = 1.0,
        *,
        grace_s: float = 0.1,
        on_message: Callable[[SlackPost], None] | None = None,
        clock: Clock = time.monotonic,
        epoch: Clock | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(_FakeSlackHandler, port)
        # With `epoch` (e.g. time.time), `ts` values follow it as Slack's do, so
        # `conversations.history(oldest=…)` can be asked about real times.
        self._epoch = epoch
        self.token = token
        self.min_interval_s = min_interval_s
        # A client that paces its sends exactly min_interval_s apart sees them arrive a few
        # milliseconds closer together (request latency varies); real Slack tolerates short
        # bursts, so only gaps shorter than the interval by more than `grace_s` (at most
        # half the interval) are refused.
        self.grace_s = grace_s
        self._channels = set(channels)
        self._archived: set[str] = set()
        self._on_message = on_message
        self._clock = clock
        self._lock = threading.Lock()
        self._posts: list[SlackPost] = []
        self._updates: list[SlackPost] = []
        self._latest: dict[tuple[str, str], SlackPost] = {}
        self._calls: dict[str, int] = {}
        self.history_scope = True  # False: conversations.history answers missing_scope
        self._access = SlackAccess()  # the token's scopes, the bot's channels
        self.history_page_size: int | None = None  # caps `limit`, to make callers page
        self._last_post: dict[str, float] = {}
        self._next_ts = FIRST_TS_US
        self._rate_limited = 0
        self._injected: _Queue[_SlackReply] = _Queue()
        self._injected_by_method: dict[str, _Queue[_SlackReply]] = {}

    @property
    def api_url(self) -> str:
        """The `base_url` to give slack-sdk (`.../api/`)."""
        return f"{self.url}/api/"

    @property
    def messages(self) -> list[SlackPost]:
        """Every accepted `chat.postMessage`, oldest first (a copy)."""
        with self._lock:
            return list(self._posts)

    @property
    def updates(self) -> list[SlackPost]:
        """Every accepted `chat.update`, oldest first (a copy)."""
        with self._lock:
            return list(self._updates)

    @property
    def rate_limited(self) -> int:
        """How many posts were refused with 429 `ratelimited`."""
        with self._lock:
            return self._rate_limited

    @property
    def cards(self) -> list[SlackPost]:
        """Every accepted top-level `chat.postMessage` (not a thread reply), oldest first."""
        with self._lock:
            return [p for p in self._posts if p.thread_ts is None]

    def replies(self, channel: str, ts: str) -> list[SlackPost]:
        """The replies posted in the thread of message `ts`, oldest first."""
        with self._lock:
            return [p for p in self._posts if p.channel == channel and p.thread_ts == ts]

    def calls(self, method: str) -> int:
        """How many authenticated calls of `method` were answered (accepted or not)."""
        with self._lock:
            return self._calls.get(method, 0)

    def delete_message(self, channel: str, ts: str) -> None:
        """Delete message `ts`, as a person in the channel would: updates then fail."""
        with self._lock:
            self._latest.pop((channel, ts), None)

    def latest(self, channel: str, ts: str) -> SlackPost | None:
        """The current version of message `ts` in `channel`, after any updates."""
        with self._lock:
            return self._latest.get((channel, ts))

    def set_channel_archived(self, channel: str) -> None:
        """Make later posts to `channel` fail with `is_archived`."""
        with self._lock:
            self._archived.add(channel)

    def set_scopes(self, *scopes: str) -> None:
        """Give the token exactly these OAuth scopes (default: the manifest's `APP_SCOPES`)."""
        with self._lock:
            self._access = replace(self._access, scopes=frozenset(scopes))

    def set_channel(self, channel: str, *, member: bool = True, private: bool = False) -> None:
        """Add `channel` (or change it): is the bot a member, is the channel private.

        A post to a channel the bot is not in is refused with `not_in_channel`,
        unless the channel is public and the token has `chat:write.public`.
        """
        with self._lock:
            self._channels.add(channel)
            self._access = self._access.with_channel(channel, member=member, private=private)

    def inject_error(
        self,
        error: str,
        *,
        status: int = 200,
        times: int = 1,
        retry_after: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` authenticated chat.postMessage/chat.update calls (only
        those of `method`, if given) with `ok: false, error`.
        """
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        queue = self._injected if method is None else self._injected_for(method)
        queue.add(_slack_error(error, status, headers), times)

    def _injected_for(self, method: str) -> _Queue[_SlackReply]:
        with self._lock:
            return self._injected_by_method.setdefault(method, _Queue())

    def handle(
        self, path: str, query: str, content_type: str, authorization: str, body: bytes
    ) -> _SlackReply:
        """Answer one Web API call (called from the request thread)."""
        method = path.removeprefix("/api/")
        if not path.startswith("/api/") or method not in _METHODS:
            return _slack_error("unknown_method", 404)
        args = _parse_slack_args(content_type, query, body)
        if args is None:
            return _slack_error("invalid_json")
        refusal = self._auth_refusal(authorization, args)
        if refusal is not None:
            return refusal
        with self._lock:
            self._calls[method] = self._calls.get(method, 0) + 1
        if method == "auth.test":
            return _SlackReply(200, dict(_AUTH_TEST), self._access.scope_header())
        if method == "conversations.info":
            return self._info(args)
        if method == "conversations.history":
            return self._history(args)
        if method == "chat.getPermalink":
            return self._permalink(args)
        injected = self._injected_for(method).take() or self._injected.take()
        if injected is not None:
            return injected
        accepted, reply = self._chat(method, args)
        if accepted is not None and self._on_message is not None:
            self._on_message(accepted)
        return reply

    def _auth_refusal(self, authorization: str, args: dict[str, Any]) -> _SlackReply | None:
        token = authorization.removeprefix("Bearer ").strip() or str(args.get("token", ""))
        if not token:
            return _slack_error("not_authed")
        if token != self.token:
            return _slack_error("invalid_auth")
        return None

    def _chat(self, method: str, args: dict[str, Any]) -> tuple[SlackPost | None, _SlackReply]:
        channel = str(args.get("channel") or "")
        text = str(args.get("text") or "")
        raw_blocks = args.get("blocks")
        blocks = tuple(raw_blocks) if isinstance(raw_blocks, list) else ()
        with self._lock:
            refusal = self._refusal(channel, text, blocks)
            if refusal is not None:
                return None, refusal
            now = self._clock()
            # Posts and updates count against one channel's pace, as a client that
            # paces "everything sent to a channel" must keep it.
            last = self._last_post.get(channel)
            grace = min(self.grace_s, self.min_interval_s / 2)
            if last is not None and now - last < self.min_interval_s - grace:
                self._rate_limited += 1
                return None, _slack_error("ratelimited", 429, {"Retry-After": "1"})
            if method == "chat.update":
                reply = self._update(channel, str(args.get("ts") or ""), text, blocks, now)
                if reply[0] is not None:
                    self._last_post[channel] = now
                return reply
            thread_ts = args.get("thread_ts")
            if thread_ts is not None and (channel, str(thread_ts)) not in self._latest:
                return None, _slack_error("thread_not_found")
            metadata = args.get("metadata")
            if isinstance(metadata, str):  # form posts carry it as JSON
                try:
                    metadata = json.loads(metadata)
                except ValueError:
                    return None, _slack_error("invalid_metadata_format")
            self._last_post[channel] = now
            self._next_ts += TS_STEP_US
            if self._epoch is not None:
                self._next_ts = max(self._next_ts, int(self._epoch() * 1_000_000))
            ts = f"{self._next_ts // 1_000_000}.{self._next_ts % 1_000_000:06d}"
            post = SlackPost(
                channel,
                text,
                blocks,
                ts,
                now,
                thread_ts=None if thread_ts is None else str(thread_ts),
                metadata=metadata if isinstance(metadata, dict) else None,
            )
            self._posts.append(post)
            self._latest[(channel, ts)] = post
        return post, _SlackReply(
            200, {"ok": True, "channel": channel, "ts": ts, "message": {"text": text, "ts": ts}}
        )

    def _history(self, args: dict[str, Any]) -> _SlackReply:
        """`conversations.history`: top-level messages newest first, since `oldest`; the
        metadata of each only with `include_all_metadata`; `limit` per page, the next
        page through `response_metadata.next_cursor` while `has_more`.
        """
        channel = str(args.get("channel") or "")
        if not self.history_scope:
            return _slack_error("missing_scope")
        if channel not in self._channels:
            return _slack_error("channel_not_found")
        oldest = float(args.get("oldest") or 0)
        limit = int(args.get("limit") or 100)
        if self.history_page_size is not None:
            limit = min(limit, self.history_page_size)
        cursor = str(args.get("cursor") or "")
        start = int(cursor.removeprefix("page:")) if cursor.startswith("page:") else 0
        with_metadata = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
        with self._lock:
            found = [
                p
                for p in self._latest.values()
                if p.channel == channel and p.thread_ts is None and float(p.ts) >= oldest
            ]
        found.sort(key=lambda p: float(p.ts), reverse=True)
        messages = []
        for post in found[start : start + limit]:
            message: dict[str, Any] = {"type": "message", "ts": post.ts, "text": post.text}
            if with_metadata and post.metadata is not None:
                message["metadata"] = dict(post.metadata)
            messages.append(message)
        more = start + limit < len(found)
        answer: dict[str, Any] = {"ok": True, "messages": messages, "has_more": more}
        if more:
            answer["response_metadata"] = {"next_cursor": f"page:{start + limit}"}
        return _SlackReply(200, answer)

    def _info(self, args: dict[str, Any]) -> _SlackReply:
        """`conversations.info`, as the token's access sees the channel."""
        channel = str(args.get("channel") or "")
        with self._lock:
            access, known = self._access, channel in self._channels
            archived = channel in self._archived
        found = access.channel_info(channel, known=known, archived=archived)
        if isinstance(found, str):
            return _slack_error(found, headers=access.scope_header())
        return _SlackReply(200, {"ok": True, "channel": found}, access.scope_header())

    def _permalink(self, args: dict[str, Any]) -> _SlackReply:
        """`chat.getPermalink`: a link for a message that exists, else `message_not_found`."""
        channel = str(args.get("channel") or "")
        ts = str(args.get("message_ts") or "")
        with self._lock:
            exists = (channel, ts) in self._latest
        if not exists:
            return _slack_error("message_not_found")
        link = f"https://fake.slack.test/archives/{channel}/p{ts.replace('.', '')}"
        return _SlackReply(200, {"ok": True, "channel": channel, "permalink": link})

    def _refusal(
        self, channel: str, text: str, blocks: tuple[Mapping[str, Any], ...]
    ) -> _SlackReply | None:
        if channel not in self._channels:
            return _slack_error("channel_not_found")
        refused = self._access.post_refusal(channel)
        if refused is not None:
            return _slack_error(refused)
        if channel in self._archived:
            return _slack_error("is_archived")
        if not text.strip() and not blocks:
            return _slack_error("no_text")
        return None

    def _update(
        self, channel: str, ts: str, text: str, blocks: tuple[Mapping[str, Any], ...], now: float
    ) -> tuple[SlackPost | None, _SlackReply]:
        if (channel, ts) not in self._latest:
            return None, _slack_error("message_not_found")
        before = self._latest[(channel, ts)]
        post = SlackPost(
            channel,
            text,
            blocks,
            ts,
            now,
            edited=True,
            thread_ts=before.thread_ts,
            metadata=before.metadata,
        )
        self._updates.append(post)
        self._latest[(channel, ts)] = post
        return post, _SlackReply(200, {"ok": True, "channel": channel, "ts": ts, "text": text})


_METHODS = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.getPermalink",
        "conversations.history",
        "auth.test",
        "conversations.info",
    }
)
_AUTH_TEST = {
    "ok": True,
    "url": "https://fake.slack.test/",
    "team": "Fake",
    "user": "watcher",
    "team_id": "T000",
    "user_id": "U000",
    "bot_id": "B000",
}


# --- Slack incoming webhooks --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlackWebhookPost:
    """One payload FakeSlackWebhook accepted; `received` is monotonic."""

    path: str
    payload: Mapping[str, Any]
    received: float


class _FakeSlackWebhookHandler(FakeHandler):
    def do_POST(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's dispatch name)
        if self.injected_fault():
            return
        body = self.read_body()
        status, text = self.owner.handle(self.path, body)
        _send_text(self, status, text)


def _webhook_payload(body: bytes) -> dict[str, Any] | tuple[int, str]:
    """The JSON payload of a webhook post, or Slack's refusal of it."""
    try:
        payload = json.loads(body)
    except ValueError:
        return 400, "invalid_payload"
    if not isinstance(payload, dict):
        return 400, "invalid_payload"
    if not str(payload.get("text") or "").strip() and not payload.get("blocks"):
        return 400, "no_text"
    return payload


class FakeSlackWebhook(LoopbackServer):
    """Slack incoming webhooks: POST JSON under `/services/`, answered `ok` as text/plain."""

    def __init__(
        self,
        *,
        on_message: Callable[[SlackWebhookPost], None] | None = None,
        clock: Clock = time.monotonic,
        port: int = 0,
    ) -> None:
        super().__init__(_FakeSlackWebhookHandler, port)
        self._on_message = on_message
        self._clock = clock
        self._lock = threading.Lock()
        self._posts: list[SlackWebhookPost] = []
        self._revoked = False
        self._canned: _Queue[_Canned] = _Queue()

    @property
    def webhook_url(self) -> str:
        """A webhook URL this server accepts."""
        return f"{self.url}/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"

    @property
    def messages(self) -> list[SlackWebhookPost]:
        """Every accepted payload, oldest first (a copy)."""
        with self._lock:
            return list(self._posts)

    def revoke(self) -> None:
        """From now on answer 403 `invalid_token`, as Slack does for a removed webhook."""
        with self._lock:
            self._revoked = True

    def respond_with(self, status: int, body: str = "", *, times: int = 1) -> None:
        """Answer the next `times` posts (-1: until cleared) with `status` and a text body."""
        self._canned.add(_Canned(status, body.encode(), {}), times)

    def clear_responses(self) -> None:
        """Drop every pending `respond_with`."""
        self._canned.clear()

    def handle(self, path: str, body: bytes) -> tuple[int, str]:
        """Answer one post (called from the request thread)."""
        if not urlsplit(path).path.startswith("/services/"):
            return 404, "no_service"
        canned = self._canned.take()
        if canned is not None:
            return canned.status, canned.body.decode()
        with self._lock:
            revoked = self._revoked
        if revoked:
            return 403, "invalid_token"
        payload = _webhook_payload(body)
        if isinstance(payload, tuple):
            return payload
        post = SlackWebhookPost(path, payload, self._clock())
        with self._lock:
            self._posts.append(post)
        if self._on_message is not None:
            self._on_message(post)
        return 200, "ok"


# --- generic webhooks ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """One POST the receiver got, whatever it answered.

    `headers` has lower-cased names; `json` is None when the body is not JSON;
    `signature_valid` is None when the receiver has no secret.
    """

    path: str
    headers: Mapping[str, str]
    body: bytes
    json: Any
    signature_valid: bool | None
    status: int
    received: float


class _WebhookReceiverHandler(FakeHandler):
    def do_POST(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's dispatch name)
        if self.injected_fault():
            return
        body = self.read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        canned = self.owner.handle(self.path, headers, body)
        self.send_response(canned.status)
        for key, value in canned.headers.items():
            self.send_header(key, value)
        if canned.status != 204:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(canned.body)))
        self.end_headers()
        if canned.status != 204:
            self.wfile.write(canned.body)


_NO_CONTENT = _Canned(204, b"", {})


class WebhookReceiver(LoopbackServer):
    """Receives generic webhooks, checks Standard Webhooks signatures, answers 204."""

    def __init__(
        self,
        secret: str | None = None,
        *,
        on_message: Callable[[ReceivedWebhook], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        tolerance: int = DEFAULT_TOLERANCE_S,
        clock: Clock = time.monotonic,
        port: int = 0,
    ) -> None:
        if secret is not None:
            secret_key(secret)  # a malformed secret fails here, not in a request thread
        super().__init__(_WebhookReceiverHandler, port)
        self._secret = secret
        self._on_message = on_message
        self._now = now
        self._tolerance = tolerance
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: list[ReceivedWebhook] = []
        self._canned: _Queue[_Canned] = _Queue()

    def __repr__(self) -> str:
        return f"WebhookReceiver(url={self.url!r}, signed={self._secret is not None})"

    @property
    def requests(self) -> list[ReceivedWebhook]:
        """Every POST received, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def respond_with(
        self,
        status: int,
        *,
        times: int = 1,
        body: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` POSTs (-1: until cleared) with `status`."""
        self._canned.add(_Canned(status, body.encode(), dict(headers or {})), times)

    def redirect_to(self, url: str, *, times: int = 1) -> None:
        """Answer the next `times` POSTs with a 307 to `url`."""
        self.respond_with(307, times=times, headers={"Location": url})

    def clear_responses(self) -> None:
        """Go back to answering 204."""
        self._canned.clear()

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> _Canned:
        """Record one POST and choose its answer (called from the request thread)."""
        canned = self._canned.take() or _NO_CONTENT
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        valid = (
            None
            if self._secret is None
            else verify(self._secret, headers, body, now=self._now(), tolerance=self._tolerance)
        )
        received = ReceivedWebhook(path, headers, body, parsed, valid, canned.status, self._clock())
        with self._lock:
            self._requests.append(received)
        if self._on_message is not None:
            self._on_message(received)
        return canned
