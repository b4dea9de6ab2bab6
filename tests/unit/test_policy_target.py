"""Target tracking (the HPA's replica calculation) and step scaling, pinned case by case.

Most target-tracking rows are ported from kubernetes/kubernetes
pkg/controller/podautoscaler/replica_calculator_test.go; the id names the Go test (or the
``t.Run`` name of the newer table-driven TestReplicaCalcResourceTolerance /
TestReplicaCalcResourceMissingMetrics / TestReplicaCalcPodMetric). Pods become ReplicaSamples
with ``cpu_percent = usage / request * 100``; the HPA tests run 1-core requests unless said
otherwise. Three things differ on purpose, each row says which applies:

* utilization stays a float; the HPA truncates it to an integer percent first.
* one limit per service: where the HPA case mixes requests we pick per-replica percentages
  that keep the HPA's pooled figure (or at least its outcome), as the row's comment says.
* readiness counts for every metric. A not-ready container is out of the HAProxy rotation,
  like a Pending pod, which the HPA also ignores for every metric; the HPA ignores Ready=False
  on Running pods only for CPU.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from autoscaler.model import Metric, ReplicaSample
from autoscaler.policy.target import (
    Step,
    Tolerance,
    _ceil_replicas,
    apply_adjustment,
    pooled_value,
    step_scaling,
    target_tracking,
)

OLD = 3600.0  # seconds since start: long past any initialization window
INIT = 120.0  # the HPA tests' CPU initialization period (defaultTestingCPUInitializationPeriod)
DEFAULT = Tolerance(0.1, 0.1)

_FIELDS = {
    Metric.CPU: "cpu_percent",
    Metric.MEMORY: "memory_percent",
    Metric.REQUESTS_PER_SECOND: "requests_per_second",
    Metric.RESPONSE_TIME_MS: "response_time_ms",
}


@dataclass(frozen=True)
class P:
    """One replica of a table row: its reading (None = missing), readiness and age."""

    value: float | None
    ready: bool = True
    age: float = OLD


def unready(value: float | None) -> P:
    return P(value, ready=False)


def hot(value: float | None, *, ready: bool = True) -> P:
    """Started less than INIT seconds ago (the HPA tests' hotCPUCreationTime)."""
    return P(value, ready=ready, age=10.0)


def samples(metric: Metric, pods: tuple[P | float | None, ...]) -> tuple[ReplicaSample, ...]:
    out = []
    for index, pod in enumerate(pods):
        pod = pod if isinstance(pod, P) else P(pod)
        out.append(
            ReplicaSample(
                name=f"r{index}", ready=pod.ready, age_seconds=pod.age, **{_FIELDS[metric]: pod.value}
            )
        )
    return tuple(out)


# --- target tracking: HPA replica_calculator_test.go cases ------------------------------------

# (metric, pods, target, tolerance, current or None = len(pods), expected proposal, utilization)
TRACKING_CASES = [
    # TestReplicaCalcScaleUp / "scale up": 50 / 30 * 3 = 5.
    (Metric.CPU, (30, 50, 70), 30, DEFAULT, None, 5, 50.0),
    # TestReplicaCalcScaleUpUnreadyLessScale: ready 60% -> 2.0 > 1, the not-ready replica joins
    # at 0%: (0 + 50 + 70) / 3 = 40 -> 40 / 30 * 3 = 4, not 6.
    (Metric.CPU, (unready(30), 50, 70), 30, DEFAULT, None, 4, 60.0),
    # TestReplicaCalcScaleUpHotCpuLessScale: a replica inside the initialization window is
    # not ready for CPU.
    (Metric.CPU, (hot(30), 50, 70), 30, DEFAULT, None, 4, 60.0),
    # TestReplicaCalcScaleUpUnreadyNoScale: 40 / 30 says up, but with two idle not-ready
    # replicas (40 + 0 + 0) / 3 says down: the direction flips, so hold.
    (Metric.CPU, (40, unready(50), unready(70)), 30, DEFAULT, None, 3, 40.0),
    # TestReplicaCalcScaleHotCpuNoScale: the same with not-ready replicas still initializing.
    (Metric.CPU, (40, hot(50, ready=False), hot(70, ready=False)), 30, DEFAULT, None, 3, 40.0),
    # TestReplicaCalcScaleUpIgnoresFailedPods / ...IgnoresDeletionPods: failed and draining
    # containers never reach ServiceSnapshot.replicas, so only the two live ones are here.
    (Metric.CPU, (50, 70), 30, DEFAULT, None, 4, 60.0),
    # TestReplicaCalcScaleDown: 28 / 50 * 5 = 2.8 -> 3.
    (Metric.CPU, (10, 30, 50, 25, 25), 50, DEFAULT, None, 3, 28.0),
    # TestReplicaCalcScaleDownExcludeUnreadyPods (TestReplicaCalcScaleDownIncludeUnreadyPods in
    # older trees): on a scale-down not-ready replicas are left out: 30 / 50 * 3 = 1.8 -> 2.
    (Metric.CPU, (10, 30, 50, unready(25), unready(25)), 50, DEFAULT, None, 2, 30.0),
    # TestReplicaCalcScaleDownIgnoreHotCpuPods.
    (Metric.CPU, (10, 30, 50, hot(25), hot(25)), 50, DEFAULT, None, 2, 30.0),
    # TestReplicaCalcScaleDownExcludeUnscheduledPods: DIFFERS (HPA: 1). Pending pods are
    # "unready" to the HPA even without metrics and are ignored on a scale-down. A snapshot
    # cannot tell "not started yet" from "running, stats missing", so a replica without a
    # reading is missing whatever its readiness, counts as 100% on a scale-down, and the
    # rework (10 + 4 * 100) / 5 = 82% flips the direction: hold.
    (Metric.CPU, (10, unready(None), unready(None), unready(None), unready(None)), 50, DEFAULT, None, 5, 10.0),
    # TestReplicaCalcTolerance / "within default tolerance": requests 0.9/1.0/1.1 pool to 102%;
    # one limit per service, so 101/103/102 (mean 102) stand in.
    (Metric.CPU, (101, 103, 102), 100, DEFAULT, None, 3, 102.0),
    # TestReplicaCalcResourceTolerance "outside 0% tolerance": 1.01 * 3 = 3.03 -> 4.
    (Metric.CPU, (101, 101, 101), 100, Tolerance(up=0.0, down=0.0), None, 4, 101.0),
    # "within 200% scale-up tolerance": 190% stays put with up = 2.0.
    (Metric.CPU, (189, 191, 190), 100, Tolerance(up=2.0, down=0.1), None, 3, 190.0),
    # "outside 8% scale-up tolerance (superfluous scale-down tolerance)": 1.09 > 1.08.
    (Metric.CPU, (110, 108, 109), 100, Tolerance(up=0.08, down=2.0), None, 4, 109.0),
    # "within 36% scale-down tolerance": 0.65 >= 0.64.
    (Metric.CPU, (66, 64, 65), 100, Tolerance(up=0.1, down=0.36), None, 3, 65.0),
    # "outside 34% scale-down tolerance": 0.65 < 0.66 -> 1.95 -> 2.
    (Metric.CPU, (66, 64, 65), 100, Tolerance(up=0.1, down=0.34), None, 2, 65.0),
    # TestReplicaCalcSuperfluousMetrics: target tracking itself has no cap (rate rules do).
    (Metric.CPU, (400, 950, 300, 700), 100, DEFAULT, None, 24, 587.5),
    # TestReplicaCalcMissingMetrics: 24.75 < 100, the two missing count as 100%:
    # (40 + 9.5 + 100 + 100) / 4 = 62.375 -> 2.495 -> 3. (HPA reports utilization 24.)
    (Metric.CPU, (40, 9.5, None, None), 100, DEFAULT, None, 3, 24.75),
    # TestReplicaCalcMissingMetricsNoChangeEq: exactly on target, nothing to rework.
    (Metric.CPU, (100, None), 100, DEFAULT, None, 2, 100.0),
    # TestReplicaCalcMissingMetricsNoChangeGt: the missing one at 0%: 95% is inside the band.
    (Metric.CPU, (190, None), 100, DEFAULT, None, 2, 190.0),
    # TestReplicaCalcMissingMetricsNoChangeLt: (60 + 100) / 2 = 80% -> 1.6 -> 2.
    (Metric.CPU, (60, None), 100, DEFAULT, None, 2, 60.0),
    # TestReplicaCalcMissingMetricsUnreadyChange: 45 < 50, the missing one at 100% makes it
    # (45 + 100) / 2 = 72.5 > 50: the direction flips, hold.
    (Metric.CPU, (unready(10), 45, None), 50, DEFAULT, None, 3, 45.0),
    # TestReplicaCalcMissingMetricsHotCpuNoChange.
    (Metric.CPU, (hot(10), 45, None), 50, DEFAULT, None, 3, 45.0),
    # TestReplicaCalcMissingMetricsUnreadyScaleUp: (200 + 0 + 0) / 3 -> 1.33 * 3 = 4.
    (Metric.CPU, (unready(10), 200, None), 50, DEFAULT, None, 4, 200.0),
    # TestReplicaCalcMissingMetricsHotCpuScaleUp.
    (Metric.CPU, (hot(10, ready=False), 200, None), 50, DEFAULT, None, 4, 200.0),
    # TestReplicaCalcMissingMetricsUnreadyScaleDown: (10 + 10 + 100) / 3 = 40 -> 2.4 -> 3.
    (Metric.CPU, (unready(10), 10, 10, None), 50, DEFAULT, None, 3, 10.0),
    # TestReplicaCalcMissingMetricsScaleDownTargetOver100: on a scale-down a missing replica
    # counts as max(100%, target) = 300%. The HPA case mixes 1- and 2-core requests; with the
    # per-replica percentages 10 and 5: (10 + 5 + 300) / 3 = 105 -> 0.35 * 3 -> 2, as the HPA.
    # Counting it as 100% would give 1.
    (Metric.CPU, (unready(20), 10, 5, None), 300, DEFAULT, None, 2, 7.5),
    # TestReplicaCalcDuringRollingUpdateWithMaxSurge: three replicas seen, two counted as
    # current; (10 + 10 + 100) / 3 = 40 -> 2.4 -> 3 would grow while the ratio says shrink: hold.
    (Metric.CPU, (10, 10, None), 50, DEFAULT, 2, 2, 10.0),
    # TestReplicaCalcComputedToleranceAlgImplementation, first half: 50% against a target of
    # int((1 / (2 * 0.9) + 0.01) * 100) = 56 breaches the band: 0.893 * 10 -> 9.
    (Metric.CPU, (50,) * 10, 56, DEFAULT, None, 9, 50.0),
    # ... second half: target 55 keeps 50 / 55 = 0.909 inside the band.
    (Metric.CPU, (50,) * 10, 55, DEFAULT, None, 10, 50.0),
    # TestReplicaCalcScaleUpCM / TestReplicaCalcPodMetric "scale up": 20 / 15 * 3 = 4.
    (Metric.REQUESTS_PER_SECOND, (20, 10, 30), 15, DEFAULT, None, 4, 20.0),
    # TestReplicaCalcScaleDownCM: 12 / 20 * 5 = 3.
    (Metric.REQUESTS_PER_SECOND, (12,) * 5, 20, DEFAULT, None, 3, 12.0),
    # TestReplicaCalcToleranceCM / "within default tolerance": 20.67 / 20 = 1.033.
    (Metric.REQUESTS_PER_SECOND, (20, 21, 21), 20, DEFAULT, None, 3, 62 / 3),
    # TestReplicaCalcPodMetric "outside configurable 1% tolerance": 1.033 * 3 = 3.1 -> 4.
    (Metric.REQUESTS_PER_SECOND, (20, 21, 21), 20, Tolerance(up=0.01, down=0.1), None, 4, 62 / 3),
    # TestPlainMetricReplicaCalcMissingMetricsNoChangeEq: ratio exactly 1 with two missing.
    (Metric.REQUESTS_PER_SECOND, (20, 19, 21, None, None), 20, DEFAULT, None, 5, 20.0),
    # TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM: a missing replica of a plain metric
    # counts as the target on a scale-down: (10 + 10 + 17) / 3 -> 2.18 -> 3 > 2 current: hold.
    (Metric.REQUESTS_PER_SECOND, (10, 10, None), 17, DEFAULT, 2, 2, 10.0),
    # TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale: DIFFERS (HPA: 6, it counts the
    # not-ready pod's 30 for a non-CPU metric). Here it is left out, then joins at 0 on the
    # scale-up: (50 + 10 + 0) / 3 = 20 -> 1.33 * 3 = 4.
    (Metric.REQUESTS_PER_SECOND, (50, 10, hot(30, ready=False)), 15, DEFAULT, None, 4, 30.0),
    # TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown: DIFFERS (HPA: 7 from all three
    # readings). Only the ready replica counts: 15 / 15 = 1.0, inside the band: hold.
    (Metric.REQUESTS_PER_SECOND, (hot(50, ready=False), 15, hot(30, ready=False)), 15, DEFAULT, None, 3, 15.0),
]

TRACKING_IDS = [
    "TestReplicaCalcScaleUp",
    "TestReplicaCalcScaleUpUnreadyLessScale",
    "TestReplicaCalcScaleUpHotCpuLessScale",
    "TestReplicaCalcScaleUpUnreadyNoScale",
    "TestReplicaCalcScaleHotCpuNoScale",
    "TestReplicaCalcScaleUpIgnoresFailedPods",
    "TestReplicaCalcScaleDown",
    "TestReplicaCalcScaleDownExcludeUnreadyPods",
    "TestReplicaCalcScaleDownIgnoreHotCpuPods",
    "TestReplicaCalcScaleDownExcludeUnscheduledPods-differs",
    "TestReplicaCalcTolerance",
    "ResourceTolerance-outside-0pct",
    "ResourceTolerance-within-200pct-up",
    "ResourceTolerance-outside-8pct-up",
    "ResourceTolerance-within-36pct-down",
    "ResourceTolerance-outside-34pct-down",
    "TestReplicaCalcSuperfluousMetrics",
    "TestReplicaCalcMissingMetrics",
    "TestReplicaCalcMissingMetricsNoChangeEq",
    "TestReplicaCalcMissingMetricsNoChangeGt",
    "TestReplicaCalcMissingMetricsNoChangeLt",
    "TestReplicaCalcMissingMetricsUnreadyChange",
    "TestReplicaCalcMissingMetricsHotCpuNoChange",
    "TestReplicaCalcMissingMetricsUnreadyScaleUp",
    "TestReplicaCalcMissingMetricsHotCpuScaleUp",
    "TestReplicaCalcMissingMetricsUnreadyScaleDown",
    "TestReplicaCalcMissingMetricsScaleDownTargetOver100",
    "TestReplicaCalcDuringRollingUpdateWithMaxSurge",
    "TestReplicaCalcComputedToleranceAlgImplementation-scale",
    "TestReplicaCalcComputedToleranceAlgImplementation-hold",
    "TestReplicaCalcScaleUpCM",
    "TestReplicaCalcScaleDownCM",
    "TestReplicaCalcToleranceCM",
    "PodMetric-outside-1pct-up",
    "TestPlainMetricReplicaCalcMissingMetricsNoChangeEq",
    "TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM",
    "TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale-differs",
    "TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown-differs",
]


@pytest.mark.parametrize(
    ("metric", "pods", "target", "tolerance", "current", "expected", "utilization"),
    TRACKING_CASES,
    ids=TRACKING_IDS,
)
def test_target_tracking_ported_hpa_cases(
    metric: Metric,
    pods: tuple[P | float | None, ...],
    target: float,
    tolerance: Tolerance,
    current: int | None,
    expected: int,
    utilization: float,
) -> None:
    replicas = samples(metric, pods)
    proposal = target_tracking(
        metric, replicas, target, tolerance, len(replicas) if current is None else current, INIT
    )
    assert proposal.proposal == expected
    assert proposal.metric is metric
    assert proposal.target == target
    # The reported utilization is the ready replicas' average, before missing and not-ready
    # replicas are reworked (the HPA reports the same figure).
    assert proposal.utilization == pytest.approx(utilization)


# --- target tracking: the docs' examples and our own edges ---------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "within"),
    [
        (95.0, 20, True),  # the lower edge belongs to the band
        (94.0, 19, False),  # 0.94 * 20 = 18.8 -> 19
        (101.0, 20, True),  # the upper edge belongs to the band
        (101.5, 21, False),  # 1.015 * 20 = 20.3 -> 21
        (100.0, 20, True),
    ],
    ids=["95-holds", "94-scales-down", "101-holds", "101.5-scales-up", "on-target"],
)
def test_per_direction_tolerance_docs_example(value: float, expected: int, within: bool) -> None:
    # kubernetes.io HPA docs, "Tolerance": a memory target of 100Mi with scale-down and
    # scale-up tolerances of 5% and 1% scales when consumption falls below 95Mi or exceeds
    # 101Mi; both edges are inclusive (Tolerances.isWithin uses <=).
    replicas = samples(Metric.MEMORY, (value,) * 20)
    proposal = target_tracking(Metric.MEMORY, replicas, 100, Tolerance(up=0.01, down=0.05), 20)
    assert proposal.proposal == expected
    assert ("within tolerance" in proposal.message) is within


