"""Messages from Jinja2 templates: Slack text and blocks, webhook bodies (docs/templates.md).

Templates run in Jinja2's sandbox with `StrictUndefined`, so a misspelt name
is an error rather than an empty string, and the variables are plain values
(dicts, lists, strings, numbers) built from the event, never our objects.

Escaping is done where values enter the output, not by the template author:

- Slack text and block leaves: the value of every `{{ … }}` is escaped like
  `render.escape_slack` (`&`, `<`, `>`), so a session title `<!channel>` or
  `<@U123>` stays text. Only a value the template marks itself with `|safe`
  (or the `link` filter, which escapes its parts) passes unescaped.
- Webhook bodies: the value of every `{{ … }}` is written as JSON (a string
  gets its quotes), the output must parse as a JSON object, and the watcher
  sets the reserved keys `version`, `type`, `id`, `sequence` and
  `template: true` itself.

Everything here is pure; `check_template` is what the config loader runs to
refuse a template that does not compile or fails on a sample event.
"""

from __future__ import annotations

import dataclasses
import json
import re
import traceback
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from jinja2 import TemplateSyntaxError
from markupsafe import Markup

from watcher.core.card import EarlierCard, render_card, with_earlier
from watcher.core.message import Message, SlackMessage, WebhookMessage
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.render import (
    SECTION_TEXT_LIMIT,
    WEBHOOK_VERSION,
    body_type,
    format_duration,
    headline,
    render_for,
    truncate,
)
from watcher.core.report import REPORT_RULE_PREFIX
from watcher.core.samples import CONDITIONS, sample_events, with_answer
from watcher.core.sandbox import (
    RenderLimits,
    Work,
    compiled,
    compiled_expression,
    run_expression,
    run_template,
    slack_finalize,
)
from watcher.core.settings import (
    MessageTemplate,
    ReportSpec,
    Rule,
    Settings,
    SlackTemplate,
    Target,
    TargetKind,
    WebhookTemplate,
)
from watcher.core.text import describe_error

UNTIMED = RenderLimits()  # the work bounds, and no time limit: the shell gives that

TEMPLATE_FILE = "<template>"  # the file name Jinja2 gives frames of a template from a string
TEXT_LIMIT = 40_000  # Slack's limit for a message's text
MAX_BLOCKS = 50  # Slack's limit for blocks in one message
RESERVED_KEYS = ("version", "type", "id", "sequence", "template")
USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "thinking_tokens",
    "total_tokens",
    "factory_credits",
)


class TemplateError(Exception):
    """A template that cannot compile or render; `line` is the template's own line."""

    def __init__(self, part: str, message: str, line: int | None = None) -> None:
        self.part = part
        self.message = message
        self.line = line
        where = f" (template line {line})" if line is not None else ""
        super().__init__(f"{part}: {message}{where}")


# --- running templates ----------------------------------------------------------------


_SINGLE = re.compile(r"\s*\{\{(?P<expr>.*?)\}\}\s*", re.DOTALL)


def _single_expression(source: str) -> str | None:
    """The expression of a leaf that is exactly one `{{ … }}` (it keeps its value's type)."""
    match = _SINGLE.fullmatch(source)
    if match is None or "{{" in match["expr"] or "}}" in match["expr"] or "{%" in source:
        return None
    return match["expr"]


