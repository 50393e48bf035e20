"""A wrapper that keeps secrets out of reprs, logs and error messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

MASK = "********"
MIN_SECRET_LENGTH = 4


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret string; only `reveal()` gives the value, every other view masks it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """Return the secret itself; call this only at the point of use."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value (of at least 4 characters) replaced by a mask.

    Longer values go first so a secret that contains another is masked whole.
    """
    for value in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text