@pytest.mark.parametrize(
    ("value", "expected"),
    [(77.0, 20), (78.0, 23), (63.0, 20), (62.0, 18)],
    ids=["77-holds", "78-scales-up", "63-holds", "62-scales-down"],
)
def test_default_tolerance_band_is_ten_percent_both_ways(value: float, expected: int) -> None:
    # Default tolerance 0.1 around a 70% target: act above 77%, below 63%.
    replicas = samples(Metric.CPU, (value,) * 20)
    assert target_tracking(Metric.CPU, replicas, 70, DEFAULT, 20).proposal == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [((200.0, 200.0), 4), ((50.0,) * 4, 2)],
    ids=["200-of-100-doubles", "50-of-100-halves"],
)
def test_docs_ratio_examples(values: tuple[float, ...], expected: int) -> None:
    # HPA docs, "Algorithm details": 200m against 100m doubles, 50m halves.
    replicas = samples(Metric.RESPONSE_TIME_MS, values)
    assert target_tracking(Metric.RESPONSE_TIME_MS, replicas, 100, DEFAULT, len(values)).proposal == expected


@pytest.mark.parametrize(
    ("metric", "expected"),
    [(Metric.MEMORY, 3), (Metric.CPU, 3), (Metric.REQUESTS_PER_SECOND, 2)],
    ids=["memory-counts-max-100-target", "cpu-counts-max-100-target", "rps-counts-target"],
)
def test_missing_replica_fallback_on_scale_down(metric: Metric, expected: int) -> None:
    # Utilization metrics fill a missing replica with max(100%, target); plain metrics with
    # the target (calcPlainMetricReplicas): (20 + 20 + 100) / 3 -> 2.33 -> 3 = hold, against
    # (20 + 20 + 60) / 3 -> 1.67 -> 2.
    replicas = samples(metric, (20, 20, None))
    assert target_tracking(metric, replicas, 60, DEFAULT, 3).proposal == expected


