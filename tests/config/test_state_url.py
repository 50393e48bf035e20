"""`state.url` (PostgreSQL), `password_file` and the lease timing: parsing, problems, secrecy."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from tests.commands.invoke import run_cli
from watcher.config.lint import ha_warnings
from watcher.config.loader import ConfigError, load_settings
from watcher.core.settings import HaSettings, Settings
from watcher.ops.logs import RedactingFilter, TextFormatter

FACTORY = "factory:\n  api_key: fk-test-0123456789\n"
# The API key from the environment: only the state's password can be inline.
FACTORY_ENV = "factory:\n  api_key: ${FW_KEY}\n"
KEY = {"FW_KEY": "fk-test-0123456789"}
PASSWORD = "s3cr:t/@pw"
S = timedelta(seconds=1)


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    """A config file holding `text`, and a password file `pw` beside it."""
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    """Settings from a config holding `text` (mode 600)."""
    return load_settings(write(tmp_path, FACTORY + text), env=env or {})


def problems(tmp_path: Path, text: str, mode: int = 0o600, **env: str) -> list[str]:
    """The problems the loader reports, file name first."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, FACTORY + "\n" + text, mode), env=env)
    return [str(p).replace(str(tmp_path) + "/", "") for p in caught.value.problems]


@pytest.mark.parametrize(
    ("state", "env", "url"),
    [
        (
            "state:\n  url: postgresql://fw@127.0.0.1:5432/fw\n",
            {},
            "postgresql://fw@127.0.0.1:5432/fw",
        ),
        (
            "state:\n  url: postgresql://fw@db:5432/fw\n  password_file: pw\n",
            {},
            "postgresql://fw:s3cr%3At%2F%40pw@db:5432/fw",
        ),
        (
            "state:\n  url: ${FW_DB}\n",
            {"FW_DB": "postgresql://fw:x1y2@db/fw"},
            "postgresql://fw:x1y2@db/fw",
        ),
        (
            "state:\n  url: postgresql://fw:${FW_PW}@db/fw\n",
            {"FW_PW": "hunter22"},
            "postgresql://fw:hunter22@db/fw",
        ),
        ("state:\n  url: postgresql:///?service=fw\n", {}, "postgresql:///?service=fw"),
        ("state:\n  url: postgresql://\n", {}, "postgresql://"),  # all from PGSERVICE, PGHOST...
        (
            "state:\n  url: postgresql:///?service=fw\n  password_file: pw\n",
            {},
            "postgresql:///?service=fw&password=s3cr%3At%2F%40pw",
        ),
    ],
)
def test_state_url_selects_postgresql_with_the_password_folded_in(
    tmp_path: Path, state: str, env: dict[str, str], url: str
) -> None:
    """The URL is taken as written (after ${ENV}); a password file's content is folded in
    percent-encoded; a service name passes through for libpq to read."""
    settings = load(tmp_path, state, env)
    assert settings.state_url is not None
    assert settings.state_url.reveal() == url
    assert settings.ha == HaSettings()


def test_without_url_the_state_is_sqlite_as_before(tmp_path: Path) -> None:
    """No url: no PostgreSQL, the default lease timing, the SQLite path resolved as ever."""
    settings = load(tmp_path, "state:\n  path: x.db\n")
    assert settings.state_url is None
    assert settings.state_path == Path.cwd() / "x.db"


