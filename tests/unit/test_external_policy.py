"""External metrics in the policy: external_tracking (the HPA's External metric arithmetic)
and evaluate() with them, including scale to zero on KEDA's activation values.

Every expected count is worked out in the comment or id beside it. Multi-cycle scenarios feed
each decision back as the control loop does: the next snapshot has `desired` replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from autoscaler.config import ExternalMetric, PolicyConfig
from autoscaler.model import (
    Bounds,
    ExternalReading,
    History,
    MetricProposal,
    Recommendations,
    ReplicaSample,
    ServiceSnapshot,
    TimedValue,
)
from autoscaler.policy.evaluate import evaluate, record_scale
from autoscaler.policy.target import ExternalTarget, Tolerance, external_tracking

OLD = 3600.0
REDIS = {"url": "redis://redis:6379/0", "list": "jobs"}
DOWN_NOW = {"stabilization_seconds": 0}


def external(name: str = "jobs", **keys: Any) -> ExternalMetric:
    """A Redis list metric, target_average_value 5 unless ``keys`` say otherwise."""
    if "target_value" not in keys:
        keys.setdefault("target_average_value", 5)
    return ExternalMetric.model_validate({"name": name, "redis": REDIS, **keys})


def policy(*metrics: ExternalMetric, **keys: Any) -> PolicyConfig:
    """CPU at 50 % and the given external metrics (default: jobs, 5 per replica); no down window
    unless ``keys`` set one."""
    keys.setdefault("scale_down", DOWN_NOW)
    return PolicyConfig.model_validate(
        {"target_cpu_percent": 50, "initialization_seconds": 0, "metrics": list(metrics or (external(),)), **keys}
    )


def replicas(cpu: Sequence[float | None], not_ready: int = 0) -> tuple[ReplicaSample, ...]:
    ready = tuple(ReplicaSample(f"jobs-{i}", True, OLD, value) for i, value in enumerate(cpu))
    return ready + tuple(ReplicaSample(f"jobs-new-{i}", False, 0.0) for i in range(not_ready))


def snap(
    cpu: Sequence[float | None] = (),
    error: str | None = None,
    not_ready: int = 0,
    metrics_error: str | None = None,
    **values: float | None,
) -> ServiceSnapshot:
    """Replicas with these CPU readings, and one external reading per keyword (None: the source
    failed with ``error``)."""
    readings = tuple(ExternalReading(name, value, None if value is not None else error) for name, value in values.items())
    return ServiceSnapshot("jobs", replicas(cpu, not_ready), metrics_error=metrics_error, external=readings)


# --- external_tracking ------------------------------------------------------------------------

AVERAGE = ExternalTarget("jobs", 5.0, True, 0.0)
VALUE = ExternalTarget("latency", 2.0, False, 0.0)
TOLERANCE = Tolerance()

# id -> (metric, value, current, ready, tolerance, proposal, reason, message)
TRACKING: dict[str, tuple[ExternalTarget, float | None, int, int, Tolerance, int | None, str, str]] = {
    # AverageValue: usage ratio value / (target x current); outside the band, ceil(value / target).
    "average-up": (AVERAGE, 20.0, 2, 2, TOLERANCE, 4, "scale", "jobs 20 (10 per replica) > target 5 per replica"),
    "average-up-not-whole": (AVERAGE, 21.0, 2, 2, TOLERANCE, 5, "scale", "jobs 21"),  # ceil(4.2)
    "average-down": (AVERAGE, 3.0, 4, 4, TOLERANCE, 1, "scale", "jobs 3 (0.75 per replica) < target 5 per replica"),
    "average-empty-queue-asks-for-0": (AVERAGE, 0.0, 3, 3, TOLERANCE, 0, "scale", "jobs 0"),
    "average-within": (AVERAGE, 10.5, 2, 2, TOLERANCE, 2, "within_tolerance", "target 5 per replica: within tolerance"),
    "average-at-the-upper-edge": (AVERAGE, 11.0, 2, 2, TOLERANCE, 2, "within_tolerance", "within tolerance"),  # 1.1
    "average-past-the-upper-edge": (AVERAGE, 11.2, 2, 2, TOLERANCE, 3, "scale", "jobs 11.2"),  # 1.12 -> ceil(2.24)
    "average-at-the-lower-edge": (AVERAGE, 9.0, 2, 2, TOLERANCE, 2, "within_tolerance", "within tolerance"),  # 0.9
    "average-wide-band-up": (AVERAGE, 14.0, 2, 2, Tolerance(up=0.5, down=0.1), 2, "within_tolerance", "within"),
    "average-narrow-band-down": (AVERAGE, 9.5, 2, 2, Tolerance(up=0.5, down=0.0), 2, "scale", "jobs 9.5"),
    # Counts the current replicas, not the ready ones: a queue is split across all of them.
    "average-ignores-readiness": (AVERAGE, 20.0, 4, 1, TOLERANCE, 4, "within_tolerance", "within tolerance"),
    # Value: usage ratio value / target; outside the band, ceil(ratio x ready replicas).
    "value-up": (VALUE, 4.0, 3, 3, TOLERANCE, 6, "scale", "latency 4 > target 2"),
    "value-down": (VALUE, 1.0, 4, 4, TOLERANCE, 2, "scale", "latency 1 < target 2"),
    "value-within": (VALUE, 2.1, 3, 3, TOLERANCE, 3, "within_tolerance", "latency 2.1 > target 2: within tolerance"),
    "value-exactly-on-target": (VALUE, 2.0, 3, 3, TOLERANCE, 3, "within_tolerance", "latency 2 = target 2"),
    # Too few ready replicas to say: ceil(1.5 x 1) = 2 would shrink 4 while the ratio asks for more.
    "value-hold-against-the-ratio-up": (VALUE, 3.0, 4, 1, TOLERANCE, 4, "hold", "latency 3 > target 2 (1 ready of 4): hold"),
    "value-hold-with-none-ready": (VALUE, 3.0, 2, 0, TOLERANCE, 2, "hold", "(0 ready of 2): hold"),
    # More ready than counted (the ratio asks for less, ceil(0.5 x 6) = 3 is more): hold too.
    "value-hold-against-the-ratio-down": (VALUE, 1.0, 2, 6, TOLERANCE, 2, "hold", "(6 ready of 2): hold"),
    "value-up-with-some-ready": (VALUE, 6.0, 4, 2, TOLERANCE, 6, "scale", "latency 6 > target 2"),  # ceil(3 x 2)
    # No reading: no proposal, with the source's own sentence.
    "no-reading": (AVERAGE, None, 2, 2, TOLERANCE, None, "no_reading", "jobs: redis: connection refused"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("metric", "value", "current", "ready", "tolerance", "proposal", "reason", "message"),
    TRACKING.values(), ids=list(TRACKING),
)
def test_external_tracking(
    metric: ExternalTarget, value: float | None, current: int, ready: int, tolerance: Tolerance,
    proposal: int | None, reason: str, message: str,
) -> None:
    error = "redis: connection refused" if value is None else None
    result = external_tracking(metric, value, error, tolerance, current, ready)
    assert (result.metric, result.utilization, result.target) == (metric.name, value, metric.target)
    assert (result.proposal, result.reason) == (proposal, reason)
    assert message in result.message, result.message
    # explain=False: the same numbers and code, no text (simulate's hot path)...
    quiet = external_tracking(metric, value, error, tolerance, current, ready, explain=False)
    assert (quiet.proposal, quiet.reason, quiet.utilization) == (proposal, reason, value)
    if reason in ("scale", "within_tolerance"):
        assert quiet.message == ""


def test_no_reading_without_a_sentence_says_so() -> None:
    assert external_tracking(AVERAGE, None, None, TOLERANCE, 2, 2) == MetricProposal(
        "jobs", None, 5.0, None, "jobs: no reading", "no_reading",
    )


# --- evaluate: external metrics next to CPU ----------------------------------------------------

BOUNDS = Bounds(1, 10)

# id -> (policy keys, snapshot, desired, reason, text in the message)
VOTES: dict[str, tuple[dict[str, Any], ServiceSnapshot, int, str, str]] = {
    # cpu asks for ceil(2 x 90 / 50) = 4, jobs for ceil(30 / 5) = 6: the largest wins.
    "external-beats-cpu": ({}, snap([90, 90], jobs=30), 6, "scale_up", "jobs 30 (15 per replica) > target 5 per replica -> 2 -> 6"),
    # jobs 10 on 2 is on target (2); cpu's 4 wins.
    "cpu-beats-external": ({}, snap([90, 90], jobs=10), 4, "scale_up", "cpu 90% > target 50% -> 2 -> 4"),
    # Both ask for less: the larger of cpu's 1 and jobs' 2.
    "smaller-scale-down-wins": ({}, snap([10, 10, 10, 10], jobs=10), 2, "scale_down", "jobs 10 (2.5 per replica) < target"),
    "external-hold-beats-cpu-down": ({}, snap([10, 10], jobs=10.5), 2, "within_tolerance", "jobs 10.5"),
    # A Value target: ceil(2 x 4 / 2) = 4.
    "value-target": (
        {"metrics": [external("latency", target_value=2)]}, snap([50, 50], latency=4), 4, "scale_up", "latency 4 > target 2",
    ),
    # A source that fails while CPU answers: up is allowed...
    "failing-source-up-allowed": ({}, snap([90, 90], "redis: timeout", jobs=None), 4, "scale_up", "cpu 90% > target 50%"),
    # ...down is not: the metric we cannot read may be the one under load.
    "failing-source-down-held": (
        {}, snap([10, 10, 10, 10], "redis: timeout", jobs=None), 4, "missing_metrics_hold",
        "not scaling down while jobs has no reading -> 4 -> 4",
    ),
    "metric-not-read-down-held": ({}, snap([10, 10, 10, 10]), 4, "missing_metrics_hold", "jobs has no reading"),
    # The replicas' metrics fail as a whole, the external metric answers: up on it alone...
    "replicas-fail-external-up": (
        {}, snap([None, None], metrics_error="stats timed out", jobs=30), 6, "scale_up", "jobs 30 (15 per replica)",
    ),
    # ...and no scale-down on it alone.
    "replicas-fail-external-down-held": (
        {}, snap([None] * 4, metrics_error="stats timed out", jobs=2), 4, "missing_metrics_hold",
        "not scaling down while cpu has no reading",
    ),
    # Two external metrics: the largest of the three proposals (ceil(12 / 5) = 3, ceil(3 x 3 / 1) = 9).
    "two-externals": (
        {"metrics": [external(), external("latency", target_value=1)]}, snap([50, 50, 50], jobs=12, latency=3),
        7, "scale_up_limit", "latency 3 > target 1 -> 3 -> 7 (wanted 9, capped at +4 per 15s)",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("keys", "snapshot", "desired", "reason", "message"), VOTES.values(), ids=list(VOTES))
def test_external_metrics_vote_with_the_others(
    keys: dict[str, Any], snapshot: ServiceSnapshot, desired: int, reason: str, message: str
) -> None:
    # Not keys.pop(): the table is shared by every run of this test in the process.
    keys = dict(keys)
    metrics = keys.pop("metrics", None) or [external()]
    decision, history = evaluate(snapshot, policy(*metrics, **keys), BOUNDS, History(), 100.0)
    assert (decision.desired, decision.reason) == (desired, reason), decision.message
    assert message in decision.message
    assert history.consecutive_failures == 0
    names = [str(p.metric) for p in decision.proposals]
    assert names == ["cpu", *(m.name for m in metrics)]


def test_every_source_failing_holds_then_falls_back() -> None:
    config = policy(fallback_replicas=3, failure_threshold=3)
    failing = snap([None, None], "redis: timeout", metrics_error="stats timed out", jobs=None)
    history = History()
    reasons = []
    for now in (0.0, 5.0, 10.0):
        decision, history = evaluate(failing, config, BOUNDS, history, now)
        reasons.append((decision.reason, decision.desired, history.consecutive_failures))
    assert reasons == [("metrics_unavailable", 2, 1), ("metrics_unavailable", 2, 2), ("fallback", 3, 3)]
    assert "metrics failed 3 cycles in a row (stats timed out): fallback" in decision.message
    # One answer ends the streak.
    decision, history = evaluate(snap([50, 50], jobs=10), config, BOUNDS, history, 15.0)
    assert history.consecutive_failures == 0


def test_every_external_source_failing_without_cpu_readings_names_the_sources() -> None:
    config = policy(external(), external("latency", target_value=1))
    snapshot = ServiceSnapshot("jobs", replicas([None, None]), external=(
        ExternalReading("jobs", None, "redis: timeout"), ExternalReading("latency", None, "prometheus: no data"),
    ))
    decision, history = evaluate(snapshot, config, BOUNDS, History(), 0.0)
    assert (decision.desired, decision.reason, history.consecutive_failures) == (2, "metrics_unavailable", 1)
    assert "jobs: redis: timeout" in decision.message and "latency: prometheus: no data" in decision.message


# --- scale to zero -----------------------------------------------------------------------------

ZERO = Bounds(0, 10)


def zero_policy(*metrics: ExternalMetric, **keys: Any) -> PolicyConfig:
    keys.setdefault("scale_to_zero_after_seconds", 300)
    return policy(*(metrics or (external(),)), **keys)


# id -> (policy, snapshot at 0 replicas, desired, reason, message)
AT_ZERO: dict[str, tuple[PolicyConfig, ServiceSnapshot, int, str, str]] = {
    # Above the activation value: one replica, whatever the value asks for (the policy takes it on).
    "activation-wakes-to-one": (zero_policy(), snap(jobs=3), 1, "activation", "jobs 3 > activation 0 -> 0 -> 1"),
    "activation-not-more-than-one": (zero_policy(), snap(jobs=500), 1, "activation", "jobs 500 > activation 0"),
    "activation-threshold": (zero_policy(external(activation=2)), snap(jobs=2.5), 1, "activation", "> activation 2"),
    # At or below it: stay at 0.
    "empty-stays-at-zero": (zero_policy(), snap(jobs=0), 0, "inactive", "jobs 0 <= 0: staying at 0 -> 0 -> 0"),
    "at-activation-stays": (zero_policy(external(activation=2)), snap(jobs=2), 0, "inactive", "jobs 2 <= 2"),
    # Any metric above its activation wakes it.
    "second-metric-wakes": (
        zero_policy(external(), external("late", target_value=1, activation=0.5)), snap(jobs=0, late=0.7),
        1, "activation", "late 0.7 > activation 0.5",
    ),
    "both-below-stay": (
        zero_policy(external(), external("late", target_value=1, activation=0.5)), snap(jobs=0, late=0.5),
        0, "inactive", "jobs 0 <= 0, late 0.5 <= 0.5",
    ),
    # A source that fails holds it at 0 (nothing to measure otherwise); an active one still wakes it.
    "failure-holds-zero": (
        zero_policy(), snap(error="redis: connection refused", jobs=None), 0, "metrics_unavailable",
        "metrics failed 1 cycles in a row (jobs: redis: connection refused): holding 0",
    ),
    "not-read-holds-zero": (zero_policy(), snap(), 0, "metrics_unavailable", "(jobs: not read this cycle): holding 0"),
    "failure-and-inactive-hold": (
        zero_policy(external(), external("late", target_value=1)), snap(error="timeout", jobs=0, late=None),
        0, "metrics_unavailable", "late: timeout",
    ),
    "active-beats-failure": (
        zero_policy(external(), external("late", target_value=1)), snap(error="timeout", jobs=4, late=None),
        1, "activation", "jobs 4 > activation 0",
    ),
    # CPU does not apply at 0: no replica to measure.
    "cpu-failure-irrelevant": (
        zero_policy(), snap(metrics_error="stats timed out", jobs=0), 0, "inactive", "staying at 0",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("config", "snapshot", "desired", "reason", "message"), AT_ZERO.values(), ids=list(AT_ZERO))
def test_at_zero(config: PolicyConfig, snapshot: ServiceSnapshot, desired: int, reason: str, message: str) -> None:
    decision, history = evaluate(snapshot, config, ZERO, History(), 50.0)
    assert (decision.current, decision.desired, decision.reason) == (0, desired, reason)
    assert message in decision.message, decision.message
    assert history.last_active_seconds == 50.0, "the first look starts the timer"
    assert history.consecutive_failures == (1 if reason == "metrics_unavailable" else 0)
    assert history.recommendations == (), "nothing for the windows: the policy did not run"


def test_at_zero_the_fallback_after_the_failure_threshold() -> None:
    config = zero_policy(fallback_replicas=2, failure_threshold=2)
    failing = snap(error="redis: timeout", jobs=None)
    first, history = evaluate(failing, config, ZERO, History(), 0.0)
    second, history = evaluate(failing, config, ZERO, history, 5.0)
    assert (first.desired, first.reason) == (0, "metrics_unavailable")
    assert (second.desired, second.reason, second.recommendation) == (2, "fallback", 2)
    assert "metrics failed 2 cycles in a row (jobs: redis: timeout): fallback -> 0 -> 2" in second.message
    # The source answers: the streak ends.
    _, history = evaluate(snap(jobs=0), config, ZERO, history, 10.0)
    assert history.consecutive_failures == 0


def test_at_zero_a_fallback_of_zero_keeps_holding() -> None:
    config = zero_policy(fallback_replicas=0, failure_threshold=1)
    history = History()
    for now in (0.0, 5.0, 10.0):
        decision, history = evaluate(snap(error="timeout", jobs=None), config, ZERO, history, now)
        assert (decision.desired, decision.reason) == (0, "metrics_unavailable")
    assert history.consecutive_failures == 3


def run(
    config: PolicyConfig,
    values: dict[float, dict[str, float | None]],
    *,
    start: int = 1,
    bounds: Bounds = ZERO,
    not_ready_at: frozenset[float] = frozenset(),
    cpu: float = 10.0,
) -> list[tuple[float, int, str]]:
    """Cycles at each time of `values` (the external readings then), starting at `start`
    replicas: (time, desired, reason) per cycle. A replica listed in not_ready_at's cycles is
    starting (not ready)."""
    current, history = start, History()
    seen = []
    for now, readings in values.items():
        starting = 1 if now in not_ready_at and current else 0
        snapshot = snap([cpu] * (current - starting), "timeout", not_ready=starting, **readings)
        decision, history = evaluate(snapshot, config, bounds, history, now)
        history = record_scale(history, now, decision.current, decision.desired)
        current = decision.desired
        seen.append((now, decision.desired, decision.reason))
    return seen


def every(step: float, until: float, **readings: float | None) -> dict[float, dict[str, float | None]]:
    return {float(t): dict(readings) for t in range(0, int(until) + 1, int(step))}


def test_goes_to_zero_after_scale_to_zero_after_seconds_of_inactivity() -> None:
    seen = run(zero_policy(), every(10, 320, jobs=0))
    desired = {now: count for now, count, _ in seen}
    # The first look (0 s) starts the timer: 1 until 290 s, 0 from 300 s, and it stays there.
    assert all(desired[t] == 1 for t in desired if t < 300)
    assert desired[300] == 0 and desired[310] == desired[320] == 0
    reasons = {now: reason for now, _, reason in seen}
    assert reasons[300] == "scale_to_zero"
    assert reasons[310] == reasons[320] == "inactive"


def test_the_scale_to_zero_message_and_history() -> None:
    config = zero_policy()
    history = History(last_active_seconds=0.0, consecutive_failures=2)
    decision, after = evaluate(snap([95], jobs=0), config, ZERO, history, 300.0)
    # CPU at 95 % would ask for 2: the external metrics alone decide the way to 0.
    assert (decision.current, decision.desired, decision.reason) == (1, 0, "scale_to_zero")
    assert decision.message == (
        "every external metric at or below its activation for 300s (scale_to_zero_after_seconds 300) -> 1 -> 0"
    )
    assert [p.proposal for p in decision.proposals] == [2, 0]
    assert (after.last_active_seconds, after.consecutive_failures) == (0.0, 0)


@pytest.mark.parametrize(
    ("after_seconds", "zero_at"),
    [(0, 0.0), (60, 60.0), (3600, None)],
    ids=["at-once", "one-minute", "an-hour"],
)
def test_scale_to_zero_after_seconds_is_the_wait(after_seconds: float, zero_at: float | None) -> None:
    seen = run(zero_policy(scale_to_zero_after_seconds=after_seconds), every(10, 600, jobs=0))
    first_zero = next((now for now, count, _ in seen if count == 0), None)
    assert first_zero == zero_at


def test_never_to_zero_while_a_replica_is_starting() -> None:
    # A replica on its way (not ready) may be about to take a job: no scale to zero until it is ready.
    seen = run(zero_policy(), every(10, 400, jobs=0), not_ready_at=frozenset({300.0, 310.0, 320.0}))
    desired = {now: count for now, count, _ in seen}
    assert all(desired[t] >= 1 for t in desired if t <= 320)
    assert desired[330] == 0


@pytest.mark.parametrize(
    ("interruption", "zero_at"),
    [
        ({"jobs": 3.0}, 450.0),  # above activation at 150 s: 300 s more from there
        ({"jobs": None}, 450.0),  # a source failing may hide work: the timer restarts too
        ({"jobs": 0.0}, 300.0),  # nothing happened
    ],
    ids=["value-above-activation", "source-fails", "no-interruption"],
)
def test_the_timer_restarts_when_a_value_goes_above_activation_or_a_source_fails(
    interruption: dict[str, float | None], zero_at: float
) -> None:
    values = every(10, 600, jobs=0)
    values[150.0] = interruption
    seen = run(zero_policy(), values)
    assert next(now for now, count, _ in seen if count == 0) == zero_at


def test_at_activation_counts_as_inactive() -> None:
    seen = run(zero_policy(external(activation=2)), every(10, 320, jobs=2))
    assert next(now for now, count, _ in seen if count == 0) == 300.0


def test_every_metric_must_be_inactive() -> None:
    config = zero_policy(external(), external("late", target_value=1, activation=0.5))
    values = every(10, 600, jobs=0, late=0.5)
    for t in range(100, 201, 10):
        values[float(t)] = {"jobs": 0, "late": 0.6}  # the second metric active until 200 s
    seen = run(config, values)
    assert next(now for now, count, _ in seen if count == 0) == 500.0


def test_zero_to_n_and_back_to_zero() -> None:
    # Idle, a burst of 40 jobs, idle again: 0 -> 1 (activation) -> 8 (ceil(40 / 5)) -> the
    # policy's scale-down -> 0 after 300 s idle. The wake-up counts for the rate rules (+4 or
    # +100 % of the count 15 s ago): 0 + 4 at 110 s, 1 + 4 at 120 s, then 4 + 4.
    values: dict[float, dict[str, float | None]] = {}
    for t in range(0, 1201, 10):
        values[float(t)] = {"jobs": 40.0 if 100 <= t < 400 else 0.0}
    seen = run(zero_policy(), values, start=0)
    desired = {now: count for now, count, _ in seen}
    reasons = {now: reason for now, _, reason in seen}
    assert desired[0] == 0 and reasons[0] == "inactive"
    assert (desired[100], reasons[100]) == (1, "activation")
    assert (desired[110], desired[120], desired[130]) == (4, 5, 8)
    assert max(desired.values()) == 8
    # Idle from 400 s: CPU at 10 % asks for ceil(8 x 0.2) = 2, then 1; the policy keeps 1 (min 1).
    assert (desired[400], desired[410], desired[420]) == (2, 1, 1)
    # The last active cycle is 390 s: at 0 from 690 s, not before.
    assert desired[680] >= 1 and (desired[690], reasons[690]) == (0, "scale_to_zero")
    assert all(desired[t] == 0 for t in desired if t >= 690)


def test_with_a_min_of_one_it_never_goes_to_zero() -> None:
    seen = run(zero_policy(), every(10, 1200, jobs=0), bounds=Bounds(1, 10))
    assert {count for _, count, _ in seen} == {1}
    assert "scale_to_zero" not in {reason for *_, reason in seen}


def test_the_timer_is_forgotten_while_the_bounds_keep_the_service_up() -> None:
    config = zero_policy()
    _, history = evaluate(snap([10], jobs=0), config, ZERO, History(), 0.0)
    assert history.last_active_seconds == 0.0
    # A schedule window raises min to 1: the service cannot go to zero, nothing to remember.
    _, history = evaluate(snap([10], jobs=0), config, Bounds(1, 10), history, 500.0)
    assert history.last_active_seconds is None
    # Back to min 0: the timer starts again from this look, not from 0 s.
    decision, history = evaluate(snap([10], jobs=0), config, ZERO, history, 600.0)
    assert (decision.desired, history.last_active_seconds) == (1, 600.0)


def test_below_min_is_corrected_first_at_zero() -> None:
    # A schedule window with min 2 over a service at 0: started, whatever the metrics say.
    decision, _ = evaluate(snap(jobs=0), zero_policy(), Bounds(2, 10), History(), 0.0)
    assert (decision.desired, decision.reason) == (2, "below_min")


def test_history_pruned_keeps_last_active_seconds() -> None:
    history = History(
        Recommendations((TimedValue(0.0, 3), TimedValue(9_990.0, 2))),
        (TimedValue(0.0, 1),), (TimedValue(0.0, 1),), consecutive_failures=4, last_active_seconds=1234.0,
    )
    pruned = history.pruned(10_000.0, 60.0)
    assert pruned.recommendations == (TimedValue(9_990.0, 2),), "something was pruned"
    assert (pruned.scale_up_events, pruned.scale_down_events) == ((), ())
    assert (pruned.consecutive_failures, pruned.last_active_seconds) == (4, 1234.0)
    assert History(last_active_seconds=7.0).pruned(10_000.0, 60.0).last_active_seconds == 7.0
