"""How a service scales: target tracking or step rules, and the HPA's behavior (stabilization
windows and rate rules) in each direction."""

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from autoscaler.config.metrics import ExternalMetric, metric_names_problems
from autoscaler.config.values import (
    MAX_FAILURE_THRESHOLD,
    MAX_METRIC_VALUE,
    MAX_PERCENT_CHANGE,
    MAX_REPLICAS,
    MAX_TIMEOUT_SECONDS,
    MAX_TOLERANCE,
    ConfigModel,
    Loc,
    raise_problems,
    shown,
)

# --- scaling behavior (Kubernetes HPA v2 semantics) ------------------------------------------


class ScalingRule(ConfigModel):
    """At most ``value`` replicas (or percent of current replicas) per ``period_seconds``."""

    type: Literal["replicas", "percent"]
    # At most MAX_REPLICAS for "replicas" (checked below), MAX_PERCENT_CHANGE for "percent".
    value: int = Field(gt=0, le=MAX_PERCENT_CHANGE)
    # The HPA caps periods at 30 minutes; it also bounds how much scale history we keep.
    period_seconds: int = Field(gt=0, le=1800)

    @model_validator(mode="after")
    def _check_value(self) -> "ScalingRule":
        if self.type == "replicas" and self.value > MAX_REPLICAS:
            raise_problems([(("value",), f"must be <= {MAX_REPLICAS}, the most replicas a service may have (got {self.value})")])
        return self


class ScalingBehavior(ConfigModel):
    """One direction of the HPA ``behavior`` block; ``None`` fields mean "use the default"."""

    stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    # Which rule wins when several apply: "max" allows the biggest change, "min" the smallest,
    # "disabled" forbids scaling in this direction altogether.
    select: Literal["max", "min", "disabled"] = "max"
    # An empty list would mean "no limit" for one reader and "never scale" for another.
    rules: Annotated[list[ScalingRule], Field(min_length=1)] | None = None

    def with_defaults(self, defaults: "ScalingBehavior") -> "ScalingBehavior":
        """Fill unset fields from ``defaults`` (``select`` is always set: both defaults are "max")."""
        return ScalingBehavior(
            stabilization_seconds=(
                self.stabilization_seconds if self.stabilization_seconds is not None else defaults.stabilization_seconds
            ),
            select=self.select,
            rules=list(self.rules if self.rules is not None else defaults.rules or []),
        )


# The HPA defaults: react to load at once (up to 4 pods or doubling per 15 s), but only shrink
# after the recommendation has stayed low for 5 minutes.
DEFAULT_SCALE_UP = ScalingBehavior(
    stabilization_seconds=0,
    select="max",
    rules=[
        ScalingRule(type="replicas", value=4, period_seconds=15),
        ScalingRule(type="percent", value=100, period_seconds=15),
    ],
)
DEFAULT_SCALE_DOWN = ScalingBehavior(
    stabilization_seconds=300,
    select="max",
    rules=[ScalingRule(type="percent", value=100, period_seconds=15)],
)


# --- step scaling ---------------------------------------------------------------------------

MetricName = Literal["cpu", "memory", "requests_per_second", "response_time_ms", "queue"]

_ADJUSTMENT_RE = re.compile(r"([+-])([0-9]+)(%?)|0%?", re.ASCII)
# Step thresholds compare with readings, which are >= 0 and at most MAX_METRIC_VALUE.
Threshold = Annotated[float, Field(ge=0, le=MAX_METRIC_VALUE)]


class StepRule(ConfigModel):
    """When ``lower <= metric < upper``, change the replica count by ``adjustment``."""

    metric: MetricName
    lower: Threshold | None = None
    upper: Threshold | None = None
    # "+2" / "-1" change the count; "+50%" / "-25%" change it relative to the current count.
    adjustment: str

    @field_validator("adjustment", mode="before")
    @classmethod
    def _check_adjustment(cls, value: Any) -> Any:
        # TOML reads `adjustment = +2` as the integer 2; that is unambiguous, so accept it.
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:+d}" if value else "0"
        match = _ADJUSTMENT_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{shown(value)} is not a valid adjustment (use e.g. '+2', '-1', '+50%', '-25%' or '0')")
        value = value.strip()
        sign, digits, percent = match.groups()
        if digits is None:
            return value  # "0" or "0%"
        # len() first: int() of thousands of digits is slow, and refused past 4300.
        amount = int(digits) if len(digits) <= 9 else MAX_PERCENT_CHANGE + MAX_REPLICAS + 1
        if percent and sign == "-" and amount > 100:
            raise ValueError(f"{shown(value)} would remove more than 100% of the replicas")
        if percent and amount > MAX_PERCENT_CHANGE:
            raise ValueError(f"{shown(value)} is more than {MAX_PERCENT_CHANGE}% of the replicas")
        if not percent and amount > MAX_REPLICAS:
            raise ValueError(f"{shown(value)} is more than {MAX_REPLICAS} replicas, the most a service may have")
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> "StepRule":
        if self.lower is None and self.upper is None:
            raise_problems([((), "set lower, upper or both (lower is inclusive, upper exclusive)")])
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise_problems([(("upper",), f"must be > lower ({self.lower:g})")])
        return self

    @property
    def adjustment_value(self) -> int:
        """Signed amount: replicas, or percent of the current replicas if ``adjustment_is_percent``."""
        return int(self.adjustment.rstrip("%"))

    @property
    def adjustment_is_percent(self) -> bool:
        return self.adjustment.endswith("%")

    def contains(self, value: float) -> bool:
        return (self.lower is None or value >= self.lower) and (self.upper is None or value < self.upper)

    def overlaps(self, other: "StepRule") -> bool:
        if self.metric != other.metric:
            return False
        inf = float("inf")
        lower_a, upper_a = self.lower if self.lower is not None else -inf, self.upper if self.upper is not None else inf
        lower_b, upper_b = other.lower if other.lower is not None else -inf, other.upper if other.upper is not None else inf
        return lower_a < upper_b and lower_b < upper_a


