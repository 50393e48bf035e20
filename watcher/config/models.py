"""The shape of the YAML file: one pydantic model per section, extra keys forbidden.

These models validate the file section by section (the builder maps every
error back to its line) and are the single source of the config's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from watcher.config.values import (
    format_duration,
    http_url,
    one_or_many,
    parse_clock_time,
    parse_day,
    parse_duration,
    parse_duration_or_off,
    parse_jitter,
    parse_listen,
    parse_timezone,
    session_id,
    session_url,
)
from watcher.core.settings import DEFAULT_BASE_URL, DEFAULT_SESSION_URL, TargetKind


def pydantic_check(kind: str, check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Adapt a ValueError-raising parser to pydantic with our message as the whole text."""

    def validate(value: Any) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise PydanticCustomError(kind, str(exc)) from None

    return validate


# The JSON Schema (`factory-watcher schema`) describes the YAML as an editor
# reads it, where `30s` is a string and `16` an integer; where a parser
# accepts more than the Python type says, the schema says so explicitly.
DURATION_SCHEMA: dict[str, Any] = {
    "description": "a duration: 500ms, 30s, 5m, 2h, 1d, or a whole number of seconds",
    "anyOf": [
        {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)?$"},
        {"type": "integer", "exclusiveMinimum": 0},
    ],
}
JITTER_SCHEMA: dict[str, Any] = {
    "description": "a percentage from 0% to 50%, or a fraction from 0 to 0.5",
    "anyOf": [
        {"type": "string", "pattern": "^(50(\\.0+)?|[1-4]?[0-9](\\.[0-9]+)?)%$"},
        {"type": "number", "minimum": 0, "maximum": 0.5},
    ],
}
NAMES_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
    ]
}
LISTEN_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": "IP:PORT to serve /metrics, /healthz and /readyz on, e.g. 127.0.0.1:9464",
    "pattern": "^(\\[[0-9A-Fa-f:.]+\\]|[0-9.]+|localhost):[0-9]{1,5}$",
}

_Text = Annotated[str, StringConstraints(min_length=1)]
_Duration = Annotated[
    timedelta,
    BeforeValidator(pydantic_check("duration", parse_duration)),
    WithJsonSchema(DURATION_SCHEMA),
]
_Jitter = Annotated[
    float, BeforeValidator(pydantic_check("jitter", parse_jitter)), WithJsonSchema(JITTER_SCHEMA)
]
_DurationOrOff = Annotated[
    timedelta | Literal["off"],
    BeforeValidator(pydantic_check("duration", parse_duration_or_off)),
    WithJsonSchema(
        {
            "description": "a duration (500ms, 30s, 5m, 2h, 1d), or off",
            "anyOf": [
                {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d)?|off)$"},
                {"type": "integer", "exclusiveMinimum": 0},
            ],
        }
    ),
]
_Url = Annotated[str, AfterValidator(pydantic_check("url", http_url))]
_SessionUrl = Annotated[str, AfterValidator(pydantic_check("url", session_url))]
# A YAML id such as 123456 is read as text by our loader, as an integer by an editor.
_SessionId = Annotated[
    _Text,
    AfterValidator(pydantic_check("session_id", session_id)),
    WithJsonSchema({"type": ["string", "integer"], "minLength": 1}),
]
_Names = Annotated[
    tuple[_Text, ...],
    BeforeValidator(one_or_many),
    Field(min_length=1),
    WithJsonSchema(NAMES_SCHEMA),
]
_Listen = Annotated[
    tuple[str, int],
    BeforeValidator(pydantic_check("listen", parse_listen)),
    WithJsonSchema(LISTEN_SCHEMA),
]


def parse_settle(value: Any) -> timedelta:
    """A duration, or `0` / `0s` for "no settle window" (to switch off the interrupt default)."""
    if isinstance(value, str) and value.strip() in ("0", "0s", "0ms"):
        return timedelta(0)
    return parse_duration(value)


_ClockTime = Annotated[
    time,
    BeforeValidator(pydantic_check("time", parse_clock_time)),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]{1,2}:[0-9]{2}$"}),
]
_TimeZone = Annotated[
    str,
    BeforeValidator(pydantic_check("timezone", parse_timezone)),
    WithJsonSchema({"type": "string", "description": "an IANA time zone, e.g. Europe/Berlin"}),
]
_Day = Annotated[
    int,
    BeforeValidator(pydantic_check("day", parse_day)),
    WithJsonSchema({"type": "string", "description": "a weekday: mon, tue, ... sun"}),
]
_Zero = Annotated[
    timedelta,
    BeforeValidator(pydantic_check("duration", parse_settle)),
    WithJsonSchema(
        {
            "description": "a duration (500ms, 30s, 5m, 2h, 1d), or 0s for none",
            "anyOf": [
                {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)?$"},
                {"type": "integer", "minimum": 0},
            ],
        }
    ),
]


