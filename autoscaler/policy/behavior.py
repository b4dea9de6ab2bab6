"""Stabilization windows, rate-limit rules and bounds, as the HPA's `behavior` defines them.

Free functions after horizontal.go: stabilize_recommendation, scale_up_limit, scale_down_limit,
limit_rate, clamp. Each returns the new value and, where it matters, a reason and message.
stabilize is stabilize_recommendation that also returns the recommendations with the new one
recorded, which is what evaluate() runs every cycle.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal, NamedTuple

from autoscaler.model import Recommendations, TimedValue, window_extremes

Select = Literal["max", "min", "disabled"]


@dataclass(frozen=True)
class Rule:
    kind: Literal["replicas", "percent"]
    value: int
    period_seconds: float

    def describe(self, direction: str) -> str:
        sign = "+" if direction == "up" else "-"
        unit = "%" if self.kind == "percent" else ""
        return f"{sign}{self.value}{unit} per {self.period_seconds:g}s"


@dataclass(frozen=True)
class Behavior:
    stabilization_seconds: float
    select: Select
    rules: tuple[Rule, ...]


class Limited(NamedTuple):
    """limit_rate's answer; a NamedTuple like the other per-cycle types (cheaper to create
    than a frozen dataclass)."""

    replicas: int
    reason: str
    message: str


_at_seconds = attrgetter("at_seconds")
_value = attrgetter("value")


def stabilize_recommendation(
    recommendations: Sequence[TimedValue],
    desired: int,
    current: int,
    now: float,
    up_window_seconds: float,
    down_window_seconds: float,
) -> int:
    """stabilizeRecommendationWithBehaviors: scale up to the lowest recommendation of the up
    window, down to the highest of the down window, never past `desired` in either direction.

    `recommendations` are the earlier raw recommendations (not including `desired`), oldest
    first. History's Recommendations answer each window in O(1) amortized; any other sequence
    is scanned.
    """
    lowest, highest = window_extremes(recommendations, now - up_window_seconds, now - down_window_seconds)
    return _stabilized(lowest, highest, desired, current)


def stabilize(
    recommendations: Sequence[TimedValue],
    desired: int,
    current: int,
    now: float,
    up_window_seconds: float,
    down_window_seconds: float,
) -> tuple[int, Recommendations]:
    """stabilize_recommendation, and the recommendations with `desired` recorded at `now`: the
    new value and the new history, as the HPA's stabilizeRecommendationWithBehaviors records the
    recommendation it stabilizes. O(1) amortized per cycle (this runs every simulated step)."""
    if not isinstance(recommendations, Recommendations):
        recommendations = Recommendations(recommendations)
    lowest, highest, recorded = recommendations.recorded(
        TimedValue(now, desired), now - up_window_seconds, now - down_window_seconds
    )
    return _stabilized(lowest, highest, desired, current), recorded


def _stabilized(lowest: int | None, highest: int | None, desired: int, current: int) -> int:
    """The count between current and desired that the windows allow; None = an empty window."""
    up_recommendation = desired if lowest is None or lowest > desired else lowest
    down_recommendation = desired if highest is None or highest < desired else highest
    stabilized = current
    if stabilized < up_recommendation:
        stabilized = up_recommendation
    if stabilized > down_recommendation:
        stabilized = down_recommendation
    return stabilized


def _changed_in_period(events: Sequence[TimedValue], now: float, period_seconds: float) -> int:
    if not events:
        return 0
    # Events are oldest first (History keeps them so), so the period is a suffix: bisection
    # finds it without walking every event kept for the longest window.
    return sum(map(_value, events[bisect_right(events, now - period_seconds, key=_at_seconds) :]))


def scale_up_limit(
    current: int,
    up_events: Sequence[TimedValue],
    down_events: Sequence[TimedValue],
    behavior: Behavior,
    now: float,
) -> tuple[int, Rule | None]:
    """calculateScaleUpLimitWithScalingRules: the most replicas the rules allow right now.

    Each rule measures from the count at the start of its period, so changes already made in
    the period use up the allowance. Percent rounds up on the way up.
    """
    if behavior.select == "disabled" or not behavior.rules:
        return current, None
    chosen: tuple[int, Rule] | None = None
    for rule in behavior.rules:
        added = _changed_in_period(up_events, now, rule.period_seconds)
        removed = _changed_in_period(down_events, now, rule.period_seconds)
        period_start = current - added + removed
        if rule.kind == "replicas":
            proposed = period_start + rule.value
        else:
            # Integer ceil: the HPA's float64 form lets 100 * (1 + 10/100) = 110.00000000000001
            # round up to 111, one replica more than the rule allows.
            proposed = -(-period_start * (100 + rule.value) // 100)
        if (
            chosen is None
            or (behavior.select == "max" and proposed > chosen[0])
            or (behavior.select == "min" and proposed < chosen[0])
        ):
            chosen = (proposed, rule)
    assert chosen is not None
    return chosen


def scale_down_limit(
    current: int,
    up_events: Sequence[TimedValue],
    down_events: Sequence[TimedValue],
    behavior: Behavior,
    now: float,
) -> tuple[int, Rule | None]:
    """calculateScaleDownLimitWithBehaviors: the fewest replicas the rules allow right now.

    select "max" means the rule allowing the biggest change (fewest replicas) wins. Percent
    rounds down on the way down (int truncation in the HPA), i.e. it removes the fewer replicas.
    """
    if behavior.select == "disabled" or not behavior.rules:
        return current, None
    chosen: tuple[int, Rule] | None = None
    for rule in behavior.rules:
        added = _changed_in_period(up_events, now, rule.period_seconds)
        removed = _changed_in_period(down_events, now, rule.period_seconds)
        period_start = current - added + removed
        if rule.kind == "replicas":
            proposed = period_start - rule.value
        else:
            # Integer floor: in floats 10 * (1 - 80/100) = 1.9999999999999996 truncates to 1,
            # removing 90% under an 80% rule.
            proposed = period_start * (100 - rule.value) // 100
        if (
            chosen is None
            or (behavior.select == "max" and proposed < chosen[0])
            or (behavior.select == "min" and proposed > chosen[0])
        ):
            chosen = (proposed, rule)
    assert chosen is not None
    return chosen


def limit_rate(
    desired: int,
    current: int,
    min_replicas: int,
    max_replicas: int,
    up: Behavior,
    down: Behavior,
    up_events: Sequence[TimedValue],
    down_events: Sequence[TimedValue],
    now: float,
) -> Limited:
    """convertDesiredReplicasWithBehaviorRate: apply the rate rules, then the bounds."""
    if desired > current:
        limit, rule = scale_up_limit(current, up_events, down_events, up, now)
        limit = max(limit, current)  # up rules never force a scale-down
        if limit < max_replicas:
            if desired > limit:
                why = "scale-up disabled" if up.select == "disabled" else (
                    f"capped at {rule.describe('up')}" if rule else "capped"
                )
                return Limited(limit, "scale_up_limit", why)
        elif desired > max_replicas:
            return Limited(max_replicas, "too_many_replicas", f"capped at max {max_replicas}")
        return Limited(desired, "", "")
    if desired < current:
        limit, rule = scale_down_limit(current, up_events, down_events, down, now)
        limit = min(limit, current)
        if limit > min_replicas:
            if desired < limit:
                why = "scale-down disabled" if down.select == "disabled" else (
                    f"capped at {rule.describe('down')}" if rule else "capped"
                )
                return Limited(limit, "scale_down_limit", why)
        elif desired < min_replicas:
            return Limited(min_replicas, "too_few_replicas", f"raised to min {min_replicas}")
        return Limited(desired, "", "")
    return Limited(desired, "", "")


def clamp(desired: int, min_replicas: int, max_replicas: int) -> int:
    return max(min_replicas, min(desired, max_replicas))