@pytest.mark.parametrize(
    ("state", "ha"),
    [
        ("  lease_ttl: 30s\n  renew_every: 5s\n", HaSettings(30 * S, 5 * S)),
        ("  lease_ttl: 3s\n  renew_every: 1s\n", HaSettings(3 * S, 1 * S)),
        ("  lease_ttl: 10s\n  renew_every: 4900ms\n", HaSettings(10 * S, timedelta(seconds=4.9))),
    ],
)
def test_the_lease_timing_is_read(tmp_path: Path, state: str, ha: HaSettings) -> None:
    """lease_ttl and renew_every parse as durations; the margin stays 1s."""
    settings = load(tmp_path, "state:\n  url: postgresql://fw@db/fw\n" + state)
    assert settings.ha == ha
    assert settings.ha.margin == S
    assert settings.ha.send_cap == ha.lease_ttl / 2


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (
            "state:\n  path: x.db\n  url: postgresql://fw@db/fw\n",
            "config.yaml:6: state.url: give either path (SQLite) or url (PostgreSQL), not both",
        ),
        (
            "state:\n  url: mysql://fw:hunter22@db/fw\n",
            "config.yaml:5: state.url: expected a postgresql:// URL such as "
            "postgresql://user@host:5432/dbname, not 'mysql://'",
        ),
        (
            "state:\n  url: /var/lib/fw.db\n",
            "config.yaml:5: state.url: expected a PostgreSQL URL such as "
            "postgresql://user@host:5432/dbname",
        ),
        (
            "state:\n  url: postgresql://fw@db/fw\n  lease_ttl: 2s\n  renew_every: 500ms\n",
            "config.yaml:6: state.lease_ttl: must be at least 3s (it is 2s)",
        ),
        (
            "state:\n  url: postgresql://fw@db/fw\n  renew_every: 5s\n",
            "config.yaml:6: state.renew_every: must be shorter than half of lease_ttl "
            "(10s / 2 = 5s; it is 5s)",
        ),
        (
            "state:\n  url: postgresql://fw@db/fw\n  lease_ttl: 4s\n  renew_every: 3s\n",
            "config.yaml:7: state.renew_every: must be shorter than half of lease_ttl",
        ),
        (
            "state:\n  url: postgresql://fw:hunter22@db/fw\n  password_file: pw\n",
            "config.yaml:6: state.password_file: the URL in state.url holds a password already",
        ),
        (
            "state:\n  url: postgresql://fw@db/fw?password=hunter22\n  password_file: pw\n",
            "config.yaml:6: state.password_file: the URL in state.url holds a password already",
        ),
        (
            "state:\n  path: x.db\n  password_file: pw\n",
            "config.yaml:6: state.password_file: is the PostgreSQL password: it needs state.url",
        ),
        (
            "state:\n  url: postgresql://fw@db/fw\n  password_file: nope\n",
            "config.yaml:6: state.password_file: secret file not found:",
        ),
        (
            "state:\n  url: postgresql://fw@db/fw\n  lease_ttl: soon\n",
            "config.yaml:6: state.lease_ttl: expected a duration",
        ),
        ("state:\n  url: ${NOPE}\n", "config.yaml:5: state.url: environment variable 'NOPE'"),
    ],
)
def test_a_bad_state_is_one_problem_at_its_line(tmp_path: Path, state: str, problem: str) -> None:
    """Each mistake is reported once, with file, line and key, and never the password."""
    found = problems(tmp_path, state)
    assert len(found) == 1, found
    assert found[0].startswith(problem), found
    assert "hunter22" not in found[0]
    assert PASSWORD not in found[0]


def test_an_inline_password_in_a_readable_file_is_refused(tmp_path: Path) -> None:
    """A password written into a group-readable config is refused like any inline secret,
    pointing at password_file; a URL without password in the same file is fine."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            write(tmp_path, FACTORY_ENV + "state:\n  url: postgresql://fw:hunter22@db/fw\n", 0o644),
            env=KEY,
        )
    found = [str(p).replace(str(tmp_path) + "/", "") for p in caught.value.problems]
    assert len(found) == 1, found
    assert any(
        p.startswith("config.yaml:4: state.url: secret written inline")
        and "or use ${VAR} or password_file instead" in p
        for p in found
    ), found
    assert not any("hunter22" in p for p in found)
    settings = load_settings(
        write(tmp_path, FACTORY_ENV + "state:\n  url: postgresql://fw@db/fw\n", 0o644), env=KEY
    )
    assert settings.state_url is not None


def test_a_password_from_the_environment_is_not_inline(tmp_path: Path) -> None:
    """`${VAR}` in the URL keeps the password out of the file: a readable file is fine."""
    path = write(tmp_path, FACTORY_ENV + "state:\n  url: postgresql://fw:${FW_PW}@db/fw\n", 0o644)
    settings = load_settings(path, env={"FW_PW": "hunter22", **KEY})
    assert settings.state_url is not None


@pytest.mark.parametrize(
    ("state", "env"),
    [
        ("state:\n  url: postgresql://fw@db:5432/fw\n  password_file: pw\n", {}),
        (
            "state:\n  url: postgresql://fw:${FW_PW}@db:5432/fw\n",
            {"FW_PW": PASSWORD.replace("/", "%2F")},
        ),
        ("state:\n  url: postgresql://fw@db:5432/fw?password=${FW_PW}\n", {"FW_PW": "s3cr%3At"}),
    ],
)
def test_every_form_of_the_password_is_a_secret(
    tmp_path: Path, state: str, env: dict[str, str]
) -> None:
    """secret_values() holds the password decoded and as written, and the URL whole."""
    settings = load(tmp_path, state, env)
    assert settings.state_url is not None
    secrets = settings.secret_values()
    assert settings.state_url.reveal() in secrets
    assert any(value.startswith("s3cr") and "%" not in value for value in secrets)
    assert any(value.startswith("s3cr") and "%" in value for value in secrets)


def test_a_url_without_password_is_no_secret(tmp_path: Path) -> None:
    """Nothing to hide in postgresql://fw@db/fw (libpq finds the password elsewhere)."""
    settings = load(tmp_path, "state:\n  url: postgresql://fw@db/fw\n")
    assert settings.secret_values() == ("fk-test-0123456789",)


