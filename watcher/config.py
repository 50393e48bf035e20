"""YAML file -> validated, frozen `Settings`; every problem names file, line and key path.

Loading runs in phases, each collecting problems rather than stopping at the
first, so one `factory-watcher check` lists everything wrong with a file:

1. read: a regular file of at most 1 MiB, UTF-8 (`_read_config`);
2. parse: hardened YAML into plain data plus a key-path -> line map
   (`watcher.yamlsafe`); every scalar is text or null;
3. interpolate `${NAME}` from the environment (`$${` is a literal `${`);
4. validate each section with a pydantic model (extra keys forbidden) and map
   every pydantic error back to its YAML line;
5. cross-check and build: secrets (inline, `${ENV}` or `<key>_file`), target
   references, event types, uniqueness, file permissions.

A problem found in one phase silences later phases at the same key, so a
missing `${VAR}` is reported once, not again as a malformed duration.
Secret values never reach a problem message, a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import math
import os
import re
import stat
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from watcher import yamlsafe
from watcher.core.model import EventType
from watcher.core.secret import Secret
from watcher.core.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_SESSION_URL,
    DeliveryLimits,
    FactorySettings,
    PollSettings,
    Rule,
    Settings,
    SlackTarget,
    SlackWebhookTarget,
    Target,
    TargetKind,
    WatchedSession,
    WebhookTarget,
)
from watcher.core.urls import is_loopback_url
from watcher.yamlsafe import KeyPath, render_path

MAX_CONFIG_BYTES = 1 << 20
MAX_SECRET_FILE_BYTES = 64 << 10
DEFAULT_STATE_FILE = "factory-watcher.db"
STATE_FILE_IN_STATE_DIRECTORY = "state.db"

_DURATION = re.compile(r"(?P<amount>[0-9]+)(?P<unit>ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TARGET_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RESERVED_HEADERS = frozenset(
    {
        "content-length",
        "host",
        "transfer-encoding",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_SESSION_ID_FORBIDDEN = re.compile(r"[/?#%\s]")
_WHSEC_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file; `line` is 1-based, None when no line applies."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every reason found, in file order."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def parse_duration(value: str | int) -> timedelta:
    """Parse `500ms`, `30s`, `5m`, `2h`, `1d` or a whole number of seconds; > 0.

    Raises ValueError saying what is expected.
    """
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            "expected a duration such as 500ms, 30s, 5m, 2h or 1d (a plain number means seconds)"
        )
    unit = _DURATION_UNITS[match["unit"] or "s"]
    try:
        duration = timedelta(**{unit: int(match["amount"])})
    except OverflowError:
        raise ValueError("duration is too long") from None
    if duration <= timedelta(0):
        raise ValueError("duration must be longer than 0")
    return duration


def parse_jitter(value: str | float) -> float:
    """Parse a jitter as a percentage (`"10%"`) or a fraction (`0.1`); result in 0..0.5.

    Raises ValueError saying what is expected.
    """
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        number = float(text.removesuffix("%"))
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError("expected a percentage such as '10%' or a fraction from 0 to 0.5")
    fraction = number / 100 if percent else number
    if not 0 <= fraction <= 0.5:
        if percent:
            raise ValueError("jitter must be between 0% and 50%")
        raise ValueError("jitter must be a fraction from 0 to 0.5 (write '10%' for a percentage)")
    return fraction


def load_settings(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    credentials_dir: Path | None = None,
) -> Settings:
    """Read, validate and build the settings in the YAML file at `path`.

    `env` (default `os.environ`) feeds `${NAME}` interpolation and the
    `STATE_DIRECTORY` default; `credentials_dir` (default
    `$CREDENTIALS_DIRECTORY` from `env`) is searched first for relative
    `*_file` secrets. Raises ConfigError listing every problem found; bad
    input never raises anything else.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if credentials_dir is None and environ.get("CREDENTIALS_DIRECTORY"):
        credentials_dir = Path(environ["CREDENTIALS_DIRECTORY"])
    text, mode = _read_config(path)
    try:
        document = yamlsafe.parse(text)
    except yamlsafe.UnsafeYamlError as exc:
        raise ConfigError(
            ConfigProblem(str(path), issue.line, render_path(issue.path), issue.message)
            for issue in exc.issues
        ) from None
    return _Builder(path, document, environ, credentials_dir, mode).build()


