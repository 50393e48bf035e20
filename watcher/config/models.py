"""The shape of the YAML file: one pydantic model per section, extra keys forbidden.

These models validate the file section by section (the builder maps every
error back to its line) and are the single source of the config's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from watcher.config.values import (
    http_url,
    one_or_many,
    parse_duration,
    parse_duration_or_off,
    parse_jitter,
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


_Text = Annotated[str, StringConstraints(min_length=1)]
_Duration = Annotated[timedelta, BeforeValidator(pydantic_check("duration", parse_duration))]
_DurationOrOff = Annotated[
    timedelta | Literal["off"],
    BeforeValidator(pydantic_check("duration", parse_duration_or_off)),
]
_Jitter = Annotated[float, BeforeValidator(pydantic_check("jitter", parse_jitter))]
_Url = Annotated[str, AfterValidator(pydantic_check("url", http_url))]
_SessionUrl = Annotated[str, AfterValidator(pydantic_check("url", session_url))]
_SessionId = Annotated[_Text, AfterValidator(pydantic_check("session_id", session_id))]
_Names = Annotated[tuple[_Text, ...], BeforeValidator(one_or_many), Field(min_length=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class FactorySection(Section):
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
    path: _Text | None = None


class SessionSection(Section):
    id: _SessionId
    name: _Text | None = None
    interval: _Duration | None = None
    labels: dict[_Text, str] = Field(default_factory=dict)


class TargetSection(Section):
    max_attempts: Annotated[int, Field(ge=1)] = 12
    max_age: _Duration = timedelta(hours=24)


class SlackSection(TargetSection):
    type: Literal["slack"]
    token: str | None = None
    token_file: _Text | None = None
    channel: _Text
    api_url: _Url | None = None
    min_interval: _Duration = timedelta(seconds=1)


class SlackWebhookSection(TargetSection):
    type: Literal["slack_webhook"]
    url: str | None = None
    url_file: _Text | None = None
    min_interval: _Duration = timedelta(seconds=1)


class WebhookSection(TargetSection):
    type: Literal["webhook"]
    url: _Url
    secret: str | None = None
    secret_file: _Text | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    allow_http: bool = False
    ca_file: _Text | None = None


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


class RuleSection(Section):
    name: _Text
    on: _Names
    when: WhenSection = WhenSection()
    notify: _Names


SECTIONS = ("factory", "poll", "discover", "state", "sessions", "targets", "rules")
