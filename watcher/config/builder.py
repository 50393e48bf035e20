"""The builder: interpolation, section validation, cross-checks, frozen `Settings`.

It collects every problem rather than stopping at the first, and a problem
found in one phase silences later phases at the same key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from watcher.config import yamlsafe
from watcher.config.models import (
    SECTIONS,
    TARGET_MODELS,
    DiscoverSection,
    FactorySection,
    HttpSection,
    PollSection,
    QuietHoursSection,
    RuleSection,
    RuleTemplateSection,
    SessionSection,
    SlackSection,
    SlackTemplateSection,
    SlackWebhookSection,
    StateSection,
    TopLevelValues,
    WebhookSection,
)
from watcher.config.problems import (
    ConfigError,
    ConfigProblem,
    did_you_mean,
    error_message,
    unknown_name,
)
from watcher.config.secrets import SecretReader
from watcher.config.statepath import resolve_state_path
from watcher.config.values import (
    HEADER_NAME,
    RESERVED_HEADERS,
    TARGET_NAME,
    is_http_url,
    is_loopback_address,
    is_whsec,
)
from watcher.config.yamlsafe import KeyPath, render_path
from watcher.core.cadence import budget_need
from watcher.core.lifecycle import CONDITION_EVENTS, EDGE_EVENTS, USAGE_COUNTERS
from watcher.core.model import EventType
from watcher.core.settings import (
    DeliveryLimits,
    DiscoverFilter,
    DiscoverSettings,
    FactorySettings,
    HttpSettings,
    LogFormat,
    MessageTemplate,
    PollSettings,
    QuietHours,
    Rule,
    Settings,
    SlackTarget,
    SlackTemplate,
    SlackWebhookTarget,
    Target,
    WatchedSession,
    WebhookTarget,
    WebhookTemplate,
)
from watcher.core.urls import is_loopback_url

_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PART_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")

_Model = TypeVar("_Model", bound=BaseModel)


class Builder:
    """Turns one parsed document into Settings, collecting every problem on the way."""

    def __init__(
        self,
        path: Path,
        document: yamlsafe.Document,
        env: Mapping[str, str],
        credentials_dir: Path | None,
        mode: int,
    ) -> None:
        self.path = path
        self.document = document
        self.env = env
        self.problems: list[ConfigProblem] = []
        self.settled: set[KeyPath] = set()  # keys already reported by an earlier phase
        self.interpolated: set[KeyPath] = set()
        self.rule_index: dict[str, int] = {}  # rule name -> its index in the file
        self.secrets = SecretReader(self.report, path, credentials_dir, mode, self.interpolated)

    # -- reporting ---------------------------------------------------------

    def report(self, at: KeyPath, message: str) -> None:
        """Record a problem at key path `at` (with its line) unless that key is settled."""
        if any(at[:end] in self.settled for end in range(len(at) + 1)):
            return
        line = self.document.line_of(at)
        self.problems.append(ConfigProblem(str(self.path), line, render_path(at), message))

    def validate(self, model: type[_Model], raw: Any, at: KeyPath) -> _Model | None:
        """`model` validated from `raw`, or None after reporting every error at its line."""
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors(include_url=False, include_input=False):
                loc = error["loc"]
                message = error_message(model, error)
                if loc[-1:] == ("[key]",):  # pydantic's marker for a bad mapping key
                    loc, message = loc[:-1], f"the key {message}"
                self.report((*at, *loc), message)
            return None

    # -- phases ------------------------------------------------------------

    def build(self) -> Settings:
        """Run the phases after parsing; raise ConfigError if anything was reported."""
        data = self.interpolate(self.document.data, ())
        if not isinstance(data, dict):
            self.report((), "the top level must be a mapping of sections: " + ", ".join(SECTIONS))
            raise self.error()
        for key in data:
            if key not in SECTIONS:
                self.report((key,), unknown_name("section", key, SECTIONS))
        factory = self.factory(data.get("factory"))
        poll = self.poll(data.get("poll"))
        discover = self.discover(data) if "discover" in data else None
        state_path = self.state_path(data.get("state"))
        sessions = self.sessions(data.get("sessions"))
        targets = self.targets(data.get("targets"))
        quiet = self.quiet_hours(data.get("quiet_hours"))
        rules = self.rules(data.get("rules"), data.get("targets"), data.get("quiet_hours"))
        http = self.http(data.get("http"))
        values = self.validate(
            TopLevelValues, {k: data[k] for k in TopLevelValues.model_fields if k in data}, ()
        )
        self.secrets.check_inline_secrets()
        if self.problems or factory is None or poll is None or state_path is None or values is None:
            raise self.error()
        settings = Settings(
            factory=factory,
            state_path=state_path,
            poll=poll,
            sessions=sessions,
            discover=discover,
            targets=targets,
            rules=rules,
            source=self.path,
            http=http,
            log_format=LogFormat(values.log_format),
            quiet_hours=quiet,
            record_path=self.record_path(data.get("state")),
        )
        self.check_budget(settings)
        self.check_templates(settings)
        if self.problems:
            raise self.error()
        return settings

    def poll(self, raw: Any) -> PollSettings | None:
        at: KeyPath = ("poll",)
        section = self.validate(PollSection, _or_empty(raw), at)
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
            self.report(
                (*at, "max_idle"),
                f"max_idle ({_seconds(poll.max_idle)}) is shorter than {which} "
                f"({_seconds(poll.idle_base)}): an idle session backs off from {which} up to "
                "max_idle, so max_idle must be at least as long",
            )
            return None
        return poll

    def discover(self, data: Mapping[str, Any]) -> DiscoverSettings | None:
        """`discover:` present (even empty) turns discovery on."""
        section = self.validate(DiscoverSection, _or_empty(data.get("discover")), ("discover",))
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

    def check_budget(self, settings: Settings) -> None:
        """Sessions with a fixed interval must fit in the request budget."""
        need = budget_need(settings)
        if need.fixed_exceeds:
            self.report(
                ("factory", "max_requests_per_second"),
                f"the sessions with their own interval need {need.fixed:.2f} requests/s, "
                f"more than the budget of {need.budget:g}; raise max_requests_per_second "
                "or lengthen their intervals",
            )

    def error(self) -> ConfigError:
        """Every problem so far, in file order (problems without a line first)."""
        return ConfigError(sorted(self.problems, key=lambda p: p.line or 0))

    def interpolate(self, value: Any, at: KeyPath) -> Any:
        """Replace `${NAME}` in every string value (not key) with `env[NAME]`."""
        if isinstance(value, dict):
            return {k: self.interpolate(v, (*at, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, (*at, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        failed = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal failed
            if match[0] == "$${":
                return "${"
            name = match[1]
            if name is None:
                self.report(at, "unterminated '${' (write '$${' for a literal '${')")
            elif not _ENV_NAME.fullmatch(name):
                # The text between the braces is not quoted: this may be a secret's value.
                self.report(at, "invalid variable reference: names are letters, digits and '_'")
            elif name not in self.env:
                self.report(at, f"environment variable '{name}' is not set")
            else:
                self.interpolated.add(at)
                return self.env[name]
            failed = True
            return match[0]

        result = _ENV_REFERENCE.sub(substitute, value)
        if failed:
            self.settled.add(at)
        return result

    def factory(self, raw: Any) -> FactorySettings | None:
        at: KeyPath = ("factory",)
        section = self.validate(FactorySection, _or_empty(raw), at)
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

    def http(self, raw: Any) -> HttpSettings | None:
        """The metrics and health endpoint; off unless the section sets `listen`."""
        if raw is None:  # absent, or every key commented out
            return None
        at: KeyPath = ("http",)
        section = self.validate(HttpSection, _or_empty(raw), at)
        if section is None:
            return None
        host, port = section.listen
        if not section.allow_remote and not is_loopback_address(host):
            self.report(
                (*at, "listen"),
                f"{host} is not a loopback address: the figures describe your sessions; "
                "set 'allow_remote: true' beside 'listen' to serve them to the network",
            )
            return None
        return HttpSettings(host=host, port=port, allow_remote=section.allow_remote)

    def state_path(self, raw: Any) -> Path | None:
        section = self.validate(StateSection, _or_empty(raw), ("state",))
        if section is None:
            return None
        return resolve_state_path(section.path, self.env, Path.cwd())

    def record_path(self, raw: Any) -> Path | None:
        """`state.record`: where `run` appends every poll's body (None: no recording)."""
        record = raw.get("record") if isinstance(raw, dict) else None
        return Path.cwd() / record if isinstance(record, str) and record else None

    def quiet_hours(self, raw: Any) -> dict[str, QuietHours]:
        at: KeyPath = ("quiet_hours",)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.report(at, "expected a mapping of window names to {start, end, timezone, days}")
            return {}
        out: dict[str, QuietHours] = {}
        for name, item in raw.items():
            section = self.validate(QuietHoursSection, item, (*at, name))
            if section is None:
                continue
            if section.start == section.end:
                self.report((*at, name, "end"), "end must differ from start")
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
            self.report(at, "expected a list of sessions")
            return ()
        out: list[WatchedSession] = []
        ids: dict[str, int] = {}
        names: dict[str, int] = {}
        for index, item in enumerate(raw):
            # Uniqueness is checked on the raw item so that a duplicate is found
            # even when something else in that item is wrong.
            self.unique(ids, item, (*at, index, "id"), "session id")
            self.unique(names, item, (*at, index, "name"), "session name")
            session = self.validate(SessionSection, item, (*at, index))
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

    def unique(self, seen: dict[str, int], item: Any, at: KeyPath, what: str) -> None:
        """Report the text at `item[at[-1]]` if already in `seen`, else remember its line."""
        value = item.get(at[-1]) if isinstance(item, dict) else None
        if not isinstance(value, str):
            return
        line = self.document.line_of(at) or 0
        if value in seen:
            self.report(at, f"duplicate {what} '{value}' (first on line {seen[value]})")
        else:
            seen[value] = line

    def targets(self, raw: Any) -> dict[str, Target]:
        at: KeyPath = ("targets",)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.report(at, "expected a mapping of target names to targets")
            return {}
        out: dict[str, Target] = {}
        for name, item in raw.items():
            here = (*at, name)
            if not TARGET_NAME.fullmatch(name):
                self.report(here, "target names use only letters, digits, '_', '.' and '-'")
            target = self.target(name, item, here)
            if target is not None:
                out[name] = target
        return out

    def target(self, name: str, raw: Any, at: KeyPath) -> Target | None:
        """Dispatch on `type` to the model of that kind, then build the target."""
        if not isinstance(raw, dict):
            self.report(at, "expected a mapping")
            return None
        kind = raw.get("type")
        model = TARGET_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            kinds = ", ".join(TARGET_MODELS)
            if kind is None:
                self.report((*at, "type"), f"is required: one of {kinds}")
            elif isinstance(kind, str):
                hint = did_you_mean(kind, TARGET_MODELS)
                self.report(
                    (*at, "type"), f"unknown target type '{kind}'{hint}; use one of {kinds}"
                )
            else:
                self.report((*at, "type"), f"expected one of: {kinds}")
            return None
        section = self.validate(model, raw, at)
        if section is None:
            return None
        limits = DeliveryLimits(max_attempts=section.max_attempts, max_age=section.max_age)
        if isinstance(section, SlackSection):
            return self.slack(name, section, at, limits)
        if isinstance(section, SlackWebhookSection):
            return self.slack_webhook(name, section, at, limits)
        assert isinstance(section, WebhookSection)
        return self.webhook(name, section, at, limits)

    def slack(
        self, name: str, section: SlackSection, at: KeyPath, limits: DeliveryLimits
    ) -> SlackTarget | None:
        token = self.secrets.secret(at, "token", section.token, section.token_file, required=True)
        if token is None:
            return None
        return SlackTarget(
            name=name,
            token=token,
            channel=section.channel,
            api_url=section.api_url,
            limits=limits,
            min_interval=section.min_interval,
            template=slack_template(section.template),
            card=section.card,
            thread=section.thread,
        )

    def slack_webhook(
        self, name: str, section: SlackWebhookSection, at: KeyPath, limits: DeliveryLimits
    ) -> SlackWebhookTarget | None:
        url = self.secrets.secret(at, "url", section.url, section.url_file, required=True)
        if url is None:
            return None
        if not is_http_url(url.reveal()):
            key = "url" if section.url is not None else "url_file"
            self.report((*at, key), "expected an http:// or https:// URL (the value is not shown)")
            return None
        return SlackWebhookTarget(
            name=name,
            url=url,
            limits=limits,
            min_interval=section.min_interval,
            template=slack_template(section.template),
        )

    def webhook(
        self, name: str, section: WebhookSection, at: KeyPath, limits: DeliveryLimits
    ) -> WebhookTarget | None:
        ok = True
        plain = urlsplit(section.url).scheme == "http"
        if plain and not section.allow_http and not is_loopback_url(section.url):
            self.report(
                (*at, "url"),
                "plain http:// sends the payload unencrypted; use https:// "
                "or set 'allow_http: true'",
            )
            ok = False
        secret = self.secrets.secret(
            at, "secret", section.secret, section.secret_file, required=False
        )
        if secret is not None and not is_whsec(secret.reveal()):
            key = "secret" if section.secret is not None else "secret_file"
            self.report(
                (*at, key),
                "malformed webhook secret: expected 'whsec_' followed by base64 "
                "(the value is not shown)",
            )
            ok = False
        for header, value in section.headers.items():
            where = (*at, "headers", header)
            if not HEADER_NAME.fullmatch(header):
                self.report(where, "not a valid HTTP header name")
                ok = False
            elif header.lower() in RESERVED_HEADERS:
                self.report(where, "this header is set by the watcher itself")
                ok = False
            if any(c in value for c in "\r\n\0"):
                self.report(where, "header values cannot contain line breaks or NUL")
                ok = False
        ca_file = None
        if section.ca_file is not None:
            ca_file = self.secrets.relative_to_config(Path(section.ca_file))
            if not ca_file.is_file():
                self.report((*at, "ca_file"), f"CA file not found: {ca_file}")
                ok = False
        if not ok:
            return None
        return WebhookTarget(
            name=name,
            url=section.url,
            secret=secret,
            headers=dict(section.headers),
            allow_http=section.allow_http,
            ca_file=ca_file,
            limits=limits,
            template=None if section.template is None else WebhookTemplate(section.template.body),
        )

    def rules(self, raw: Any, raw_targets: Any, raw_quiet: Any = None) -> tuple[Rule, ...]:
        at: KeyPath = ("rules",)
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.report(at, "expected a list of rules")
            return ()
        # Names declared in the file, valid or not, so one broken target does not
        # also turn every rule that uses it into an "unknown target" problem.
        target_names = list(raw_targets) if isinstance(raw_targets, dict) else []
        names: dict[str, int] = {}
        out: list[Rule] = []
        for index, item in enumerate(raw):
            here = (*at, index)
            self.unique(names, item, (*here, "name"), "rule name")
            rule = self.validate(RuleSection, item, here)
            if rule is None:
                continue
            self.rule_index.setdefault(rule.name, index)
            events = self.rule_events(rule, item, here)
            notify = self.rule_targets(rule, item, here, target_names)
            if events is None or notify is None:
                continue
            windows = list(raw_quiet) if isinstance(raw_quiet, dict) else []
            if not self.rule_options(rule, events, here, windows):
                continue
            template = self.rule_template(rule.template, (*here, "template"))
            out.append(
                Rule(
                    name=rule.name,
                    on=events,
                    notify=notify,
                    from_status=rule.when.from_ or (),
                    to_status=rule.when.to or (),
                    session_globs=rule.when.session or (),
                    labels=dict(rule.when.labels),
                    title_globs=rule.when.title or (),
                    tags=rule.when.tags or (),
                    model_globs=rule.when.model or (),
                    settle=rule.settle,
                    hold_for=rule.for_,
                    cooldown=rule.cooldown,
                    repeat=rule.repeat,
                    resolved=rule.resolved,
                    urgent=rule.urgent,
                    threshold=dict(rule.threshold or {}),
                    quiet_hours=rule.quiet_hours,
                    template=template,
                    include_last_answer=rule.include_last_answer,
                )
            )
        return tuple(out)

    def rule_template(
        self, section: RuleTemplateSection | None, at: KeyPath
    ) -> MessageTemplate | None:
        """A rule's template: `body` (webhook targets) or `text`/`blocks` (Slack), not both."""
        if section is None:
            return None
        slack = section.text is not None or section.blocks is not None
        if section.body is not None and slack:
            self.report(
                at,
                "give either 'body' (for webhook targets) or 'text'/'blocks' (for Slack "
                "targets), not both; a rule notifying both kinds puts its templates on the targets",
            )
            return None
        if section.body is not None:
            return WebhookTemplate(section.body)
        if not slack:
            self.report(at, "expected 'text' and/or 'blocks' (Slack targets), or 'body' (webhooks)")
            return None
        return slack_template(SlackTemplateSection(text=section.text, blocks=section.blocks))

    def check_templates(self, settings: Settings) -> None:
        """Every template compiles and renders a sample of every event type it can meet."""
        if not any(t.template for t in settings.targets.values()) and not any(
            r.template for r in settings.rules
        ):
            return
        # Imported here: Jinja2 loads only for a config that has templates.
        from watcher.core.template import check_template, suits  # noqa: PLC0415

        every = [kind for kind in EventType if kind is not EventType.DIGEST]
        for name, target in settings.targets.items():
            if target.template is not None:
                at: KeyPath = ("targets", name, "template")
                for problem in check_template(target.template, every):
                    self.report_template(at, problem.part, problem.line, problem.message)
        for rule in settings.rules:
            if rule.template is None:
                continue
            at = ("rules", self.rule_index.get(rule.name, 0), "template")
            wrong = [
                settings.targets[n]
                for n in rule.notify
                if n in settings.targets and not suits(rule.template, settings.targets[n].kind)
            ]
            if wrong:
                given = (
                    "'body' is for webhook"
                    if isinstance(rule.template, WebhookTemplate)
                    else ("'text'/'blocks' are for Slack")
                )
                names = ", ".join(f"'{t.name}' ({t.kind})" for t in wrong)
                self.report(
                    at,
                    f"this template does not suit every target the rule notifies: {given} "
                    f"targets, not {names}; split the rule, or give each target its own template",
                )
                continue
            kinds = [EventType(kind) for kind in rule.on]
            for problem in check_template(rule.template, kinds, rule):
                self.report_template(at, problem.part, problem.line, problem.message)

    def report_template(self, at: KeyPath, part: str, line: int | None, message: str) -> None:
        """A template problem at the file line of the template's own `line` in `part`."""
        path = (*at, *_part_path(part))
        start = self.document.text_lines.get(path)
        where = (
            start + line - 1
            if start is not None and line is not None
            else self.document.line_of(path)
        )
        self.problems.append(ConfigProblem(str(self.path), where, render_path(path), message))

    def rule_options(
        self, rule: RuleSection, events: tuple[str, ...], at: KeyPath, windows: list[str]
    ) -> bool:
        """Reject options that mean nothing for the rule's events, with what they apply to."""
        ok = True
        kinds = set(events)

        def only(key: str, given: object, allowed: frozenset[EventType]) -> None:
            nonlocal ok
            if given is None or given is False:
                return
            wrong = sorted(kinds - allowed)
            if wrong:
                names = ", ".join(sorted(allowed))
                self.report(
                    (*at, key),
                    f"'{key}' means nothing for {', '.join(wrong)}; it applies only to {names}",
                )
                ok = False

        only("for", rule.for_, CONDITION_EVENTS)
        only("repeat", rule.repeat, CONDITION_EVENTS)
        only("resolved", rule.resolved, CONDITION_EVENTS)
        only("threshold", rule.threshold, frozenset({EventType.USAGE_CROSSED}))
        only("settle", rule.settle, EDGE_EVENTS)
        session_events = frozenset(e for e in EventType if e.startswith("session."))
        only("cooldown", rule.cooldown, session_events)
        only("quiet_hours", rule.quiet_hours, session_events)
        only("include_last_answer", rule.include_last_answer, session_events)
        if kinds & CONDITION_EVENTS and rule.for_ is None:
            which = ", ".join(sorted(kinds & CONDITION_EVENTS))
            self.report((*at, "on"), f"{which} needs 'for': how long the condition must hold")
            ok = False
        if EventType.USAGE_CROSSED in kinds and not rule.threshold:
            self.report(
                (*at, "on"),
                f"{EventType.USAGE_CROSSED} needs 'threshold', e.g. {{factory_credits: 100}}",
            )
            ok = False
        for counter in rule.threshold or {}:
            if counter not in USAGE_COUNTERS:
                self.report(
                    (*at, "threshold", counter),
                    unknown_name("usage counter", counter, USAGE_COUNTERS),
                )
                ok = False
        if rule.quiet_hours is not None and rule.quiet_hours not in windows:
            self.report(
                (*at, "quiet_hours"), unknown_name("quiet-hours window", rule.quiet_hours, windows)
            )
            ok = False
        return ok

    def rule_events(self, rule: RuleSection, raw: Any, at: KeyPath) -> tuple[str, ...] | None:
        known = [str(e) for e in EventType if e is not EventType.DIGEST]
        events: list[str] = []
        ok = True
        for where, value in _items(raw, (*at, "on"), rule.on):
            if value not in known:
                # Event types share long prefixes: only a near miss is a typo.
                self.report(where, unknown_name("event type", value, known, cutoff=0.85))
                ok = False
            elif value in events:
                self.report(where, f"event type '{value}' is listed twice")
                ok = False
            else:
                events.append(EventType(value))
        if EventType.STATUS_CHANGED not in events:
            for key, given in (("from", rule.when.from_), ("to", rule.when.to)):
                if given is not None:
                    self.report(
                        (*at, "when", key),
                        f"'{key}' applies only to {EventType.STATUS_CHANGED} events; "
                        f"add that to 'on' or remove '{key}'",
                    )
                    ok = False
        return tuple(events) if ok else None

    def rule_targets(
        self, rule: RuleSection, raw: Any, at: KeyPath, target_names: list[str]
    ) -> tuple[str, ...] | None:
        notify: list[str] = []
        ok = True
        for where, value in _items(raw, (*at, "notify"), rule.notify):
            if value not in target_names:
                self.report(where, unknown_name("target", value, target_names))
                ok = False
            elif value in notify:
                self.report(where, f"target '{value}' is listed twice")
                ok = False
            else:
                notify.append(value)
        return tuple(notify) if ok else None


