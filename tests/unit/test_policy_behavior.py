"""Stabilization windows and rate-limit rules, pinned against the HPA's horizontal_test.go.

Rows name their source in kubernetes/kubernetes pkg/controller/podautoscaler/horizontal_test.go
(TestNormalizeDesiredReplicas, TestNormalizeDesiredReplicasWithBehavior, TestScalingWithRules,
TestCalculateScaleUpLimitWithScalingRules, TestCalculateScaleDownLimitWithBehaviors) or the
kubernetes.io HPA page ("Configurable scaling behavior"). The Go tests place events relative
to time.Now(); here everything is relative to NOW.
"""

from __future__ import annotations

import random

import pytest

from autoscaler.model import Recommendations, TimedValue
from autoscaler.policy.behavior import (
    Behavior,
    Limited,
    Rule,
    _changed_in_period,
    clamp,
    limit_rate,
    scale_down_limit,
    scale_up_limit,
    stabilize,
    stabilize_recommendation,
)

NOW = 10_000.0
MIN = 60.0


def ago(seconds: float, value: int) -> TimedValue:
    return TimedValue(NOW - seconds, value)


def rules(
    pods: int = 0,
    pods_period: float = 0,
    percent: int = 0,
    percent_period: float = 0,
    window: float = 0,
    select: str = "max",
) -> Behavior:
    """generateScalingRules from horizontal_test.go (select Max unless told)."""
    chosen: list[Rule] = []
    if pods:
        chosen.append(Rule("replicas", pods, pods_period))
    if percent:
        chosen.append(Rule("percent", percent, percent_period))
    return Behavior(window, select, tuple(chosen))  # type: ignore[arg-type]


# The HPA defaults (GenerateHPAScaleUpRules / GenerateHPAScaleDownRules with nil), which are
# also config.DEFAULT_SCALE_UP / DEFAULT_SCALE_DOWN.
DEFAULT_UP = rules(pods=4, pods_period=15, percent=100, percent_period=15)
DEFAULT_DOWN = rules(percent=100, percent_period=15, window=300)


def uniform(values: list[int], period: float) -> tuple[TimedValue, ...]:
    """generateEventsUniformDistribution: events centred in equal slices of the last `period`.

    [1, 5, 9] over 120 s lands at 100 s, 60 s and 20 s ago.
    """
    segment = period / len(values)
    return tuple(ago(period - segment * (i + 1) + segment / 2, v) for i, v in enumerate(values))


# --- stabilization ---------------------------------------------------------------------------

# (recommendations as (seconds ago, value), current, desired, up window, down window, expected)
STABILIZE_CASES = [
    # TestNormalizeDesiredReplicasWithBehavior
    ([], 100, 5, 0, 0, 5),
    ([(2 * MIN, 4), (1 * MIN, 5)], 100, 3, 0, 3 * MIN, 5),
    ([(2 * MIN, 4), (1 * MIN, 5)], 1, 7, 5 * MIN, 0, 4),
    ([(2 * MIN, 1), (1 * MIN, 2)], 100, 3, 5 * MIN, 0, 3),
    ([(2 * MIN, 4), (1 * MIN, 5)], 1, 3, 0, 5 * MIN, 3),
    ([(10 * MIN, 10), (9 * MIN, 9)], 100, 3, 0, 0, 3),
    ([(10 * MIN, 10), (9 * MIN, 9)], 1, 100, 0, 0, 100),
    ([(10 * MIN, 10), (1 * MIN, 4), (2 * MIN, 5), (9 * MIN, 9)], 100, 3, 0, 3 * MIN, 5),
    ([(100 * MIN, 10), (1 * MIN, 6), (2 * MIN, 5), (3 * MIN, 9)], 1, 100, 300, 0, 5),
    # TestNormalizeDesiredReplicas (the pre-behavior 5-minute scale-down window)
    ([(2 * MIN, 4), (1 * MIN, 5)], 10, 3, 0, 5 * MIN, 5),
    ([(2 * MIN, 1), (1 * MIN, 2)], 10, 3, 0, 5 * MIN, 3),
    ([(10 * MIN, 10), (9 * MIN, 9)], 10, 3, 0, 5 * MIN, 3),
    ([(10 * MIN, 10), (1 * MIN, 4), (2 * MIN, 5), (9 * MIN, 9)], 10, 3, 0, 5 * MIN, 5),
    # Our edges: a recommendation exactly one window old has left it (time.After is strict),
    ([(300, 9)], 10, 3, 0, 300, 3),
    ([(299, 9)], 10, 3, 0, 300, 9),
    # ... stabilization never moves past the current count the other way,
    ([(60, 2)], 5, 8, 120, 300, 5),
    # ... and a desired count equal to current stays, whatever the windows hold.
    ([(60, 9), (30, 1)], 5, 5, 300, 300, 5),
]

