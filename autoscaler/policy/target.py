"""Per-metric proposals: target tracking (the Kubernetes HPA's arithmetic) and step scaling.

Pure: no Docker, no clock, no logging. Each function returns a MetricProposal that says what
the metric wants and why; evaluate.py combines them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from autoscaler.model import SAMPLE_ATTRIBUTES, Metric, MetricProposal, ReplicaSample

UNITS: dict[Metric, str] = {
    Metric.CPU: "%",
    Metric.MEMORY: "%",
    Metric.REQUESTS_PER_SECOND: " rps",
    Metric.RESPONSE_TIME_MS: " ms",
    Metric.QUEUE: "",
}
# Enum hashing and formatting run Python code; target_tracking runs every simulated step, so
# it looks each metric's plain strings up once.
_LABELS: dict[Metric, tuple[str, str]] = {m: (str(m.value), UNITS[m]) for m in Metric}


def fmt(metric: Metric, value: float) -> str:
    return f"{value:.4g}{UNITS[metric]}"


@dataclass(frozen=True)
class Tolerance:
    """Inclusive band [1 - down, 1 + up] around ratio 1.0 inside which the metric asks for no
    change (Tolerances.isWithin). Any value >= 0 is valid, as in the HPA: down >= 1 puts every
    ratio below 1 inside the band, which turns ratio scale-down off for this metric."""

    up: float = 0.1
    down: float = 0.1


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def _ceil_replicas(value: float) -> int:
    # ratio * count carries float noise (124 / 60 * 15 = 31.000000000000004); a count that is
    # whole on paper must not gain a replica from it.
    if not math.isfinite(value):
        return 2**31 - 1  # an absurd reading asks for "as many as allowed"; the max clamps it
    ceiling = math.ceil(value)
    if value - (ceiling - 1) > 1e-6:
        # Well above the whole number below, rounding to 9 places cannot change the ceiling: it
        # moves the value by at most 5e-10, so not down to ceiling - 1, and not past ceiling,
        # itself a multiple of 1e-9. This skips round(value, 9), which goes through decimal
        # digits, on most simulated steps.
        return ceiling
    return math.ceil(round(value, 9))


def target_tracking(
    metric: Metric,
    replicas: Sequence[ReplicaSample],
    target: float,
    tolerance: Tolerance,
    current_replicas: int,
    initialization_seconds: float = 0.0,
    explain: bool = True,
) -> MetricProposal:
    """The HPA's replica calculation for one metric (replica_calculator.go).

    Utilization is pooled over the replicas that have a reading and are ready. Every replica of a
    service has the same limit, so the pooled ratio sum(usage)/sum(limit) equals the mean of the
    per-replica percentages. Missing and not-ready replicas are then reworked the HPA's way.
    explain=False leaves the messages empty (simulate reads only the codes: formatting two
    numbers a step was a fifth of its time); every number and code is the same.
    """
    # Only percentages of a limit have a natural "full" value; the rest fall back to the target.
    is_resource = metric is Metric.CPU or metric is Metric.MEMORY
    attribute = SAMPLE_ATTRIBUTES[metric]
    label, unit = _LABELS[metric]
    # A CPU start-up spike is not load: a young replica counts as not ready for CPU.
    min_age_seconds = initialization_seconds if metric is Metric.CPU else -math.inf
    ready_sum = 0.0
    ready = unready = missing = 0
    for replica in replicas:
        value = getattr(replica, attribute)
        if value is None:
            missing += 1
        elif not replica.ready or replica.age_seconds < min_age_seconds:
            unready += 1
        else:
            ready_sum += value
            ready += 1

    if not ready:
        return MetricProposal(
            metric, None, target, None, f"{label}: no reading from a ready replica", "no_reading"
        )

    utilization = ready_sum / ready
    ratio = utilization / target
    if explain:
        compare = ">" if ratio > 1 else "<" if ratio < 1 else "="
        head = f"{label} {utilization:.4g}{unit} {compare} target {target:.4g}{unit}"
    else:
        head = ""

    low, high = 1.0 - tolerance.down, 1.0 + tolerance.up
    scale_up_with_unready = unready > 0 and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if low <= ratio <= high:
            return MetricProposal(
                metric, utilization, target, current_replicas, f"{head}: within tolerance" if explain else "",
                "within_tolerance",
            )
        proposal = _ceil_replicas(ratio * ready)
        return MetricProposal(metric, utilization, target, proposal, head, "scale")

    total, count = ready_sum, ready
    notes: list[str] = []
    if missing:
        if ratio < 1.0:
            # On a scale-down, treat missing replicas as using 100% of their limit (or the
            # target, if that is higher), so that we do not shrink on a partial view.
            fallback = max(100.0, target) if is_resource else target
            total += fallback * missing
            count += missing
            notes.append(f"{missing} missing counted as {fallback:.4g}{unit}")
        elif ratio > 1.0:
            # On a scale-up, treat missing replicas as idle, so we do not overshoot.
            count += missing
            notes.append(f"{missing} missing counted as 0")
    if scale_up_with_unready:
        # Not-ready replicas will take load soon: count them as idle on a scale-up.
        count += unready
        notes.append(f"{unready} not ready counted as 0")

    new_utilization = total / count
    new_ratio = new_utilization / target
    detail = f"{head} ({', '.join(notes)}: {new_utilization:.4g}{unit})" if explain else ""
    held = f"{detail}: hold" if explain else ""
    if (
        low <= new_ratio <= high
        or (ratio < 1.0 < new_ratio)
        or (ratio > 1.0 > new_ratio)
    ):
        # The rework flipped the direction or landed in the band: not sure enough to act.
        return MetricProposal(
            metric, utilization, target, current_replicas, held, "hold"
        )
    proposal = _ceil_replicas(new_ratio * count)
    if (new_ratio < 1.0 and proposal > current_replicas) or (
        new_ratio > 1.0 and proposal < current_replicas
    ):
        return MetricProposal(
            metric, utilization, target, current_replicas, held, "hold"
        )
    return MetricProposal(metric, utilization, target, proposal, detail, "scale")


@dataclass(frozen=True)
class ExternalTarget:
    """An external metric's target, as evaluate() needs it."""

    name: str
    target: float
    average: bool  # True: a total split across replicas (AverageValue); False: a value (Value)
    activation: float