def slack_template(section: SlackTemplateSection | None) -> SlackTemplate | None:
    """Settings' form of a Slack template: the blocks as canonical JSON text."""
    if section is None:
        return None
    blocks = None if section.blocks is None else json.dumps(section.blocks, ensure_ascii=False)
    return SlackTemplate(text=section.text, blocks=blocks)


def _part_path(part: str) -> KeyPath:
    """`blocks[0].text.text` -> ("blocks", 0, "text", "text")."""
    head = part.split(".", 1)[0].split("[", 1)[0]
    path: list[str | int] = [head]
    for match in _PART_STEP.finditer(part, len(head)):
        path.append(match[1] if match[1] is not None else int(match[2]))
    return tuple(path)


def _items(raw: Any, at: KeyPath, values: tuple[str, ...]) -> list[tuple[KeyPath, str]]:
    """Pair each value of a one-or-many field with its key path (`on` or `on[1]`)."""
    given = raw.get(at[-1]) if isinstance(raw, dict) else None
    if isinstance(given, list):
        return [((*at, i), value) for i, value in enumerate(values)]
    return [(at, value) for value in values]


def _seconds(value: Any) -> str:
    return f"{value.total_seconds():g}s"


def _or_empty(section: Any) -> Any:
    """An empty section (`poll:` with every key commented out) means all defaults."""
    return {} if section is None else section