STABILIZE_IDS = [
    "WithBehavior-empty-recommendations-for-scaling-down",
    "WithBehavior-simple-scale-down-stabilization",
    "WithBehavior-simple-scale-up-stabilization",
    "WithBehavior-no-scale-down-stabilization",
    "WithBehavior-no-scale-up-stabilization",
    "WithBehavior-no-scale-down-stabilization-reuse-element",
    "WithBehavior-no-scale-up-stabilization-reuse-element",
    "WithBehavior-scale-down-stabilization-reuse-obsolete-element",
    "WithBehavior-scale-up-stabilization-reuse-obsolete-element",
    "NormalizeDesiredReplicas-stabilize",
    "NormalizeDesiredReplicas-no-stabilize",
    "NormalizeDesiredReplicas-no-stabilize-old-recommendations",
    "NormalizeDesiredReplicas-stabilize-old-recommendations",
    "window-edge-excluded",
    "window-edge-included",
    "up-window-holds-at-current",
    "desired-equals-current",
]


@pytest.mark.parametrize(
    ("history", "current", "desired", "up_window", "down_window", "expected"),
    STABILIZE_CASES,
    ids=STABILIZE_IDS,
)
def test_stabilize_recommendation(
    history: list[tuple[float, int]],
    current: int,
    desired: int,
    up_window: float,
    down_window: float,
    expected: int,
) -> None:
    # The HPA keeps a ring buffer that it reuses in any order; our History only ever appends,
    # so it is oldest first (stabilize_recommendation relies on that). Same set, in time order.
    recommendations = sorted((ago(seconds, value) for seconds, value in history), key=lambda r: r.at_seconds)
    assert stabilize_recommendation(recommendations, desired, current, NOW, up_window, down_window) == expected


@pytest.mark.parametrize("kind", ["tuple", "recommendations"])
@pytest.mark.parametrize(
    ("history", "current", "desired", "up_window", "down_window", "expected"),
    STABILIZE_CASES,
    ids=STABILIZE_IDS,
)
def test_stabilize_returns_the_value_and_the_recommendations_with_desired_recorded(
    history: list[tuple[float, int]],
    current: int,
    desired: int,
    up_window: float,
    down_window: float,
    expected: int,
    kind: str,
) -> None:
    # What evaluate() runs: the same answer as stabilize_recommendation, read from the
    # Recommendations' stacks, and the recommendations it was given, untouched, plus desired.
    earlier = tuple(sorted((ago(seconds, value) for seconds, value in history), key=lambda r: r.at_seconds))
    given = earlier if kind == "tuple" else Recommendations(earlier)
    stabilized, recorded = stabilize(given, desired, current, NOW, up_window, down_window)
    assert stabilized == expected
    assert recorded == earlier + (TimedValue(NOW, desired),)
    assert given == earlier


# --- the limit of each direction -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6), ids=[f"seed-{seed}" for seed in range(6)])
def test_changes_in_a_period_are_the_sum_of_the_events_inside_it(seed: int) -> None:
    # The period is found by bisection; the plain sum over every event kept is the reference.
    rng = random.Random(seed)
    at = 0.0
    events = []
    for _ in range(rng.randint(0, 60)):
        at += rng.choice([0.0, 1.0, 5.0, 15.0])
        events.append(TimedValue(at, rng.randint(-1, 4)))  # -1: a start taken back
    for now in (at, at + 7.5, at + 15, at + 100):
        for period in (1.0, 15.0, 60.0):
            expected = sum(e.value for e in events if e.at_seconds > now - period)
            assert _changed_in_period(tuple(events), now, period) == expected