@pytest.mark.parametrize(
    ("metric", "age", "expected"),
    [
        (Metric.CPU, 10.0, 2),  # initializing: 90 alone -> 1.5 up, joins at 0 -> 45: flips, hold
        (Metric.CPU, INIT, 3),  # exactly INIT old counts: both at 90 -> 1.5 * 2 = 3
        (Metric.MEMORY, 10.0, 3),  # only CPU start-up spikes are discounted
        (Metric.REQUESTS_PER_SECOND, 10.0, 3),
    ],
    ids=["cpu-young-not-ready", "cpu-at-init-boundary-ready", "memory-young-counts", "rps-young-counts"],
)
def test_initialization_window_is_cpu_only(metric: Metric, age: float, expected: int) -> None:
    replicas = samples(metric, (P(90.0, age=age), 90.0))
    assert target_tracking(metric, replicas, 60, DEFAULT, 2, INIT).proposal == expected


@pytest.mark.parametrize(
    "pods",
    [(None, None), (unready(50.0), None), (hot(50.0),)],
    ids=["all-missing", "only-unready-reading", "only-initializing"],
)
def test_no_ready_reading_means_no_proposal(pods: tuple[P | float | None, ...]) -> None:
    # "did not receive metrics for targeted pods": the metric cannot be evaluated; it is not 0.
    proposal = target_tracking(Metric.CPU, samples(Metric.CPU, pods), 50, DEFAULT, len(pods), INIT)
    assert proposal.proposal is None
    assert proposal.utilization is None
    assert "no reading" in proposal.message