# --- policy ---------------------------------------------------------------------------------

Percent = Annotated[float, Field(gt=0, le=100)]
MetricTarget = Annotated[float, Field(gt=0, le=MAX_METRIC_VALUE)]
# As the HPA: any tolerance >= 0. A scale-down tolerance >= 1 turns ratio-based scale-down off
# (every ratio below the target is then within it); that is a valid choice, not an error.
Tolerance = Annotated[float, Field(ge=0, le=MAX_TOLERANCE)]


class PolicyConfig(ConfigModel):
    strategy: Literal["target", "step"] = "target"
    # Utilisation is measured against the service's cpu_limit / memory_limit. TOML has no
    # null, so the CPU target cannot be switched off from the file: it is always active with
    # the "target" strategy (default 60) alongside any other target you set.
    target_cpu_percent: Percent | None = 60.0
    target_memory_percent: Percent | None = None
    target_requests_per_second_per_replica: MetricTarget | None = None
    target_response_time_ms: MetricTarget | None = None
    # No scaling while |current/target - 1| <= tolerance, so noise does not cause flapping.
    tolerance: Tolerance = 0.1
    tolerance_up: Tolerance | None = None
    tolerance_down: Tolerance | None = None
    # Replicas younger than this are left out of CPU averages: start-up spikes are not load.
    initialization_seconds: float = Field(30.0, ge=0, le=MAX_TIMEOUT_SECONDS)
    # Shorthand for scale_down.stabilization_seconds, the knob people most often change.
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    drain_timeout_seconds: float = Field(30.0, ge=0, le=MAX_TIMEOUT_SECONDS)
    # Consecutive failed metric reads before fallback_replicas (if set) takes over.
    failure_threshold: int = Field(3, ge=1, le=MAX_FAILURE_THRESHOLD)
    fallback_replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] | None = None
    scale_up: ScalingBehavior | None = None
    scale_down: ScalingBehavior | None = None
    steps: list[StepRule] = []
    # External metrics ([[services.NAME.policy.metrics]]): with target tracking, each proposes a
    # count next to the targets above, and the largest proposal wins.
    metrics: list[ExternalMetric] = []
    # With min_replicas = 0: how long every external metric must stay at or below its
    # activation before the service goes to 0 (KEDA's cooldownPeriod).
    scale_to_zero_after_seconds: float = Field(300.0, ge=0, le=MAX_TIMEOUT_SECONDS)

    @model_validator(mode="after")
    def _check_policy(self) -> "PolicyConfig":
        problems: list[tuple[Loc, str]] = metric_names_problems(self.metrics, ("metrics",))
        if self.strategy == "step" and self.metrics:
            problems.append((("metrics",), 'external metrics are used with strategy = "target"'))
        if self.strategy == "target" and not self.targets():
            problems.append(((), 'strategy "target" needs at least one target_* setting'))
        if self.strategy == "step" and not self.steps:
            problems.append((("steps",), 'strategy "step" needs at least one [[...policy.steps]] rule'))
        if self.strategy != "step" and self.steps:
            # Silently ignoring rules the user wrote would be worse than refusing to start.
            problems.append((("steps",), 'steps are only used with strategy = "step"'))
        for index, step in enumerate(self.steps):
            for earlier in range(index):
                if step.overlaps(self.steps[earlier]):
                    problems.append((("steps", index), f"overlaps steps.{earlier} for metric {step.metric!r}"))
        shorthand = self.scale_down_stabilization_seconds
        explicit = self.scale_down.stabilization_seconds if self.scale_down is not None else None
        if shorthand is not None and explicit is not None and shorthand != explicit:
            problems.append(
                (
                    ("scale_down_stabilization_seconds",),
                    f"conflicts with scale_down.stabilization_seconds ({shorthand} != {explicit}); set only one",
                )
            )
        raise_problems(problems)
        return self

    def targets(self) -> dict[str, float]:
        """The configured targets keyed by the metric names used in step rules."""
        candidates = {
            "cpu": self.target_cpu_percent,
            "memory": self.target_memory_percent,
            "requests_per_second": self.target_requests_per_second_per_replica,
            "response_time_ms": self.target_response_time_ms,
        }
        return {metric: target for metric, target in candidates.items() if target is not None}

    @property
    def effective_tolerance_up(self) -> float:
        return self.tolerance if self.tolerance_up is None else self.tolerance_up

    @property
    def effective_tolerance_down(self) -> float:
        return self.tolerance if self.tolerance_down is None else self.tolerance_down

    def effective_scale_up(self) -> ScalingBehavior:
        return (self.scale_up or ScalingBehavior()).with_defaults(DEFAULT_SCALE_UP)

    def effective_scale_down(self) -> ScalingBehavior:
        behavior = self.scale_down or ScalingBehavior()
        if behavior.stabilization_seconds is None and self.scale_down_stabilization_seconds is not None:
            behavior = behavior.model_copy(update={"stabilization_seconds": self.scale_down_stabilization_seconds})
        return behavior.with_defaults(DEFAULT_SCALE_DOWN)