# (current, behavior, up events, down events, expected limit, expected rule)
UP_LIMIT_CASES = [
    # TestCalculateScaleUpLimitWithScalingRules: select Min of +2 and +50% (rounded up) -> 2.
    (1, rules(pods=2, pods_period=60, percent=50, percent_period=60, select="min"), (), (), 2, Rule("percent", 50, 60)),
    (1, rules(pods=2, pods_period=60, percent=50, percent_period=60), (), (), 3, Rule("replicas", 2, 60)),
    (10, DEFAULT_UP, (), (), 20, Rule("percent", 100, 15)),
    (2, DEFAULT_UP, (), (), 6, Rule("replicas", 4, 15)),  # 2 + 4 beats 2 * 2
    # Percent is exact in integers: 100 * 1.1 = 110, not the float 110.00000000000001 -> 111.
    (100, rules(percent=10, percent_period=60), (), (), 110, Rule("percent", 10, 60)),
    (50, rules(percent=10, percent_period=60), (), (), 55, Rule("percent", 10, 60)),
    (3, rules(percent=10, percent_period=60), (), (), 4, Rule("percent", 10, 60)),  # 3.3 -> 4
    # Period accounting: replicas added in the period count against it ...
    (100, rules(pods=150, pods_period=120), uniform([1, 5, 9], 120), (), 235, Rule("replicas", 150, 120)),
    # ... only those inside it (the 1 and 5 are 100 s and 60 s old: outside a 60 s period) ...
    (100, rules(pods=150, pods_period=60), uniform([1, 5, 9], 120), (), 241, Rule("replicas", 150, 60)),
    # ... and replicas removed in the period are given back (periodStartReplicas = current -
    # added + deleted in calculateScaleUpLimitWithScalingRules).
    (7, rules(pods=4, pods_period=60), (), (ago(10, 3),), 14, Rule("replicas", 4, 60)),
    (7, rules(pods=4, pods_period=60), (ago(10, 2),), (ago(20, 3),), 12, Rule("replicas", 4, 60)),
    # Disabled: no rule, the current count.
    (5, rules(pods=4, pods_period=60, select="disabled"), (), (), 5, None),
    (5, Behavior(0, "max", ()), (), (), 5, None),
]


@pytest.mark.parametrize(
    ("current", "behavior", "up_events", "down_events", "expected", "rule"),
    UP_LIMIT_CASES,
    ids=[
        "TestCalculateScaleUpLimitWithScalingRules-select-min",
        "select-max",
        "default-doubles-10",
        "default-adds-4-to-2",
        "percent-exact-110",
        "percent-exact-55",
        "percent-rounds-up",
        "TestScalingWithRules-pod-policy-and-previous-scale-up-events",
        "period-excludes-older-events",
        "removed-replicas-given-back",
        "added-and-removed",
        "select-disabled",
        "no-rules",
    ],
)
def test_scale_up_limit(
    current: int,
    behavior: Behavior,
    up_events: tuple[TimedValue, ...],
    down_events: tuple[TimedValue, ...],
    expected: int,
    rule: Rule | None,
) -> None:
    assert scale_up_limit(current, up_events, down_events, behavior, NOW) == (expected, rule)


