"""The watcher's own sections, each validated and built into its part of `Settings`.

Those are factory, poll, discover, http, state, quiet_hours and sessions, and
the check that the sessions' fixed intervals fit the request budget.

Secrets (the API key) go through `SecretReader`; every problem goes to the
`ProblemLog` the `Builder` shares with the other parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from watcher.config.models import (
    DiscoverSection,
    FactorySection,
    HttpSection,
    PollSection,
    QuietHoursSection,
    SessionSection,
    StateSection,
)
from watcher.config.problemlog import ProblemLog
from watcher.config.secrets import SecretReader
from watcher.config.statepath import resolve_state_path
from watcher.config.values import is_loopback_address
from watcher.config.yamlsafe import KeyPath
from watcher.core.cadence import budget_need
from watcher.core.pgurl import parse_pg_url, with_password
from watcher.core.secret import Secret
from watcher.core.settings import (
    DiscoverFilter,
    DiscoverSettings,
    FactorySettings,
    HaSettings,
    HttpSettings,
    PollSettings,
    QuietHours,
    Retention,
    Settings,
    WatchedSession,
)

# Under 3 s a lease would have to be renewed faster than a busy database answers.
MIN_LEASE_TTL = timedelta(seconds=3)


@dataclass(frozen=True, slots=True)
class StateChoice:
    """Where the state lives: SQLite at `path`, or PostgreSQL at `url` (then `path` unused)."""

    path: Path
    url: Secret | None
    ha: HaSettings


class SectionBuilder:
    """Builds the watcher's own sections, reporting every problem to `log`."""

    def __init__(self, log: ProblemLog, secrets: SecretReader, env: Mapping[str, str]) -> None:
        self.log = log
        self.secrets = secrets
        self.env = env

    def factory(self, raw: Any) -> FactorySettings | None:
        at: KeyPath = ("factory",)
        section = self.log.validate(FactorySection, _or_empty(raw), at)
        if section is None:
            return None
        api_key = self.secrets.secret(
            at, "api_key", section.api_key, section.api_key_file, required=True
        )
        if api_key is None:
            return None
        return FactorySettings(
            api_key=api_key,
            base_url=section.base_url.rstrip("/"),
            timeout=section.timeout,
            session_url=section.session_url,
            concurrency=section.concurrency,
            unavailable_after=section.unavailable_after,
            max_requests_per_second=section.max_requests_per_second,
        )

    def poll(self, raw: Any) -> PollSettings | None:
        at: KeyPath = ("poll",)
        section = self.log.validate(PollSection, _or_empty(raw), at)
        if section is None:
            return None
        poll = PollSettings(
            interval=section.interval,
            jitter=section.jitter,
            running=section.running,
            pending=section.pending,
            idle=section.idle,
            max_idle=section.max_idle,
            archived=None if section.archived == "off" else section.archived,
            archived_off=section.archived == "off",
        )
        if poll.max_idle is not None and poll.max_idle < poll.idle_base:
            which = "idle" if section.idle is not None else "interval"
            self.log.report(
                (*at, "max_idle"),
                f"max_idle ({_seconds(poll.max_idle)}) is shorter than {which} "
                f"({_seconds(poll.idle_base)}): an idle session backs off from {which} up to "
                "max_idle, so max_idle must be at least as long",
            )
            return None
        return poll

    def discover(self, raw: Any) -> DiscoverSettings | None:
        """`discover:` present (even empty) turns discovery on."""
        section = self.log.validate(DiscoverSection, _or_empty(raw), ("discover",))
        if section is None:
            return None
        include = section.include
        return DiscoverSettings(
            interval=section.interval,
            include=DiscoverFilter(
                titles=include.title or (),
                tags=include.tags or (),
                computers=include.computer or (),
            ),
            created_within=section.created_within,
            labels=dict(section.labels),
            max_sessions=section.max_sessions,
        )

    def http(self, raw: Any) -> HttpSettings | None:
        """The metrics and health endpoint; off unless the section sets `listen`."""
        if raw is None:  # absent, or every key commented out
            return None
        at: KeyPath = ("http",)
        section = self.log.validate(HttpSection, _or_empty(raw), at)
        if section is None:
            return None
        host, port = section.listen
        if not section.allow_remote and not is_loopback_address(host):
            self.log.report(
                (*at, "listen"),
                f"{host} is not a loopback address: the figures describe your sessions; "
                "set 'allow_remote: true' beside 'listen' to serve them to the network",
            )
            return None
        return HttpSettings(host=host, port=port, allow_remote=section.allow_remote)

    def state(self, raw: Any) -> StateChoice | None:
        """Where the state lives (SQLite path, or PostgreSQL URL) and the lease timing."""
        at: KeyPath = ("state",)
        section = self.log.validate(StateSection, _or_empty(raw), at)
        if section is None:
            return None
        path = resolve_state_path(section.path, self.env, Path.cwd())
        ha = self.lease(section)
        if section.url is None:
            if section.password_file is not None:
                self.log.report(
                    (*at, "password_file"), "is the PostgreSQL password: it needs state.url"
                )
                return None
            return None if ha is None else StateChoice(path, None, ha)
        if section.path is not None:
            self.log.report(
                (*at, "url"),
                "give either path (SQLite) or url (PostgreSQL), not both",
            )
            return None
        url = self.state_url(section)
        if url is None or ha is None:
            return None
        return StateChoice(path, url, ha)

    def state_url(self, section: StateSection) -> Secret | None:
        """`state.url` with the password from `password_file` folded in; None if reported."""
        at: KeyPath = ("state",)
        assert section.url is not None
        try:
            parts = parse_pg_url(section.url)
        except ValueError as error:
            self.log.report((*at, "url"), str(error))
            return None
        if parts.has_password and (*at, "url") not in self.secrets.interpolated:
            self.secrets.note_inline((*at, "url"), "password_file")
        if section.password_file is None:
            return Secret(section.url)
        if parts.has_password:
            self.log.report(
                (*at, "password_file"),
                "the URL in state.url holds a password already: give it in one place",
            )
            return None
        password = self.secrets.read_secret_file((*at, "password_file"), section.password_file)
        if password is None:
            return None
        return Secret(with_password(section.url, password))

    def lease(self, section: StateSection) -> HaSettings | None:
        """The lease's timing, checked against each other; None if reported."""
        at: KeyPath = ("state",)
        ha = HaSettings(lease_ttl=section.lease_ttl, renew_every=section.renew_every)
        if ha.lease_ttl < MIN_LEASE_TTL:
            self.log.report(
                (*at, "lease_ttl"),
                f"must be at least {_seconds(MIN_LEASE_TTL)} (it is {_seconds(ha.lease_ttl)}): "
                f"the leader trusts its lease for lease_ttl - {_seconds(ha.margin)} and must "
                "renew it more than twice in that time",
            )
            return None
        if ha.renew_every * 2 >= ha.lease_ttl:
            self.log.report(
                (*at, "renew_every"),
                f"must be shorter than half of lease_ttl ({_seconds(ha.lease_ttl)} / 2 = "
                f"{_seconds(ha.lease_ttl / 2)}; it is {_seconds(ha.renew_every)}): a leader "
                "must be able to miss one renewal and still renew in time",
            )
            return None
        return ha

    def retention(self, raw: Any) -> Retention:
        """`state:`'s retention; the defaults when the section is absent or already reported."""
        try:
            section = StateSection.model_validate(_or_empty(raw))
        except ValueError:  # `state_path` validated the same section and reported it
            return Retention()
        return Retention(
            keep_delivered=section.keep_delivered,
            keep_dead=section.keep_dead,
            forget_sessions_after=section.forget_sessions_after,
        )

    def record_path(self, raw: Any) -> Path | None:
        """`state.record`: where `run` appends every poll's body (None: no recording)."""
        record = raw.get("record") if isinstance(raw, dict) else None
        return Path.cwd() / record if isinstance(record, str) and record else None

    def quiet_hours(self, raw: Any) -> dict[str, QuietHours]:
        at: KeyPath = ("quiet_hours",)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.log.report(
                at, "expected a mapping of window names to {start, end, timezone, days}"
            )
            return {}
        out: dict[str, QuietHours] = {}
        for name, item in raw.items():
            section = self.log.validate(QuietHoursSection, item, (*at, name))
            if section is None:
                continue
            if section.start == section.end:
                self.log.report((*at, name, "end"), "end must differ from start")
                continue
            out[name] = QuietHours(
                name=name,
                start=section.start,
                end=section.end,
                timezone=section.timezone,
                days=frozenset(section.days),
            )
        return out

    def sessions(self, raw: Any) -> tuple[WatchedSession, ...]:
        at: KeyPath = ("sessions",)
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.log.report(at, "expected a list of sessions")
            return ()
        out: list[WatchedSession] = []
        ids: dict[str, int] = {}
        names: dict[str, int] = {}
        for index, item in enumerate(raw):
            # Uniqueness is checked on the raw item so that a duplicate is found
            # even when something else in that item is wrong.
            self.log.unique(ids, item, (*at, index, "id"), "session id")
            self.log.unique(names, item, (*at, index, "name"), "session name")
            session = self.log.validate(SessionSection, item, (*at, index))
            if session is None:
                continue
            out.append(
                WatchedSession(
                    id=session.id,
                    name=session.name,
                    interval=session.interval,
                    labels=dict(session.labels),
                )
            )
        return tuple(out)

    def check_budget(self, settings: Settings) -> None:
        """Sessions with a fixed interval must fit in the request budget."""
        need = budget_need(settings)
        if need.fixed_exceeds:
            self.log.report(
                ("factory", "max_requests_per_second"),
                f"the sessions with their own interval need {need.fixed:.2f} requests/s, "
                f"more than the budget of {need.budget:g}; raise max_requests_per_second "
                "or lengthen their intervals",
            )


def _seconds(value: Any) -> str:
    return f"{value.total_seconds():g}s"


def _or_empty(section: Any) -> Any:
    """An empty section (`poll:` with every key commented out) means all defaults."""
    return {} if section is None else section
