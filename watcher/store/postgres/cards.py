"""Live Slack cards: one message per (target, session), with a post intent before posting."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from watcher.store.postgres.base import PostgresBase, maybe_moment, seconds
from watcher.store.rows import Card


class CardTables(PostgresBase):
    """The cards table; a card's delivered rows are marked in the card's transaction."""

    def card(self, target: str, session_id: str) -> Card | None:
        """The card of `session_id` for `target`, if one was ever posted or intended."""
        row = self._read_one(
            "SELECT channel, ts, marker, posting_since, replaced_ts, replaced_reason,"
            " replaced_url FROM cards WHERE target = %s AND session_id = %s",
            (target, session_id),
        )
        if row is None:
            return None
        return Card(
            target, session_id, row[0], row[1], row[2], maybe_moment(row[3]), row[4], row[5], row[6]
        )

    def intend_card(self, card: Card, now: datetime) -> None:
        """Note, before posting it, that a new card with `card.marker` is about to be posted."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO cards(target, session_id, channel, ts, marker, posting_since,"
                " replaced_ts, replaced_reason, replaced_url, updated_at)"
                " VALUES (%s, %s, %s, NULL, %s, %s, %s, %s, %s, %s)"
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
                "UPDATE cards SET posting_since = NULL, updated_at = %s WHERE target = %s AND"
                " session_id = %s AND ts IS NULL",
                (seconds(now), target, session_id),
            )

    def record_card(
        self, target: str, session_id: str, ts: str, delivered: Sequence[int], now: datetime
    ) -> None:
        """Store the card's `ts` and mark the outbox rows `delivered`, in one transaction."""
        with self._transaction() as db:
            db.execute(
                "UPDATE cards SET ts = %s, posting_since = NULL, updated_at = %s"
                " WHERE target = %s AND session_id = %s",
                (ts, seconds(now), target, session_id),
            )
            db.execute(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1,"
                " finished_at = %s, handle = %s, last_error = NULL, claimed_epoch = NULL"
                " WHERE id = ANY(%s::bigint[]) AND status = 'pending'",
                (seconds(now), ts, list(delivered)),
            )
