"""The validated configuration as frozen values (built by `watcher.config`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

from watcher.core.pgurl import url_passwords
from watcher.core.secret import Secret

DEFAULT_BASE_URL = "https://api.factory.ai"
DEFAULT_SESSION_URL = "https://app.factory.ai/sessions/{id}"
# The notifiers' HTTP timeout for one send (every target kind).
DEFAULT_SEND_TIMEOUT = timedelta(seconds=10)


class TargetKind(StrEnum):
    """Destination kinds; each has one notifier module in `watcher.notifiers`."""

    SLACK = "slack"
    SLACK_WEBHOOK = "slack_webhook"
    WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class FactorySettings:
    """How to reach the Factory API."""

    api_key: Secret
    base_url: str = DEFAULT_BASE_URL
    timeout: timedelta = timedelta(seconds=10)
    session_url: str = DEFAULT_SESSION_URL
    # In flight at most. Little's law: in flight = rate x latency, so 64 carries
    # 640 polls/s at a 100 ms round trip (10,000 sessions every 30 s need 333/s).
    concurrency: int = 64
    unavailable_after: timedelta = timedelta(minutes=2)
    # One token bucket shared by every API call (session polls, list pages).
    max_requests_per_second: float = 10.0


@dataclass(frozen=True, slots=True)
class PollSettings:
    """Polling cadence; `jitter` is a fraction of the interval (0.1 = 10%).

    `interval` is the default for every state without its own interval. An idle
    session is polled every `idle` right after activity, backing off to
    `max_idle` while nothing changes (no backoff when `max_idle` is unset).
    `archived_off` stops polling archived sessions.
    """

    interval: timedelta = timedelta(seconds=30)
    jitter: float = 0.1
    running: timedelta | None = None
    pending: timedelta | None = None
    idle: timedelta | None = None
    max_idle: timedelta | None = None
    archived: timedelta | None = None
    archived_off: bool = False

    @property
    def idle_base(self) -> timedelta:
        """The interval right after activity."""
        return self.idle or self.interval

    @property
    def idle_cap(self) -> timedelta:
        """The longest interval: an idle session backs off to this."""
        return max(self.max_idle or self.idle_base, self.idle_base)


@dataclass(frozen=True, slots=True)
class DiscoverFilter:
    """Which listed sessions discovery keeps; every condition present must hold."""

    titles: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    computers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DiscoverSettings:
    """Finding sessions through `GET /api/v0/sessions` (off when absent from the config)."""

    interval: timedelta = timedelta(seconds=60)
    include: DiscoverFilter = DiscoverFilter()
    created_within: timedelta | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    max_sessions: int = 10_000


@dataclass(frozen=True, slots=True)
class WatchedSession:
    """One session the watcher polls."""

    id: str
    name: str | None = None
    interval: timedelta | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryLimits:
    """When the outbox gives up on a notification and keeps it as a dead letter."""

    max_attempts: int = 12
    max_age: timedelta = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class SlackTemplate:
    """Slack text and blocks given as Jinja2 templates (see `watcher.core.template`).

    `blocks` is the YAML list of blocks as canonical JSON text (hashable, comparable);
    its string leaves are templates. Either part may be absent: without `text` the
    built-in headline is the fallback text, without `blocks` the message is text only.
    """

    text: str | None = None
    blocks: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookTemplate:
    """A webhook body given as a Jinja2 template that renders to a JSON object."""

    body: str


MessageTemplate = SlackTemplate | WebhookTemplate


@dataclass(frozen=True, slots=True)
class SlackTarget:
    """Slack Web API with a bot token (`chat:write`)."""

    name: str
    token: Secret
    channel: str
    api_url: str | None = None
    limits: DeliveryLimits = DeliveryLimits()
    # Slack allows about one message per second per channel.
    min_interval: timedelta = timedelta(seconds=1)
    # One live card per session, updated in place, with a thread telling its timeline.
    card: bool = True
    thread: bool = True
    kind: TargetKind = TargetKind.SLACK
    template: SlackTemplate | None = None  # the default for every rule without its own


@dataclass(frozen=True, slots=True)
class SlackWebhookTarget:
    """A Slack incoming webhook; the URL itself is the credential."""

    name: str
    url: Secret
    limits: DeliveryLimits = DeliveryLimits()
    min_interval: timedelta = timedelta(seconds=1)
    kind: TargetKind = TargetKind.SLACK_WEBHOOK
    template: SlackTemplate | None = None


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A JSON POST, signed per Standard Webhooks when `secret` is set."""

    name: str
    url: str
    secret: Secret | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    allow_http: bool = False
    ca_file: Path | None = None
    limits: DeliveryLimits = DeliveryLimits()
    min_interval: timedelta = timedelta(0)
    kind: TargetKind = TargetKind.WEBHOOK
    template: WebhookTemplate | None = None