def test_neither_url_nor_password_appears_in_reprs(tmp_path: Path) -> None:
    """repr and str of the settings mask the URL and so the password."""
    settings = load(tmp_path, "state:\n  url: postgresql://fw@db:5432/fw\n  password_file: pw\n")
    for text in (repr(settings), str(settings), repr(settings.state_url), f"{settings.state_url}"):
        assert "s3cr" not in text
        assert "db:5432" not in text


def test_check_never_prints_the_url(tmp_path: Path) -> None:
    """`check` says the state is on PostgreSQL, never where or with which password."""
    path = write(
        tmp_path, FACTORY + "state:\n  url: postgresql://fw@db:5432/fw\n  password_file: pw\n"
    )
    code, out, err = run_cli("check", "-c", str(path))
    assert code == 0, err
    assert "ok (0 session(s), 0 rule(s), 0 target(s), state on PostgreSQL)" in out
    assert "db:5432" not in out + err
    assert "s3cr" not in out + err


def test_check_problems_never_print_the_password(tmp_path: Path) -> None:
    """A broken config with the password inline in a readable file: the problems, not it."""
    path = write(
        tmp_path,
        FACTORY + "state:\n  url: postgresql://fw:hunter22@db/fw\n  lease_ttl: 1s\n",
        0o644,
    )
    code, out, err = run_cli("check", "-c", str(path))
    assert code == 78
    assert "state.lease_ttl" in err
    assert "hunter22" not in out + err


def test_logs_mask_the_url_and_the_password(tmp_path: Path) -> None:
    """The logging redactor fed with secret_values() masks the URL and each password form."""
    settings = load(tmp_path, "state:\n  url: postgresql://fw@db:5432/fw\n  password_file: pw\n")
    assert settings.state_url is not None
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(timestamps=False))
    handler.addFilter(RedactingFilter(settings.secret_values()))
    logger = logging.getLogger("test.state_url")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("cannot connect to %s", settings.state_url.reveal())
        logger.warning("password authentication failed: %s", PASSWORD)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "s3cr" not in text
    assert "postgresql://" not in text
    assert text.count("********") == 2


@pytest.mark.parametrize(
    ("state", "targets", "expected"),
    [
        ("", "", []),
        ("state:\n  url: postgresql://fw@db/fw\n", "", []),
        ("state:\n  url: postgresql://fw@db/fw\n", "hook", []),
        (
            "state:\n  url: postgresql://fw@db/fw\n  lease_ttl: 6s\n",
            "hook",
            [
                "with state.url every send is cut off after lease_ttl/2 (3s), shorter than the "
                "10s send timeout of target(s) 'hook': a slower answer is retried later; set "
                "lease_ttl to 20s or more to give sends their full time"
            ],
        ),
        ("state:\n  url: postgresql://fw@db/fw\n  lease_ttl: 20s\n", "hook", []),
        (
            "state:\n  lease_ttl: 20s\n",
            "",
            ["state.lease_ttl and state.renew_every have no effect without state.url"],
        ),
    ],
)
def test_check_warns_about_lease_settings(
    tmp_path: Path, state: str, targets: str, expected: list[str]
) -> None:
    """A lease shorter than the default cuts sends short (warned); lease keys alone do nothing."""
    text = state
    if targets:
        text += (
            "targets:\n  hook:\n    type: webhook\n    url: https://example.com/h\n"
            "rules:\n  - name: r\n    on: session.completed\n    notify: hook\n"
        )
    assert ha_warnings(load(tmp_path, text)) == expected
