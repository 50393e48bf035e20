"""Live Slack cards: one message per (target, session), with a post intent before posting.

A mark of the outbox rows a card delivered also resets what the backend's
`_MARK_RESETS` names (the PostgreSQL store's claim).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from watcher.store.rows import Card
from watcher.store.tables.base import TableBase, maybe_moment, seconds


class CardTables(TableBase):
    """The cards table; a card's delivered rows are marked in the card's transaction."""

    def card(self, target: str, session_id: str) -> Card | None:
        """The card of `session_id` for `target`, if one was ever posted or intended."""
        row = self._read_one(
            "SELECT channel, ts, marker, posting_since, replaced_ts, replaced_reason,"
            " replaced_url FROM cards WHERE target = ? AND session_id = ?",
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
                " ON CONFLICT (target, session_id) DO UPDATE SET channel = EXCLUDED.channel,"
                " ts = NULL, marker = EXCLUDED.marker, posting_since = EXCLUDED.posting_since,"
                " replaced_ts = EXCLUDED.replaced_ts, replaced_reason = EXCLUDED.replaced_reason,"
                " replaced_url = EXCLUDED.replaced_url, updated_at = EXCLUDED.updated_at",
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
                "UPDATE cards SET posting_since = NULL, updated_at = ? WHERE target = ? AND"
                " session_id = ? AND ts IS NULL",
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
                "UPDATE cards SET ts = ?, posting_since = NULL, updated_at = ?"
                " WHERE target = ? AND session_id = ?",
                (ts, seconds(now), target, session_id),
            )
            if delivered:
                db.execute(
                    "UPDATE outbox SET status = 'delivered', attempts = attempts + 1,"  # noqa: S608
                    " finished_at = ?, handle = ?, last_error = NULL"
                    + self._MARK_RESETS
                    + " WHERE status = 'pending' AND id "
                    + self._ANY_ID,
                    (seconds(now), ts, self._list(delivered)),
                )
