"""Secrets stay masked everywhere but at the point of use."""

from __future__ import annotations

import pytest

from watcher.core.secret import MASK, Secret, redact


def test_secret_masks_every_view_but_reveal() -> None:
    """repr, str and f-strings mask the value; reveal() gives it."""
    secret = Secret("fk-very-secret")
    assert secret.reveal() == "fk-very-secret"
    for view in (repr(secret), str(secret), f"{secret}", repr([secret]), repr({"k": secret})):
        assert "fk-very-secret" not in view
    assert bool(secret)
    assert not Secret("")


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("token xoxb-1234 here", ["xoxb-1234"], f"token {MASK} here"),
        ("abc", ["abc"], "abc"),  # too short to be a secret worth masking
        (
            "key=fk-1234, url=https://h/x/fk-1234",
            ["fk-1234"],
            f"key={MASK}, url=https://h/x/{MASK}",
        ),
        ("whsec_abcdef", ["abcdef", "whsec_abcdef"], MASK),  # the longer one goes first
        ("nothing here", [], "nothing here"),
    ],
)
def test_redact(text: str, secrets: list[str], expected: str) -> None:
    """Every occurrence of every secret is masked."""
    assert redact(text, secrets) == expected
