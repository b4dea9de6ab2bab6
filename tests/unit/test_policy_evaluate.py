"""evaluate(): snapshot + policy + bounds + history + now -> Decision and the next History.

Multi-cycle scenarios feed each decision back the way the control loop does: the next
snapshot has `desired` replicas and record_scale remembers the change for the rate rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest

from autoscaler.config import PolicyConfig, ScalingBehavior, ScalingRule, StepRule
from autoscaler.model import (
    Bounds,
    Decision,
    Direction,
    History,
    Metric,
    MetricProposal,
    ReplicaSample,
    ServiceSnapshot,
    TimedValue,
)
from autoscaler.policy import evaluate as evaluate_module
from autoscaler.policy.behavior import Behavior, Rule
from autoscaler.policy.evaluate import behavior_of, evaluate, plan_of, record_scale, seed_history
from autoscaler.policy.target import Tolerance

OLD = 3600.0
BOUNDS = Bounds(1, 10)
NO_DOWN_WINDOW = ScalingBehavior(stabilization_seconds=0)


def snap(
    cpu: Sequence[float | None] | None = None,
    memory: Sequence[float | None] | None = None,
    *,
    error: str | None = None,
    queue: float | None = None,
) -> ServiceSnapshot:
    count = len(cpu if cpu is not None else memory or ())
    replicas = tuple(
        ReplicaSample(
            name=f"web-{i}",
            ready=True,
            age_seconds=OLD,
            cpu_percent=cpu[i] if cpu is not None else None,
            memory_percent=memory[i] if memory is not None else None,
        )
        for i in range(count)
    )
    return ServiceSnapshot("web", replicas, queue_current=queue, metrics_error=error)


def flat(count: int, cpu: float | None = None, memory: float | None = None, **kw: object) -> ServiceSnapshot:
    return snap([cpu] * count, [memory] * count if memory is not None else None, **kw)  # type: ignore[arg-type]


def cpu_policy(target: float = 50, **kw: object) -> PolicyConfig:
    return PolicyConfig(target_cpu_percent=target, **kw)  # type: ignore[arg-type]


# --- bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snapshot", "bounds", "desired", "reason", "message"),
    [
        (flat(5, cpu=100), Bounds(1, 3), 3, "above_max", "5 replicas > max 3 -> 5 -> 3"),
        (flat(1, cpu=10), Bounds(2, 6), 2, "below_min", "1 replicas < min 2 -> 1 -> 2"),
        (flat(5, error="stats timed out"), Bounds(1, 3), 3, "above_max", "5 replicas > max 3 -> 5 -> 3"),
        (flat(1, error="stats timed out"), Bounds(2, 6), 2, "below_min", "1 replicas < min 2 -> 1 -> 2"),
        (flat(1, cpu=50), Bounds(3, 6, "schedule peak"), 3, "below_min", "1 replicas < min 3 (schedule peak) -> 1 -> 3"),
        (flat(6, cpu=50), Bounds(1, 2, "schedule night"), 2, "above_max", "6 replicas > max 2 (schedule night) -> 6 -> 2"),
    ],
    ids=[
        "above-max-despite-scale-up-wish",
        "below-min-despite-scale-down-wish",
        "above-max-with-metrics-down",
        "below-min-with-metrics-down",
        "schedule-min-named",
        "schedule-max-named",
    ],
)
def test_out_of_bounds_is_corrected_before_anything_else(
    snapshot: ServiceSnapshot, bounds: Bounds, desired: int, reason: str, message: str
) -> None:
    # reconcileAutoscaler does the same: current > max -> max, current < min -> min, no
    # metrics involved, no rate rules.
    history = History(consecutive_failures=2)
    decision, new_history = evaluate(snapshot, cpu_policy(), bounds, history, 100.0)
    assert (decision.desired, decision.reason, decision.message) == (desired, reason, message)
    assert decision.proposals == ()
    assert decision.recommendation is None
    assert new_history == history  # nothing recorded, the failure count untouched


# --- several metrics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "snapshot", "desired", "reason", "message"),
    [
        (
            PolicyConfig(target_cpu_percent=60, target_memory_percent=60),
            flat(4, cpu=90, memory=30),
            6,
            "scale_up",
            "cpu 90% > target 60% -> 4 -> 6",
        ),
        (
            PolicyConfig(target_cpu_percent=60, target_memory_percent=60),
            flat(4, cpu=30, memory=90),
            6,
            "scale_up",
            "memory 90% > target 60% -> 4 -> 6",
        ),
        (
            PolicyConfig(target_cpu_percent=60, target_memory_percent=60, scale_down=NO_DOWN_WINDOW),
            flat(4, cpu=30, memory=45),
            3,
            "scale_down",
            "memory 45% < target 60% -> 4 -> 3",
        ),
        (
            PolicyConfig(target_cpu_percent=60, target_memory_percent=60, scale_down=NO_DOWN_WINDOW),
            flat(4, cpu=30, memory=63),
            4,
            "within_tolerance",
            "memory 63% > target 60%: within tolerance -> 4 -> 4",
        ),
    ],
    ids=["cpu-up-beats-memory-down", "memory-up-beats-cpu-down", "smaller-scale-down-wins", "hold-beats-down"],
)
def test_the_largest_proposal_wins(
    policy: PolicyConfig, snapshot: ServiceSnapshot, desired: int, reason: str, message: str
) -> None:
    # The HPA takes the largest replica count any metric asks for (computeReplicasForMetrics).
    decision, _ = evaluate(snapshot, policy, BOUNDS, History(), 0.0)
    assert (decision.desired, decision.reason, decision.message) == (desired, reason, message)
    assert [p.metric for p in decision.proposals] == ["cpu", "memory"]
    assert decision.recommendation == desired


def test_requests_per_second_target_joins_the_vote() -> None:
    policy = PolicyConfig(target_cpu_percent=60, target_requests_per_second_per_replica=100)
    replicas = tuple(
        ReplicaSample(f"web-{i}", True, OLD, cpu_percent=30, requests_per_second=150) for i in range(4)
    )
    decision, _ = evaluate(ServiceSnapshot("web", replicas), policy, BOUNDS, History(), 0.0)
    assert (decision.desired, decision.direction) == (6, Direction.UP)
    assert decision.message.startswith("requests_per_second 150 rps > target 100 rps")


# --- one metric missing -----------------------------------------------------------------------

# Something to lose: an old recommendation, an old scale-up, and a failure streak.
BEFORE_PARTIAL = History(
    recommendations=(TimedValue(-10.0, 5),),
    scale_up_events=(TimedValue(-20.0, 1),),
    consecutive_failures=3,
)


@pytest.mark.parametrize(
    ("policy", "snapshot", "desired", "reason", "fragment", "recorded"),
    [
        # TestNoScaleDownOneMetricInvalid: cpu alone would go 5 -> 3.
        (
            PolicyConfig(target_cpu_percent=50, target_memory_percent=50, scale_down=NO_DOWN_WINDOW),
            snap([10, 30, 50, 25, 25], [None] * 5),
            5,
            "missing_metrics_hold",
            "not scaling down while memory has no reading -> 5 -> 5",
            (),
        ),
        # ... the same with the roles swapped.
        (
            PolicyConfig(target_cpu_percent=50, target_memory_percent=50, scale_down=NO_DOWN_WINDOW),
            snap([None] * 5, [10, 30, 50, 25, 25]),
            5,
            "missing_metrics_hold",
            "not scaling down while cpu has no reading",
            (),
        ),
        # TestScaleUpOneMetricEmpty: a scale-up goes ahead without the missing metric.
        (
            PolicyConfig(target_cpu_percent=30, target_memory_percent=50),
            snap([30, 40, 50], [None] * 3),
            4,
            "scale_up",
            "cpu 40% > target 30% -> 3 -> 4",
            (TimedValue(0.0, 4),),
        ),
        # Step scaling: the queue has no value, cpu's band says -50%.
        (
            PolicyConfig(
                strategy="step",
                steps=[StepRule(metric="cpu", upper=20, adjustment="-50%"), StepRule(metric="queue", lower=9, adjustment="+1")],
            ),
            flat(4, cpu=10),
            4,
            "missing_metrics_hold",
            "cpu 10%: step cpu < 20 -> -50%; not scaling down while queue has no reading -> 4 -> 4",
            (),
        ),
    ],
    ids=["TestNoScaleDownOneMetricInvalid", "cpu-missing-memory-says-down", "TestScaleUpOneMetricEmpty", "step-queue-missing"],
)
def test_one_metric_missing(
    policy: PolicyConfig,
    snapshot: ServiceSnapshot,
    desired: int,
    reason: str,
    fragment: str,
    recorded: tuple[TimedValue, ...],
) -> None:
    decision, history = evaluate(snapshot, policy, BOUNDS, BEFORE_PARTIAL, 0.0)
    assert (decision.desired, decision.reason) == (desired, reason)
    assert fragment in decision.message
    assert decision.recommendation == desired
    # Part of the metrics answered: this is not a failed cycle.
    assert history.consecutive_failures == 0
    # A hold on a partial view is the HPA's error return from computeReplicasForMetrics: no
    # recommendation is stored, so the blind cycle cannot keep the count up through the window.
    assert history.recommendations == BEFORE_PARTIAL.recommendations + recorded
    assert (history.scale_up_events, history.scale_down_events) == (BEFORE_PARTIAL.scale_up_events, ())


def test_missing_metric_holds_do_not_extend_the_down_window() -> None:
    # A 60 s down window. At t=0 both metrics sit on target (5 recorded); from t=15 to t=45
    # memory has no reading and cpu says 3: held at 5, nothing recorded. At t=61 both answer
    # and say 3: the 5 of t=0 has left the window, so 5 -> 3. Had the holds recorded their 5,
    # the one of t=45 would keep 5 until t=105.
    policy = PolicyConfig(
        target_cpu_percent=50, target_memory_percent=50, scale_down=ScalingBehavior(stabilization_seconds=60)
    )
    history = History()
    decision, history = evaluate(flat(5, cpu=50, memory=50), policy, BOUNDS, history, 0.0)
    assert (decision.desired, decision.reason) == (5, "within_tolerance")
    for now in (15.0, 30.0, 45.0):
        decision, history = evaluate(snap([30] * 5, [None] * 5), policy, BOUNDS, history, now)
        assert (decision.desired, decision.reason) == (5, "missing_metrics_hold")
    assert history.recommendations == (TimedValue(0.0, 5),)
    decision, history = evaluate(flat(5, cpu=30, memory=30), policy, BOUNDS, history, 61.0)
    assert (decision.desired, decision.reason) == (3, "scale_down")


# --- metrics failing for the whole service ----------------------------------------------------


@pytest.mark.parametrize(
    ("failures_before", "threshold", "fallback", "fragment"),
    [
        (0, 3, None, "metrics failed 1 cycles in a row (stats timed out): holding 4"),
        (1, 3, 2, "holding 4"),
        (7, 3, None, "metrics failed 8 cycles in a row"),
    ],
    ids=["first-failure-holds", "below-threshold-never-scales-down", "no-fallback-holds-forever"],
)
def test_failed_cycles_before_the_fallback_hold_and_record_nothing(
    failures_before: int, threshold: int, fallback: int | None, fragment: str
) -> None:
    policy = cpu_policy(failure_threshold=threshold, fallback_replicas=fallback)
    history = History(
        recommendations=(TimedValue(90.0, 9),),
        scale_down_events=(TimedValue(95.0, 1),),
        consecutive_failures=failures_before,
    )
    decision, new_history = evaluate(flat(4, error="stats timed out"), policy, BOUNDS, history, 100.0)
    assert (decision.desired, decision.reason) == (4, "metrics_unavailable")
    assert fragment in decision.message
    assert decision.proposals == ()
    assert decision.recommendation is None
    # The HPA's error return: no recommendation for the stabilization window, only the streak.
    assert new_history == history._replace(consecutive_failures=failures_before + 1)


@dataclass(frozen=True)
class Fallback:
    current: int
    fallback: int
    desired: int
    reason: str
    fragment: str
    failures_before: int = 2
    threshold: int = 3
    recommendations: tuple[TimedValue, ...] = ()
    bounds: Bounds = BOUNDS
    scale_up: ScalingBehavior | None = None
    scale_down: ScalingBehavior | None = None
    recommended: int | None = None  # what is recorded; None = the fallback itself


FALLBACKS = {
    "threshold-reached-fallback-up": Fallback(
        4, 6, 6, "fallback", "metrics failed 3 cycles in a row (stats timed out): fallback -> 4 -> 6"
    ),
    # The fallback is a fixed count, as KEDA's default "static" fallback: it can shrink too,
    # once the down window holds nothing higher.
    "fallback-down-empty-window": Fallback(4, 2, 2, "fallback", "fallback -> 4 -> 2"),
    "fallback-down-old-window": Fallback(
        4, 2, 2, "fallback", "fallback -> 4 -> 2", recommendations=(TimedValue(-200.0, 9),)
    ),
    # ... but not past the highest recommendation of the last 300 s (the 9 of t=90).
    "fallback-down-held-by-window": Fallback(
        4, 2, 4, "scale_down_stabilized",
        "(stats timed out): fallback to 2 held back -> 4 -> 4 (wanted 2, highest recommendation of the last 300s is 4)",
        recommendations=(TimedValue(90.0, 9),),
    ),
    "fallback-down-rate-limited": Fallback(
        8, 2, 7, "scale_down_limit", "fallback to 2 held back -> 8 -> 7 (wanted 2, capped at -1 per 60s)",
        scale_down=ScalingBehavior(
            stabilization_seconds=0, rules=[ScalingRule(type="replicas", value=1, period_seconds=60)]
        ),
    ),
    # Default up rules: +4 or +100% per 15 s, the larger wins: 2 + 4 = 6.
    "fallback-up-rate-limited": Fallback(
        2, 9, 6, "scale_up_limit", "fallback to 9 held back -> 2 -> 6 (wanted 9, capped at +4 per 15s)"
    ),
    "fallback-up-held-by-up-window": Fallback(
        2, 6, 2, "scale_up_stabilized",
        "fallback to 6 held back -> 2 -> 2 (wanted 6, lowest recommendation of the last 60s is 2)",
        recommendations=(TimedValue(90.0, 2),),
        scale_up=ScalingBehavior(stabilization_seconds=60),
    ),
    "fallback-is-current": Fallback(4, 4, 4, "fallback", "fallback -> 4 -> 4"),
    "past-threshold-stays-on-fallback": Fallback(4, 6, 6, "fallback", "metrics failed 6 cycles in a row", failures_before=5),
    "threshold-one": Fallback(4, 6, 6, "fallback", "metrics failed 1 cycles in a row", failures_before=0, threshold=1),
    # A schedule window can lower the max below the configured fallback: the fallback is brought
    # into the bounds first, and that is what is recommended and recorded.
    "fallback-clamped-to-bounds": Fallback(
        4, 9, 6, "fallback", "fallback -> 4 -> 6", bounds=Bounds(1, 6, "schedule night"), recommended=6
    ),
    "fallback-raised-to-min": Fallback(
        4, 1, 3, "fallback", "fallback -> 4 -> 3", bounds=Bounds(3, 6, "schedule peak"), recommended=3
    ),
}


@pytest.mark.parametrize("name", list(FALLBACKS), ids=list(FALLBACKS))
def test_the_fallback_is_a_recommendation_like_any_other(name: str) -> None:
    case = FALLBACKS[name]
    policy = cpu_policy(
        failure_threshold=case.threshold,
        fallback_replicas=case.fallback,
        **({"scale_up": case.scale_up} if case.scale_up else {}),
        **({"scale_down": case.scale_down} if case.scale_down else {}),
    )
    history = History(recommendations=case.recommendations, consecutive_failures=case.failures_before)
    decision, new_history = evaluate(flat(case.current, error="stats timed out"), policy, case.bounds, history, 100.0)
    assert (decision.desired, decision.reason) == (case.desired, case.reason)
    assert case.fragment in decision.message
    assert decision.proposals == ()
    recommended = case.fallback if case.recommended is None else case.recommended
    assert decision.recommendation == recommended
    # Still a failed cycle, but the fallback is this cycle's recommendation: it is recorded for
    # the stabilization windows, as a metric's would be.
    assert new_history.consecutive_failures == case.failures_before + 1
    assert new_history.recommendations == case.recommendations + (TimedValue(100.0, recommended),)


def test_no_reading_from_any_replica_counts_as_a_failed_cycle() -> None:
    decision, history = evaluate(flat(4, cpu=None), cpu_policy(), BOUNDS, History(), 0.0)
    assert (decision.desired, decision.reason) == (4, "metrics_unavailable")
    assert "cpu: no reading from a ready replica" in decision.message
    assert [p.proposal for p in decision.proposals] == [None]
    assert history.consecutive_failures == 1


def test_a_good_cycle_resets_the_failure_count() -> None:
    decision, history = evaluate(flat(4, cpu=50), cpu_policy(), BOUNDS, History(consecutive_failures=5), 0.0)
    assert (decision.desired, decision.reason) == (4, "within_tolerance")
    assert history.consecutive_failures == 0


# --- rate limits and bounds after the metrics ---------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "bounds", "snapshot", "desired", "reason", "fragment"),
    [
        (
            cpu_policy(scale_up=ScalingBehavior(rules=[ScalingRule(type="replicas", value=1, period_seconds=60)])),
            BOUNDS,
            flat(2, cpu=200),
            3,
            "scale_up_limit",
            "-> 2 -> 3 (wanted 8, capped at +1 per 60s)",
        ),
        (
            cpu_policy(scale_up=ScalingBehavior(rules=[ScalingRule(type="percent", value=50, period_seconds=30)])),
            BOUNDS,
            flat(4, cpu=200),
            6,
            "scale_up_limit",
            "(wanted 16, capped at +50% per 30s)",
        ),
        (
            cpu_policy(scale_up=ScalingBehavior(select="disabled")),
            BOUNDS,
            flat(4, cpu=200),
            4,
            "scale_up_limit",
            "(wanted 16, scale-up disabled)",
        ),
        (
            cpu_policy(
                scale_down=ScalingBehavior(
                    stabilization_seconds=0, rules=[ScalingRule(type="replicas", value=1, period_seconds=60)]
                )
            ),
            BOUNDS,
            flat(4, cpu=10),
            3,
            "scale_down_limit",
            "(wanted 1, capped at -1 per 60s)",
        ),
        (
            cpu_policy(scale_down=ScalingBehavior(stabilization_seconds=0, select="disabled")),
            BOUNDS,
            flat(4, cpu=10),
            4,
            "scale_down_limit",
            "(wanted 1, scale-down disabled)",
        ),
        (
            cpu_policy(),
            Bounds(1, 5, "schedule peak"),
            flat(4, cpu=200),
            5,
            "too_many_replicas",
            "(wanted 16, capped at max 5 (schedule peak))",
        ),
        (
            cpu_policy(scale_down=NO_DOWN_WINDOW),
            Bounds(3, 10),
            flat(4, cpu=10),
            3,
            "too_few_replicas",
            "(wanted 1, raised to min 3)",
        ),
    ],
    ids=[
        "up-replicas-rule",
        "up-percent-rule",
        "up-disabled",
        "down-replicas-rule",
        "down-disabled",
        "schedule-max",
        "min",
    ],
)
def test_a_limited_decision_names_the_rule(
    policy: PolicyConfig, bounds: Bounds, snapshot: ServiceSnapshot, desired: int, reason: str, fragment: str
) -> None:
    decision, _ = evaluate(snapshot, policy, bounds, History(), 0.0)
    assert (decision.desired, decision.reason) == (desired, reason)
    assert fragment in decision.message


# --- several cycles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    now: float
    cpu: float | None  # None: the metrics source fails as a whole this cycle
    desired: int
    reason: str
    fragment: str = ""


def run(
    policy: PolicyConfig, bounds: Bounds, start: int, cycles: Sequence[Cycle], history: History = History()
) -> list[Decision]:
    """Play cycles as the control loop would: apply each decision and record the change."""
    current, decisions = start, []
    for cycle in cycles:
        snapshot = flat(current, cpu=cycle.cpu) if cycle.cpu is not None else flat(current, error="stats timed out")
        decision, history = evaluate(snapshot, policy, bounds, history, cycle.now)
        assert (cycle.now, decision.desired, decision.reason) == (cycle.now, cycle.desired, cycle.reason)
        assert cycle.fragment in decision.message
        history = record_scale(history, cycle.now, current, decision.desired)
        current = decision.desired
        decisions.append(decision)
    return decisions


SCENARIOS = {
    # Default behavior: up at once (0 s window), down only to the highest recommendation of
    # the last 300 s. The 8 recommended at t=15 leaves the window at exactly t=315.
    "up-at-once-down-after-300s": (
        cpu_policy(),
        BOUNDS,
        2,
        [
            Cycle(0, 100, 4, "scale_up", "cpu 100% > target 50% -> 2 -> 4"),
            Cycle(15, 100, 8, "scale_up"),
            Cycle(30, 20, 8, "scale_down_stabilized", "(wanted 4, highest recommendation of the last 300s is 8)"),
            Cycle(60, 20, 8, "scale_down_stabilized"),
            Cycle(314, 20, 8, "scale_down_stabilized"),
            Cycle(315, 20, 4, "scale_down", "-> 8 -> 4"),
            # At 4 replicas 20% asks for 2, but the 4s recommended since t=60 are still in the window.
            Cycle(330, 20, 4, "scale_down_stabilized", "(wanted 2, highest recommendation of the last 300s is 4)"),
        ],
    ),
    # A scale-up window does the mirror image: the lowest recommendation of the last 60 s.
    "up-window-60s": (
        cpu_policy(scale_up=ScalingBehavior(stabilization_seconds=60)),
        BOUNDS,
        2,
        [
            Cycle(0, 50, 2, "within_tolerance"),
            Cycle(30, 100, 2, "scale_up_stabilized", "(wanted 4, lowest recommendation of the last 60s is 2)"),
            Cycle(59, 100, 2, "scale_up_stabilized"),
            Cycle(60, 100, 4, "scale_up"),
        ],
    ),
    # record_scale feeds the period accounting: +2 per 60 s, counted from the period's start.
    "up-rule-period-accounting": (
        cpu_policy(scale_up=ScalingBehavior(rules=[ScalingRule(type="replicas", value=2, period_seconds=60)])),
        BOUNDS,
        2,
        [
            Cycle(0, 200, 4, "scale_up_limit", "(wanted 8, capped at +2 per 60s)"),
            Cycle(30, 200, 4, "scale_up_limit", "(wanted 16, capped at +2 per 60s)"),
            Cycle(60, 200, 6, "scale_up_limit"),
            Cycle(90, 200, 6, "scale_up_limit"),
            Cycle(120, 200, 8, "scale_up_limit"),
            Cycle(180, 200, 10, "too_many_replicas", "capped at max 10"),
        ],
    ),
    # HPA docs, "Scaling policies": Pods 4 and Percent 10 per 60 s from 80 replicas: -8, then
    # at 72 "10% of the pods is 7.2 but the number is rounded up to 8", then 64 * 10% -> -7.
    "docs-scale-down-policies": (
        cpu_policy(
            scale_down=ScalingBehavior(
                stabilization_seconds=0,
                rules=[
                    ScalingRule(type="replicas", value=4, period_seconds=60),
                    ScalingRule(type="percent", value=10, period_seconds=60),
                ],
            )
        ),
        Bounds(10, 100),
        80,
        [
            Cycle(0, 5, 72, "scale_down_limit", "capped at -10% per 60s"),
            Cycle(30, 5, 72, "scale_down_limit"),
            Cycle(60, 5, 64, "scale_down_limit"),
            Cycle(120, 5, 57, "scale_down_limit"),
        ],
    ),
    # The fallback goes through the down window like a metric: the 8 recommended at t=0 holds
    # the count until t=300, then 100% per 15 s lets 8 -> 1 go in one step. Failed cycles
    # before the threshold record nothing; fallback cycles record 1.
    "fallback-held-by-down-window": (
        cpu_policy(failure_threshold=3, fallback_replicas=1),
        BOUNDS,
        8,
        [
            Cycle(0, 50, 8, "within_tolerance"),
            Cycle(15, None, 8, "metrics_unavailable", "metrics failed 1 cycles in a row (stats timed out): holding 8"),
            Cycle(30, None, 8, "metrics_unavailable"),
            Cycle(
                45, None, 8, "scale_down_stabilized",
                "metrics failed 3 cycles in a row (stats timed out): fallback to 1 held back -> 8 -> 8 "
                "(wanted 1, highest recommendation of the last 300s is 8)",
            ),
            Cycle(150, None, 8, "scale_down_stabilized"),
            Cycle(299, None, 8, "scale_down_stabilized"),
            Cycle(300, None, 1, "fallback", "metrics failed 6 cycles in a row (stats timed out): fallback -> 8 -> 1"),
            Cycle(315, None, 1, "fallback", "fallback -> 1 -> 1"),
            # Metrics are back: the 1s of the fallback are in the window, so a scale-up goes at once.
            Cycle(330, 100, 2, "scale_up", "cpu 100% > target 50% -> 1 -> 2"),
        ],
    ),
    # The same with a down rule of 2 per 60 s: past the window the rule paces the way down.
    "fallback-paced-by-down-rule": (
        cpu_policy(
            failure_threshold=1,
            fallback_replicas=1,
            scale_down=ScalingBehavior(
                stabilization_seconds=60, rules=[ScalingRule(type="replicas", value=2, period_seconds=60)]
            ),
        ),
        BOUNDS,
        6,
        [
            Cycle(0, 50, 6, "within_tolerance"),
            Cycle(30, None, 6, "scale_down_stabilized", "fallback to 1 held back -> 6 -> 6"),
            Cycle(60, None, 4, "scale_down_limit", "fallback to 1 held back -> 6 -> 4 (wanted 1, capped at -2 per 60s)"),
            Cycle(90, None, 4, "scale_down_limit"),
            Cycle(120, None, 2, "scale_down_limit"),
            Cycle(180, None, 1, "fallback", "fallback -> 2 -> 1"),
        ],
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_scenarios(name: str) -> None:
    policy, bounds, start, cycles = SCENARIOS[name]
    run(policy, bounds, start, cycles)


# --- a restart: the history seeded with the current count ----------------------------------------


def test_seed_history_holds_the_current_count_at_now() -> None:
    assert seed_history(6, 12.5) == History(recommendations=(TimedValue(12.5, 6),))


SEEDING = {
    # 20% against 60% asks for 2 of 6. Seeded as the HPA seeds on first sight, the 6 holds for
    # the 300 s down window; at t=300 it has left (entries at exactly now - window are out) and
    # 100% per 15 s lets 6 -> 2 go in one step.
    "seeded": (
        cpu_policy(60),
        seed_history(6, 0.0),
        [
            Cycle(0, 20, 6, "scale_down_stabilized", "(wanted 2, highest recommendation of the last 300s is 6)"),
            Cycle(15, 20, 6, "scale_down_stabilized"),
            Cycle(285, 20, 6, "scale_down_stabilized"),
            Cycle(300, 20, 2, "scale_down", "cpu 20% < target 60% -> 6 -> 2"),
        ],
    ),
    # The same restart with a down rule of 1 per 15 s: past the window the rule paces it.
    "seeded-paced-by-rule": (
        cpu_policy(60, scale_down=ScalingBehavior(rules=[ScalingRule(type="replicas", value=1, period_seconds=15)])),
        seed_history(6, 0.0),
        [
            Cycle(0, 20, 6, "scale_down_stabilized"),
            Cycle(285, 20, 6, "scale_down_stabilized"),
            Cycle(300, 20, 5, "scale_down_limit", "(wanted 2, capped at -1 per 15s)"),
            Cycle(315, 20, 4, "scale_down_limit"),
        ],
    ),
    # Without the seed a restarted daemon acts on its first view at once: 6 -> 2.
    "unseeded-jumps": (
        cpu_policy(60),
        History(),
        [Cycle(0, 20, 2, "scale_down", "cpu 20% < target 60% -> 6 -> 2")],
    ),
    # The seed is a recommendation like any other: it never holds back a scale-up (0 s up window).
    "seeded-scale-up-at-once": (
        cpu_policy(60),
        seed_history(6, 0.0),
        [Cycle(0, 90, 9, "scale_up", "cpu 90% > target 60% -> 6 -> 9")],
    ),
}


@pytest.mark.parametrize("name", list(SEEDING), ids=list(SEEDING))
def test_a_seeded_history_restarts_without_a_jump(name: str) -> None:
    policy, history, cycles = SEEDING[name]
    run(policy, BOUNDS, 6, cycles, history)


# --- tolerance: any value >= 0, as the HPA ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tolerance", "cpu", "desired", "reason"),
    [
        (Tolerance(up=0.1, down=1.0), 10, 4, "within_tolerance"),
        (Tolerance(up=0.1, down=1.0), 0, 4, "within_tolerance"),  # ratio 0 is the band's edge
        (Tolerance(up=0.1, down=2.5), 10, 4, "within_tolerance"),
        (Tolerance(up=0.1, down=1.0), 100, 8, "scale_up"),  # the up side is untouched
        (Tolerance(up=3.0, down=0.1), 200, 4, "within_tolerance"),  # ratio 4.0 = 1 + 3: inclusive
        (Tolerance(up=3.0, down=0.1), 201, 8, "scale_up_limit"),  # ceil(4.02 * 4) = 17, +4 per 15s
        (Tolerance(up=3.0, down=0.1), 10, 1, "scale_down"),  # the down side is untouched
    ],
    ids=[
        "down-1-disables-ratio-scale-down",
        "down-1-zero-load",
        "down-2.5",
        "down-1-still-scales-up",
        "up-3-holds-at-4x",
        "up-3-scales-past-4x",
        "up-3-still-scales-down",
    ],
)
def test_tolerances_of_one_and_above(tolerance: Tolerance, cpu: float, desired: int, reason: str) -> None:
    # Tolerances.isWithin: (1 - down) <= ratio <= (1 + up). The config accepts any value >= 0;
    # the plan is built directly here so that this does not depend on the config's bound.
    plan = replace(plan_of(cpu_policy(50, scale_down=NO_DOWN_WINDOW)), tolerance=tolerance)
    decision, _ = evaluate(flat(4, cpu=cpu), plan, BOUNDS, History(), 0.0)
    assert (decision.desired, decision.reason) == (desired, reason)


@pytest.mark.parametrize(
    ("config", "cpu", "desired", "reason"),
    [
        ({"tolerance_down": 1.0}, 5, 4, "within_tolerance"),
        ({"tolerance": 1.5}, 0, 4, "within_tolerance"),
        ({"tolerance": 1.5}, 126, 8, "scale_up_limit"),  # 2.52 > 2.5: ceil(10.08), +4 per 15s
        ({"tolerance_up": 2.0}, 150, 4, "within_tolerance"),
    ],
    ids=["tolerance-down-1", "tolerance-1.5-zero-load", "tolerance-1.5-past-the-band", "tolerance-up-2"],
)
def test_tolerances_of_one_and_above_from_the_config(
    config: dict[str, float], cpu: float, desired: int, reason: str
) -> None:
    # The config's tolerance reaches evaluate() through the plan, whatever its size.
    policy = cpu_policy(50, scale_down=NO_DOWN_WINDOW, **config)
    decision, _ = evaluate(flat(4, cpu=cpu), policy, BOUNDS, History(), 0.0)
    assert (decision.desired, decision.reason) == (desired, reason)


# --- reasons are codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        ("hold", "cpu 40% > target 30%: within tolerance", "hold"),
        ("within_tolerance", "cpu 40% > target 30%: hold", "within_tolerance"),
        ("scale", "within tolerance", "hold"),  # ceil(ratio x count) = count: a plain hold
    ],
    ids=["hold-code-despite-message", "tolerance-code-despite-message", "scale-to-same-count"],
)
def test_the_decision_reason_comes_from_the_proposal_code_not_its_message(
    monkeypatch: pytest.MonkeyPatch, code: str, message: str, reason: str
) -> None:
    def proposal(metric: Metric, replicas: object, target: float, *args: object) -> MetricProposal:
        return MetricProposal(metric, 40.0, target, 3, message, code)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluate_module, "target_tracking", proposal)
    decision, _ = evaluate(flat(3, cpu=40), cpu_policy(30), BOUNDS, History(), 0.0)
    assert (decision.desired, decision.reason) == (3, reason)


def test_history_is_pruned_to_the_longest_window_or_period() -> None:
    # Defaults: 300 s down window, 15 s periods -> keep 300 s.
    history = History(
        recommendations=(TimedValue(0, 9), TimedValue(800, 2)),
        scale_up_events=(TimedValue(0, 3), TimedValue(990, 1)),
        scale_down_events=(TimedValue(700, 1),),
    )
    decision, new_history = evaluate(flat(4, cpu=50), cpu_policy(), BOUNDS, history, 1000.0)
    assert decision.desired == 4
    assert new_history.recommendations == (TimedValue(800, 2), TimedValue(1000, 4))
    assert new_history.scale_up_events == (TimedValue(990, 1),)
    assert new_history.scale_down_events == ()


@pytest.mark.parametrize(
    "start",
    [History(), seed_history(4, 0.0), History(recommendations=(TimedValue(0.0, 4),))],
    ids=["empty", "seeded", "tuple-given-by-the-caller"],
)
def test_evaluate_never_changes_the_history_it_was_given(start: History) -> None:
    # The returned history shares storage with the given one (appends are O(1)); evaluating
    # the same history twice must still give two independent histories and leave it as it was.
    _, base = evaluate(flat(4, cpu=50), cpu_policy(), BOUNDS, start, 1.0)
    before = tuple(base.recommendations)
    high_decision, high = evaluate(flat(4, cpu=100), cpu_policy(), BOUNDS, base, 2.0)
    low_decision, low = evaluate(flat(4, cpu=10), cpu_policy(), BOUNDS, base, 2.0)
    assert tuple(base.recommendations) == before
    assert high.recommendations == before + (TimedValue(2.0, high_decision.recommendation),)  # type: ignore[arg-type]
    assert low.recommendations == before + (TimedValue(2.0, low_decision.recommendation),)  # type: ignore[arg-type]
    assert (high_decision.recommendation, low_decision.recommendation) == (8, 1)
    # Each answers its own down window: from 8 replicas asking for 2, the first branch holds
    # at its 8, the second comes down to its highest, 4.
    again, _ = evaluate(flat(8, cpu=10), cpu_policy(), BOUNDS, high, 3.0)
    assert (again.desired, again.reason) == (8, "scale_down_stabilized")
    again, _ = evaluate(flat(8, cpu=10), cpu_policy(), BOUNDS, low, 3.0)
    assert (again.desired, again.reason) == (4, "scale_down_stabilized")


# --- step scaling through evaluate --------------------------------------------------------------

STEP_POLICY = PolicyConfig(
    strategy="step",
    steps=[
        StepRule(metric="cpu", lower=80, adjustment="+2"),
        StepRule(metric="cpu", upper=20, adjustment="-50%"),
        StepRule(metric="queue", lower=100, adjustment="+1"),
    ],
    scale_down=NO_DOWN_WINDOW,
)
CPU_STEPS = PolicyConfig(
    strategy="step",
    steps=[StepRule(metric="cpu", lower=80, adjustment="+50%"), StepRule(metric="cpu", upper=20, adjustment="-1")],
    scale_down=NO_DOWN_WINDOW,
)


@pytest.mark.parametrize(
    ("policy", "snapshot", "desired", "reason"),
    [
        (STEP_POLICY, flat(3, cpu=90, queue=0), 5, "scale_up"),
        (STEP_POLICY, flat(3, cpu=50, queue=150), 4, "scale_up"),
        (STEP_POLICY, flat(3, cpu=90), 5, "scale_up"),  # queue unknown: an increase goes ahead
        (STEP_POLICY, flat(3, cpu=10), 3, "missing_metrics_hold"),  # ... a decrease does not
        (STEP_POLICY, flat(3, cpu=10, queue=0), 3, "hold"),  # the queue's "no match" holds at 3
        (CPU_STEPS, flat(3, cpu=10), 2, "scale_down"),
        (CPU_STEPS, flat(3, cpu=50), 3, "hold"),
        (CPU_STEPS, flat(3, cpu=90), 5, "scale_up"),  # +1.5 rounds away from zero
        (CPU_STEPS, flat(3, cpu=None), 3, "metrics_unavailable"),
        (CPU_STEPS, flat(1, cpu=10), 1, "too_few_replicas"),
    ],
    ids=[
        "cpu-band",
        "queue-band",
        "queue-missing-up",
        "queue-missing-down-holds",
        "no-match-holds",
        "minus-1",
        "gap-holds",
        "plus-50pct",
        "no-value",
        "bounded-by-min",
    ],
)
def test_step_strategy(policy: PolicyConfig, snapshot: ServiceSnapshot, desired: int, reason: str) -> None:
    decision, _ = evaluate(snapshot, policy, BOUNDS, History(), 0.0)
    assert (decision.desired, decision.reason) == (desired, reason)


# --- record_scale and the behavior wiring -------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "desired", "up", "down"),
    [
        (2, 5, (TimedValue(7, 1), TimedValue(9, 3)), (TimedValue(8, 2),)),
        (5, 2, (TimedValue(7, 1),), (TimedValue(8, 2), TimedValue(9, 3))),
        (4, 4, (TimedValue(7, 1),), (TimedValue(8, 2),)),
    ],
    ids=["up-recorded", "down-recorded", "no-change-nothing-recorded"],
)
def test_record_scale(
    current: int, desired: int, up: tuple[TimedValue, ...], down: tuple[TimedValue, ...]
) -> None:
    before = History(
        recommendations=(TimedValue(6, 4),),
        scale_up_events=(TimedValue(7, 1),),
        scale_down_events=(TimedValue(8, 2),),
        consecutive_failures=1,
    )
    after = record_scale(before, 9, current, desired)
    assert (after.scale_up_events, after.scale_down_events) == (up, down)
    assert (after.recommendations, after.consecutive_failures) == (before.recommendations, 1)
    assert before.scale_up_events == (TimedValue(7, 1),)  # the old history is left alone


def test_recorded_scale_down_gives_room_to_scale_up() -> None:
    # periodStartReplicas = current - added + deleted: a replica removed 10 s ago is given
    # back to the +1 per 60 s allowance.
    policy = cpu_policy(scale_up=ScalingBehavior(rules=[ScalingRule(type="replicas", value=1, period_seconds=60)]))
    history = record_scale(History(), 0.0, 4, 3)
    decision, _ = evaluate(flat(3, cpu=200), policy, BOUNDS, history, 10.0)
    assert (decision.desired, decision.reason) == (5, "scale_up_limit")


@pytest.mark.parametrize(
    ("policy", "up", "down"),
    [
        (
            PolicyConfig(),
            Behavior(0.0, "max", (Rule("replicas", 4, 15.0), Rule("percent", 100, 15.0))),
            Behavior(300.0, "max", (Rule("percent", 100, 15.0),)),
        ),
        (
            PolicyConfig(scale_down_stabilization_seconds=60, scale_up=ScalingBehavior(select="min")),
            Behavior(0.0, "min", (Rule("replicas", 4, 15.0), Rule("percent", 100, 15.0))),
            Behavior(60.0, "max", (Rule("percent", 100, 15.0),)),
        ),
    ],
    ids=["hpa-defaults", "shorthand-window-and-select"],
)
def test_behavior_of_effective_config(policy: PolicyConfig, up: Behavior, down: Behavior) -> None:
    assert behavior_of(policy.effective_scale_up()) == up
    assert behavior_of(policy.effective_scale_down()) == down
