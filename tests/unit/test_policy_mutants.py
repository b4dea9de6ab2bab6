"""Behaviours of the decision code that mutation testing found no test holding.

Each test names the behaviour; `mutmut` (README: "Mutation testing") showed that a change to
the line it covers left every other unit test passing. Equivalent mutants are listed in
tests/unit/MUTANTS.md instead.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from autoscaler.config import MAX_REPLICAS, ExternalMetric, PolicyConfig, ScalingBehavior, ServiceConfig
from autoscaler.model import Bounds, ExternalReading, History, Metric, ReplicaSample, ServiceSnapshot, TimedValue
from autoscaler.policy.behavior import Behavior, Limited, Rule, limit_rate, scale_down_limit, scale_up_limit
from autoscaler.policy.evaluate import evaluate
from autoscaler.policy.schedule import ScheduledBounds, crontab_trigger
from autoscaler.policy.target import Step, Tolerance, apply_adjustment, target_tracking

NOW = 10_000.0
DEFAULT = Tolerance(0.1, 0.1)
READY, UNREADY, MISSING = "ready", "unready", "missing"


def cpu(*replicas: tuple[str, float | None]) -> tuple[ReplicaSample, ...]:
    """Replicas long past the initialization window: (READY | UNREADY, cpu) or (MISSING, None)."""
    return tuple(
        ReplicaSample(f"r{i}", kind != UNREADY, 3600.0, cpu_percent=None if kind == MISSING else value)
        for i, (kind, value) in enumerate(replicas)
    )


@pytest.mark.parametrize(
    ("replicas", "target", "expected", "reason", "fragment"),
    [
        # Every not-ready replica counts as idle on a scale-up: 105% / 10 replicas is 1.05x the
        # target, inside the band, so the count holds (counting only one of the nine would
        # make it 52.5%, 5.25x, and ask for 11).
        (cpu((READY, 105.0), *[(UNREADY, 0.0)] * 9), 10, 10, "hold", "(9 not ready counted as 0: 10.5%)"),
        # The reworked ratio exactly on the band's lower edge (90 / 100) is inside it: hold.
        (cpu(*[(READY, 80.0)] * 5, *[(MISSING, None)] * 5), 100, 10, "hold", "(5 missing counted as 100%: 90%)"),
        # And exactly on the upper edge (110 / 10 replicas = 11 against 10): hold.
        (cpu((READY, 110.0), *[(UNREADY, 0.0)] * 9), 10, 10, "hold", "(9 not ready counted as 0: 11%)"),
        # Both reworks at once: the notes are listed with a comma.
        (cpu((READY, 90.0), (MISSING, None), (UNREADY, 0.0)), 10, 9, "scale",
         "(1 missing counted as 0, 1 not ready counted as 0: 30%)"),
    ],
    ids=["all-unready-count", "band-lower-edge-inclusive", "band-upper-edge-inclusive", "notes-joined"],
)
def test_the_rework_counts_every_replica_and_keeps_the_band_inclusive(
    replicas: tuple[ReplicaSample, ...], target: float, expected: int, reason: str, fragment: str
) -> None:
    proposal = target_tracking(Metric.CPU, replicas, target, DEFAULT, len(replicas))
    assert (proposal.proposal, proposal.reason) == (expected, reason)
    assert fragment in proposal.message


@pytest.mark.parametrize(
    ("replicas", "current", "expected", "reason", "fragment"),
    [
        # 4 x 80% and one missing counted as 100%: 84%, which asks for the current 5 itself. That
        # is a scale proposal (`status` shows it as such), not a hold.
        (cpu(*[(READY, 80.0)] * 4, (MISSING, None)), 5, 5, "scale", "counted as 100%: 84%)"),
        # 650% and four not ready counted as idle: 130% of 5, asks for 7 = the current count
        # (two replicas on their way have no sample): a scale proposal too.
        (cpu((READY, 650.0), *[(UNREADY, 0.0)] * 4), 7, 7, "scale", "counted as 0: 130%)"),
        # 300% and one missing counted as idle: 150% of 2 asks for 3, fewer than the current 5,
        # while the load says grow: the rework contradicts itself, hold.
        (cpu((READY, 300.0), (MISSING, None)), 5, 5, "hold", "counted as 0: 150%): hold"),
    ],
    ids=["down-rework-asks-for-current", "up-rework-asks-for-current", "up-rework-asks-for-fewer"],
)
def test_a_reworked_proposal_against_the_current_count(
    replicas: tuple[ReplicaSample, ...], current: int, expected: int, reason: str, fragment: str
) -> None:
    proposal = target_tracking(Metric.CPU, replicas, 100, DEFAULT, current)
    assert (proposal.proposal, proposal.reason) == (expected, reason)
    assert proposal.message.endswith(fragment)


def test_no_reading_still_reports_the_target() -> None:
    # `decide` and `status` print each metric's target next to its reading, also when no
    # replica has one.
    proposal = target_tracking(Metric.CPU, cpu((MISSING, None)), 60, DEFAULT, 1)
    assert (proposal.proposal, proposal.reason, proposal.target) == (None, "no_reading", 60)


@pytest.mark.parametrize(
    ("step", "text"),
    [
        (Step(Metric.CPU, 80, None, 2, False), "cpu >= 80 -> +2"),
        (Step(Metric.CPU, None, 20, -1, False), "cpu < 20 -> -1"),
        (Step(Metric.CPU, 20, 80, 0, False), "cpu >= 20 and < 80 -> +0"),
        (Step(Metric.CPU, 90, None, 1, False), "cpu >= 90 -> +1"),
        (Step(Metric.CPU, 80, None, 50, True), "cpu >= 80 -> +50%"),
        (Step(Metric.CPU, None, 10, -25, True), "cpu < 10 -> -25%"),
    ],
    ids=["plus-replicas", "minus-replicas", "zero-has-a-plus", "plus-one", "plus-percent", "minus-percent"],
)
def test_a_step_describes_its_band_and_adjustment(step: Step, text: str) -> None:
    # The decision's message quotes this: an absolute step must not read as a percentage.
    assert step.describe() == text


@pytest.mark.parametrize(
    ("current", "adjustment", "expected"),
    [
        (200, 100, 400),
        (200, -100, 0),
        (300, 50, 450),
    ],
    ids=["plus-100pct-of-200", "minus-100pct-of-200", "plus-50pct-of-300"],
)
def test_a_percent_step_is_a_percentage_of_large_counts(current: int, adjustment: int, expected: int) -> None:
    # Changes past 100 replicas show whether the percentage is of 100 exactly (a small error
    # in the divisor vanishes in the rounding below that).
    assert apply_adjustment(current, Step(Metric.CPU, 0, None, adjustment, True)) == expected


DOWN_PODS_FIRST = (Rule("replicas", 5, 60), Rule("percent", 10, 60))
UP_PODS_FIRST = (Rule("replicas", 20, 60), Rule("percent", 10, 60))
TIED = (Rule("replicas", 1, 60), Rule("percent", 10, 30))
LIMITS = {"down": scale_down_limit, "up": scale_up_limit}


@pytest.mark.parametrize(
    ("direction", "rules", "select", "expected"),
    [
        # From 10 down, -5 -> 5 and -10% -> 9: select min (the smallest change) takes the
        # second rule listed, select max the first.
        ("down", DOWN_PODS_FIRST, "min", (9, DOWN_PODS_FIRST[1])),
        ("down", DOWN_PODS_FIRST, "max", (5, DOWN_PODS_FIRST[0])),
        # From 10 up, +20 -> 30 and +10% -> 11: the same, the other way.
        ("up", UP_PODS_FIRST, "min", (11, UP_PODS_FIRST[1])),
        ("up", UP_PODS_FIRST, "max", (30, UP_PODS_FIRST[0])),
        # Both rules allow the same count: the first listed is the one the message names.
        ("down", TIED, "min", (9, TIED[0])),
        ("down", TIED, "max", (9, TIED[0])),
        ("up", TIED, "min", (11, TIED[0])),
        ("up", TIED, "max", (11, TIED[0])),
    ],
    ids=[
        "down-min-second-rule-wins", "down-max-first-rule-wins", "up-min-second-rule-wins",
        "up-max-first-rule-wins", "down-min-tie-first-listed", "down-max-tie-first-listed",
        "up-min-tie-first-listed", "up-max-tie-first-listed",
    ],
)
def test_a_rate_limit_picks_the_rule_by_select(
    direction: str, rules: tuple[Rule, ...], select: str, expected: tuple[int, Rule]
) -> None:
    behavior = Behavior(0, select, rules)  # type: ignore[arg-type]
    assert LIMITS[direction](10, (), (), behavior, NOW) == expected


HALF_PER_MINUTE = Behavior(0, "max", (Rule("percent", 50, 60),))
FOUR_PER_MINUTE = Behavior(0, "max", (Rule("replicas", 4, 60),))


@pytest.mark.parametrize(
    ("current", "desired", "low", "up_events", "expected"),
    [
        # The down rule measures from the count at the start of its period: 4 added 30 s ago
        # make that 6, and half of 6 is 3 (not half of 10).
        (10, 2, 1, (TimedValue(NOW - 30, 4),), Limited(3, "scale_down_limit", "capped at -50% per 60s")),
        # The rule would allow exactly the min (4 -> 2) and the decision asks for less: it is
        # the min that holds it, and the reason says so.
        (4, 1, 2, (), Limited(2, "too_few_replicas", "raised to min 2")),
    ],
    ids=["down-period-starts-before-the-scale-up", "rule-limit-equal-to-min-is-the-min"],
)
def test_limit_rate_on_the_way_down(
    current: int, desired: int, low: int, up_events: tuple[TimedValue, ...], expected: Limited
) -> None:
    assert limit_rate(desired, current, low, 100, FOUR_PER_MINUTE, HALF_PER_MINUTE, up_events, (), NOW) == expected


@pytest.mark.parametrize("value", [math.inf, 1e308 * 10], ids=["inf", "overflow"])
def test_an_absurd_reading_asks_for_more_than_any_max(value: float) -> None:
    # The configured max (at most MAX_REPLICAS) must be what limits it, not the arithmetic.
    proposal = target_tracking(Metric.CPU, cpu((READY, value)), 50, DEFAULT, 1)
    assert proposal.reason == "scale"
    assert proposal.proposal is not None and proposal.proposal >= MAX_REPLICAS


def _evenly_loaded(count: int, cpu_percent: float) -> ServiceSnapshot:
    return ServiceSnapshot(
        "web", tuple(ReplicaSample(f"web-{i}", True, 3600.0, cpu_percent=cpu_percent) for i in range(count))
    )


@pytest.mark.parametrize(
    ("cpu_percent", "desired", "reason"),
    [
        (10.0, 1, "scale_down"),
        (100.0, 5, "too_many_replicas"),
    ],
    ids=["at-max-scales-down", "at-max-wants-more"],
)
def test_a_count_at_the_max_is_in_bounds(cpu_percent: float, desired: int, reason: str) -> None:
    # Only a count above the max is corrected before the metrics: at the max the policy decides.
    policy = PolicyConfig(target_cpu_percent=50, scale_down=ScalingBehavior(stabilization_seconds=0))
    decision, _ = evaluate(_evenly_loaded(5, cpu_percent), policy, Bounds(1, 5), History(), 0.0)
    assert (decision.desired, decision.reason) == (desired, reason)


def test_a_failed_cycle_names_every_metric_that_failed() -> None:
    replicas = tuple(ReplicaSample(f"web-{i}", True, 3600.0) for i in range(3))
    policy = PolicyConfig(target_cpu_percent=50, target_memory_percent=70)
    decision, _ = evaluate(ServiceSnapshot("web", replicas), policy, Bounds(1, 5), History(), 0.0)
    assert decision.reason == "metrics_unavailable"
    assert (
        "(cpu: no reading from a ready replica; memory: no reading from a ready replica)" in decision.message
    )


def _replicas(count: int, cpu_percent: float | None, memory_percent: float | None) -> ServiceSnapshot:
    return ServiceSnapshot("web", tuple(
        ReplicaSample(f"web-{i}", True, 3600.0, cpu_percent=cpu_percent, memory_percent=memory_percent)
        for i in range(count)
    ))


@pytest.mark.parametrize(
    ("snapshot", "desired", "reason", "starts"),
    [
        # Both metrics ask for 4: the first listed (cpu) is the one the message explains.
        (_replicas(2, 100.0, 100.0), 4, "scale_up", "cpu 100% > target 50%"),
        # cpu asks for fewer while memory has no reading: hold, for the service named.
        (_replicas(4, 10.0, None), 4, "missing_metrics_hold", "cpu 10% < target 50%"),
    ],
    ids=["tie-first-metric-explains", "missing-metric-hold"],
)
def test_the_winning_metric_explains_the_decision(
    snapshot: ServiceSnapshot, desired: int, reason: str, starts: str
) -> None:
    policy = PolicyConfig(target_cpu_percent=50, target_memory_percent=50)
    decision, _ = evaluate(snapshot, policy, Bounds(1, 10), History(), 0.0)
    assert (decision.service, decision.desired, decision.reason) == ("web", desired, reason)
    assert decision.message.startswith(starts)


def test_a_missing_metrics_hold_names_every_missing_metric() -> None:
    policy = PolicyConfig(target_cpu_percent=50, target_memory_percent=50, target_response_time_ms=200)
    decision, _ = evaluate(_replicas(4, 10.0, None), policy, Bounds(1, 10), History(), 0.0)
    assert decision.reason == "missing_metrics_hold"
    assert "not scaling down while memory, response_time_ms has no reading" in decision.message


@pytest.mark.parametrize(
    ("high", "reason", "ends"),
    [
        # 4 replicas at 200% of the target want 16. A rate rule holds it at 8: the schedule
        # that set the bounds had no part in it.
        (9, "scale_up_limit", "(wanted 16, capped at +4 per 15s)"),
        # The schedule's max holds it: named.
        (6, "too_many_replicas", "(wanted 16, capped at max 6 (schedule peak))"),
    ],
    ids=["rate-rule-not-the-schedule", "schedule-max-named"],
)
def test_only_a_bound_names_the_schedule(high: int, reason: str, ends: str) -> None:
    policy = PolicyConfig(target_cpu_percent=50)
    bounds = Bounds(1, high, "schedule peak")
    decision, _ = evaluate(_replicas(4, 200.0, None), policy, bounds, History(), 0.0)
    assert decision.reason == reason
    assert decision.message.endswith(ends)


def test_a_window_that_never_opens_leaves_the_service_bounds() -> None:
    # February 30th: the config accepts it, and there is then no next change to wait for.
    config = ServiceConfig.model_validate({
        "image": "demo:latest", "port": 8000, "cpu_limit": 0.5, "memory_limit": "256MiB",
        "min_replicas": 1, "max_replicas": 10,
        "load_balancer": {"publish": "127.0.0.1:18080"},
        "schedule": [{"name": "never", "cron": "0 0 30 2 *", "duration_seconds": 60, "min_replicas": 3}],
    })
    bounds = ScheduledBounds(config)
    assert bounds.at_timestamp(1_800_000_000.0) == Bounds(1, 10)
    assert bounds.at_timestamp(1_900_000_000.0) == Bounds(1, 10)


# --- a service at 0 replicas (scale to zero) ---------------------------------------------------

_QUEUE = {"url": "redis://redis:6379/0", "list": "jobs"}


def _at_zero_policy(fallback: int | None = None) -> PolicyConfig:
    metrics = [
        ExternalMetric.model_validate({"name": name, "redis": _QUEUE, "target_average_value": 5, "activation": 2})
        for name in ("jobs", "late")
    ]
    keys: dict[str, object] = {"target_cpu_percent": 50, "metrics": metrics, "failure_threshold": 2}
    if fallback is not None:
        keys["fallback_replicas"] = fallback
    return PolicyConfig.model_validate(keys)


def _at_zero(jobs: float | None, late: float | None) -> ServiceSnapshot:
    readings = tuple(
        ExternalReading(name, value, None if value is not None else f"{name} source down")
        for name, value in (("jobs", jobs), ("late", late))
    )
    return ServiceSnapshot("worker", (), external=readings)


# A history with something in every field, which a decision at 0 must carry on.
_KEPT = History(
    recommendations=(TimedValue(NOW - 30, 2),),
    scale_up_events=(TimedValue(NOW - 40, 1),),
    scale_down_events=(TimedValue(NOW - 20, 1),),
    consecutive_failures=1,
    last_active_seconds=NOW - 50,
)


@pytest.mark.parametrize(
    ("fallback", "jobs", "late", "desired", "reason", "recommendation", "failures"),
    [
        # A metric above its activation value (2) wakes the service: 0 -> 1, recommended 1.
        (None, 3.0, 0.0, 1, "activation", 1, 0),
        # Every metric at or below its activation: stays at 0, nothing recommended.
        (None, 2.0, 0.0, 0, "inactive", None, 0),
        # A source that fails, the streak (1 + 1) at failure_threshold 2, no fallback: holds 0.
        (None, None, 0.0, 0, "metrics_unavailable", None, 2),
        # The same with fallback_replicas 1: the fallback's count, recommended as such (a
        # fallback of 1 is a count to go to, not "none").
        (1, None, 0.0, 1, "fallback", 1, 2),
        (3, None, None, 3, "fallback", 3, 2),
    ],
    ids=["activation", "inactive", "failing-source-holds", "fallback-of-one", "fallback-of-three"],
)
def test_a_decision_at_zero_names_its_service_and_keeps_the_history(
    fallback: int | None, jobs: float | None, late: float | None, desired: int, reason: str,
    recommendation: int | None, failures: int,
) -> None:
    decision, history = evaluate(_at_zero(jobs, late), _at_zero_policy(fallback), Bounds(0, 8), _KEPT, NOW)
    assert (decision.service, decision.current, decision.desired, decision.reason) == ("worker", 0, desired, reason)
    assert decision.recommendation == recommendation
    # The windows' recommendations and the rate rules' events are carried over untouched; the
    # failure streak is counted; the service was active now if a metric was above or unknown.
    last_active = NOW if reason != "inactive" else _KEPT.last_active_seconds
    assert history == History(
        _KEPT.recommendations, _KEPT.scale_up_events, _KEPT.scale_down_events, failures, last_active
    )


def test_at_zero_every_failing_source_is_named_in_the_message() -> None:
    decision, _ = evaluate(_at_zero(None, None), _at_zero_policy(), Bounds(0, 8), History(), NOW)
    assert decision.message == (
        "metrics failed 1 cycles in a row (jobs: jobs source down; late: late source down): holding 0"
    )


# --- the schedule's crontab ---------------------------------------------------------------------


def test_a_crontab_trigger_fires_in_its_time_zone_with_crontab_weekdays() -> None:
    # "0 8 * * 1" is Mondays at 08:00 in crontab (0 = Sunday), in the window's time zone.
    trigger = crontab_trigger("0 8 * * 1", "Europe/Paris")
    after = datetime(2026, 1, 3, 12, 0, tzinfo=timezone.utc)  # a Saturday
    fire = trigger.get_next_fire_time(None, after)
    assert fire == datetime(2026, 1, 5, 8, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert fire.astimezone(timezone.utc) == datetime(2026, 1, 5, 7, 0, tzinfo=timezone.utc)
