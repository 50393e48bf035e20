"""What is wrong with a config file, as text: `file:line: key: message`, one per line."""

from __future__ import annotations

import pytest

from watcher.config.problems import ConfigError, ConfigProblem


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        (
            ConfigProblem("config.yaml", 14, "rules[2].notify[0]", "unknown target 'x'"),
            "config.yaml:14: rules[2].notify[0]: unknown target 'x'",
        ),
        (ConfigProblem("c.yaml", None, "factory", "is required"), "c.yaml: factory: is required"),
        (ConfigProblem("c.yaml", 3, "", "invalid YAML"), "c.yaml:3: invalid YAML"),
        (ConfigProblem("c.yaml", None, "", "not UTF-8"), "c.yaml: not UTF-8"),
    ],
)
def test_problem_renders_file_line_key_message(problem: ConfigProblem, text: str) -> None:
    """A problem reads `file:line: key: message`, leaving out what it does not know."""
    assert str(problem) == text


def test_error_lists_every_problem_one_per_line() -> None:
    """str(ConfigError) is its problems, one per line."""
    error = ConfigError(
        [ConfigProblem("c.yaml", 1, "a", "one"), ConfigProblem("c.yaml", 2, "b", "two")]
    )
    assert str(error) == "c.yaml:1: a: one\nc.yaml:2: b: two"
    assert len(error.problems) == 2