def _one_of(key: str) -> dict[str, Any]:
    """Schema: exactly one of `key` and `<key>_file` (the builder says the same in words)."""
    return {"oneOf": [{"required": [key]}, {"required": [f"{key}_file"]}]}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class FactorySection(Section):
    model_config = ConfigDict(json_schema_extra=_one_of("api_key"))

    base_url: _Url = DEFAULT_BASE_URL
    api_key: str | None = None
    api_key_file: _Text | None = None
    timeout: _Duration = timedelta(seconds=10)
    session_url: _SessionUrl = DEFAULT_SESSION_URL
    concurrency: Annotated[int, Field(ge=1, le=256)] = 64
    unavailable_after: _Duration = timedelta(minutes=2)
    max_requests_per_second: Annotated[float, Field(gt=0, le=10_000)] = 10.0


class PollSection(Section):
    interval: _Duration = timedelta(seconds=30)
    running: _Duration | None = None
    pending: _Duration | None = None
    idle: _Duration | None = None
    max_idle: _Duration | None = None
    archived: _DurationOrOff | None = None
    jitter: _Jitter = 0.1


class IncludeSection(Section):
    title: _Names | None = None
    tags: _Names | None = None
    computer: _Names | None = None


class DiscoverSection(Section):
    interval: _Duration = timedelta(seconds=60)
    include: IncludeSection = IncludeSection()
    created_within: _Duration | None = None
    labels: dict[_Text, str] = Field(default_factory=dict)
    max_sessions: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000


class StateSection(Section):
    # SQLite at `path`, or PostgreSQL at `url`: never both.
    model_config = ConfigDict(json_schema_extra={"not": {"required": ["path", "url"]}})

    path: _Text | None = None
    url: _Text | None = Field(
        default=None,
        description="PostgreSQL instead of SQLite (high availability): a libpq URL, "
        "postgresql://user@host:5432/db; ${ENV} works in it, ?service=NAME reads a "
        "libpq service file",
    )
    password_file: _Text | None = Field(
        default=None, description="a file holding the PostgreSQL password (not in the URL)"
    )
    lease_ttl: _Duration = Field(
        default=timedelta(seconds=10),
        description="with url: a leader that stops renewing its lease loses it after this",
    )
    renew_every: _Duration = Field(
        default=timedelta(seconds=2),
        description="with url: how often the leader renews its lease; under lease_ttl/2",
    )
    record: _Text | None = None
    keep_delivered: _Duration = Field(
        default=timedelta(days=30),
        description="how long delivered notifications (and the events only they refer to) are kept",
    )
    keep_dead: _Duration = Field(
        default=timedelta(days=90),
        description="how long dead letters are kept (listed and retryable until then)",
    )
    forget_sessions_after: _Duration = Field(
        default=timedelta(days=30),
        description="a session not watched for this long is forgotten with all its rows; "
        "seen again, it starts afresh as a new baseline",
    )


class SessionSection(Section):
    id: _SessionId
    name: _Text | None = None
    interval: _Duration | None = None
    labels: dict[_Text, str] = Field(default_factory=dict)


_TemplateText = Annotated[
    str,
    StringConstraints(min_length=1),
    WithJsonSchema({"type": "string", "minLength": 1, "description": "a Jinja2 template"}),
]
_Blocks = Annotated[
    list[dict[str, Any]],
    Field(
        min_length=1,
        max_length=50,
        description="Slack blocks; every string leaf is a Jinja2 template (docs/templates.md)",
    ),
]


class SlackTemplateSection(Section):
    """Slack text and blocks as Jinja2 templates; values are escaped unless marked safe."""

    text: _TemplateText | None = None
    blocks: _Blocks | None = None


class WebhookTemplateSection(Section):
    """A webhook body: a Jinja2 template rendering a JSON object (every value JSON-encoded)."""

    body: _TemplateText


class RuleTemplateSection(Section):
    """A rule's own template: text/blocks for Slack targets, or body for webhook targets."""

    text: _TemplateText | None = None
    blocks: _Blocks | None = None
    body: _TemplateText | None = None


class TargetSection(Section):
    max_attempts: Annotated[int, Field(ge=1)] = 12
    max_age: _Duration = timedelta(hours=24)


class SlackSection(TargetSection):
    model_config = ConfigDict(json_schema_extra=_one_of("token"))

    type: Literal["slack"]
    token: str | None = None
    token_file: _Text | None = None
    channel: _Text
    api_url: _Url | None = None
    min_interval: _Duration = timedelta(seconds=1)
    template: SlackTemplateSection | None = None
    card: bool = True
    thread: bool = True


class SlackWebhookSection(TargetSection):
    model_config = ConfigDict(json_schema_extra=_one_of("url"))

    type: Literal["slack_webhook"]
    url: str | None = None
    url_file: _Text | None = None
    min_interval: _Duration = timedelta(seconds=1)
    template: SlackTemplateSection | None = None


class WebhookSection(TargetSection):
    type: Literal["webhook"]
    url: _Url
    secret: str | None = None
    secret_file: _Text | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    allow_http: bool = False
    ca_file: _Text | None = None
    template: WebhookTemplateSection | None = None


TARGET_MODELS: Mapping[str, type[TargetSection]] = {
    TargetKind.SLACK: SlackSection,
    TargetKind.SLACK_WEBHOOK: SlackWebhookSection,
    TargetKind.WEBHOOK: WebhookSection,
}


