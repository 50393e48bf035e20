"""What is wrong with a config file: problems with file, line and key, and our wording of them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails


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


def did_you_mean(word: str, options: Iterable[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(what: str, word: str, options: Iterable[str], cutoff: float = 0.6) -> str:
    """`unknown <what> 'word' (did you mean 'x'?)`, or the valid choices when none is close."""
    choices = list(options)
    hint = did_you_mean(word, choices, cutoff)
    if hint:
        return f"unknown {what} '{word}'{hint}"
    if not choices:
        return f"unknown {what} '{word}' (none are defined)"
    return f"unknown {what} '{word}'; expected one of: {', '.join(choices)}"


def error_message(model: type[BaseModel], error: ErrorDetails) -> str:
    """Our wording for one pydantic error; never includes the input value."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "extra_forbidden":
        parent = _model_at(model, error["loc"][:-1])
        options = _keys_of(parent) if parent is not None else []
        hint = did_you_mean(str(error["loc"][-1]), options)
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
        "float_type": "expected a number",
        "float_parsing": "expected a number",
        "finite_number": "expected a number",
    }
    if kind in simple:
        return simple[kind]
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']:g}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    return error["msg"]