DOWN_LIMIT_CASES = [
    # TestCalculateScaleDownLimitWithBehaviors: select Min of -2 and -50% (rounded down) -> 3.
    (5, rules(pods=2, pods_period=60, percent=50, percent_period=60, select="min"), (), (), 3, Rule("replicas", 2, 60)),
    (5, rules(pods=2, pods_period=60, percent=50, percent_period=60), (), (), 2, Rule("percent", 50, 60)),
    (10, DEFAULT_DOWN, (), (), 0, Rule("percent", 100, 15)),
    # Percent rounds the remaining count down (removes the fewer replicas: 7.5 -> 7) and is
    # exact in integers: 10 * 0.2 = 2, not the float 1.9999999999999996 -> 1.
    (10, rules(percent=25, percent_period=60), (), (), 7, Rule("percent", 25, 60)),
    (10, rules(percent=80, percent_period=60), (), (), 2, Rule("percent", 80, 60)),
    (25, rules(percent=68, percent_period=60), (), (), 8, Rule("percent", 68, 60)),
    # HPA docs: Pods 4 and Percent 10 per 60 s, select Max: the percent rule only wins above
    # 40 replicas (80 -> 72); at 40 they tie and the first listed is kept; below, -4 wins.
    (80, rules(pods=4, pods_period=60, percent=10, percent_period=60), (), (), 72, Rule("percent", 10, 60)),
    (40, rules(pods=4, pods_period=60, percent=10, percent_period=60), (), (), 36, Rule("replicas", 4, 60)),
    (30, rules(pods=4, pods_period=60, percent=10, percent_period=60), (), (), 26, Rule("replicas", 4, 60)),
    # Period accounting: removed replicas count against the period, added ones are taken off.
    (100, rules(pods=5, pods_period=120), (), uniform([1, 5, 9], 120), 110, Rule("replicas", 5, 120)),
    (100, rules(percent=50, percent_period=120), (), uniform([2, 4, 6], 120), 56, Rule("percent", 50, 120)),
    (10, rules(pods=2, pods_period=60), (ago(10, 3),), (), 5, Rule("replicas", 2, 60)),
    (5, rules(pods=4, pods_period=60, select="disabled"), (), (), 5, None),
]


@pytest.mark.parametrize(
    ("current", "behavior", "up_events", "down_events", "expected", "rule"),
    DOWN_LIMIT_CASES,
    ids=[
        "TestCalculateScaleDownLimitWithBehaviors-select-min",
        "select-max",
        "default-allows-all",
        "percent-rounds-remaining-down",
        "percent-exact-80pct-of-10",
        "percent-exact-68pct-of-25",
        "docs-80-replicas-percent-wins",
        "docs-40-replicas-tie-first-kept",
        "docs-30-replicas-pods-wins",
        "TestScalingWithRules-pod-policy-limitation-and-previous-events",
        "TestScalingWithRules-percent-policy-limitation-and-previous-events",
        "added-replicas-taken-off",
        "select-disabled",
    ],
)
def test_scale_down_limit(
    current: int,
    behavior: Behavior,
    up_events: tuple[TimedValue, ...],
    down_events: tuple[TimedValue, ...],
    expected: int,
    rule: Rule | None,
) -> None:
    assert scale_down_limit(current, up_events, down_events, behavior, NOW) == (expected, rule)


def test_event_exactly_one_period_old_no_longer_counts() -> None:
    # getReplicasChangePerPeriod counts events strictly after now - period.
    behavior = rules(pods=2, pods_period=60)
    assert scale_up_limit(4, (ago(60, 2),), (), behavior, NOW)[0] == 6
    assert scale_up_limit(4, (ago(59.9, 2),), (), behavior, NOW)[0] == 4


# --- limit_rate: convertDesiredReplicasWithBehaviorRate ---------------------------------------

REASONS = {
    "DesiredWithinRange": "",
    "ScaleUpLimit": "scale_up_limit",
    "ScaleDownLimit": "scale_down_limit",
    "TooManyReplicas": "too_many_replicas",
    "TooFewReplicas": "too_few_replicas",
}