def _template_line(error: BaseException) -> int | None:
    """The template line of the innermost template frame in `error`'s traceback."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == TEMPLATE_FILE:
            line = frame.lineno
    return line


def _compile_error(part: str, error: TemplateSyntaxError) -> TemplateError:
    return TemplateError(part, f"does not compile: {error.message}", error.lineno)


def _render_source(
    kind: str, part: str, source: str, variables: Mapping[str, Any], work: Work
) -> str:
    try:
        template = compiled(kind, source)
    except TemplateSyntaxError as error:
        raise _compile_error(part, error) from None
    try:
        return run_template(template, variables, work)
    except Exception as error:  # whatever the template does wrong, say where
        raise TemplateError(part, describe_error(error), _template_line(error)) from None


def _render_leaf(part: str, source: str, variables: Mapping[str, Any], work: Work) -> Any:
    single = _single_expression(source)
    if single is None:
        return truncate(_render_source("slack", part, source, variables, work), SECTION_TEXT_LIMIT)
    try:
        expression = compiled_expression(single)
    except TemplateSyntaxError as error:
        raise _compile_error(part, error) from None
    try:
        value = run_expression(expression, variables, work)
        if value is None or isinstance(value, bool | int | float):
            return value
        return truncate(slack_finalize(value), SECTION_TEXT_LIMIT)
    except Exception as error:
        raise TemplateError(part, describe_error(error), 1) from None


def _render_structure(value: Any, part: str, variables: Mapping[str, Any], work: Work) -> Any:
    if isinstance(value, str):
        return _render_leaf(part, value, variables, work)
    if isinstance(value, list):
        return [_render_structure(v, f"{part}[{i}]", variables, work) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _render_structure(v, f"{part}.{k}", variables, work) for k, v in value.items()}
    return value


# --- variables ----------------------------------------------------------------------


def plain(value: Any) -> Any:
    """`value` as template data: dicts, lists, strings, numbers, booleans and None only."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


def _session(session: SessionRef | None) -> dict[str, Any] | None:
    if session is None:
        return None
    out: dict[str, Any] = plain(session)
    out["display_name"] = session.display_name
    return out


def _usage(session: SessionRef | None) -> dict[str, Any]:
    """The session's token counters; every key present, None when unknown."""
    known = getattr(session, "usage", None) if session is not None else None
    out: dict[str, Any] = {key: None for key in USAGE_KEYS}
    if known is not None:
        for key in USAGE_KEYS:
            value = getattr(known, key, None)
            out[key] = value if isinstance(value, int | float) else None
    return out


def _durations(data: Mapping[str, Any]) -> dict[str, str]:
    """`X_s` seconds in the data as human text under `X` (`duration_s` -> `duration`)."""
    return {
        key.removesuffix("_s"): format_duration(float(value))
        for key, value in data.items()
        if key.endswith("_s") and isinstance(value, int | float) and not isinstance(value, bool)
    }


def template_variables(event: Event, rule_name: str, rule: Rule | None = None) -> dict[str, Any]:
    """What a template sees (documented in docs/templates.md)."""
    data = plain(event.data)
    answer = data.get("last_answer")
    return {
        "event": {
            "id": event.id,
            "type": str(event.type),
            "occurred_at": plain(event.occurred_at),
            "sequence": event.sequence,
            "rule": rule_name,
        },
        "session": _session(event.session),
        "data": data,
        "durations": _durations(data),
        "usage": _usage(event.session),
        "rule": {
            "name": rule_name,
            "on": list(rule.on) if rule is not None else [],
            "notify": list(rule.notify) if rule is not None else [],
        },
        "sequence": event.sequence,
        "last_answer": answer if isinstance(answer, str) and answer else None,
        # The built-in one-liner: `headline` escapes what it takes from the event.
        "headline": Markup(headline(event)),  # noqa: S704
    }


# --- rendering ----------------------------------------------------------------------