def test_ceil_ignores_float_noise() -> None:
    # 124 / 60 * 15 = 31.000000000000004 in floats; on paper it is exactly 31.
    replicas = samples(Metric.CPU, (124.0,) * 15)
    assert target_tracking(Metric.CPU, replicas, 60, DEFAULT, 15).proposal == 31


@pytest.mark.parametrize(
    ("pods", "target", "fragment"),
    [
        ((30, 50, 70), 30, "cpu 50% > target 30%"),
        ((101, 103, 102), 100, "cpu 102% > target 100%: within tolerance"),
        ((unready(30), 50, 70), 30, "(1 not ready counted as 0: 40%)"),
        ((40, 9.5, None, None), 100, "(2 missing counted as 100%: 62.38%)"),
        ((40, unready(50), unready(70)), 30, ": hold"),
    ],
    ids=["head", "within-tolerance", "not-ready-note", "missing-note", "flip-hold"],
)
def test_tracking_messages_explain_the_rework(pods: tuple[P | float | None, ...], target: float, fragment: str) -> None:
    proposal = target_tracking(Metric.CPU, samples(Metric.CPU, pods), target, DEFAULT, len(pods))
    assert fragment in proposal.message


@pytest.mark.parametrize(
    ("pods", "target", "tolerance", "expected", "reason"),
    [
        ((30, 50, 70), 30, DEFAULT, 5, "scale"),
        ((10, 30, 50, 25, 25), 50, DEFAULT, 3, "scale"),
        ((101, 103, 102), 100, DEFAULT, 3, "within_tolerance"),
        ((85, 85, 85), 100, DEFAULT, 3, "scale"),  # outside the band, ceil(2.55) = 3: same count
        ((40, unready(50), unready(70)), 30, DEFAULT, 3, "hold"),  # the rework flips the direction
        ((190, None), 100, DEFAULT, 2, "hold"),  # the rework lands in the band
        ((10, 10, None), 50, DEFAULT, 2, "hold"),  # the rework grows while the ratio says shrink
        ((40, 9.5, None, None), 100, DEFAULT, 3, "scale"),  # reworked, then scaled
        ((unready(30), 50, 70), 30, DEFAULT, 4, "scale"),
        ((None, None), 50, DEFAULT, None, "no_reading"),
        ((unready(50),), 50, DEFAULT, None, "no_reading"),
    ],
    ids=[
        "scale-up",
        "scale-down",
        "within-tolerance",
        "scale-to-same-count",
        "rework-flips",
        "rework-lands-in-band",
        "rework-against-ratio",
        "missing-reworked-scale",
        "not-ready-reworked-scale",
        "all-missing",
        "only-unready",
    ],
)
def test_tracking_reason_codes(
    pods: tuple[P | float | None, ...], target: float, tolerance: Tolerance, expected: int | None, reason: str
) -> None:
    # evaluate() decides on the code; the message is for people and never parsed.
    replicas = samples(Metric.CPU, pods)
    # The rolling-update row counts two replicas as current while three are seen.
    current = 2 if pods == (10, 10, None) else len(replicas)
    proposal = target_tracking(Metric.CPU, replicas, target, tolerance, current)
    assert (proposal.proposal, proposal.reason) == (expected, reason)


