"""snapshot + policy + bounds + history + now -> Decision (with reasons) and the new history.

The daemon, `autoscaler decide` and `autoscaler simulate` all call `evaluate`. It reads no
clock and touches nothing: `now` is seconds on the caller's clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.config import PolicyConfig, ScalingBehavior
from autoscaler.model import (
    Bounds,
    Decision,
    ExternalReading,
    History,
    Metric,
    MetricProposal,
    Recommendations,
    ServiceSnapshot,
    TimedValue,
)
from autoscaler.policy.behavior import (
    Behavior,
    Rule,
    clamp,
    limit_rate,
    stabilize,
)
from autoscaler.policy.target import (
    ExternalTarget,
    Step,
    Tolerance,
    external_tracking,
    pooled_value,
    step_scaling,
    target_tracking,
)


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


def externals_of(policy: PolicyConfig) -> list[ExternalTarget]:
    return [
        ExternalTarget(m.name, m.target or 0.0, m.per_replica, m.activation)
        for m in policy.metrics
    ]


def steps_of(policy: PolicyConfig) -> list[Step]:
    return [
        Step(Metric(s.metric), s.lower, s.upper, s.adjustment_value, s.adjustment_is_percent)
        for s in policy.steps
    ]


@dataclass(frozen=True)
class PolicyPlan:
    """A PolicyConfig turned into the plain values evaluate() needs, built once per config."""

    config: PolicyConfig
    up: Behavior
    down: Behavior
    targets: tuple[tuple[Metric, float], ...]
    steps: tuple[Step, ...]
    tolerance: Tolerance
    history_span_seconds: float
    step_strategy: bool
    externals: tuple[ExternalTarget, ...] = ()
    scale_to_zero_after_seconds: float = 300.0


def plan_of(policy: PolicyConfig) -> PolicyPlan:
    up = behavior_of(policy.effective_scale_up())
    down = behavior_of(policy.effective_scale_down())
    return PolicyPlan(
        config=policy,
        up=up,
        down=down,
        targets=tuple(targets_of(policy)),
        steps=tuple(steps_of(policy)),
        tolerance=Tolerance(policy.effective_tolerance_up, policy.effective_tolerance_down),
        history_span_seconds=history_span_seconds(up, down),
        step_strategy=policy.strategy == "step",
        externals=tuple(externals_of(policy)),
        scale_to_zero_after_seconds=policy.scale_to_zero_after_seconds,
    )


# The daemon and the simulator evaluate one config many times: build its plan once. Keyed by
# id() with the config kept alive in the value, so an id is never reused while cached.
_PLANS: dict[int, PolicyPlan] = {}


def _cached_plan(policy: PolicyConfig) -> PolicyPlan:
    plan = _PLANS.get(id(policy))
    if plan is None or plan.config is not policy:
        if len(_PLANS) > 256:
            _PLANS.clear()
        plan = _PLANS[id(policy)] = plan_of(policy)
    return plan


def proposals_for(
    snapshot: ServiceSnapshot, policy: PolicyConfig | PolicyPlan, current: int, explain: bool = True
) -> list[MetricProposal]:
    plan = policy if isinstance(policy, PolicyPlan) else _cached_plan(policy)
    policy = plan.config
    if plan.step_strategy:
        values = {
            metric: (
                snapshot.queue_current
                if metric is Metric.QUEUE
                else pooled_value(metric, snapshot.replicas)
            )
            for metric in Metric
        }
        return step_scaling(plan.steps, values, current)
    if snapshot.metrics_error is None:
        proposals = [
            target_tracking(
                metric, snapshot.replicas, target, plan.tolerance, current, policy.initialization_seconds, explain
            )
            for metric, target in plan.targets
        ]
    elif plan.externals:
        # The replicas' metrics failed but the external ones may answer: each replica metric is
        # a proposal with no reading, so that the external ones scale up and never down alone.
        proposals = [
            MetricProposal(metric, None, target, None, f"{metric}: {snapshot.metrics_error}", "no_reading")
            for metric, target in plan.targets
        ]
    else:
        return []
    if plan.externals:
        readings = _readings(snapshot.external)
        ready = sum(1 for replica in snapshot.replicas if replica.ready)
        for external in plan.externals:
            reading = readings.get(external.name)
            proposals.append(external_tracking(
                external, reading.value if reading else None,
                reading.error if reading else "not read this cycle", plan.tolerance, current, ready, explain,
            ))
    return proposals


def _readings(external: tuple[ExternalReading, ...]) -> dict[str, ExternalReading]:
    return {reading.name: reading for reading in external}


# limit_rate's reasons for the bounds (not a rate rule): their message names the bounds' source.
_BOUNDS_REASONS = frozenset({"too_many_replicas", "too_few_replicas"})


def history_span_seconds(up: Behavior, down: Behavior) -> float:
    periods = [r.period_seconds for r in up.rules + down.rules]
    return max([up.stabilization_seconds, down.stabilization_seconds, *periods, 0.0])


def evaluate(
    snapshot: ServiceSnapshot,
    policy: PolicyConfig | PolicyPlan,
    bounds: Bounds,
    history: History,
    now: float,
    explain: bool = True,
) -> tuple[Decision, History]:
    """The decision for one snapshot: (decision, new history). explain=False leaves the
    decision's message empty when nothing went wrong (simulate reads only the reason); the
    desired count, the reason and the history are the same either way."""
    plan = policy if isinstance(policy, PolicyPlan) else _cached_plan(policy)
    policy = plan.config
    current = snapshot.current_replicas
    up, down = plan.up, plan.down
    history = history.pruned(now, plan.history_span_seconds)
    service = snapshot.service
    bounds_note = "" if bounds.source == "config" else f" ({bounds.source})"

    # Out of bounds is corrected before anything else, metrics or not (the HPA does the same):
    # a replica that died is replaced, a lowered max is honoured at once.
    if current > bounds.max_replicas:
        return Decision(
            service, current, bounds.max_replicas, "above_max",
            f"{current} replicas > max {bounds.max_replicas}{bounds_note} -> {current} -> {bounds.max_replicas}",
        ), history
    if current < bounds.min_replicas:
        return Decision(
            service, current, bounds.min_replicas, "below_min",
            f"{current} replicas < min {bounds.min_replicas}{bounds_note} -> {current} -> {bounds.min_replicas}",
        ), history

    last_active = history.last_active_seconds
    if plan.externals and bounds.min_replicas == 0:
        # Scale to zero (KEDA's activation): 0 <-> 1 on the activation values, 1..max by the policy.
        readings = _readings(snapshot.external)
        values = [(m, readings[m.name].value if m.name in readings else None) for m in plan.externals]
        active: list[tuple[ExternalTarget, float]] = [
            (m, v) for m, v in values if v is not None and v > m.activation
        ]
        unknown = [m for m, v in values if v is None]
        if active or unknown or last_active is None:
            last_active = now
        if current == 0:
            return _at_zero(snapshot, plan, bounds, history, now, active, unknown, values, last_active)
        bounds = Bounds(1, bounds.max_replicas, bounds.source)
    elif last_active is not None:
        last_active = None  # the service can no longer go to zero: nothing to remember

    proposals = proposals_for(snapshot, plan, current, explain)
    if (
        last_active is not None
        and plan.externals
        and now - last_active >= plan.scale_to_zero_after_seconds
        and all(replica.ready for replica in snapshot.replicas)
    ):
        # Every external metric has been at or below its activation value long enough, and no
        # replica is on its way: the service goes to 0 whatever CPU or memory say, or whether
        # they have readings (a busy worker finishes its job: it gets its stop signal and stop
        # timeout). As KEDA, which takes the service to 0 itself, outside the HPA.
        message = (
            f"every external metric at or below its activation for {now - last_active:.0f}s "
            f"(scale_to_zero_after_seconds {plan.scale_to_zero_after_seconds:g}) -> {current} -> 0"
        )
        return Decision(service, current, 0, "scale_to_zero", message, tuple(proposals)), History(
            history.recommendations, history.scale_up_events, history.scale_down_events, 0, last_active)
    valid: list[MetricProposal] = []
    invalid: list[MetricProposal] = []
    for proposal in proposals:
        (invalid if proposal.proposal is None else valid).append(proposal)

    fallback = False
    if not valid:
        failures = history.consecutive_failures + 1
        cause = snapshot.metrics_error or "; ".join(p.message for p in invalid) or "no metrics"
        why = f"metrics failed {failures} cycles in a row ({cause})"
        if policy.fallback_replicas is None or failures < policy.failure_threshold:
            # As the HPA when computeReplicasForMetrics fails: hold, and leave no recommendation
            # behind for the stabilization windows; only the failure streak grows.
            return Decision(
                service, current, current, "metrics_unavailable", f"{why}: holding {current}",
                proposals=tuple(proposals),
            ), History(history.recommendations, history.scale_up_events, history.scale_down_events, failures,
                       last_active)
        # The fallback is this cycle's recommendation and goes through the windows and the rate
        # rules like any other: a failing metrics source must not take 8 replicas to 1 at once.
        # It is brought into the bounds in force first, so that the bounds never hold it back.
        fallback = True
        steady_reason = "fallback"
        recommendation = clamp(policy.fallback_replicas, bounds.min_replicas, bounds.max_replicas)
        why = f"{why}: fallback"
    else:
        failures = 0  # metrics answered: the failure streak ends
        # The largest proposal wins (the first of equals, as max() would pick).
        winner = valid[0]
        for proposal in valid[1:]:
            if proposal.proposal > winner.proposal:  # type: ignore[operator]
                winner = proposal
        recommendation = winner.proposal or 0
        why = winner.message
        # What a no-change decision is called: the winning metric's own code says whether it
        # sat inside its tolerance band or was held by the rework.
        steady_reason = "within_tolerance" if winner.reason == "within_tolerance" else "hold"
        if invalid and recommendation < current:
            # Never shrink on a partial view: a metric we cannot read may be the one under load.
            # The HPA returns an error here (computeReplicasForMetrics) and so records no
            # recommendation: a hold forced by a blind spot must not sit in the down window.
            return Decision(
                service, current, current, "missing_metrics_hold",
                f"{why}; not scaling down while {', '.join(str(p.metric) for p in invalid)} has no reading"
                f" -> {current} -> {current}",
                tuple(proposals), current,
            ), History(history.recommendations, history.scale_up_events, history.scale_down_events, 0, last_active)

    stabilized, recommendations = stabilize(
        history.recommendations, recommendation, current, now,
        up.stabilization_seconds, down.stabilization_seconds,
    )
    history = History(recommendations, history.scale_up_events, history.scale_down_events, failures, last_active)
    if stabilized == current:
        # The count is within the bounds (checked above): keeping it, no rule or bound applies.
        # The usual cycle, so it skips limit_rate.
        desired, limit_reason, limit_message = current, "", ""
    else:
        desired, limit_reason, limit_message = limit_rate(
            stabilized, current, bounds.min_replicas, bounds.max_replicas, up, down,
            history.scale_up_events, history.scale_down_events, now,
        )
    if fallback and (limit_reason or stabilized != recommendation):
        why = f"{why} to {recommendation} held back"

    message = ""
    if limit_reason:
        reason = limit_reason
        if explain:
            note = f"{limit_message}{bounds_note if reason in _BOUNDS_REASONS else ''}"
            message = f"{why} -> {current} -> {desired} (wanted {stabilized}, {note})"
    elif stabilized != recommendation:
        held_up = stabilized > recommendation
        reason = "scale_down_stabilized" if held_up else "scale_up_stabilized"
        if explain:
            window, which = (down, "highest") if held_up else (up, "lowest")
            message = (
                f"{why} -> {current} -> {desired} (wanted {recommendation}, {which} recommendation "
                f"of the last {window.stabilization_seconds:g}s is {stabilized})"
            )
    else:
        # Nothing held it back: the recommendation itself decided.
        if fallback or desired == current:
            reason = steady_reason
        else:
            reason = "scale_up" if desired > current else "scale_down"
        message = f"{why} -> {current} -> {desired}" if explain else ""
    return Decision(service, current, desired, reason, message, tuple(proposals), recommendation), history


def _at_zero(
    snapshot: ServiceSnapshot,
    plan: PolicyPlan,
    bounds: Bounds,
    history: History,
    now: float,
    active: list[tuple[ExternalTarget, float]],
    unknown: list[ExternalTarget],
    values: list[tuple[ExternalTarget, float | None]],
    last_active: float,
) -> tuple[Decision, History]:
    """A service at 0 replicas: CPU and memory do not apply (nothing runs to measure); the
    external metrics' activation values decide whether it wakes up (0 -> 1; the policy takes it
    on from there). A source that fails holds it at 0, with the failure rules."""
    service = snapshot.service
    readings = _readings(snapshot.external)
    if active:
        metric, value = active[0]
        message = f"{metric.name} {value:.4g} > activation {metric.activation:g} -> 0 -> 1"
        return Decision(service, 0, 1, "activation", message, recommendation=1), History(
            history.recommendations, history.scale_up_events, history.scale_down_events, 0, last_active)
    if unknown:
        failures = history.consecutive_failures + 1
        causes = "; ".join(
            f"{m.name}: {(readings[m.name].error if m.name in readings else None) or 'not read this cycle'}"
            for m in unknown
        )
        fallback = plan.config.fallback_replicas
        if fallback is not None and fallback > 0 and failures >= plan.config.failure_threshold:
            desired = clamp(fallback, bounds.min_replicas, bounds.max_replicas)
            message = f"metrics failed {failures} cycles in a row ({causes}): fallback -> 0 -> {desired}"
            return Decision(service, 0, desired, "fallback", message, recommendation=desired), History(
                history.recommendations, history.scale_up_events, history.scale_down_events, failures, last_active)
        message = f"metrics failed {failures} cycles in a row ({causes}): holding 0"
        return Decision(service, 0, 0, "metrics_unavailable", message), History(
            history.recommendations, history.scale_up_events, history.scale_down_events, failures, last_active)
    shown = ", ".join(f"{m.name} {v:.4g} <= {m.activation:g}" for m, v in values)
    return Decision(service, 0, 0, "inactive", f"{shown}: staying at 0 -> 0 -> 0"), History(
        history.recommendations, history.scale_up_events, history.scale_down_events, 0, last_active)


def seed_history(current_replicas: int, now: float) -> History:
    """The history of a service seen for the first time: its current count recommended at `now`.

    The HPA does the same on first sight of an HPA (`a.recommendations[key] =
    []timestampedRecommendation{{currentReplicas, time.Now()}}`), so that a restarted controller
    keeps the count for a full down window instead of acting on one cycle's view (6 -> 2).
    """
    return History(recommendations=Recommendations((TimedValue(now, current_replicas),)))


def record_scale(history: History, now: float, current: int, desired: int) -> History:
    """Remember a change that was applied, for the rate rules' period accounting."""
    if desired > current:
        return history._replace(
            scale_up_events=history.scale_up_events + (TimedValue(now, desired - current),),
        )
    if desired < current:
        return history._replace(
            scale_down_events=history.scale_down_events + (TimedValue(now, current - desired),),
        )
    return history
