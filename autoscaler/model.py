"""Frozen value types shared by the policy, the control loop and the tools.

Nothing here does I/O: a snapshot is what the loop observed, a decision is what the policy
concluded, history is what the policy remembers. The types built every cycle (and every step of
`simulate`) are NamedTuples: immutable like frozen dataclasses, several times cheaper to create. All times are seconds on one clock that the
caller chooses (monotonic in the daemon, trace time in the simulator).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple


class Metric(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    REQUESTS_PER_SECOND = "requests_per_second"
    RESPONSE_TIME_MS = "response_time_ms"
    QUEUE = "queue"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    NONE = "none"


class ReplicaSample(NamedTuple):
    """One replica as the policy sees it. None = no reading ("missing"), never 0."""

    name: str
    ready: bool
    age_seconds: float
    cpu_percent: float | None = None
    memory_percent: float | None = None
    requests_per_second: float | None = None
    response_time_ms: float | None = None

    def value(self, metric: Metric) -> float | None:
        attribute = SAMPLE_ATTRIBUTES.get(metric)
        return getattr(self, attribute) if attribute else None


SAMPLE_ATTRIBUTES = {
    Metric.CPU: "cpu_percent",
    Metric.MEMORY: "memory_percent",
    Metric.REQUESTS_PER_SECOND: "requests_per_second",
    Metric.RESPONSE_TIME_MS: "response_time_ms",
}


class ServiceSnapshot(NamedTuple):
    """Everything observed about one service in one cycle.

    `replicas` are the live replicas that count toward the current size (not draining).
    `metrics_error` is set when the metrics source failed as a whole this cycle.
    """

    service: str
    replicas: tuple[ReplicaSample, ...]
    queue_current: float | None = None
    metrics_error: str | None = None

    @property
    def current_replicas(self) -> int:
        return len(self.replicas)


# Why a metric proposes what it does; evaluate() decides on these codes, never on the message.
#   scale             target tracking computed ceil(ratio x count) (which may equal the count)
#   within_tolerance  the ratio is inside the tolerance band: the current count
#   hold              the missing/not-ready rework flipped the direction or landed in the band,
#                     or moved the count against the ratio: the current count
#   no_reading        no usable reading: no proposal (None)
#   step              a step band matched and adjusted the count
#   no_step_matches   step scaling with no matching band: the current count
ProposalReason = Literal["scale", "within_tolerance", "hold", "no_reading", "step", "no_step_matches"]


class MetricProposal(NamedTuple):
    """What one metric asks for, and why."""

    metric: Metric
    utilization: float | None  # the pooled value compared with the target (percent, rps, ms)
    target: float
    proposal: int | None  # None = this metric could not be evaluated
    message: str  # for people; never parsed
    # Last and defaulted so that five-field positional construction keeps working; the policy
    # always sets it, "" only comes from callers that build proposals by hand.
    reason: ProposalReason | Literal[""] = ""


class Decision(NamedTuple):
    service: str
    current: int
    desired: int
    reason: str  # short machine-readable cause: a metric label and a log field
    message: str  # one human line: "cpu 87% > target 60% -> 2 -> 3"
    proposals: tuple[MetricProposal, ...] = ()
    recommendation: int | None = None  # desired before stabilization, rate limits and bounds

    @property
    def direction(self) -> Direction:
        if self.desired > self.current:
            return Direction.UP
        if self.desired < self.current:
            return Direction.DOWN
        return Direction.NONE


class TimedValue(NamedTuple):
    at_seconds: float
    value: int


class History(NamedTuple):
    """What the policy remembers between cycles; replaced, never mutated.

    recommendations: raw per-cycle recommendations, for the stabilization windows.
    scale_up_events / scale_down_events: replicas added/removed and when, for rate limits.
    consecutive_failures: cycles in a row whose metrics failed as a whole.
    """

    recommendations: tuple[TimedValue, ...] = ()
    scale_up_events: tuple[TimedValue, ...] = ()
    scale_down_events: tuple[TimedValue, ...] = ()
    consecutive_failures: int = 0

    def pruned(self, now: float, keep_seconds: float) -> History:
        """Drops entries older than keep_seconds, lazily: only once some entry is twice that
        old, so that most cycles copy nothing. Every reader filters by time, so entries kept a
        little longer change no result; memory stays bounded by twice the window."""
        lazy_cutoff = now - 2 * keep_seconds
        recommendations, up, down = self.recommendations, self.scale_up_events, self.scale_down_events
        if (
            (not recommendations or recommendations[0].at_seconds > lazy_cutoff)
            and (not up or up[0].at_seconds > lazy_cutoff)
            and (not down or down[0].at_seconds > lazy_cutoff)
        ):
            return self
        cutoff = now - keep_seconds

        def fresh(entries: tuple[TimedValue, ...]) -> tuple[TimedValue, ...]:
            # Entries are in time order: only a prefix can be stale.
            if not entries or entries[0].at_seconds > cutoff:
                return entries
            return entries[bisect_right(entries, cutoff, key=_at_seconds):]

        return History(
            fresh(self.recommendations),
            fresh(self.scale_up_events),
            fresh(self.scale_down_events),
            self.consecutive_failures,
        )


def _at_seconds(entry: TimedValue) -> float:
    return entry.at_seconds


@dataclass(frozen=True)
class Bounds:
    min_replicas: int
    max_replicas: int
    source: str = "config"  # or the name of the schedule window in force
