"""snapshot + policy + bounds + history + now -> Decision (with reasons) and the new history.

The daemon, `autoscaler decide` and `autoscaler simulate` all call `evaluate`. It reads no
clock and touches nothing: `now` is seconds on the caller's clock.
"""

from __future__ import annotations

from dataclasses import replace

from autoscaler.config import PolicyConfig, ScalingBehavior
from autoscaler.model import (
    Bounds,
    Decision,
    History,
    Metric,
    MetricProposal,
    ServiceSnapshot,
    TimedValue,
)
from autoscaler.policy.behavior import (
    Behavior,
    Rule,
    clamp,
    limit_rate,
    stabilize_recommendation,
)
from autoscaler.policy.target import Step, Tolerance, pooled_value, step_scaling, target_tracking


def behavior_of(config: ScalingBehavior) -> Behavior:
    return Behavior(
        stabilization_seconds=float(config.stabilization_seconds or 0),
        select=config.select,
        rules=tuple(
            Rule(r.type, r.value, float(r.period_seconds)) for r in (config.rules or ())
        ),
    )


def targets_of(policy: PolicyConfig) -> list[tuple[Metric, float]]:
    pairs = [
        (Metric.CPU, policy.target_cpu_percent),
        (Metric.MEMORY, policy.target_memory_percent),
        (Metric.REQUESTS_PER_SECOND, policy.target_requests_per_second_per_replica),
        (Metric.RESPONSE_TIME_MS, policy.target_response_time_ms),
    ]
    return [(metric, target) for metric, target in pairs if target is not None]


def steps_of(policy: PolicyConfig) -> list[Step]:
    return [
        Step(Metric(s.metric), s.lower, s.upper, s.adjustment_value, s.adjustment_is_percent)
        for s in policy.steps
    ]


def proposals_for(
    snapshot: ServiceSnapshot, policy: PolicyConfig, current: int
) -> list[MetricProposal]:
    if policy.strategy == "step":
        values = {
            metric: (
                snapshot.queue_current
                if metric is Metric.QUEUE
                else pooled_value(metric, snapshot.replicas)
            )
            for metric in Metric
        }
        return step_scaling(steps_of(policy), values, current)
    tolerance = Tolerance(policy.effective_tolerance_up, policy.effective_tolerance_down)
    return [
        target_tracking(
            metric, snapshot.replicas, target, tolerance, current, policy.initialization_seconds
        )
        for metric, target in targets_of(policy)
    ]


def history_span_seconds(up: Behavior, down: Behavior) -> float:
    periods = [r.period_seconds for r in up.rules + down.rules]
    return max([up.stabilization_seconds, down.stabilization_seconds, *periods, 0.0])


def evaluate(
    snapshot: ServiceSnapshot,
    policy: PolicyConfig,
    bounds: Bounds,
    history: History,
    now: float,
) -> tuple[Decision, History]:
    current = snapshot.current_replicas
    up = behavior_of(policy.effective_scale_up())
    down = behavior_of(policy.effective_scale_down())
    history = history.pruned(now, history_span_seconds(up, down))
    bounded = bounds.source != "config"
    bounds_note = f" ({bounds.source})" if bounded else ""

    def decision(desired: int, reason: str, message: str, **kw: object) -> Decision:
        return Decision(snapshot.service, current, desired, reason, message, **kw)  # type: ignore[arg-type]

    # Out of bounds is corrected before anything else, metrics or not (the HPA does the same):
    # a replica that died is replaced, a lowered max is honoured at once.
    if current > bounds.max_replicas:
        return decision(
            bounds.max_replicas, "above_max",
            f"{current} replicas > max {bounds.max_replicas}{bounds_note} -> {current} -> {bounds.max_replicas}",
        ), history
    if current < bounds.min_replicas:
        return decision(
            bounds.min_replicas, "below_min",
            f"{current} replicas < min {bounds.min_replicas}{bounds_note} -> {current} -> {bounds.min_replicas}",
        ), history

    proposals = [] if snapshot.metrics_error else proposals_for(snapshot, policy, current)
    valid = [p for p in proposals if p.proposal is not None]
    invalid = [p for p in proposals if p.proposal is None]

    if not valid:
        failures = history.consecutive_failures + 1
        history = replace(history, consecutive_failures=failures)
        cause = snapshot.metrics_error or "; ".join(p.message for p in invalid) or "no metrics"
        if policy.fallback_replicas is not None and failures >= policy.failure_threshold:
            target = clamp(policy.fallback_replicas, bounds.min_replicas, bounds.max_replicas)
            return decision(
                target, "fallback",
                f"metrics failed {failures} cycles in a row ({cause}): fallback -> {current} -> {target}",
                proposals=tuple(proposals),
            ), history
        return decision(
            current, "metrics_unavailable",
            f"metrics failed {failures} cycles in a row ({cause}): holding {current}",
            proposals=tuple(proposals),
        ), history
    history = replace(history, consecutive_failures=0)

    winner = max(valid, key=lambda p: p.proposal or 0)
    recommendation = winner.proposal or 0
    why = winner.message
    held_for_missing = False
    if invalid and recommendation < current:
        # Never shrink on a partial view: a metric we cannot read may be the one under load.
        recommendation = current
        held_for_missing = True
        why = f"{why}; not scaling down while {', '.join(str(p.metric) for p in invalid)} has no reading"

    stabilized = stabilize_recommendation(
        history.recommendations, recommendation, current, now,
        up.stabilization_seconds, down.stabilization_seconds,
    )
    history = replace(
        history,
        recommendations=history.recommendations + (TimedValue(now, recommendation),),
    )
    limited = limit_rate(
        stabilized, current, bounds.min_replicas, bounds.max_replicas, up, down,
        history.scale_up_events, history.scale_down_events, now,
    )
    desired = limited.replicas

    if limited.reason:
        reason = limited.reason
        note = f"{limited.message}{bounds_note if 'replicas' in reason else ''}"
        message = f"{why} -> {current} -> {desired} (wanted {stabilized}, {note})"
    elif stabilized != recommendation:
        reason = "scale_down_stabilized" if stabilized > recommendation else "scale_up_stabilized"
        window = down if stabilized > recommendation else up
        message = (
            f"{why} -> {current} -> {desired} (wanted {recommendation}, highest recommendation "
            f"of the last {window.stabilization_seconds:g}s is {stabilized})"
            if stabilized > recommendation
            else f"{why} -> {current} -> {desired} (wanted {recommendation}, lowest recommendation "
            f"of the last {window.stabilization_seconds:g}s is {stabilized})"
        )
    elif held_for_missing:
        reason = "missing_metrics_hold"
        message = f"{why} -> {current} -> {desired}"
    elif desired > current:
        reason = "scale_up"
        message = f"{why} -> {current} -> {desired}"
    elif desired < current:
        reason = "scale_down"
        message = f"{why} -> {current} -> {desired}"
    else:
        reason = "within_tolerance" if "within tolerance" in why else "hold"
        message = f"{why} -> {current} -> {desired}"
    return decision(
        desired, reason, message, proposals=tuple(proposals), recommendation=recommendation
    ), history


def record_scale(history: History, now: float, current: int, desired: int) -> History:
    """Remember a change that was applied, for the rate rules' period accounting."""
    if desired > current:
        return replace(
            history,
            scale_up_events=history.scale_up_events + (TimedValue(now, desired - current),),
        )
    if desired < current:
        return replace(
            history,
            scale_down_events=history.scale_down_events + (TimedValue(now, current - desired),),
        )
    return history
