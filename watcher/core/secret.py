"""A wrapper that keeps secrets out of reprs, logs and error messages."""

from __future__ import annotations

from dataclasses import dataclass, field


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