def _read_config(path: Path) -> tuple[str, int]:
    """The file's text and permission bits, or ConfigError (size checked before parsing)."""

    def refuse(message: str, line: int | None = None) -> ConfigError:
        return ConfigError([ConfigProblem(str(path), line, "", message)])

    try:
        # stat before open: opening a FIFO would block.
        if not stat.S_ISREG(path.stat().st_mode):
            raise refuse("not a regular file")
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_size > MAX_CONFIG_BYTES:
                raise refuse(f"file is larger than 1 MiB ({info.st_size} bytes)")
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read the config file: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise refuse("file is larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse("not UTF-8 text", raw.count(b"\n", 0, exc.start) + 1) from None
    return text.removeprefix("\ufeff"), stat.S_IMODE(info.st_mode)


# ---------------------------------------------------------------------------
# Section models: the shape of the YAML, validated by pydantic.
# ---------------------------------------------------------------------------


def _custom(kind: str, check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Adapt a ValueError-raising parser to pydantic with our message as the whole text."""

    def validate(value: Any) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise PydanticCustomError(kind, str(exc)) from None

    return validate


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(c.isspace() for c in value)
    )


def _http_url(value: str) -> str:
    if not _is_http_url(value):
        raise ValueError("expected an http:// or https:// URL")
    return value


def _session_url(value: str) -> str:
    _http_url(value)
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError:
        raise ValueError("unbalanced braces; write {id} where the session id goes") from None
    if fields - {"id"}:
        raise ValueError("the only placeholder is {id}")
    return value


def _session_id(value: str) -> str:
    # The id becomes a URL path segment: keep it from reaching other endpoints.
    if _SESSION_ID_FORBIDDEN.search(value) or value in (".", ".."):
        raise ValueError("a session id cannot contain '/', '?', '#', '%' or spaces")
    return value


def _one_or_many(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


_Text = Annotated[str, StringConstraints(min_length=1)]
_Duration = Annotated[timedelta, BeforeValidator(_custom("duration", parse_duration))]
_Jitter = Annotated[float, BeforeValidator(_custom("jitter", parse_jitter))]
_Url = Annotated[str, AfterValidator(_custom("url", _http_url))]
_SessionUrl = Annotated[str, AfterValidator(_custom("url", _session_url))]
_SessionId = Annotated[_Text, AfterValidator(_custom("session_id", _session_id))]
_Names = Annotated[tuple[_Text, ...], BeforeValidator(_one_or_many), Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class _Factory(_Section):
    base_url: _Url = DEFAULT_BASE_URL
    api_key: str | None = None
    api_key_file: _Text | None = None
    timeout: _Duration = timedelta(seconds=10)
    session_url: _SessionUrl = DEFAULT_SESSION_URL
    concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    unavailable_after: _Duration = timedelta(minutes=2)


class _Poll(_Section):
    interval: _Duration = timedelta(seconds=30)
    jitter: _Jitter = 0.1


class _State(_Section):
    path: _Text | None = None


class _Session(_Section):
    id: _SessionId
    name: _Text | None = None
    interval: _Duration | None = None
    labels: dict[_Text, str] = Field(default_factory=dict)


class _TargetBase(_Section):
    max_attempts: Annotated[int, Field(ge=1)] = 12
    max_age: _Duration = timedelta(hours=24)


class _Slack(_TargetBase):
    type: Literal["slack"]
    token: str | None = None
    token_file: _Text | None = None
    channel: _Text
    api_url: _Url | None = None
    min_interval: _Duration = timedelta(seconds=1)


class _SlackWebhook(_TargetBase):
    type: Literal["slack_webhook"]
    url: str | None = None
    url_file: _Text | None = None
    min_interval: _Duration = timedelta(seconds=1)


class _Webhook(_TargetBase):
    type: Literal["webhook"]
    url: _Url
    secret: str | None = None
    secret_file: _Text | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    allow_http: bool = False
    ca_file: _Text | None = None


_TARGET_MODELS: Mapping[str, type[_TargetBase]] = {
    TargetKind.SLACK: _Slack,
    TargetKind.SLACK_WEBHOOK: _SlackWebhook,
    TargetKind.WEBHOOK: _Webhook,
}


class _When(_Section):
    from_: _Names | None = Field(default=None, alias="from")
    to: _Names | None = None
    session: _Names | None = None
    labels: dict[_Text, str] = Field(default_factory=dict)


class _Rule(_Section):
    name: _Text
    on: _Names
    when: _When = _When()
    notify: _Names


_SECTIONS = ("factory", "poll", "state", "sessions", "targets", "rules")

_Model = TypeVar("_Model", bound=BaseModel)


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_at(model: type[BaseModel], loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The nested model that validated the mapping at `loc` below `model`, if any."""
    for part in loc:
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        field = fields.get(str(part))
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _did_you_mean(word: str, options: Iterable[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown(what: str, word: str, options: Iterable[str], cutoff: float = 0.6) -> str:
    """`unknown <what> 'word' (did you mean 'x'?)`, or the valid choices when none is close."""
    choices = list(options)
    hint = _did_you_mean(word, choices, cutoff)
    if hint:
        return f"unknown {what} '{word}'{hint}"
    if not choices:
        return f"unknown {what} '{word}' (none are defined)"
    return f"unknown {what} '{word}'; expected one of: {', '.join(choices)}"


def _error_message(model: type[BaseModel], error: ErrorDetails) -> str:
    """Our wording for one pydantic error; never includes the input value."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "extra_forbidden":
        parent = _model_at(model, error["loc"][:-1])
        options = _keys_of(parent) if parent is not None else []
        hint = _did_you_mean(str(error["loc"][-1]), options)
        return (
            f"unknown key{hint}" if hint else f"unknown key; expected one of: {', '.join(options)}"
        )
    simple = {
        "missing": "is required",
        "string_type": "expected a string",
        "int_type": "expected a whole number",
        "int_parsing": "expected a whole number",
        "int_from_float": "expected a whole number",
        "bool_type": "expected true or false",
        "bool_parsing": "expected true or false",
        "dict_type": "expected a mapping",
        "model_type": "expected a mapping",
        "model_attributes_type": "expected a mapping",
        "list_type": "expected a list",
        "tuple_type": "expected a string or a list of strings",
        "string_too_short": "must not be empty",
        "too_short": "must not be empty",
    }
    if kind in simple:
        return simple[kind]
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    return error["msg"]


# ---------------------------------------------------------------------------
# The builder: interpolation, validation, cross-checks, frozen values.
# ---------------------------------------------------------------------------


class _Builder:
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
        self.credentials_dir = credentials_dir
        self.mode = mode
        self.problems: list[ConfigProblem] = []
        self.settled: set[KeyPath] = set()  # keys already reported by an earlier phase
        self.interpolated: set[KeyPath] = set()
        self.inline_secrets: list[KeyPath] = []

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
                message = _error_message(model, error)
                if loc[-1:] == ("[key]",):  # pydantic's marker for a bad mapping key
                    loc, message = loc[:-1], f"the key {message}"
                self.report((*at, *loc), message)
            return None

    # -- phases ------------------------------------------------------------

    def build(self) -> Settings:
        """Run the phases after parsing; raise ConfigError if anything was reported."""
        data = self.interpolate(self.document.data, ())
        if not isinstance(data, dict):
            self.report((), "the top level must be a mapping of sections: " + ", ".join(_SECTIONS))
            raise self.error()
        for key in data:
            if key not in _SECTIONS:
                self.report((key,), _unknown("section", key, _SECTIONS))
        factory = self.factory(data.get("factory"))
        poll = self.validate(_Poll, _or_empty(data.get("poll")), ("poll",))
        state_path = self.state_path(data.get("state"))
        sessions = self.sessions(data.get("sessions"))
        targets = self.targets(data.get("targets"))
        rules = self.rules(data.get("rules"), data.get("targets"))
        self.check_inline_secrets()
        if self.problems or factory is None or poll is None or state_path is None:
            raise self.error()
        return Settings(
            factory=factory,
            state_path=state_path,
            poll=PollSettings(interval=poll.interval, jitter=poll.jitter),
            sessions=sessions,
            targets=targets,
            rules=rules,
            source=self.path,
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
        section = self.validate(_Factory, _or_empty(raw), at)
        if section is None:
            return None
        api_key = self.secret(at, "api_key", section.api_key, section.api_key_file, required=True)
        if api_key is None:
            return None
        return FactorySettings(
            api_key=api_key,
            base_url=section.base_url.rstrip("/"),
            timeout=section.timeout,
            session_url=section.session_url,
            concurrency=section.concurrency,
            unavailable_after=section.unavailable_after,
        )

    def state_path(self, raw: Any) -> Path | None:
        section = self.validate(_State, _or_empty(raw), ("state",))
        if section is None:
            return None
        if section.path is not None:
            chosen = Path(section.path)
        elif self.env.get("STATE_DIRECTORY"):
            # systemd joins several StateDirectory= entries with ':'; ours is the first.
            chosen = Path(self.env["STATE_DIRECTORY"].split(":")[0]) / STATE_FILE_IN_STATE_DIRECTORY
        else:
            chosen = Path(DEFAULT_STATE_FILE)
        # Absolute now, so a later change of working directory cannot move the database.
        return Path.cwd() / chosen

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
            session = self.validate(_Session, item, (*at, index))
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
            if not _TARGET_NAME.fullmatch(name):
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
        model = _TARGET_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            kinds = ", ".join(_TARGET_MODELS)
            if kind is None:
                self.report((*at, "type"), f"is required: one of {kinds}")
            elif isinstance(kind, str):
                hint = _did_you_mean(kind, _TARGET_MODELS)
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
        if isinstance(section, _Slack):
            return self.slack(name, section, at, limits)
        if isinstance(section, _SlackWebhook):
            return self.slack_webhook(name, section, at, limits)
        assert isinstance(section, _Webhook)
        return self.webhook(name, section, at, limits)

    def slack(
        self, name: str, section: _Slack, at: KeyPath, limits: DeliveryLimits
    ) -> SlackTarget | None:
        token = self.secret(at, "token", section.token, section.token_file, required=True)
        if token is None:
            return None
        return SlackTarget(
            name=name,
            token=token,
            channel=section.channel,
            api_url=section.api_url,
            limits=limits,
            min_interval=section.min_interval,
        )

    def slack_webhook(
        self, name: str, section: _SlackWebhook, at: KeyPath, limits: DeliveryLimits
    ) -> SlackWebhookTarget | None:
        url = self.secret(at, "url", section.url, section.url_file, required=True)
        if url is None:
            return None
        if not _is_http_url(url.reveal()):
            key = "url" if section.url is not None else "url_file"
            self.report((*at, key), "expected an http:// or https:// URL (the value is not shown)")
            return None
        return SlackWebhookTarget(
            name=name, url=url, limits=limits, min_interval=section.min_interval
        )

    def webhook(
        self, name: str, section: _Webhook, at: KeyPath, limits: DeliveryLimits
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
        secret = self.secret(at, "secret", section.secret, section.secret_file, required=False)
        if secret is not None and not _is_whsec(secret.reveal()):
            key = "secret" if section.secret is not None else "secret_file"
            self.report(
                (*at, key),
                "malformed webhook secret: expected 'whsec_' followed by base64 "
                "(the value is not shown)",
            )
            ok = False
        for header, value in section.headers.items():
            where = (*at, "headers", header)
            if not _HEADER_NAME.fullmatch(header):
                self.report(where, "not a valid HTTP header name")
                ok = False
            elif header.lower() in _RESERVED_HEADERS:
                self.report(where, "this header is set by the watcher itself")
                ok = False
            if any(c in value for c in "\r\n\0"):
                self.report(where, "header values cannot contain line breaks or NUL")
                ok = False
        ca_file = None
        if section.ca_file is not None:
            ca_file = self.relative_to_config(Path(section.ca_file))
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
        )

    def rules(self, raw: Any, raw_targets: Any) -> tuple[Rule, ...]:
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
            rule = self.validate(_Rule, item, here)
            if rule is None:
                continue
            events = self.rule_events(rule, item, here)
            notify = self.rule_targets(rule, item, here, target_names)
            if events is None or notify is None:
                continue
            out.append(
                Rule(
                    name=rule.name,
                    on=events,
                    notify=notify,
                    from_status=rule.when.from_ or (),
                    to_status=rule.when.to or (),
                    session_globs=rule.when.session or (),
                    labels=dict(rule.when.labels),
                )
            )
        return tuple(out)

    def rule_events(self, rule: _Rule, raw: Any, at: KeyPath) -> tuple[str, ...] | None:
        known = [str(e) for e in EventType]
        events: list[str] = []
        ok = True
        for where, value in _items(raw, (*at, "on"), rule.on):
            if value not in known:
                # Event types share long prefixes: only a near miss is a typo.
                self.report(where, _unknown("event type", value, known, cutoff=0.85))
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
        self, rule: _Rule, raw: Any, at: KeyPath, target_names: list[str]
    ) -> tuple[str, ...] | None:
        notify: list[str] = []
        ok = True
        for where, value in _items(raw, (*at, "notify"), rule.notify):
            if value not in target_names:
                self.report(where, _unknown("target", value, target_names))
                ok = False
            elif value in notify:
                self.report(where, f"target '{value}' is listed twice")
                ok = False
            else:
                notify.append(value)
        return tuple(notify) if ok else None

    # -- secrets and files -------------------------------------------------

    def secret(
        self, at: KeyPath, key: str, inline: str | None, file: str | None, *, required: bool
    ) -> Secret | None:
        """The secret given as `key` (inline or `${ENV}`) or `<key>_file`; None if absent/bad."""
        file_key = f"{key}_file"
        if inline is not None and file is not None:
            self.report((*at, file_key), f"give either {key} or {file_key}, not both")
            return None
        if file is not None:
            value = self.read_secret_file((*at, file_key), file)
            return None if value is None else Secret(value)
        if inline is None:
            if required:
                self.report((*at, key), f"is required (or {file_key})")
            return None
        if not inline:
            self.report((*at, key), "must not be empty")
            return None
        if (*at, key) not in self.interpolated:
            self.inline_secrets.append((*at, key))
        return Secret(inline)

    def read_secret_file(self, at: KeyPath, name: str) -> str | None:
        """The file's text minus one trailing newline; problems name the path, never content."""
        given = Path(name)
        candidates = [given] if given.is_absolute() else []
        if not candidates:
            if self.credentials_dir is not None:
                candidates.append(self.credentials_dir / given)
            candidates.append(self.relative_to_config(given))
        for candidate in candidates:
            try:
                with candidate.open("rb") as handle:
                    raw = handle.read(MAX_SECRET_FILE_BYTES + 1)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                self.report(at, f"cannot read secret file {candidate}: {reason}")
                return None
            return self.secret_text(at, candidate, raw)
        self.report(at, "secret file not found: " + " or ".join(str(c) for c in candidates))
        return None

    def secret_text(self, at: KeyPath, source: Path, raw: bytes) -> str | None:
        if len(raw) > MAX_SECRET_FILE_BYTES:
            self.report(at, f"secret file {source} is larger than 64 KiB")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.report(at, f"secret file {source} is not UTF-8 text")
            return None
        text = text.removesuffix("\n")
        if not text:
            self.report(at, f"secret file {source} is empty")
            return None
        return text

    def relative_to_config(self, path: Path) -> Path:
        return path if path.is_absolute() else self.path.parent / path

    def check_inline_secrets(self) -> None:
        """Refuse secrets written into a file that group or others can read."""
        if not self.mode & 0o077:
            return
        for at in self.inline_secrets:
            key = at[-1]
            self.report(
                at,
                "secret written inline in a file that group or others can read; "
                f"run 'chmod 600 {self.path}', or use ${{VAR}} or {key}_file instead",
            )


def _items(raw: Any, at: KeyPath, values: tuple[str, ...]) -> list[tuple[KeyPath, str]]:
    """Pair each value of a one-or-many field with its key path (`on` or `on[1]`)."""
    given = raw.get(at[-1]) if isinstance(raw, dict) else None
    if isinstance(given, list):
        return [((*at, i), value) for i, value in enumerate(values)]
    return [(at, value) for value in values]


def _or_empty(section: Any) -> Any:
    """An empty section (`poll:` with every key commented out) means all defaults."""
    return {} if section is None else section


def _is_whsec(value: str) -> bool:
    if not value.startswith(_WHSEC_PREFIX):
        return False
    try:
        return bool(base64.b64decode(value.removeprefix(_WHSEC_PREFIX), validate=True))
    except (binascii.Error, ValueError):
        return False