# (current, desired, min, max, up rules (None = default), down rules (None = default),
#  up events, down events, expected replicas, expected HPA condition)
RATE_CASES = [
    (5, 7, 3, 8, None, None, (), (), 7, "DesiredWithinRange"),
    (3, 1, 2, 8, None, None, (), (), 2, "TooFewReplicas"),
    (1, 0, 0, 10, None, None, (), (), 0, "DesiredWithinRange"),
    (20, 1000, 1, 10, None, None, (), (), 10, "TooManyReplicas"),
    (100, 1000, 100, 150, None, None, (), (), 150, "TooManyReplicas"),
    (3, 1000, 1, 2000, rules(percent=1, percent_period=60), None, (), (), 4, "ScaleUpLimit"),
    (1000, 3, 3, 2000, None, rules(pods=20, pods_period=60), (), (), 980, "ScaleDownLimit"),
    (10, 50, 1, 1000, None, None, (), (), 20, "ScaleUpLimit"),
    (10, 500, 1, 1000, rules(pods=100, pods_period=60, percent=100, percent_period=60), None, (), (), 110, "ScaleUpLimit"),
    (10, 500, 1, 1000, rules(pods=2, pods_period=60, percent=100, percent_period=60), None, (), (), 20, "ScaleUpLimit"),
    (10, 50, 1, 1000, rules(pods=100, pods_period=60), None, (), (), 50, "DesiredWithinRange"),
    (10, 50, 1, 1000, rules(pods=10000, pods_period=60), None, (), (), 50, "DesiredWithinRange"),
    (10, 50, 1, 1000, rules(pods=30, pods_period=60), None, (), (), 40, "ScaleUpLimit"),
    (10, 50, 1, 1000, rules(percent=200, percent_period=60), None, (), (), 30, "ScaleUpLimit"),
    (100, 2, 1, 1000, None, rules(pods=20, pods_period=60, percent=1, percent_period=60, window=300), (), (), 80, "ScaleDownLimit"),
    (100, 2, 1, 1000, None, rules(pods=2, pods_period=60, percent=1, percent_period=60, window=300), (), (), 98, "ScaleDownLimit"),
    (10, 0, 1, 1000, None, rules(pods=100, pods_period=60, window=300), (), (), 1, "TooFewReplicas"),
    (10, 2, 5, 1000, None, rules(percent=100, percent_period=60, window=300), (), (), 5, "TooFewReplicas"),
    (10, 2, 1, 1000, None, rules(pods=5, pods_period=60, window=300), (), (), 5, "ScaleDownLimit"),
    (10, 5, 1, 1000, None, rules(percent=50, percent_period=60, window=300), (), (), 5, "DesiredWithinRange"),
    (100, 500, 1, 200, rules(pods=300, pods_period=60), None, uniform([1, 5, 9], 120), (), 200, "TooManyReplicas"),
    (100, 500, 1, 200, rules(percent=10000, percent_period=60), None, uniform([1, 5, 9], 120), (), 200, "TooManyReplicas"),
    # 120 s ago there were 85; +5 is below the current 100, and rules never force a scale-down.
    (100, 500, 1, 1000, rules(pods=5, pods_period=120), None, uniform([1, 5, 9], 120), (), 100, "ScaleUpLimit"),
    (100, 500, 1, 1000, rules(pods=150, pods_period=120), None, uniform([1, 5, 9], 120), (), 235, "ScaleUpLimit"),
    (100, 500, 1, 1000, rules(percent=200, percent_period=120), None, uniform([1, 5, 9], 120), (), 255, "ScaleUpLimit"),
    (10, 5, 1, 1000, None, None, (), uniform([1, 5, 9], 120), 5, "DesiredWithinRange"),
    (100, 0, 1, 1000, None, rules(pods=115, pods_period=120, window=300), (), uniform([1, 5, 9], 120), 1, "TooFewReplicas"),
    (100, 0, 5, 1000, None, rules(pods=130, pods_period=120, window=300), (), uniform([1, 5, 9], 120), 5, "TooFewReplicas"),
    (100, 2, 5, 1000, None, rules(percent=100, percent_period=120, window=300), (), uniform([1, 5, 9], 120), 5, "TooFewReplicas"),
    (100, 2, 1, 1000, None, rules(pods=5, pods_period=120, window=300), (), uniform([1, 5, 9], 120), 100, "ScaleDownLimit"),
    (100, 0, 1, 1000, None, rules(percent=50, percent_period=120, window=300), (), uniform([2, 4, 6], 120), 56, "ScaleDownLimit"),
    # (100 + 30) - 10% = 117 > 100: keep the current count rather than grow.
    (100, 0, 1, 1000, None, rules(percent=10, percent_period=120, window=300), (), uniform([10, 10, 10], 120), 100, "ScaleDownLimit"),
    # (10 + 30) - 1000% is far below zero and below 5: the desired 5 stands.
    (10, 5, 1, 1000, None, rules(percent=1000, percent_period=120, window=300), (), uniform([10, 10, 10], 120), 5, "DesiredWithinRange"),
    (100, 200, 1, 1000, rules(pods=1000, pods_period=60), None, uniform([8, 12, 9, 11], 120), (), 200, "DesiredWithinRange"),
    (100, 200, 1, 1000, rules(pods=1000, pods_period=120, percent=100, percent_period=60), None, uniform([8, 12, 9, 11], 120), (), 200, "DesiredWithinRange"),
    (100, 200, 1, 1000, rules(pods=1000, pods_period=30, percent=100, percent_period=60), None, uniform([8, 12, 9, 11], 120), (), 200, "DesiredWithinRange"),
    (100, 5, 1, 1000, None, rules(pods=1000, pods_period=60, window=300), (), uniform([8, 12, 9, 11], 120), 5, "DesiredWithinRange"),
    (100, 5, 1, 1000, None, rules(pods=1000, pods_period=120, percent=100, percent_period=60, window=300), (), uniform([8, 12, 9, 11], 120), 5, "DesiredWithinRange"),
    (100, 5, 1, 1000, None, rules(pods=1000, pods_period=30, percent=100, percent_period=60, window=300), (), uniform([8, 12, 9, 11], 120), 5, "DesiredWithinRange"),
]

