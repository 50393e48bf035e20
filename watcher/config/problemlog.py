"""The problems found while one config file is built, each at its file, line and key path.

Every part of the builder reports here rather than raising, so one `check`
lists everything wrong with a file. A key reported by an earlier phase is
settled: later phases stay silent about it and everything under it, so a
missing `${VAR}` is reported once, not again as a malformed duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from watcher.config import yamlsafe
from watcher.config.problems import ConfigError, ConfigProblem, error_message
from watcher.config.yamlsafe import KeyPath, render_path

_Model = TypeVar("_Model", bound=BaseModel)


class ProblemLog:
    """The problems of the config file at `path`, parsed as `document`."""

    def __init__(self, path: Path, document: yamlsafe.Document) -> None:
        self.path = path
        self.document = document
        self.problems: list[ConfigProblem] = []
        self._settled: set[KeyPath] = set()  # keys already reported by an earlier phase

    def report(self, at: KeyPath, message: str) -> None:
        """Record a problem at key path `at` (with its line) unless that key is settled."""
        if any(at[:end] in self._settled for end in range(len(at) + 1)):
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

    def report_on_line(self, at: KeyPath, line: int | None, message: str) -> None:
        """Record a problem at key path `at` on a line the caller worked out (settled or not)."""
        self.problems.append(ConfigProblem(str(self.path), line, render_path(at), message))

    def settle(self, at: KeyPath) -> None:
        """Silence later problems at `at` and below: the problem there is reported already."""
        self._settled.add(at)

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

    def named_items(
        self, model: type[_Model], raw: Any, at: KeyPath, what: str
    ) -> Iterator[tuple[int, Any, _Model]]:
        """Each valid item of the list of `what`s at `at`, with its index and raw form.

        A value that is not a list, a name used twice and an item `model` refuses
        are reported here; the caller sees only the items that validated.
        """
        if raw is None:
            return
        if not isinstance(raw, list):
            self.report(at, f"expected a list of {what}s")
            return
        names: dict[str, int] = {}
        for index, item in enumerate(raw):
            here = (*at, index)
            self.unique(names, item, (*here, "name"), f"{what} name")
            section = self.validate(model, item, here)
            if section is not None:
                yield index, item, section

    def error(self) -> ConfigError:
        """Every problem so far, in file order (problems without a line first)."""
        return ConfigError(sorted(self.problems, key=lambda p: p.line or 0))