class WhenSection(Section):
    from_: _Names | None = Field(default=None, alias="from")
    to: _Names | None = None
    session: _Names | None = None
    labels: dict[_Text, str] = Field(default_factory=dict)
    title: _Names | None = None
    tags: _Names | None = None
    model: _Names | None = None


class RuleSection(Section):
    name: _Text
    on: _Names
    when: WhenSection = WhenSection()
    notify: _Names
    settle: _Zero | None = None
    for_: _Duration | None = Field(default=None, alias="for")
    cooldown: _Duration | None = None
    repeat: _Duration | None = None
    resolved: bool = False
    urgent: bool = False
    threshold: Annotated[dict[_Text, Annotated[float, Field(gt=0)]], Field(min_length=1)] | None = (
        None
    )
    quiet_hours: _Text | None = None
    template: RuleTemplateSection | None = None
    include_last_answer: bool = Field(
        default=False,
        description="fetch the agent's latest final answer when sending (data.last_answer)",
    )


def parse_window(value: Any) -> timedelta | str:
    """A report's window: a duration (`24h`, `7d`) or `since_last`."""
    if isinstance(value, str) and value.strip() == "since_last":
        return "since_last"
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError("expected a duration such as 24h or 7d, or since_last") from None


_Window = Annotated[
    timedelta | Literal["since_last"],
    BeforeValidator(pydantic_check("window", parse_window)),
    WithJsonSchema(
        {
            "description": "how far back a report looks: a duration (24h, 7d), or since_last "
            "(from the report's previous run)",
            "anyOf": [
                {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d)?|since_last)$"},
                {"type": "integer", "exclusiveMinimum": 0},
            ],
        }
    ),
]


class ReportSection(Section):
    """A scheduled report (docs/reports.md)."""

    name: _Text
    schedule: Annotated[
        _Text,
        Field(
            description='a cron expression: minute hour day month weekday, e.g. "0 9 * * mon-fri"'
        ),
    ]
    timezone: _TimeZone = "UTC"
    window: _Window = "since_last"
    session: _Names | None = None
    labels: dict[_Text, str] = Field(default_factory=dict)
    title: _Names | None = None
    tags: _Names | None = None
    notify: _Names
    template: RuleTemplateSection | None = None
    group_by: _Text | None = Field(default=None, description="a label name: counts per value")
    skip_empty: bool = Field(
        default=False,
        description="send nothing when nothing happened (default: one line saying so)",
    )
    misfire_grace: _Duration = Field(
        default=timedelta(hours=1),
        description="a run missed while the watcher was down is sent on start if this recent",
    )


class HttpSection(Section):
    """/metrics, /healthz and /readyz; off unless this section sets `listen`."""

    listen: _Listen
    allow_remote: bool = Field(
        default=False,
        description="must be true for a non-loopback listen address: "
        "the figures describe your sessions",
    )


LOG_FORMATS = ("text", "json")
LogFormatName = Literal["text", "json"]


class QuietHoursSection(Section):
    start: _ClockTime
    end: _ClockTime
    timezone: _TimeZone = "UTC"
    days: Annotated[tuple[_Day, ...], BeforeValidator(one_or_many), Field(min_length=1)] = (
        0,
        1,
        2,
        3,
        4,
        5,
        6,
    )


class TopLevelValues(Section):
    """Top-level keys that are values rather than sections."""

    log_format: LogFormatName = "text"


TargetUnion = Annotated[
    SlackSection | SlackWebhookSection | WebhookSection, Field(discriminator="type")
]


class ConfigFile(Section):
    """The whole file: the sections composed, for the JSON Schema and whole-file checks.

    The builder validates section by section (so every error maps to its
    line); this model is the same shape at once, and a test keeps them equal.
    """

    model_config = ConfigDict(
        title="factory-watcher configuration",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    factory: FactorySection
    # An empty section (every key commented out) means all defaults.
    poll: PollSection | None = None
    discover: DiscoverSection | None = None
    state: StateSection | None = None
    sessions: list[SessionSection] | None = None
    targets: (
        dict[Annotated[str, StringConstraints(pattern="^[A-Za-z0-9_.-]+$")], TargetUnion] | None
    ) = None
    quiet_hours: dict[str, QuietHoursSection] | None = None
    rules: list[RuleSection] | None = None
    reports: list[ReportSection] | None = None
    http: HttpSection | None = None
    log_format: LogFormatName = Field(
        default="text",
        description="text, or json: one object per line with ts, level, logger, event "
        "and context keys",
    )


SECTIONS = (
    "factory",
    "poll",
    "discover",
    "state",
    "sessions",
    "targets",
    "quiet_hours",
    "rules",
    "reports",
    "http",
    "log_format",
)


class _ConfigSchema(GenerateJsonSchema):
    """Defaults spelt as the file spells them (`30s`, not ISO 8601's `PT30S`)."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, generated from `ConfigFile`."""
    return ConfigFile.model_json_schema(schema_generator=_ConfigSchema)