# --- target tracking: tolerances of any size, as the HPA --------------------------------------


@pytest.mark.parametrize(
    ("pods", "tolerance", "expected", "reason"),
    [
        # down >= 1: 1 - down <= 0 <= every ratio, so nothing below 1 leaves the band.
        ((10,) * 4, Tolerance(up=0.1, down=1.0), 4, "within_tolerance"),
        ((0,) * 4, Tolerance(up=0.1, down=1.0), 4, "within_tolerance"),  # ratio 0 = the edge
        ((1,) * 4, Tolerance(up=0.1, down=5.0), 4, "within_tolerance"),
        ((49.9,) * 4, Tolerance(up=0.0, down=1.0), 4, "within_tolerance"),
        # ... nor by the rework: missing replicas at 100% on a scale-down, then in the band.
        ((10, 10, None, None), Tolerance(up=0.1, down=1.0), 4, "hold"),
        # ... and the up side is untouched: 100 / 50 * 4 = 8.
        ((100,) * 4, Tolerance(up=0.1, down=1.0), 8, "scale"),
        ((50.5,) * 4, Tolerance(up=0.0, down=1.0), 5, "scale"),
        # A large up tolerance: ratio 4 = 1 + 3 is inside (inclusive), 4.02 is not.
        ((200,) * 4, Tolerance(up=3.0, down=0.1), 4, "within_tolerance"),
        ((201,) * 4, Tolerance(up=3.0, down=0.1), 17, "scale"),
        # ... the not-ready rework on a scale-up lands in it: (300 + 0) / 2 = 150 -> ratio 3.
        ((300, unready(10)), Tolerance(up=3.0, down=0.1), 2, "hold"),
        # ... and the down side is untouched: 10 / 50 * 4 = 0.8 -> 1.
        ((10,) * 4, Tolerance(up=3.0, down=0.1), 1, "scale"),
        # Both large: everything up to 11x the target holds.
        ((550,) * 4, Tolerance(up=10.0, down=10.0), 4, "within_tolerance"),
        ((0,) * 4, Tolerance(up=10.0, down=10.0), 4, "within_tolerance"),
        ((551,) * 4, Tolerance(up=10.0, down=10.0), 45, "scale"),
    ],
    ids=[
        "down-1-holds-at-20pct",
        "down-1-holds-at-zero",
        "down-5-holds",
        "down-1-up-0-just-below",
        "down-1-missing-rework-holds",
        "down-1-scales-up",
        "down-1-up-0-just-above",
        "up-3-holds-at-edge",
        "up-3-scales-past-edge",
        "up-3-unready-rework-holds",
        "up-3-scales-down",
        "both-10-holds-high",
        "both-10-holds-zero",
        "both-10-scales-past",
    ],
)
def test_tolerances_of_one_and_above(
    pods: tuple[P | float | None, ...], tolerance: Tolerance, expected: int, reason: str
) -> None:
    # The HPA accepts any tolerance >= 0 (Tolerances.isWithin: (1 - down) <= ratio <= (1 + up)),
    # so a scale-down tolerance >= 1 turns ratio scale-down off.
    replicas = samples(Metric.CPU, pods)
    proposal = target_tracking(Metric.CPU, replicas, 50, tolerance, len(replicas))
    assert (proposal.proposal, proposal.reason) == (expected, reason)