Target = SlackTarget | SlackWebhookTarget | WebhookTarget


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window of local wall-clock time in which notifications are held for a digest.

    `days` are the weekdays (0 = Monday) on which a window starts; a window whose
    `end` is not after its `start` ends on the next day.
    """

    name: str
    start: time
    end: time
    timezone: str = "UTC"
    days: frozenset[int] = frozenset(range(7))


@dataclass(frozen=True, slots=True)
class Rule:
    """Routes matching events to targets; absent conditions match anything.

    `hold_for` is the YAML key `for`: how long a condition event (waiting,
    stuck, long_running) must hold before it fires.
    """

    name: str
    on: tuple[str, ...]
    notify: tuple[str, ...]
    from_status: tuple[str, ...] = ()
    to_status: tuple[str, ...] = ()
    session_globs: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    title_globs: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    model_globs: tuple[str, ...] = ()
    settle: timedelta | None = None
    hold_for: timedelta | None = None
    cooldown: timedelta | None = None
    repeat: timedelta | None = None
    resolved: bool = False
    urgent: bool = False
    threshold: Mapping[str, float] = field(default_factory=dict)
    quiet_hours: str | None = None
    template: MessageTemplate | None = None  # wins over the targets' own templates
    include_last_answer: bool = False  # fetch the agent's latest final answer at send time


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the state keeps what it no longer needs (`state:` in the config).

    `keep_delivered`: delivered notifications and the events only they refer
    to; `keep_dead`: dead letters; `forget_sessions_after`: a session no longer
    watched, with all its rows.
    """

    keep_delivered: timedelta = timedelta(days=30)
    keep_dead: timedelta = timedelta(days=90)
    forget_sessions_after: timedelta = timedelta(days=30)


# A report's `window`: how far back it looks from its scheduled time, or None for
# `since_last` (from the report's previous run; the first run looks back a day).
ReportWindow: TypeAlias = timedelta | None


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """A scheduled report (`reports:` in the config): what happened to the sessions it
    watches in its window, sent to `notify` at each time the cron `schedule` gives in
    `timezone`. The session filters are the rules' (`session`, `labels`, `title`, `tags`).
    """

    name: str
    schedule: str  # cron expression, 5 fields, e.g. "0 9 * * mon-fri"
    timezone: str = "UTC"  # IANA name
    window: ReportWindow = None
    session_globs: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    title_globs: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    notify: tuple[str, ...] = ()
    template: MessageTemplate | None = None
    group_by: str | None = None  # a label name
    skip_empty: bool = False
    misfire_grace: timedelta = timedelta(hours=1)


class LogFormat(StrEnum):
    """How log records are written."""

    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The metrics and health endpoint; `host` is an IP address."""

    host: str
    port: int
    allow_remote: bool = False

    def address(self, port: int | None = None) -> str:
        """`host:port` as a URL authority (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port if port is None else port}"


@dataclass(frozen=True, slots=True)
class HaSettings:
    """Leadership among replicas sharing a PostgreSQL state (`state.lease_ttl`, ...).

    The leader renews its lease every `renew_every`; the database lets it lapse
    `lease_ttl` after the last renewal, and the leader trusts itself only until
    its last renewal's start + `lease_ttl` - `margin` by its own monotonic clock.
    """

    lease_ttl: timedelta = timedelta(seconds=10)
    renew_every: timedelta = timedelta(seconds=2)
    margin: timedelta = timedelta(seconds=1)

    @property
    def send_cap(self) -> timedelta:
        """The longest one send may take under a lease: half of it."""
        return self.lease_ttl / 2


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration of one watcher."""

    factory: FactorySettings
    state_path: Path
    poll: PollSettings = PollSettings()
    sessions: tuple[WatchedSession, ...] = ()
    discover: DiscoverSettings | None = None
    targets: Mapping[str, Target] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    source: Path | None = None
    http: HttpSettings | None = None
    log_format: LogFormat = LogFormat.TEXT
    quiet_hours: Mapping[str, QuietHours] = field(default_factory=dict)
    record_path: Path | None = None
    retention: Retention = Retention()
    # PostgreSQL instead of SQLite at `state_path`: the libpq URL, password folded in.
    state_url: Secret | None = None
    ha: HaSettings = HaSettings()
    reports: tuple[ReportSpec, ...] = ()

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value in the configuration, for redaction.

        A webhook's `url` and `headers` values count: a URL may carry a token in its
        path or query, and extra headers are where credentials usually go. The
        database password counts in every form (decoded, percent-encoded), and
        the state URL whole when it holds one.
        """
        found = [self.factory.api_key.reveal()]
        if self.state_url is not None:
            url = self.state_url.reveal()
            passwords = url_passwords(url)
            # The URL whole too (when it holds a password): it must never be shown.
            found.extend((url, *passwords) if passwords else ())
        for target in self.targets.values():
            found.extend(target_secrets(target))
        return tuple(found)


def target_secrets(target: Target) -> tuple[str, ...]:
    """The values of `target` that must never be shown: credentials, and what may hold one."""
    if isinstance(target, SlackTarget):
        return (target.token.reveal(),)
    if isinstance(target, SlackWebhookTarget):
        return (target.url.reveal(),)
    signing = (target.secret.reveal(),) if target.secret is not None else ()
    return (target.url, *signing, *target.headers.values())