def render_slack_template(
    template: SlackTemplate,
    event: Event,
    rule_name: str,
    rule: Rule | None = None,
    limits: RenderLimits = UNTIMED,
) -> SlackMessage:
    """A Slack message from `template`; the built-in headline is the text when none is given.

    All its parts together may do the work `limits` allow.
    """
    variables = template_variables(event, rule_name, rule)
    work = Work(limits)
    if template.text is not None:
        text = _render_source("slack", "text", template.text, variables, work)
        text = truncate(text, TEXT_LIMIT)
    else:
        text = headline(event)
    blocks: tuple[Mapping[str, Any], ...] = ()
    if template.blocks is not None:
        rendered = _render_structure(json.loads(template.blocks), "blocks", variables, work)
        blocks = tuple(rendered)
    if not text.strip() and not blocks:
        raise TemplateError("text", "renders to nothing: Slack refuses an empty message")
    return SlackMessage(text=text, blocks=blocks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def render_webhook_template(
    template: WebhookTemplate,
    event: Event,
    rule_name: str,
    rule: Rule | None = None,
    limits: RenderLimits = UNTIMED,
) -> WebhookMessage:
    """A webhook message whose body is `template`'s JSON object plus the reserved keys."""
    variables = template_variables(event, rule_name, rule)
    text = _render_source("json", "body", template.body, variables, Work(limits))
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        where = (
            f" at line {error.lineno} column {error.colno} of the output"
            if isinstance(error, json.JSONDecodeError)
            else ""
        )
        raise TemplateError("body", f"does not render to JSON: {detail}{where}") from None
    if not isinstance(body, dict):
        kind = "an array" if isinstance(body, list) else f"a {type(body).__name__}"
        raise TemplateError("body", f"must render to a JSON object, not {kind}")
    out: dict[str, Any] = {
        "version": WEBHOOK_VERSION,
        "type": body_type(event),
        "id": event.id,
        "sequence": event.sequence,
        # Marks the body as the template's shape (docs/webhook-event.schema.json).
        "template": True,
    }
    out.update({k: v for k, v in body.items() if k not in RESERVED_KEYS})
    encoded = json.dumps(out, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return WebhookMessage(id=event.id, body=encoded.encode("utf-8"), occurred_at=event.occurred_at)


def render_template(
    template: MessageTemplate,
    event: Event,
    rule_name: str,
    rule: Rule | None = None,
    limits: RenderLimits = UNTIMED,
) -> Message:
    """The message `template` makes of `event` within `limits`; raises TemplateError."""
    if isinstance(template, WebhookTemplate):
        return render_webhook_template(template, event, rule_name, rule, limits)
    return render_slack_template(template, event, rule_name, rule, limits)


def report_named(settings: Settings, rule_name: str) -> ReportSpec | None:
    """The report whose outbox rows carry `rule_name`: `report:NAME` (`report_rule`), or
    the bare name.
    """
    name = rule_name.removeprefix(REPORT_RULE_PREFIX)
    return next((r for r in settings.reports if r.name == name), None)


def rule_named(settings: Settings, name: str) -> Rule | None:
    """The rule called `name`, if the settings have one."""
    return next((r for r in settings.rules if r.name == name), None)


def suits(template: MessageTemplate, kind: TargetKind) -> bool:
    """Whether `template` is for targets of `kind` (a body for webhooks, text/blocks for Slack)."""
    return isinstance(template, WebhookTemplate) == (kind is TargetKind.WEBHOOK)


def template_for(
    settings: Settings, target: Target, rule_name: str, kind: EventType
) -> MessageTemplate | None:
    """The template an event of `kind` from `rule_name` uses at `target`: the rule's,
    else the target's, else None (built-in). Digests always use the built-in rendering;
    a report uses its own template, else the built-in one (a target's template is
    written for session events).
    """
    if kind is EventType.DIGEST:
        return None
    if kind is EventType.REPORT:
        spec = report_named(settings, rule_name)
        own = spec.template if spec is not None else None
        return own if own is not None and suits(own, target.kind) else None
    rule = rule_named(settings, rule_name)
    template = rule.template if rule is not None and rule.template is not None else None
    template = template or target.template
    return template if template is not None and suits(template, target.kind) else None


def render_message(
    settings: Settings,
    target: Target,
    event: Event,
    rule_name: str,
    limits: RenderLimits = UNTIMED,
) -> tuple[Message, str | None]:
    """The message for `target`, and why its template failed when it fell back to built-in.

    A template failing at send time (data no sample had, or more work than
    `limits` allow) must not cost the notification: the built-in rendering
    goes out instead and the reason is returned for the caller to log.
    """
    template = template_for(settings, target, rule_name, event.type)
    if template is None:
        return render_for(target.kind, event, rule_name), None
    try:
        rule = rule_named(settings, rule_name)
        return render_template(template, event, rule_name, rule, limits), None
    except TemplateError as error:
        return render_for(target.kind, event, rule_name), str(error)


def render_card_for(
    settings: Settings,
    target: Target,
    event: Event,
    rule_name: str,
    earlier: EarlierCard | None = None,
    limits: RenderLimits = UNTIMED,
) -> tuple[SlackMessage, str | None]:
    """The live card `target` keeps for `event`'s session: its Slack template's output
    (with the note of a card it replaces), else the built-in card; and why the
    template failed when it fell back, as `render_message` does.
    """
    template = template_for(settings, target, rule_name, event.type)
    if not isinstance(template, SlackTemplate):
        return render_card(event, rule_name, earlier), None
    try:
        rule = rule_named(settings, rule_name)
        message = render_slack_template(template, event, rule_name, rule, limits)
    except TemplateError as error:
        return render_card(event, rule_name, earlier), str(error)
    return with_earlier(message, earlier), None


# --- load-time checks ---------------------------------------------------------------


def template_parts(template: MessageTemplate) -> list[tuple[str, str]]:
    """(part, source) of every template string: `text`, `body`, `blocks[0].text.text`, …"""
    if isinstance(template, WebhookTemplate):
        return [("body", template.body)]
    parts: list[tuple[str, str]] = []
    if template.text is not None:
        parts.append(("text", template.text))

    def walk(value: Any, part: str) -> None:
        if isinstance(value, str):
            parts.append((part, value))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{part}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{part}.{key}")

    if template.blocks is not None:
        walk(json.loads(template.blocks), "blocks")
    return parts


def compile_problems(template: MessageTemplate) -> list[TemplateError]:
    """Every part of `template` that does not compile."""
    kind = "json" if isinstance(template, WebhookTemplate) else "slack"
    problems: list[TemplateError] = []
    for part, source in template_parts(template):
        single = None if kind == "json" else _single_expression(source)
        try:
            if single is not None:
                compiled_expression(single)
            else:
                compiled(kind, source)
        except TemplateSyntaxError as error:
            problems.append(_compile_error(part, error))
    return problems


def check_template(
    template: MessageTemplate,
    kinds: Iterable[EventType],
    rule: Rule | None = None,
    limits: RenderLimits = UNTIMED,
) -> list[TemplateError]:
    """Why `template` cannot be used for events of `kinds`: compile errors, else the
    sample events it fails to render (grouped by part, line and message). Each render
    may do the work `limits` allow; their time limit covers the whole check.

    For a rule, condition events are tried resolved only when the rule sends
    resolved notifications; a target's default is tried on every variant.
    Events are tried with and without `last_answer` (a fetch can fail).
    """
    problems = compile_problems(template)
    if problems:
        return problems
    kinds = list(kinds)
    failed: dict[tuple[str, int | None, str], list[str]] = {}
    name = rule.name if rule is not None else "sample-rule"
    for kind in kinds:
        for event in sample_events(kind):
            resolved = kind in CONDITIONS and bool(event.data.get("resolved"))
            if resolved and rule is not None and not rule.resolved:
                continue
            for candidate in (event, with_answer(event)):
                try:
                    render_template(template, candidate, name, rule, limits)
                except TemplateError as error:
                    types = failed.setdefault((error.part, error.line, error.message), [])
                    if str(kind) not in types:
                        types.append(str(kind))
    tried = [str(kind) for kind in kinds]
    return [
        TemplateError(part, f"fails on {_which(types, tried)}: {message}", line)
        for (part, line, message), types in failed.items()
    ]


def _which(types: list[str], tried: list[str]) -> str:
    if len(tried) > 2 and sorted(types) == sorted(tried):
        return "every sample event"
    return f"a sample {', '.join(types)} event"
