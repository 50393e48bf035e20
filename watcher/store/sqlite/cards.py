"""Live Slack cards: one message per (target, session), with a post intent before posting."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from watcher.store.rows import Card
from watcher.store.sqlite.base import SqliteBase, maybe_moment, seconds


class CardTables(SqliteBase):
    """The cards table; a card's delivered rows are marked in the card's transaction."""

    def card(self, target: str, session_id: str) -> Card | None:
        """The card of `session_id` for `target`, if one was ever posted or intended."""
        row = self._read_one(
            "SELECT channel, ts, marker, posting_since, replaced_ts, replaced_reason,"
            " replaced_url FROM cards WHERE target=? AND session_id=?",
            (target, session_id),
        )
        if row is None:
            return None
        return Card(
            target, session_id, row[0], row[1], row[2], maybe_moment(row[3]), row[4], row[5], row[6]
        )

    def intend_card(self, card: Card, now: datetime) -> None:
        """Note, before posting it, that a new card with `card.marker` is about to be posted.

        Committed before the post, so a crash after Slack accepted it leaves a
        trace to look the card up by, instead of posting a second one.
        """
        with self._transaction() as db:
            db.execute(
                "INSERT INTO cards(target, session_id, channel, ts, marker, posting_since,"
                " replaced_ts, replaced_reason, replaced_url, updated_at)"
                " VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(target, session_id) DO UPDATE SET channel=excluded.channel,"
                " ts=NULL, marker=excluded.marker, posting_since=excluded.posting_since,"
                " replaced_ts=excluded.replaced_ts, replaced_reason=excluded.replaced_reason,"
                " replaced_url=excluded.replaced_url, updated_at=excluded.updated_at",
                (
                    card.target,
                    card.session_id,
                    card.channel,
                    card.marker,
                    seconds(card.posting_since or now),
                    card.replaced_ts,
                    card.replaced_reason,
                    card.replaced_url,
                    seconds(now),
                ),
            )

    def drop_card_intent(self, target: str, session_id: str, now: datetime) -> None:
        """Slack refused the post outright: nothing can have been posted, nothing to look up."""
        with self._transaction() as db:
            db.execute(
                "UPDATE cards SET posting_since=NULL, updated_at=? WHERE target=? AND"
                " session_id=? AND ts IS NULL",
                (seconds(now), target, session_id),
            )

    def record_card(
        self, target: str, session_id: str, ts: str, delivered: Sequence[int], now: datetime
    ) -> None:
        """Store the card's `ts` and mark the outbox rows `delivered`, in one transaction.

        The card row exists (`intend_card` wrote it before the post); from now on
        every notification of the session updates message `ts`.
        """
        with self._transaction() as db:
            db.execute(
                "UPDATE cards SET ts=?, posting_since=NULL, updated_at=?"
                " WHERE target=? AND session_id=?",
                (ts, seconds(now), target, session_id),
            )
            db.executemany(
                "UPDATE outbox SET status='delivered', attempts=attempts+1, finished_at=?,"
                " handle=?, last_error=NULL WHERE id=? AND status='pending'",
                [(seconds(now), ts, row_id) for row_id in delivered],
            )
