"""Reading API payloads into snapshots, tolerantly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from watcher.core.model import TokenUsage
from watcher.core.snapshot import (
    SnapshotError,
    parse_snapshot,
    snapshot_from_dict,
    snapshot_to_dict,
    to_unix_ms,
)

FULL: dict[str, Any] = {
    "sessionId": "abc",
    "title": "Fix tests",
    "status": "idle",
    "messageCount": 12,
    "createdAt": 1_764_000_000_000,
    "updatedAt": 1_764_000_060_000,
    "completedAt": 1_764_000_050_000,
    "computerId": "cmp-1",
    "sessionSettings": {
        "model": "claude",
        "tokenUsage": {
            "inputTokens": 10,
            "outputTokens": 5,
            "cacheCreationTokens": 1,
            "cacheReadTokens": 2,
            "thinkingTokens": 3,
            "factoryCredits": 0.5,
        },
        "archivedAt": "2026-11-28T12:00:00Z",
        "tags": [{"name": "nightly"}, {"name": "x", "metadata": {"k": "v"}}, {"bad": 1}],
    },
}


def test_full_payload_reads_every_field() -> None:
    """Every documented field lands in the snapshot, timestamps as aware UTC."""
    snapshot = parse_snapshot(FULL)
    assert snapshot.session_id == "abc"
    assert snapshot.status == "idle"
    assert snapshot.message_count == 12
    assert to_unix_ms(snapshot.updated_at) == 1_764_000_060_000
    assert snapshot.completed_at is not None
    assert snapshot.completed_at.tzinfo is not None
    assert snapshot.archived_at == "2026-11-28T12:00:00Z"
    assert snapshot.tags == ("nightly", "x")
    assert snapshot.token_usage == TokenUsage(10, 5, 1, 2, 3, 0.5)


def test_minimal_payload_with_unknown_status_and_extra_fields() -> None:
    """Only required fields, an unknown status and unknown keys are all fine."""
    payload = {
        "sessionId": "a",
        "status": "thinking-hard",
        "messageCount": 0,
        "createdAt": 1,
        "updatedAt": 2,
        "somethingNew": {"x": 1},
        "sessionSettings": {"tokenUsage": {"inputTokens": "many"}, "tags": "oops"},
    }
    snapshot = parse_snapshot(payload)
    assert snapshot.status == "thinking-hard"
    assert snapshot.completed_at is None
    assert snapshot.title == ""
    assert snapshot.tags == ()
    assert snapshot.token_usage == TokenUsage()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "not a JSON object"),
        ({**FULL, "sessionId": None}, "missing required field 'sessionId'"),
        ({**FULL, "status": 3}, "field 'status' has the wrong type"),
        ({**FULL, "messageCount": True}, "field 'messageCount' has the wrong type"),
        ({k: v for k, v in FULL.items() if k != "updatedAt"}, "missing required field 'updatedAt'"),
    ],
)
def test_unreadable_payloads_are_errors(payload: Any, message: str) -> None:
    """A payload without the required, typed fields is a SnapshotError naming the field."""
    with pytest.raises(SnapshotError, match=message):
        parse_snapshot(payload)


@pytest.mark.parametrize("payload", [FULL, {**FULL, "completedAt": None, "sessionSettings": {}}])
def test_store_round_trip(payload: dict[str, Any]) -> None:
    """A snapshot survives serialisation for the store unchanged."""
    snapshot = parse_snapshot(payload)
    assert snapshot_from_dict(snapshot_to_dict(snapshot)) == snapshot


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"updatedAt": -166_036_958_850_935_616}, "updatedAt out of range"),
        ({"completedAt": 4_000_000 * 365 * 86_400_000}, "completedAt out of range"),
        ({"createdAt": 10**400}, "createdAt out of range"),
        ({"createdAt": -1}, "createdAt out of range"),
        ({"updatedAt": float("nan")}, "updatedAt is not a finite number"),
        ({"completedAt": float("inf")}, "completedAt is not a finite number"),
        ({"messageCount": -1}, "messageCount is negative"),
        ({"messageCount": 2**64}, "messageCount out of range"),
        ({"messageCount": 1.5}, "messageCount is not a whole number"),
        ({"messageCount": float("-inf")}, "messageCount is not a finite number"),
    ],
)
def test_values_a_snapshot_cannot_hold_are_errors_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    """Out-of-range, non-finite and negative numbers are SnapshotErrors, never crashes."""
    with pytest.raises(SnapshotError, match=message):
        parse_snapshot({**FULL, **changes})


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        ({"inputTokens": float("nan")}, "tokenUsage.inputTokens is not a finite number"),
        ({"outputTokens": float("inf")}, "tokenUsage.outputTokens is not a finite number"),
        ({"factoryCredits": float("nan")}, "tokenUsage.factoryCredits is not a finite number"),
        ({"thinkingTokens": 10**30}, "tokenUsage.thinkingTokens out of range"),
    ],
)
def test_non_finite_token_counters_are_errors(usage: dict[str, Any], message: str) -> None:
    """NaN would make every poll's snapshot differ from the stored one: it is refused."""
    settings = {**FULL["sessionSettings"], "tokenUsage": {**FULL["sessionSettings"]["tokenUsage"]}}
    settings["tokenUsage"].update(usage)
    with pytest.raises(SnapshotError, match=message):
        parse_snapshot({**FULL, "sessionSettings": settings})