# --- step scaling ----------------------------------------------------------------------------


def step(lower: float | None, upper: float | None, adjustment: int, percent: bool = False, metric: Metric = Metric.CPU) -> Step:
    return Step(metric, lower, upper, adjustment, percent)


@pytest.mark.parametrize(
    ("current", "adjustment", "percent", "expected"),
    [
        (3, 2, False, 5),
        (3, -1, False, 2),
        (1, -1, False, 0),  # bounds are evaluate's job, not the step's
        (3, 0, False, 3),
        (3, 50, True, 5),  # +1.5 rounds away from zero to +2
        (1, 50, True, 2),  # +0.5 -> +1: a percent step always moves
        (10, 10, True, 11),
        (11, 10, True, 13),  # +1.1 -> +2
        (4, 100, True, 8),
        (3, -50, True, 1),  # -1.5 rounds away from zero to -2
        (1, -50, True, 0),  # -0.5 -> -1
        (4, -25, True, 3),
        (3, -100, True, 0),
        (3, 0, True, 3),
    ],
    ids=[
        "plus-2",
        "minus-1",
        "minus-1-of-1",
        "zero",
        "plus-50pct-of-3",
        "plus-50pct-of-1",
        "plus-10pct-of-10",
        "plus-10pct-of-11",
        "plus-100pct",
        "minus-50pct-of-3",
        "minus-50pct-of-1",
        "minus-25pct-of-4",
        "minus-100pct",
        "zero-pct",
    ],
)
def test_apply_adjustment(current: int, adjustment: int, percent: bool, expected: int) -> None:
    assert apply_adjustment(current, step(0, None, adjustment, percent)) == expected


