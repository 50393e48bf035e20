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
)
from pydantic_core import PydanticCustomError

from watcher.config.values import (
    http_url,
    one_or_many,
    parse_clock_time,
    parse_day,
    parse_duration,
    parse_jitter,
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


_Text = Annotated[str, StringConstraints(min_length=1)]
_Duration = Annotated[timedelta, BeforeValidator(pydantic_check("duration", parse_duration))]


def parse_settle(value: Any) -> timedelta:
    """A duration, or `0` / `0s` for "no settle window" (to switch off the interrupt default)."""
    if isinstance(value, str) and value.strip() in ("0", "0s", "0ms"):
        return timedelta(0)
    return parse_duration(value)


_Jitter = Annotated[float, BeforeValidator(pydantic_check("jitter", parse_jitter))]
_Url = Annotated[str, AfterValidator(pydantic_check("url", http_url))]
_SessionUrl = Annotated[str, AfterValidator(pydantic_check("url", session_url))]
_SessionId = Annotated[_Text, AfterValidator(pydantic_check("session_id", session_id))]
_Names = Annotated[tuple[_Text, ...], BeforeValidator(one_or_many), Field(min_length=1)]
_ClockTime = Annotated[time, BeforeValidator(pydantic_check("time", parse_clock_time))]
_TimeZone = Annotated[str, BeforeValidator(pydantic_check("timezone", parse_timezone))]
_Day = Annotated[int, BeforeValidator(pydantic_check("day", parse_day))]
_Zero = Annotated[timedelta, BeforeValidator(pydantic_check("duration", parse_settle))]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class FactorySection(Section):
    base_url: _Url = DEFAULT_BASE_URL
    api_key: str | None = None
    api_key_file: _Text | None = None
    timeout: _Duration = timedelta(seconds=10)
    session_url: _SessionUrl = DEFAULT_SESSION_URL
    concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    unavailable_after: _Duration = timedelta(minutes=2)


class PollSection(Section):
    interval: _Duration = timedelta(seconds=30)
    jitter: _Jitter = 0.1


class StateSection(Section):
    path: _Text | None = None
    record: _Text | None = None


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


SECTIONS = ("factory", "poll", "state", "sessions", "targets", "quiet_hours", "rules")
