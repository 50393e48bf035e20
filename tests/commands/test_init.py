"""`factory-watcher init`: a starter config from flags or prompts that `check` accepts."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.commands.test_cli_imports import (
    CONFIG_STACK,
    DAEMON_STACK,
    PARSER_STACK,
    imported_by,
    loaded,
)
from watcher.commands.cli import main
from watcher.commands.init import run_init
from watcher.commands.starter import (
    SecretSource,
    StarterChoices,
    choice_problems,
    quoted,
    starter_config,
)
from watcher.config.loader import load_settings
from watcher.core.settings import SlackTarget, SlackWebhookTarget, WebhookTarget

ENV = {
    "FACTORY_API_KEY": "fk-init-canary-91",
    "SLACK_BOT_TOKEN": "xoxb-init-canary-92",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/init-canary-93",
    "WEBHOOK_SECRET": "whsec_aW5pdC1jYW5hcnktc2VjcmV0LTAxMjM0NTY3",
}


def init(argv: list[str], tmp_path: Path) -> tuple[int, str, str, Path]:
    """Run `factory-watcher init PATH ARGV` in-process; (code, stdout, stderr, PATH)."""
    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / "config.yaml"
    code = main(["init", str(path), "--no-input", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue(), path


@pytest.mark.parametrize(
    ("argv", "kinds"),
    [
        (["--slack-channel", "C0123ABCD"], [SlackTarget]),
        (["--slack-webhook-env", "SLACK_WEBHOOK_URL"], [SlackWebhookTarget]),
        (
            [
                "--webhook-url",
                "https://hooks.example.com/f",
                "--webhook-secret-env",
                "WEBHOOK_SECRET",
            ],
            [WebhookTarget],
        ),
        (
            [
                "--slack-channel",
                "C0123ABCD",
                "--slack-webhook-env",
                "SLACK_WEBHOOK_URL",
                "--webhook-url",
                "http://10.0.0.7:8080/hook",
            ],
            [SlackTarget, SlackWebhookTarget, WebhookTarget],
        ),
    ],
)
def test_flags_write_a_0600_file_that_check_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], kinds: list[type]
) -> None:
    """The written file is mode 0600, holds no secret, and `check` says ok with discovery on."""
    code, out, err, path = init(argv, tmp_path)
    assert code == 0, err
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    for secret in ENV.values():
        assert secret not in text
    assert "api_key: ${FACTORY_API_KEY}" in text
    assert "factory-watcher doctor -c" in out
    settings = load_settings(path, env=ENV)
    assert [type(t) for t in settings.targets.values()] == kinds
    assert settings.discover is not None
    assert [r.name for r in settings.rules] == ["finished", "interrupted", "stuck"]
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    checked = io.StringIO()
    assert main(["check", "-c", str(path)], out=checked, err=checked) == 0, checked.getvalue()
    assert "ok (0 session(s), 3 rule(s)" in checked.getvalue()


def test_secret_files_are_referenced_by_name(tmp_path: Path) -> None:
    """`*-file` flags write `<key>_file:` entries; the files' content is read only by the loader."""
    (tmp_path / "factory-key").write_text(ENV["FACTORY_API_KEY"] + "\n")
    (tmp_path / "slack-token").write_text(ENV["SLACK_BOT_TOKEN"] + "\n")
    code, _, err, path = init(
        [
            "--api-key-file",
            "factory-key",
            "--slack-channel",
            "C0123ABCD",
            "--slack-token-file",
            "slack-token",
        ],
        tmp_path,
    )
    assert code == 0, err
    text = path.read_text()
    assert 'api_key_file: "factory-key"' in text
    assert 'token_file: "slack-token"' in text
    settings = load_settings(path, env={})
    assert settings.factory.api_key.reveal() == ENV["FACTORY_API_KEY"]


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    """init exits 73 and leaves an existing file (or a symlink) exactly as it was."""
    path = tmp_path / "config.yaml"
    path.write_text("mine\n")
    code, _, err, _ = init(["--slack-channel", "C0123ABCD"], tmp_path)
    assert code == 73
    assert "init never overwrites a file" in err
    assert path.read_text() == "mine\n"
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.yaml")
    code, _, _, _ = init(["--slack-channel", "C0123ABCD"], tmp_path)
    assert code == 73
    assert not (tmp_path / "elsewhere.yaml").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "name at least one target"),
        (["--slack-channel", "C01", "--slack-token-env", "NOT-A-NAME"], "not an environment"),
        (["--webhook-url", "ftp://example.com/x"], "not an http(s) URL"),
        (["--webhook-url", "https://[example.com/x"], "not an http(s) URL"),
        (["--api-url", "https://api.factory.ai:port"], "not an http(s) URL"),
        (["--slack-channel", "C0 1"], "not a channel id"),
    ],
)
def test_unusable_flags_exit_2_and_write_nothing(
    tmp_path: Path, argv: list[str], words: str
) -> None:
    """Without a target, or with a malformed value, nothing is written and the flag is named."""
    code, _, err, path = init(argv, tmp_path)
    assert code == 2
    assert words in err
    assert not path.exists()


