"""evaluate(): snapshot + policy + bounds + history + now -> Decision and the next History.

Multi-cycle scenarios feed each decision back the way the control loop does: the next
snapshot has `desired` replicas and record_scale remembers the change for the rate rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from autoscaler.config import PolicyConfig, ScalingBehavior, ScalingRule, StepRule
from autoscaler.model import Bounds, Decision, Direction, History, ReplicaSample, ServiceSnapshot, TimedValue
from autoscaler.policy.behavior import Behavior, Rule
from autoscaler.policy.evaluate import behavior_of, evaluate, record_scale

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


@pytest.mark.parametrize(
    ("policy", "snapshot", "desired", "reason", "fragment"),
    [
        # TestNoScaleDownOneMetricInvalid: cpu alone would go 5 -> 3.
        (
            PolicyConfig(target_cpu_percent=50, target_memory_percent=50, scale_down=NO_DOWN_WINDOW),
            snap([10, 30, 50, 25, 25], [None] * 5),
            5,
            "missing_metrics_hold",
            "not scaling down while memory has no reading -> 5 -> 5",
        ),
        # ... the same with the roles swapped.
        (
            PolicyConfig(target_cpu_percent=50, target_memory_percent=50, scale_down=NO_DOWN_WINDOW),
            snap([None] * 5, [10, 30, 50, 25, 25]),
            5,
            "missing_metrics_hold",
            "not scaling down while cpu has no reading",
        ),
        # TestScaleUpOneMetricEmpty: a scale-up goes ahead without the missing metric.
        (
            PolicyConfig(target_cpu_percent=30, target_memory_percent=50),
            snap([30, 40, 50], [None] * 3),
            4,
            "scale_up",
            "cpu 40% > target 30% -> 3 -> 4",
        ),
    ],
    ids=["TestNoScaleDownOneMetricInvalid", "cpu-missing-memory-says-down", "TestScaleUpOneMetricEmpty"],
)
def test_one_metric_missing(
    policy: PolicyConfig, snapshot: ServiceSnapshot, desired: int, reason: str, fragment: str
) -> None:
    decision, history = evaluate(snapshot, policy, BOUNDS, History(consecutive_failures=3), 0.0)
    assert (decision.desired, decision.reason) == (desired, reason)
    assert fragment in decision.message
    assert decision.recommendation == desired
    # Part of the metrics answered: this is not a failed cycle.
    assert history.consecutive_failures == 0
    assert history.recommendations == (TimedValue(0.0, desired),)


# --- metrics failing for the whole service ----------------------------------------------------


@dataclass(frozen=True)
class Failure:
    failures_before: int
    threshold: int
    fallback: int | None
    bounds: Bounds
    desired: int
    reason: str
    fragment: str


@pytest.mark.parametrize(
    "case",
    [
        Failure(0, 3, None, BOUNDS, 4, "metrics_unavailable", "metrics failed 1 cycles in a row (stats timed out): holding 4"),
        Failure(1, 3, 2, BOUNDS, 4, "metrics_unavailable", "holding 4"),
        Failure(7, 3, None, BOUNDS, 4, "metrics_unavailable", "metrics failed 8 cycles in a row"),
        Failure(2, 3, 6, BOUNDS, 6, "fallback", "metrics failed 3 cycles in a row (stats timed out): fallback -> 4 -> 6"),
        # The fallback is a fixed count, as KEDA's default "static" fallback: it can shrink too.
        Failure(2, 3, 2, BOUNDS, 2, "fallback", "fallback -> 4 -> 2"),
        Failure(5, 3, 6, BOUNDS, 6, "fallback", "metrics failed 6 cycles in a row"),
        Failure(0, 1, 6, BOUNDS, 6, "fallback", "metrics failed 1 cycles in a row"),
        # A schedule window can lower the max below the configured fallback.
        Failure(2, 3, 9, Bounds(1, 6, "schedule night"), 6, "fallback", "fallback -> 4 -> 6"),
    ],
    ids=[
        "first-failure-holds",
        "below-threshold-never-scales-down",
        "no-fallback-holds-forever",
        "threshold-reached-fallback-up",
        "threshold-reached-fallback-down",
        "past-threshold-stays-on-fallback",
        "threshold-one",
        "fallback-clamped-to-bounds",
    ],
)
def test_metrics_failing_for_the_whole_service(case: Failure) -> None:
    policy = cpu_policy(failure_threshold=case.threshold, fallback_replicas=case.fallback)
    history = History(recommendations=(TimedValue(90.0, 9),), consecutive_failures=case.failures_before)
    decision, new_history = evaluate(flat(4, error="stats timed out"), policy, case.bounds, history, 100.0)
    assert (decision.desired, decision.reason) == (case.desired, case.reason)
    assert case.fragment in decision.message
    assert decision.proposals == ()
    assert new_history.consecutive_failures == case.failures_before + 1
    # A failed cycle leaves no recommendation behind for the stabilization window.
    assert new_history.recommendations == history.recommendations


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
    cpu: float
    desired: int
    reason: str
    fragment: str = ""


def run(policy: PolicyConfig, bounds: Bounds, start: int, cycles: Sequence[Cycle]) -> list[Decision]:
    """Play cycles as the control loop would: apply each decision and record the change."""
    history, current, decisions = History(), start, []
    for cycle in cycles:
        decision, history = evaluate(flat(current, cpu=cycle.cpu), policy, bounds, history, cycle.now)
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
}


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_scenarios(name: str) -> None:
    policy, bounds, start, cycles = SCENARIOS[name]
    run(policy, bounds, start, cycles)


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
