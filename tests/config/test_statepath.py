"""The state path read without the full loader agrees with the loader, or defers to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config.loader import ConfigError, load_settings
from watcher.config.statepath import find_state_path

FACTORY = "factory:\n  api_key: ${FW_KEY}\n"
KEY = {"FW_KEY": "fk-test-0123456789"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths resolve against a directory of the test's own."""
    monkeypatch.chdir(tmp_path)


def write(text: str | bytes) -> Path:
    """config.yaml in the current directory, mode 600."""
    path = Path("config.yaml")
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("text", "env"),
    [
        (FACTORY, {}),
        (FACTORY, {"STATE_DIRECTORY": "/var/lib/fw"}),
        (FACTORY, {"STATE_DIRECTORY": "/var/lib/fw:/var/lib/other"}),
        (FACTORY + "state:\n", {"STATE_DIRECTORY": "/var/lib/fw"}),
        (FACTORY + "state: {}\n", {}),
        (FACTORY + "state:\n  path: data/w.db\n", {"STATE_DIRECTORY": "/var/lib/fw"}),
        (FACTORY + "state:\n  path: /srv/w.db\n", {}),
        (FACTORY + "state:\n  path: '~/w.db'\n", {}),
        ("state:\n  path: w.db\n" + FACTORY, {}),
        ("\ufeff" + FACTORY + "state:\n  path: w.db\n", {}),
    ],
)
def test_agrees_with_the_full_loader(text: str, env: dict[str, str]) -> None:
    """Wherever the loader accepts the file, both name the same absolute path."""
    config = write(text)
    expected = load_settings(config, env={**KEY, **env}).state_path
    assert find_state_path(config, env={**KEY, **env}) == expected


def test_other_sections_are_not_validated() -> None:
    """A problem outside `state` does not hide the database from the outbox commands."""
    config = write("factory:\n  timout: 5s\nstate:\n  path: w.db\n")
    with pytest.raises(ConfigError):
        load_settings(config, env=KEY)
    assert find_state_path(config, env=KEY) == Path.cwd() / "w.db"


@pytest.mark.parametrize(
    "text",
    [
        FACTORY + "state:\n  path: ${FW_DIR}/w.db\n",  # interpolated by the loader
        FACTORY + "state:\n  path: $${literal}.db\n",
        FACTORY + "state:\n  path: ''\n",
        FACTORY + "state:\n  path: [a, b]\n",
        FACTORY + "state:\n  path: w.db\n  extra: 1\n",
        FACTORY + "state: w.db\n",
        "- a list\n",
        "state:\n  path: a\nstate:\n  path: b\n",  # duplicate key: hardened parser refuses
        "state: [unclosed\n",
        b"state:\n  path: \xff.db\n",
    ],
)
def test_defers_to_the_full_loader_when_not_plain(text: str | bytes) -> None:
    """Anything the loader would interpolate, refuse or report returns None."""
    assert find_state_path(write(text), env=KEY) is None


def test_defers_when_the_file_is_missing_or_not_regular(tmp_path: Path) -> None:
    """A missing file or a directory is the loader's to report."""
    assert find_state_path(tmp_path / "absent.yaml", env={}) is None
    assert find_state_path(tmp_path, env={}) is None


def test_interpolated_path_is_found_by_the_loader() -> None:
    """The case find_state_path defers is one the loader resolves."""
    config = write(FACTORY + "state:\n  path: ${FW_DIR}/w.db\n")
    settings = load_settings(config, env={**KEY, "FW_DIR": "/srv/fw"})
    assert settings.state_path == Path("/srv/fw/w.db")