def test_typed_values_read_back_exactly_and_are_never_interpolated(tmp_path: Path) -> None:
    """Quotes, `#`, `${` and YAML syntax in a typed value come back from the loader as typed."""
    url = "https://example.com/h?q=${NOT_A_VAR}&t='a'&u=\\x#f:[y]"
    choices = StarterChoices(webhook_url=url, slack_channel="C'0#1")
    assert choice_problems(choices) == []
    path = tmp_path / "c.yaml"
    path.write_text(starter_config(choices))
    path.chmod(0o600)
    settings = load_settings(path, env=ENV)
    webhook = settings.targets["webhook"]
    slack = settings.targets["slack"]
    assert isinstance(webhook, WebhookTarget)
    assert isinstance(slack, SlackTarget)
    assert (webhook.url, slack.channel) == (url, "C'0#1")
    assert quoted("a${b") == '"a$${b"'


@pytest.mark.parametrize(
    ("answers", "expect"),
    [
        ("\n\nC0PROMPTED\n\n", ('channel: "C0PROMPTED"', "token: ${SLACK_BOT_TOKEN}")),
        ("MY_KEY\nslack\nC0X\nMY_TOKEN\n", ("api_key: ${MY_KEY}", "token: ${MY_TOKEN}")),
        ("\nslack-webhook\n\n", ("type: slack_webhook", "url: ${SLACK_WEBHOOK_URL}")),
        (
            "\nwebhook\nhttps://hooks.example.com/x\nHOOK_SECRET\n",
            ('url: "https://hooks.example.com/x"', "secret: ${HOOK_SECRET}"),
        ),
    ],
)
def test_prompts_fill_in_what_the_flags_left_out(
    tmp_path: Path, answers: str, expect: tuple[str, ...]
) -> None:
    """With an input stream and no target flag, init asks; empty answers take the defaults."""
    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / "config.yaml"
    code = run_init(path, StarterChoices(), out=out, err=err, answers=io.StringIO(answers))
    assert code == 0, err.getvalue()
    assert "Where should notifications go?" in out.getvalue()
    text = path.read_text()
    for line in expect:
        assert line in text
    env = {**ENV, "MY_KEY": "k" * 8, "MY_TOKEN": "t" * 8, "HOOK_SECRET": ENV["WEBHOOK_SECRET"]}
    load_settings(path, env=env)  # valid


@pytest.mark.parametrize(("answers", "words"), [("\n", "input ended"), ("\nteams\n", "teams")])
def test_an_unfinished_or_unknown_answer_writes_nothing(
    tmp_path: Path, answers: str, words: str
) -> None:
    """Input that ends early, or an unknown target kind, exits 2 without a file."""
    err = io.StringIO()
    path = tmp_path / "config.yaml"
    code = run_init(
        path, StarterChoices(), out=io.StringIO(), err=err, answers=io.StringIO(answers)
    )
    assert code == 2
    assert words in err.getvalue()
    assert not path.exists()


def test_choices_from_flags_are_not_asked_again(tmp_path: Path) -> None:
    """A target named by a flag skips the prompts even when an input stream is given."""
    out = io.StringIO()
    code = run_init(
        tmp_path / "c.yaml",
        StarterChoices(slack_webhook=SecretSource("HOOK")),
        out=out,
        err=io.StringIO(),
        answers=io.StringIO(""),
    )
    assert code == 0
    assert "?" not in out.getvalue()


@pytest.mark.slow
def test_on_a_terminal_init_prompts(tmp_path: Path) -> None:
    """Run in a pseudo-terminal, `init` asks its questions and writes what was answered."""
    controller, terminal = pty.openpty()
    # The terminal buffers the typed lines; init reads them one prompt at a time.
    os.write(controller, b"\nslack\nC0TTY\n\n")
    log = tmp_path / "stderr.txt"
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "watcher", "init", "tty.yaml"],
            stdin=terminal,
            stdout=terminal,
            stderr=errors,
            cwd=tmp_path,
        )
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(60) == 0, log.read_text()
    os.close(controller)
    assert b"Slack channel id" in shown
    assert 'channel: "C0TTY"' in (tmp_path / "tty.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["init", "--help"],
        ["doctor", "--help"],
        ["init", "c.yaml", "--no-input", "--slack-channel", "C0123ABCD"],
    ],
)
def test_init_and_the_help_texts_load_no_daemon_config_or_parser(
    argv: list[str], tmp_path: Path
) -> None:
    """`init` writes text from the standard library alone; help loads neither doctor's stack."""
    modules = imported_by(argv, tmp_path)
    assert loaded(modules, DAEMON_STACK + CONFIG_STACK + PARSER_STACK) == set()
    assert "watcher.commands.doctor" not in modules
