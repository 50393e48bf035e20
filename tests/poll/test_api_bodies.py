"""Every body the API can send is a snapshot or a one-line failure: property tests.

Bodies come from the published OpenAPI schema of `GET /api/v0/sessions/{id}`
(tests/data/get-session.schema.json, copied from the Factory API reference),
then get mutated: wrong types, missing fields, huge, negative and non-finite
numbers, lone surrogates, deep nesting, non-object JSON, bytes that are not
JSON at all.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from watcher.core.diff import diff_states
from watcher.core.model import SessionRef, Snapshot
from watcher.core.poll import Fetched, FetchFailed, FetchFailureKind, FetchResult, NotFound
from watcher.core.render import render_for
from watcher.core.settings import TargetKind
from watcher.core.snapshot import MAX_COUNT, MAX_MS, MIN_MS, SnapshotError, parse_snapshot
from watcher.poll.api import classify_body, classify_response
from watcher.store import state_from_json, state_to_json

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "get-session.schema.json").read_text())
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
RAW = "__raw_fragment__"

# Modest, deterministic and free of timing: the same examples on every run.
PROPERTY = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

schema_bodies = from_schema(SCHEMA)

lone_surrogates = st.text(
    alphabet=st.one_of(st.characters(categories=["Cs"]), st.characters(codec="utf-8")),
    min_size=1,
    max_size=8,
).filter(lambda text: any(0xD800 <= ord(c) <= 0xDFFF for c in text))

hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from(
        [
            -166_036_958_850_935_616,
            4_000_000 * 365 * 86_400_000,  # the year 4,000,000
            2**63,
            10**400,
            -1,
            MAX_MS + 1,
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    lone_surrogates,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)

# JSON text that Python's json module reads in surprising ways, or refuses.
raw_fragments = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "-1e999",
            "9" * 5000,  # longer than int() converts: json raises ValueError
            '"\\ud800"',
            '"\\udfff\\ud800 \\ud83d"',
            '"\\u0000"',
            "1.5",
        ]
    ),
    st.integers(min_value=1, max_value=200_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(min_value=1, max_value=200_000).map(
        lambda depth: '{"a":' * depth + "1" + "}" * depth
    ),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (the root included)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(paths(item, (*prefix, index)))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of `value` with the item at `path` replaced by `new`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = replaced(copy[head], rest, new)
    return copy


def removed(value: Any, path: tuple[Any, ...]) -> Any:
    """A copy of `value` without the dict key at `path` (other paths are left alone)."""
    parent, key = path[:-1], path[-1]
    holder = value
    for step in parent:
        holder = holder[step]
    if not isinstance(holder, dict):
        return value
    return replaced(value, parent, {k: v for k, v in holder.items() if k != key})


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    """A schema-valid body with one or more hostile edits, as the bytes a server sends."""
    body: Any = draw(schema_bodies)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths(body)))
        action = draw(st.sampled_from(["replace", "remove", "raw"]))
        if action == "remove" and path:
            body = removed(body, path)
        elif action == "raw":
            body = replaced(body, path, RAW)
        else:
            body = replaced(body, path, draw(hostile_values))
    text = json.dumps(body, allow_nan=True)
    if RAW in text:
        text = text.replace(json.dumps(RAW), draw(raw_fragments))
    return text.encode("utf-8")


any_bytes = st.one_of(
    mutated_bodies(),
    raw_fragments.map(str.encode),  # non-object JSON and broken JSON at the top
    st.binary(max_size=64),
    st.sampled_from([b"", b"[]", b"null", b'"x"', b"1", b"true", b"\xff\xfe{}", b"\x00"]),
)


def assert_usable(result: FetchResult) -> None:
    """A snapshot that every later step can hold, store and render, or a one-line failure."""
    if isinstance(result, FetchFailed):
        assert result.reason
        assert "\n" not in result.reason
        result.reason.encode("utf-8")
        return
    if isinstance(result, NotFound):
        return
    assert isinstance(result, Fetched)
    snapshot = result.snapshot
    for text in (snapshot.session_id, snapshot.status, snapshot.title, *snapshot.tags):
        text.encode("utf-8")
    assert snapshot.message_count >= 0
    if snapshot.token_usage is not None:
        for number in (
            snapshot.token_usage.input_tokens,
            snapshot.token_usage.output_tokens,
            snapshot.token_usage.factory_credits or 0,
        ):
            assert math.isfinite(number)
    # Equal snapshots compare equal: no NaN can make the stored state differ from a poll.
    assert snapshot == Snapshot(**{f: getattr(snapshot, f) for f in Snapshot.__slots__})
    stored = state_to_json(snapshot)
    stored.encode("utf-8")
    assert state_from_json(snapshot.session_id, stored) == snapshot
    for event in diff_states(None, snapshot, SessionRef(id=snapshot.session_id), NOW):
        for kind in TargetKind:
            render_for(kind, event, "rule")


def expected_problems(body: dict[str, Any]) -> list[str]:
    """What a schema-valid body may still carry that no snapshot can hold."""
    problems = [
        f"{key} out of range"
        for key in ("createdAt", "updatedAt", "completedAt")
        if key in body and not MIN_MS <= body[key] <= MAX_MS
    ]
    if body["messageCount"] < 0:
        problems.append("messageCount is negative")
    if body["messageCount"] > MAX_COUNT:
        problems.append("messageCount out of range")
    usage = body.get("sessionSettings", {}).get("tokenUsage", {})
    problems.extend(
        f"tokenUsage.{key} out of range" for key, value in usage.items() if abs(value) > MAX_COUNT
    )
    return problems


@PROPERTY
@given(schema_bodies)
def test_schema_bodies_are_snapshots_or_name_the_field(body: dict[str, Any]) -> None:
    """A body the schema allows is a snapshot, unless a timestamp is out of range."""
    result = classify_body(200, {}, json.dumps(body).encode(), NOW)
    assert_usable(result)
    problems = expected_problems(body)
    if problems:
        assert isinstance(result, FetchFailed)
        assert any(problem in result.reason for problem in problems), result.reason
    else:
        assert isinstance(result, Fetched)
        assert result.snapshot == parse_snapshot(body)


@PROPERTY
@given(mutated_bodies())
def test_mutated_bodies_never_raise(body: bytes) -> None:
    """Hostile edits of a valid body give a usable snapshot or a failure with a reason."""
    assert_usable(classify_body(200, {}, body, NOW))


@PROPERTY
@given(any_bytes, st.sampled_from([200, 401, 403, 404, 429, 500, 503]))
def test_any_bytes_with_any_status_never_raise(body: bytes, status: int) -> None:
    """Whatever the bytes and the status, classification returns a result."""
    response = httpx.Response(status, content=body, headers={"Retry-After": b"\xb2"})
    assert_usable(classify_response(response, NOW))


@PROPERTY
@given(st.data())
def test_parse_snapshot_raises_only_snapshot_error(data: st.DataObject) -> None:
    """Decoded documents of any shape: a snapshot, or a SnapshotError naming the problem."""
    body = data.draw(st.one_of(schema_bodies, hostile_values))
    if isinstance(body, dict):
        for _ in range(data.draw(st.integers(0, 3))):
            path = data.draw(st.sampled_from(paths(body)))
            body = replaced(body, path, data.draw(hostile_values))
    try:
        result: FetchResult = Fetched(parse_snapshot(body))
    except SnapshotError as error:  # the only exception parsing may raise
        result = FetchFailed(FetchFailureKind.RETRYABLE, str(error))
    assert_usable(result)
