"""The soak harness's judgement (`bench/soak.py`): metrics text, the line fit, growth, churn."""

from __future__ import annotations

import math
import random

import pytest

from bench.soak import (
    Action,
    Verdict,
    fit_line,
    judge_growth,
    parse_metrics,
    plan_session,
    retention_unknown,
    second_half,
)


@pytest.mark.parametrize(
    ("points", "intercept", "slope"),
    [
        ([(0, 1), (1, 3), (2, 5)], 1.0, 2.0),
        ([(0, 4), (1, 4), (2, 4)], 4.0, 0.0),
        ([(5, 2), (5, 4)], 3.0, 0.0),  # one distinct x: the mean, flat
        ([(0, 0), (1, 2), (2, 1), (3, 3)], 0.3, 0.8),
    ],
)
def test_fit_line_is_least_squares(
    points: list[tuple[float, float]], intercept: float, slope: float
) -> None:
    """The fitted intercept and slope are those of ordinary least squares."""
    found = fit_line(points)
    assert found == pytest.approx((intercept, slope))


@pytest.mark.parametrize(
    ("values", "floor", "verdict", "growth"),
    [
        ([100, 100, 100, 100], 10, Verdict.OK, 0.0),
        ([100, 103, 106, 109], 10, Verdict.OK, 0.09),  # 9% over the half
        ([100, 104, 108, 112], 10, Verdict.MISSED, 0.12),
        ([100, 110, 110, 100], 10, Verdict.OK, 0.0),  # a bump on a flat line
        ([100, 90, 80, 70], 10, Verdict.OK, -0.3),  # shrinking is flat enough
        ([0, 20, 40, 60], 100, Verdict.MISSED, 0.6),  # from zero: against the floor
        ([0, 1, 2, 3], 100, Verdict.OK, 0.03),  # a few rows is not growth
        ([1, 2, math.nan, 4], 1, Verdict.MISSED, 3.0),  # a missed reading is skipped
        ([1, math.nan, 2], 1, Verdict.NOT_MEASURED, math.nan),  # two points are too few
    ],
)
def test_judge_growth_fits_a_line_and_compares_its_rise(
    values: list[float], floor: float, verdict: Verdict, growth: float
) -> None:
    """Growth is the fitted rise over the larger of fitted start and floor; under 10% is ok."""
    judged = judge_growth("figure", [(float(i), v) for i, v in enumerate(values)], floor)
    assert judged.verdict is verdict
    if math.isnan(growth):
        assert math.isnan(judged.growth)
    else:
        assert judged.growth == pytest.approx(growth)


def test_second_half_keeps_the_samples_after_half_the_run() -> None:
    """Warm-up is the first half of the run's time, whatever the sample count."""
    points = [(0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0), (4.0, 5.0)]
    assert second_half(points) == [(2.0, 3.0), (3.0, 4.0), (4.0, 5.0)]
    assert second_half([]) == []


def test_parse_metrics_sums_series_and_keeps_each_one() -> None:
    """Every series is kept by its full name, and summed under its bare name."""
    text = "\n".join(
        [
            "# HELP factory_watcher_polls_total Polls.",
            "# TYPE factory_watcher_polls_total counter",
            'factory_watcher_polls_total{outcome="ok"} 7.0',
            'factory_watcher_polls_total{outcome="not_found"} 2.0',
            "factory_watcher_housekeeping_seconds_sum 0.25",
            "garbage line",
            "",
        ]
    )
    found = parse_metrics(text)
    assert found["factory_watcher_polls_total"] == 9.0
    assert found['factory_watcher_polls_total{outcome="ok"}'] == 7.0
    assert found["factory_watcher_housekeeping_seconds_sum"] == 0.25
    assert "garbage" not in found


@pytest.mark.parametrize("seed", range(20))
def test_every_planned_session_is_created_first_and_deleted_once_at_the_end(seed: int) -> None:
    """A session's plan starts with its creation and ends with its one deletion."""
    plan = plan_session("s-1", 100.0, 120.0, random.Random(seed))
    actions = [p.action for p in plan]
    assert actions[0] is Action.CREATE
    assert actions.count(Action.DELETE) == 1
    assert actions[-1] is Action.DELETE
    assert [p.at for p in plan] == sorted(p.at for p in plan)
    assert plan[-1].at <= 100.0 + 120.0 + 60.0


@pytest.mark.parametrize(
    ("said", "unknown"),
    [
        ("soak.yaml:18: state.forget_sessions_after: unknown key; expected one of: path", True),
        ("soak.yaml:16: state.keep_delivered: unknown key; expected one of: path, record", True),
        ("soak.yaml:16: state.keep_delivered: expected a duration", False),  # a bad value
        ("soak.yaml:3: poll.interval: unknown key; expected one of: x", False),
        ("", False),
    ],
)
def test_retention_unknown_only_for_a_build_without_the_keys(said: str, unknown: bool) -> None:
    """A build without the keys is told apart from a rejected retention value."""
    assert retention_unknown(said) is unknown