RATE_IDS = [
    "prenormalized-desired-replicas-within-range",
    "prenormalized-desired-replicas-lt-minReplicas",
    "within-range-when-minReplicas-is-0",
    "maxReplicas-is-the-limit-because-maxReplicas-lt-scaleUpLimit",
    "desired-replica-count-is-more-than-the-maximum",
    "scaleUpLimit-is-the-limit-with-user-policies",
    "scaleDownLimit-is-the-limit-with-user-policies",
    "scaleUp-with-default-behavior",
    "scaleUp-pods-policy-larger-than-percent-policy",
    "scaleUp-percent-policy-larger-than-pods-policy",
    "scaleUp-MaxReplicas-limitation-large-pod-policy",
    "scaleUp-MaxReplicas-limitation-large-percent-policy",
    "scaleUp-pod-policy-limitation",
    "scaleUp-percent-policy-limitation",
    "scaleDown-percent-policy-larger-than-pod-policy",
    "scaleDown-pod-policy-larger-than-percent-policy",
    "scaleDown-MinReplicas-nil-limitation-large-pod-policy",
    "scaleDown-MinReplicas-limitation-large-percent-policy",
    "scaleDown-pod-policy-limitation",
    "scaleDown-percent-policy-limitation",
    "scaleUp-MaxReplicas-limitation-large-pod-policy-and-events",
    "scaleUp-MaxReplicas-limitation-large-percent-policy-and-events",
    "scaleUp-currentReplicas-limitation-lot-of-recent-scale-up-events",
    "scaleUp-pod-policy-and-previous-scale-up-events",
    "scaleUp-percent-policy-and-previous-scale-up-events",
    "scaleDown-default-policy-and-previous-events",
    "scaleDown-MinReplicas-nil-limitation-large-pod-policy-and-previous-events",
    "scaleDown-MinReplicas-limitation-large-pod-policy-and-previous-events",
    "scaleDown-MinReplicas-limitation-large-percent-policy-and-previous-events",
    "scaleDown-pod-policy-limitation-and-previous-events",
    "scaleDown-percent-policy-limitation-and-previous-events",
    "scaleDown-previous-events-preventing-further-scale-down",
    "scaleDown-previous-events-still-allowing-more-scale-down",
    "outdated-flag-one-behavior-up",
    "not-outdated-two-policies-up",
    "outdated-two-policies-up",
    "outdated-flag-one-behavior-down",
    "not-outdated-two-policies-down",
    "outdated-two-policies-down",
]


@pytest.mark.parametrize(
    ("current", "desired", "low", "high", "up", "down", "up_events", "down_events", "expected", "condition"),
    RATE_CASES,
    ids=[f"TestScalingWithRules-{name}" for name in RATE_IDS],
)
def test_limit_rate_ported_hpa_cases(
    current: int,
    desired: int,
    low: int,
    high: int,
    up: Behavior | None,
    down: Behavior | None,
    up_events: tuple[TimedValue, ...],
    down_events: tuple[TimedValue, ...],
    expected: int,
    condition: str,
) -> None:
    limited = limit_rate(
        desired, current, low, high, up or DEFAULT_UP, down or DEFAULT_DOWN, up_events, down_events, NOW
    )
    assert (limited.replicas, limited.reason) == (expected, REASONS[condition])