def test_equal_bodies_give_equal_snapshots_that_survive_the_store() -> None:
    """Two parses of one body are equal, and equal to the stored copy (no rewrite per poll)."""
    body = {**FULL, "createdAt": 1_764_000_000_000.4, "messageCount": 12.0}
    first, second = parse_snapshot(body), parse_snapshot(dict(body))
    assert first == second
    assert snapshot_from_dict(snapshot_to_dict(first)) == first
    assert first.message_count == 12
    assert to_unix_ms(first.created_at) == 1_764_000_000_000


def test_lone_surrogates_are_replaced_where_text_enters() -> None:
    """Text that UTF-8 cannot encode is made encodable once, in every text field."""
    body = json.loads(
        '{"sessionId": "s\\ud800", "status": "idle\\udc00", "messageCount": 1,'
        ' "createdAt": 1, "updatedAt": 2, "title": "\\ud800 title \\ud83d\\ude00",'
        ' "computerId": "\\udfff", "sessionSettings": {"archivedAt": "\\ud800",'
        ' "tags": [{"name": "t\\ud800"}]}}'
    )
    snapshot = parse_snapshot(body)
    assert snapshot.title == "\ufffd title \U0001f600"
    assert (snapshot.session_id, snapshot.status) == ("s\ufffd", "idle\ufffd")
    assert (snapshot.computer_id, snapshot.archived_at, snapshot.tags) == (
        "\ufffd",
        "\ufffd",
        ("t\ufffd",),
    )
    json.dumps(snapshot_to_dict(snapshot), ensure_ascii=False).encode("utf-8")


def test_snapshots_stored_before_text_was_made_safe_still_load() -> None:
    """A stored snapshot holding a lone surrogate loads with it replaced."""
    stored = snapshot_to_dict(parse_snapshot(FULL))
    loaded = snapshot_from_dict({**stored, "title": "\ud800 old", "tags": ["\udc00"]})
    assert (loaded.title, loaded.tags) == ("\ufffd old", ("\ufffd",))


def test_rule_fields_are_kept_and_survive_the_store() -> None:
    """Model, interaction mode, autonomy, active time and the token total reach the snapshot."""
    payload = {
        **FULL,
        "sessionSettings": {
            **FULL["sessionSettings"],
            "interactionMode": "spec",
            "autonomyLevel": "high",
            "assistantActiveTimeMs": 4200,
        },
    }
    snapshot = parse_snapshot(payload)
    assert (snapshot.model, snapshot.interaction_mode, snapshot.autonomy_level) == (
        "claude",
        "spec",
        "high",
    )
    assert snapshot.assistant_active_ms == 4200
    assert snapshot.token_usage is not None
    assert snapshot.token_usage.total_tokens == 21
    assert snapshot_from_dict(snapshot_to_dict(snapshot)) == snapshot


def test_rule_fields_of_the_wrong_type_are_absent() -> None:
    """A non-string model or a non-number active time reads as unknown, not as an error."""
    payload = {**FULL, "sessionSettings": {"model": 3, "assistantActiveTimeMs": "x"}}
    snapshot = parse_snapshot(payload)
    assert snapshot.model is None
    assert snapshot.assistant_active_ms is None