def external_tracking(
    metric: ExternalTarget,
    value: float | None,
    error: str | None,
    tolerance: Tolerance,
    current_replicas: int,
    ready_replicas: int,
    explain: bool = True,
) -> MetricProposal:
    """The HPA's replica calculation for an External metric (GetExternalPerPodMetricReplicas
    and GetExternalMetricReplicas in replica_calculator.go).

    average: usage ratio = value / (target x current); outside the tolerance, ceil(value / target).
    value:   usage ratio = value / target; outside the tolerance, ceil(ratio x ready replicas).
    A count that moves against the ratio (too few ready replicas to say) holds instead.
    Callers handle current_replicas == 0 (activation), so it is at least 1 here.
    """
    name, target = metric.name, metric.target
    if value is None:
        return MetricProposal(name, None, target, None, f"{name}: {error or 'no reading'}", "no_reading")
    if metric.average:
        ratio = value / (target * current_replicas)
        head = f"{name} {value:.4g} ({value / current_replicas:.4g} per replica) {_compare(ratio)} target {target:.4g} per replica" \
            if explain else ""
    else:
        ratio = value / target
        head = f"{name} {value:.4g} {_compare(ratio)} target {target:.4g}" if explain else ""
    if 1.0 - tolerance.down <= ratio <= 1.0 + tolerance.up:
        return MetricProposal(name, value, target, current_replicas, f"{head}: within tolerance" if explain else "",
                              "within_tolerance")
    proposal = _ceil_replicas(value / target) if metric.average else _ceil_replicas(ratio * ready_replicas)
    if (ratio > 1.0 and proposal < current_replicas) or (ratio < 1.0 and proposal > current_replicas):
        note = f" ({ready_replicas} ready of {current_replicas}): hold" if explain else ""
        return MetricProposal(name, value, target, current_replicas, f"{head}{note}", "hold")
    return MetricProposal(name, value, target, proposal, head, "scale")


def _compare(ratio: float) -> str:
    return ">" if ratio > 1 else "<" if ratio < 1 else "="


@dataclass(frozen=True)
class Step:
    metric: Metric
    lower: float | None  # inclusive
    upper: float | None  # exclusive
    adjustment: int
    percent: bool

    def matches(self, value: float) -> bool:
        return (self.lower is None or value >= self.lower) and (
            self.upper is None or value < self.upper
        )

    def describe(self) -> str:
        bounds = []
        if self.lower is not None:
            bounds.append(f">= {self.lower:g}")
        if self.upper is not None:
            bounds.append(f"< {self.upper:g}")
        sign = "+" if self.adjustment >= 0 else ""
        unit = "%" if self.percent else ""
        return f"{self.metric} {' and '.join(bounds)} -> {sign}{self.adjustment}{unit}"


def apply_adjustment(current_replicas: int, step: Step) -> int:
    if not step.percent:
        return current_replicas + step.adjustment
    change = current_replicas * step.adjustment / 100.0
    # Round away from zero so that +50% of 1 adds a replica and -50% of 1 removes one.
    rounded = math.ceil(change) if change > 0 else math.floor(change)
    return current_replicas + rounded


def pooled_value(metric: Metric, replicas: Sequence[ReplicaSample]) -> float | None:
    values = [
        v for r in replicas if r.ready and (v := r.value(metric)) is not None
    ]
    return _mean(values) if values else None


def step_scaling(
    steps: Sequence[Step],
    values: dict[Metric, float | None],
    current_replicas: int,
) -> list[MetricProposal]:
    """ECS step / Nomad threshold: the first matching band of each metric adjusts the count.

    A metric with no matching band holds the current count; a metric with no value yields no
    proposal (it is missing, not zero).
    """
    proposals: list[MetricProposal] = []
    for metric in dict.fromkeys(step.metric for step in steps):
        value = values.get(metric)
        if value is None:
            proposals.append(
                MetricProposal(metric, None, math.nan, None, f"{metric}: no reading", "no_reading")
            )
            continue
        match = next((s for s in steps if s.metric is metric and s.matches(value)), None)
        if match is None:
            proposals.append(
                MetricProposal(
                    metric, value, math.nan, current_replicas,
                    f"{metric} {fmt(metric, value)}: no step matches", "no_step_matches",
                )
            )
            continue
        proposals.append(
            MetricProposal(
                metric, value, math.nan, apply_adjustment(current_replicas, match),
                f"{metric} {fmt(metric, value)}: step {match.describe()}", "step",
            )
        )
    return proposals