@pytest.mark.parametrize(
    ("current", "desired", "high", "up", "down", "expected"),
    [
        (10, 50, 100, DEFAULT_UP, DEFAULT_DOWN, Limited(20, "scale_up_limit", "capped at +100% per 15s")),
        (2, 50, 100, DEFAULT_UP, DEFAULT_DOWN, Limited(6, "scale_up_limit", "capped at +4 per 15s")),
        (10, 2, 100, DEFAULT_UP, rules(pods=1, pods_period=60), Limited(9, "scale_down_limit", "capped at -1 per 60s")),
        (10, 2, 100, DEFAULT_UP, rules(percent=10, percent_period=30), Limited(9, "scale_down_limit", "capped at -10% per 30s")),
        (5, 9, 100, rules(pods=4, pods_period=15, select="disabled"), DEFAULT_DOWN, Limited(5, "scale_up_limit", "scale-up disabled")),
        (5, 2, 100, DEFAULT_UP, rules(pods=4, pods_period=15, select="disabled"), Limited(5, "scale_down_limit", "scale-down disabled")),
        (5, 50, 8, DEFAULT_UP, DEFAULT_DOWN, Limited(8, "too_many_replicas", "capped at max 8")),
        (5, 1, 8, DEFAULT_UP, DEFAULT_DOWN, Limited(2, "too_few_replicas", "raised to min 2")),
        (5, 5, 8, DEFAULT_UP, DEFAULT_DOWN, Limited(5, "", "")),
    ],
    ids=[
        "up-percent-rule-named",
        "up-replicas-rule-named",
        "down-replicas-rule-named",
        "down-percent-rule-named",
        "up-disabled",
        "down-disabled",
        "max-bound",
        "min-bound",
        "no-change",
    ],
)
def test_limit_rate_messages_name_the_rule(
    current: int, desired: int, high: int, up: Behavior, down: Behavior, expected: Limited
) -> None:
    assert limit_rate(desired, current, 2, high, up, down, (), (), NOW) == expected


def test_docs_scale_down_example_across_periods() -> None:
    # HPA docs, "Scaling policies": Pods 4 and Percent 10 per 60 s. From 80 towards 10, the
    # first period removes 8; at 72 "10% of the pods is 7.2 but the number is rounded up to 8".
    down = rules(pods=4, pods_period=60, percent=10, percent_period=60)
    first = limit_rate(10, 80, 1, 100, DEFAULT_UP, down, (), (), NOW)
    assert (first.replicas, first.reason) == (72, "scale_down_limit")
    removed = (TimedValue(NOW, 8),)
    within_period = limit_rate(10, 72, 1, 100, DEFAULT_UP, down, (), removed, NOW + 30)
    assert within_period.replicas == 72  # the period's allowance is used up
    next_period = limit_rate(10, 72, 1, 100, DEFAULT_UP, down, (), removed, NOW + 60)
    assert next_period.replicas == 64


@pytest.mark.parametrize(
    ("desired", "expected"),
    [(0, 2), (2, 2), (5, 5), (8, 8), (9, 8)],
    ids=["below", "at-min", "inside", "at-max", "above"],
)
def test_clamp(desired: int, expected: int) -> None:
    assert clamp(desired, 2, 8) == expected


@pytest.mark.parametrize(
    ("rule", "direction", "text"),
    [
        (Rule("replicas", 4, 15), "up", "+4 per 15s"),
        (Rule("percent", 100, 15), "up", "+100% per 15s"),
        (Rule("percent", 10, 60), "down", "-10% per 60s"),
        (Rule("replicas", 1, 1800), "down", "-1 per 1800s"),
    ],
    ids=["replicas-up", "percent-up", "percent-down", "replicas-down"],
)
def test_rule_describe(rule: Rule, direction: str, text: str) -> None:
    assert rule.describe(direction) == text