BANDS = [
    step(80, None, 2),
    step(60, 80, 1),
    step(None, 20, -1),
]


@pytest.mark.parametrize(
    ("value", "expected", "fragment"),
    [
        (95.0, 5, "step cpu >= 80 -> +2"),
        (80.0, 5, "step cpu >= 80 -> +2"),  # lower bound inclusive
        (79.9, 4, "step cpu >= 60 and < 80 -> +1"),  # upper bound exclusive
        (60.0, 4, "step cpu >= 60 and < 80 -> +1"),
        (50.0, 3, "no step matches"),  # no band = hold
        (20.0, 3, "no step matches"),  # 20 is not < 20
        (19.9, 2, "step cpu < 20 -> -1"),
    ],
    ids=["above-80", "at-80", "just-below-80", "at-60", "gap-holds", "at-20-holds", "below-20"],
)
def test_step_scaling_picks_the_matching_band(value: float, expected: int, fragment: str) -> None:
    (proposal,) = step_scaling(BANDS, {Metric.CPU: value}, 3)
    assert proposal.proposal == expected
    assert proposal.reason == ("no_step_matches" if "no step matches" in fragment else "step")
    assert proposal.utilization == value
    assert math.isnan(proposal.target)
    assert fragment in proposal.message


def test_step_scaling_first_matching_band_wins() -> None:
    # Config validation rejects overlapping bands; the pure function still takes the first.
    steps = [step(50, None, 1), step(70, None, 3)]
    (proposal,) = step_scaling(steps, {Metric.CPU: 90.0}, 3)
    assert proposal.proposal == 4


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({Metric.CPU: 90.0, Metric.QUEUE: 500.0}, [(Metric.CPU, 5, "step"), (Metric.QUEUE, 6, "step")]),
        ({Metric.CPU: None, Metric.QUEUE: 50.0}, [(Metric.CPU, None, "no_reading"), (Metric.QUEUE, 3, "no_step_matches")]),
        ({Metric.QUEUE: 500.0}, [(Metric.CPU, None, "no_reading"), (Metric.QUEUE, 6, "step")]),
    ],
    ids=["one-proposal-per-metric", "missing-value-no-proposal", "absent-value-no-proposal"],
)
def test_step_scaling_per_metric(
    values: dict[Metric, float | None], expected: list[tuple[Metric, int | None, str]]
) -> None:
    steps = [
        step(80, None, 2),
        step(100, None, 100, percent=True, metric=Metric.QUEUE),
        step(None, 10, -1, metric=Metric.QUEUE),
    ]
    proposals = step_scaling(steps, values, 3)
    assert [(p.metric, p.proposal, p.reason) for p in proposals] == expected
    for p in proposals:
        if p.proposal is None:
            assert p.utilization is None
            assert "no reading" in p.message


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ((10.0, 30.0), 20.0),
        ((10.0, unready(90.0), 30.0), 20.0),
        ((10.0, None, 30.0), 20.0),
        ((unready(10.0), None), None),
        ((), None),
    ],
    ids=["mean", "not-ready-left-out", "missing-left-out", "nothing-ready", "no-replicas"],
)
def test_pooled_value(pods: tuple[P | float | None, ...], expected: float | None) -> None:
    assert pooled_value(Metric.CPU, samples(Metric.CPU, pods)) == expected


