"""What a backend gives the shared table mixins: transactions, reads, stored times.

Times are stored as Unix seconds on both backends; `seconds`, `moment` and
`maybe_moment` convert. SQL passed to `TableBase`'s methods uses `?`
placeholders and no literal `?` or `%` of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, ClassVar

SEQUENCE_FLOOR = "sequence_floor"  # meta: the highest `last` of a deleted lane


def seconds(value: datetime) -> float:
    """A time as stored: Unix seconds."""
    return value.timestamp()


def moment(value: float) -> datetime:
    """A stored time back as an aware UTC datetime."""
    return datetime.fromtimestamp(value, tz=UTC)


def maybe_moment(value: float | None) -> datetime | None:
    """`moment`, keeping None."""
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class TableBase:
    """The interface both backends' bases implement; the shared mixins use only this.

    `column + _ANY_ID` (or `_ANY_TEXT`) is a condition true when the column is
    one of a list given as a single parameter, made by `_list`. `_MARK_RESETS`
    is what else (`, column = value`) marking an outbox row sets;
    `_INSERTION_ORDER` the events' column that orders rows stored in one instant.
    """

    _ANY_ID: ClassVar[str]
    _ANY_TEXT: ClassVar[str]
    _MARK_RESETS: ClassVar[str]
    _INSERTION_ORDER: ClassVar[str]

    @staticmethod
    def _list(values: Iterable[Any]) -> Any:
        """Values as the one parameter `_ANY_ID` and `_ANY_TEXT` take."""
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Any]:
        """One write transaction: its cursor or connection, with `execute` and `executemany`."""
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Any]:
        """One connection to run several reads on, with `execute`."""
        raise NotImplementedError

    def _read_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read."""
        raise NotImplementedError

    def _read_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of one read, or None."""
        raise NotImplementedError
