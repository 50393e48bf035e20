"""The configuration values."""

from __future__ import annotations

from pathlib import Path

from watcher.core.secret import Secret
from watcher.core.settings import (
    FactorySettings,
    Settings,
    SlackTarget,
    SlackWebhookTarget,
    WebhookTarget,
)


def test_secret_values_lists_every_secret() -> None:
    """The API key, Slack tokens, Slack webhook URLs, webhook URLs, secrets and header
    values are all listed."""
    settings = Settings(
        factory=FactorySettings(api_key=Secret("fk-1")),
        state_path=Path("s.db"),
        targets={
            "a": SlackTarget(name="a", token=Secret("xoxb-2"), channel="C1"),
            "b": SlackWebhookTarget(name="b", url=Secret("https://hooks/3")),
            "c": WebhookTarget(name="c", url="https://x", secret=Secret("whsec_4")),
            "d": WebhookTarget(name="d", url="https://y?token=5", headers={"X-Key": "key-6"}),
        },
    )
    assert settings.secret_values() == (
        "fk-1",
        "xoxb-2",
        "https://hooks/3",
        "https://x",
        "whsec_4",
        "https://y?token=5",
        "key-6",
    )
    assert "fk-1" not in repr(settings)