# _ceil_replicas skips round(value, 9) when the value is clear of the whole number below it;
# the answer must be math.ceil(round(value, 9)) everywhere.
CEIL_EDGES = {
    "float-noise-above-a-whole-number": 124 / 60 * 15,  # 31.000000000000004 -> 31
    "whole": 31.0,
    "just-below-whole": 31 - 1e-12,
    "1e-9-above": 31 + 1e-9,
    "2e-9-above": 31 + 2e-9,
    "just-above-the-shortcut": 31 + 1.0000001e-6,
    "just-below-the-shortcut": 31 + 0.9999999e-6,
    "zero": 0.0,
    "tiny": 1e-12,
    "half": 0.5,
    "large": 2.0**40 + 0.5,
    "beyond-exact-integers": 2.0**60,
}


@pytest.mark.parametrize("value", CEIL_EDGES.values(), ids=list(CEIL_EDGES))
def test_ceil_replicas_is_ceil_of_value_rounded_to_9_places(value: float) -> None:
    assert _ceil_replicas(value) == math.ceil(round(value, 9))


@pytest.mark.parametrize("seed", range(4), ids=[f"seed-{seed}" for seed in range(4)])
def test_ceil_replicas_matches_the_rounded_ceil_on_random_values(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20_000):
        whole = rng.randint(0, 2000)
        # Near whole numbers (where rounding matters) as often as anywhere.
        value = whole + rng.choice([rng.random(), rng.uniform(-3e-6, 3e-6), rng.uniform(-2e-9, 2e-9)])
        if value >= 0:
            assert _ceil_replicas(value) == math.ceil(round(value, 9)), value
        ratio = rng.uniform(0, 3) * 100 / rng.choice([50, 60, 70, 80])
        assert _ceil_replicas(ratio * whole) == math.ceil(round(ratio * whole, 9))
