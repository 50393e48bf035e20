"""The JSON Schema of the config: generated from the models, shipped, and in step with them."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from watcher.commands.cli import main
from watcher.config import yamlsafe
from watcher.config.loader import ConfigError, load_settings
from watcher.config.models import SECTIONS, ConfigFile, config_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"
SHIPPED = ROOT / "config.schema.json"
ENV = {
    "FACTORY_API_KEY": "fk-test-0123456789",
    "SLACK_BOT_TOKEN": "xoxb-test-bot-token",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
    "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


class Yaml12Loader(yaml.SafeLoader):
    """YAML as editors read it (1.2 core schema): `on`, `yes` and `off` are strings."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def schema_errors(text: str) -> list[str]:
    """What the JSON Schema finds wrong with `text` read as an editor reads YAML."""
    validator = jsonschema.Draft202012Validator(config_schema())
    data = yaml.load(text, Loader=Yaml12Loader)
    return [error.message for error in validator.iter_errors(data)]


def loader_accepts(text: str, tmp_path: Path) -> bool:
    """Whether `load_settings` (the real validation) accepts `text`."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    try:
        load_settings(path, env=ENV)
    except ConfigError:
        return False
    return True


def model_accepts(text: str) -> bool:
    """Whether the root model accepts `text` parsed as the loader parses it."""
    data = yamlsafe.parse(text).data
    for section in ("factory", "targets"):  # ${NAME} stays literal: only the shape matters
        data.setdefault(section, {})
    try:
        ConfigFile.model_validate(data)
    except ValidationError:
        return False
    return True


def test_the_shipped_schema_is_the_generated_one() -> None:
    """config.schema.json is exactly what `factory-watcher schema` prints."""
    out = io.StringIO()
    assert main(["schema"], out=out) == 0
    assert json.loads(out.getvalue()) == config_schema()
    assert json.loads(SHIPPED.read_text()) == config_schema(), (
        "config.schema.json is stale: factory-watcher schema > config.schema.json"
    )
    jsonschema.Draft202012Validator.check_schema(config_schema())


def test_the_example_validates_and_points_at_the_schema() -> None:
    """config.example.yaml passes the schema and names it for the YAML language server."""
    text = EXAMPLE.read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=./config.schema.json"
    assert schema_errors(text) == []


def test_root_model_has_every_section() -> None:
    """The root model composes exactly the sections the loader knows."""
    assert tuple(ConfigFile.model_fields) == SECTIONS


def edit(old: str, new: str) -> Callable[[str], str]:
    """A change to the example text (which must contain `old`)."""

    def apply(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return apply


def append(extra: str) -> Callable[[str], str]:
    """Text added at the end of the example."""
    return lambda text: text + extra


CASES: list[Any] = [
    pytest.param(lambda text: text, True, True, id="example"),
    pytest.param(append("colour: blue\n"), False, True, id="unknown-section"),
    pytest.param(edit("  timeout: 10s", "  timout: 10s"), False, True, id="unknown-key"),
    pytest.param(edit("  timeout: 10s", "  timeout: soon"), False, True, id="bad-duration"),
    pytest.param(edit("  timeout: 10s", "  timeout: 90"), True, True, id="duration-as-number"),
    pytest.param(edit("  concurrency: 64", "  concurrency: 0"), False, True, id="too-few"),
    pytest.param(edit("  jitter: 10%", "  jitter: 80%"), False, True, id="jitter-too-big"),
    pytest.param(edit("  jitter: 10%", "  jitter: 0.2"), True, True, id="jitter-fraction"),
    pytest.param(edit("type: slack_webhook", "type: slack_webhok"), False, True, id="bad-type"),
    pytest.param(
        edit("    max_attempts: 12", "    max_attempts: 0"), False, True, id="max-attempts"
    ),
    # Secrets: the schema's oneOf and the loader's secret reader, not the section model.
    pytest.param(
        edit("    # token_file: slack-bot-token", "    token_file: slack-bot-token"),
        False,
        False,
        id="token-and-token-file",
    ),
    pytest.param(edit("  api_key: ${FACTORY_API_KEY}", ""), False, False, id="no-api-key"),
    pytest.param(
        edit("    notify: [team-slack, ci]", "    notyfy: [team-slack, ci]"),
        False,
        True,
        id="rule-without-notify",
    ),
    pytest.param(append("http:\n  listen: 127.0.0.1:9464\n"), True, True, id="http"),
    pytest.param(append("http:\n  listen: '[::1]:0'\n"), True, True, id="http-ipv6"),
    pytest.param(append("http:\n  listen: nine-four-six-four\n"), False, True, id="http-bad"),
    pytest.param(append("http:\n  allow_remote: true\n"), False, True, id="http-no-listen"),
    pytest.param(append("log_format: json\n"), True, True, id="log-json"),
    pytest.param(append("log_format: xml\n"), False, True, id="log-xml"),
]


@pytest.mark.parametrize(("change", "valid", "shape"), CASES)
def test_schema_models_and_loader_agree(
    tmp_path: Path, change: Callable[[str], str], valid: bool, shape: bool
) -> None:
    """For each variant of the example, the schema, the loader and the root model agree.

    The root model checks shape only; which secret is given is the loader's
    business (and the schema's, so editors flag it too).
    """
    text = change(EXAMPLE.read_text())
    assert (schema_errors(text) == []) is valid
    assert loader_accepts(text, tmp_path) is valid
    assert model_accepts(text) is (valid if shape else True)
