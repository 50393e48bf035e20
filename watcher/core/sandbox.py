"""The template sandbox: Jinja2's `SandboxedEnvironment`, escaping where values enter the
output, and bounds on the work one render may do.

Jinja2's sandbox keeps a template away from our objects; it does not bound
the work: a loop inside a loop over `range(10000)` runs a hundred million
times. Here every render has a budget of steps (`RenderLimits.steps`): each
loop iteration, each call (a macro, a method, `loop(...)` of a recursive
loop) and each item of a `range` spends one, and each part's output is capped
(`RenderLimits.output`). One call can also build a huge value without a step
(`"x"|center(10**9)`, a `replace` that multiplies a string, `"%1000000000s"`):
the string methods and filters whose result grows with an argument are
checked before they run (`MAX_WIDTH`, `MAX_OUTPUT`). The compiled template
counts its own loops: every `{% for %}` iterates through a counting filter,
put there when the template is compiled. A render that overspends fails with
`RenderLimitError`, which the caller reports like any template failure, with
the template's line.

The time a render may take is the caller's to give (`out_of_time`, asked at
every step): the core reads no clock.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from watcher.core.render import escape_slack, format_duration, format_number, truncate

MAX_REPEAT = 10_000  # longest string or list a template may make with `*`
MAX_EXPONENT = 64
MAX_RANGE = 10_000  # items in one `range(...)`
MAX_STEPS = 100_000  # loop iterations, calls and range items in one message
MAX_OUTPUT = 1_000_000  # characters one part of a template may write
MAX_WIDTH = 10_000  # a width or count one string method or filter may ask for


class RenderLimitError(SecurityError):
    """A render did more work, or took longer, than it may; the message says which bound."""


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """What one message's render may do. `out_of_time` is asked at every step (the shell's
    clock against its time limit); None: no time limit.
    """

    steps: int = MAX_STEPS
    output: int = MAX_OUTPUT
    out_of_time: Callable[[], bool] | None = None


def within(seconds: float, clock: Callable[[], float]) -> RenderLimits:
    """The bounds of renders that must end within `seconds` of now, on `clock`."""
    deadline = clock() + seconds
    return RenderLimits(out_of_time=lambda: clock() > deadline)


class Work:
    """The steps one message's render has spent, against its limits (one per message)."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.spent = 0

    def spend(self, steps: int = 1) -> None:
        """Spend `steps`; raises RenderLimitError past the budget or the time limit."""
        self.spent += steps
        limits = self.limits
        if self.spent > limits.steps:
            raise RenderLimitError(
                f"more than {limits.steps:,} steps (loop iterations, calls, range items):"
                " a loop inside a loop?"
            )
        if limits.out_of_time is not None and limits.out_of_time():
            raise RenderLimitError("took longer than the time limit for a template")


class _WorkingContext(Context):
    """A template context that carries the render's `Work`."""

    work: Work

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.work = Work(RenderLimits())


def _fail_if_undefined(value: Any) -> None:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()


def slack_finalize(value: Any) -> str:
    """The text of one `{{ … }}` in Slack output: escaped unless marked safe."""
    _fail_if_undefined(value)
    if value is None:
        return ""
    if isinstance(value, Markup):
        return str(value)
    return escape_slack(value if isinstance(value, str) else str(value))


def _not_json(value: Any) -> Any:
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


def json_finalize(value: Any) -> str:
    """The text of one `{{ … }}` in a webhook body: the value as JSON."""
    _fail_if_undefined(value)
    return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_not_json)


def _number(value: Any) -> str:
    """`1000000` -> `1,000,000`; `104.5` -> `104.5`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)  # escaped where it enters the output, as every value is
    return format_number(value)


def _link(url: Any, label: Any = None) -> Markup:
    """`<url|label>` for Slack with both parts escaped: a link the template means to make."""
    shown = escape_slack(str(url if label is None else label))
    return Markup(f"<{escape_slack(str(url))}|{shown}>")  # noqa: S704 - both parts escaped


def _shorten(text: Any, limit: int = 300) -> str:
    """`text` on one line, capped at `limit` characters."""
    return truncate(" ".join(str(text).split()), max(int(limit), 2))


@pass_context
def _counted(context: _WorkingContext, iterable: Iterable[Any]) -> Iterator[Any]:
    """What every `{% for %}` iterates through: one step per item."""
    work = context.work
    for item in iterable:
        work.spend()
        yield item


@pass_context
def _range(context: _WorkingContext, *args: int) -> range:
    """`range(...)`, at most `MAX_RANGE` items, each a step."""
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise RenderLimitError(f"range of more than {MAX_RANGE:,} items")
    context.work.spend(len(items))
    return items


# Where a format string asks for a width: `%1000s`, `{:>1000}`.
_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\d+)|\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")
# String methods whose result grows with a numeric argument.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _refuse_width(what: str, values: Iterable[Any]) -> None:
    """Refuse a width or count over MAX_WIDTH among `values`."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_WIDTH:
            raise RenderLimitError(f"{what} asks for a width or count over {MAX_WIDTH:,}")


def _refuse_format(what: str, template: Any) -> None:
    """Refuse a format string asking for a width over MAX_WIDTH."""
    if isinstance(template, str):
        widths = (int(a or b) for a, b in _FORMAT_WIDTH.findall(template))
        _refuse_width(what, widths)


