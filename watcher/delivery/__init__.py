"""Delivery: sends pending outbox rows to their targets; owns retries, backoff and dead letters.

One lane per target, each in the worker's task group, so a failing or slow
target never delays another. Within a lane, only the oldest pending row of
each session is eligible, so one session's notifications reach a target in
the order the transitions happened. Those eligible rows belong to different
sessions, so a webhook target without pacing gets them concurrently (a burst
of a thousand drains in round trips of `BATCH`, not one by one); Slack
targets, and paced ones, get them one at a time.

The parts, in the order a row meets them:
- `worker`: `DeliveryWorker`, its lifecycle and the one dispatch per row;
- `lanes`: a lane per target (waking, serving in turn or together, holding);
- `pacing`: how far apart sends to one destination go;
- `cards`: the live Slack card protocol;
- `outcomes`: delivered / retry / dead, decided and recorded in one place;
- `hooks`: what the worker is handed (rendering, enrichment, the store runner).
"""

from __future__ import annotations

from watcher.delivery.cards import CARD_BACKLOG, CARD_LOOKUP_MARGIN, CardNotifier, keeps_card
from watcher.delivery.hooks import Enrich, Render, StoreCall, render_builtin
from watcher.delivery.lanes import BATCH, IDLE_WAKE, LANE_PAUSE, Dispatched
from watcher.delivery.outcomes import DeliveryStats
from watcher.delivery.pacing import Pacer, pacing_key, sends_together
from watcher.delivery.worker import DeliveryWorker

__all__ = [
    "BATCH",
    "CARD_BACKLOG",
    "CARD_LOOKUP_MARGIN",
    "IDLE_WAKE",
    "LANE_PAUSE",
    "CardNotifier",
    "DeliveryStats",
    "DeliveryWorker",
    "Dispatched",
    "Enrich",
    "Pacer",
    "Render",
    "StoreCall",
    "keeps_card",
    "pacing_key",
    "render_builtin",
    "sends_together",
]