def _refuse_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    """Refuse a `replace` whose result would be longer than MAX_OUTPUT characters."""
    text, old, new = str(text), str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    if len(text) + found * (len(new) - len(old)) > MAX_OUTPUT:
        raise RenderLimitError(f"replace would make more than {MAX_OUTPUT:,} characters")


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse a string method call whose result would grow past the bounds."""
    method = inspect.unwrap(obj)
    name = getattr(method, "__name__", "")
    if not isinstance(getattr(method, "__self__", None), str):
        return
    if name in _WIDTH_METHODS:
        _refuse_width(f"str.{name}", [*args, *kwargs.values()])
    elif name == "replace":
        _refuse_replace(method.__self__, *args, **kwargs)
    elif name in ("format", "format_map"):
        _refuse_format(f"str.{name}", method.__self__)


def _bounded_filters(env: SandboxedEnvironment) -> None:
    """Wrap the built-in filters whose result grows with an argument in their checks."""

    def guard(name: str, check: Callable[..., None]) -> None:
        original = env.filters[name]

        @functools.wraps(original)  # keeps Jinja2's pass_context-style marks
        def bounded(*args: Any, **kwargs: Any) -> Any:
            check(*args, **kwargs)
            return original(*args, **kwargs)

        env.filters[name] = bounded

    def widths(name: str, skip: int) -> Callable[..., None]:
        return lambda *args, **kwargs: _refuse_width(name, [*args[skip:], *kwargs.values()])

    for name in ("center", "wordwrap", "slice", "batch"):
        guard(name, widths(name, 1))
    guard("indent", _check_indent)
    # do_replace takes the evaluation context first.
    guard("replace", lambda _ctx, *args, **kwargs: _refuse_replace(*args, **kwargs))
    guard("format", lambda value, *args, **kwargs: _refuse_format("format", value))


def _check_indent(text: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
    """Refuse an `indent` whose result would be longer than MAX_OUTPUT characters."""
    size = len(width) if isinstance(width, str) else width
    _refuse_width("indent", [size])
    lines = str(text).count("\n") + 1
    if isinstance(size, int) and len(str(text)) + size * lines > MAX_OUTPUT:
        raise RenderLimitError(f"indent would make more than {MAX_OUTPUT:,} characters")


COUNTED = "__counted"  # the filter compiled into every loop (a template naming it only pays)


class _Sandbox(SandboxedEnvironment):
    """The sandbox, also refusing arithmetic that would take the daemon's memory or CPU
    (`"x" * 10**9`, `9 ** 9 ** 9`), and counting every call as a step.
    """

    intercepted_binops = frozenset({"*", "**"})
    context_class = _WorkingContext

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                repeated = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if repeated and len(seq) * times > MAX_REPEAT:
                    raise SecurityError(f"repetition longer than {MAX_REPEAT}")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if isinstance(__context, _WorkingContext):
            __context.work.spend()
        _check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _environment(finalize: Callable[[Any], str]) -> _Sandbox:
    env = _Sandbox(
        undefined=StrictUndefined,
        finalize=finalize,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = lambda seconds: format_duration(float(seconds))
    env.filters["number"] = _number
    env.filters["link"] = _link
    env.filters["shorten"] = _shorten
    env.filters[COUNTED] = _counted
    env.globals["range"] = _range
    _bounded_filters(env)
    return env


_ENVIRONMENTS = {"slack": _environment(slack_finalize), "json": _environment(json_finalize)}


def _counting_loops(tree: nodes.Template) -> nodes.Template:
    """`tree` with every loop's iterable passed through the counting filter."""
    for loop in tree.find_all(nodes.For):
        lineno = loop.iter.lineno
        loop.iter = nodes.Filter(loop.iter, COUNTED, [], [], None, None, lineno=lineno)
    return tree


@lru_cache(maxsize=512)
def compiled(kind: str, source: str) -> Template:
    """`source` compiled for `kind` ("slack" or "json"); TemplateSyntaxError if it cannot be."""
    env = _ENVIRONMENTS[kind]
    return env.from_string(_counting_loops(env.parse(source)))


@lru_cache(maxsize=512)
def compiled_expression(source: str) -> Template:
    """One Slack expression compiled as a template that stores its value in `result`."""
    env = _ENVIRONMENTS["slack"]
    parser = Parser(env, source, state="variable")
    expression = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    store = nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)
    return env.from_string(_counting_loops(nodes.Template([store], lineno=1)))


def _context(template: Template, variables: Mapping[str, Any], work: Work) -> _WorkingContext:
    context = template.new_context(dict(variables))
    assert isinstance(context, _WorkingContext)
    context.work = work
    return context


def _capped(chunks: Iterable[str], limit: int) -> Iterator[str]:
    """`chunks` until they add up to more than `limit` characters: then RenderLimitError."""
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RenderLimitError(f"output longer than {limit:,} characters")
        yield chunk


def run_template(template: Template, variables: Mapping[str, Any], work: Work) -> str:
    """The output of `template`, its work spent from `work`. Raises what the template
    raises, with a traceback in the template's own lines (as `Template.render` does).
    """
    context = _context(template, variables, work)
    try:
        return "".join(_capped(template.root_render_func(context), work.limits.output))
    except Exception:
        template.environment.handle_exception()


def run_expression(template: Template, variables: Mapping[str, Any], work: Work) -> Any:
    """The value of a `compiled_expression`, its work spent from `work`."""
    context = _context(template, variables, work)
    try:
        for _ in template.root_render_func(context):
            pass
    except Exception:
        template.environment.handle_exception()
    return context.vars["result"]
