"""Target tracking and External metric tracking: what the mutation run of
``autoscaler/policy/target.py`` found unpinned (issue 16; the survivors' list and the
equivalent ones are in ``tests/unit/mutants/policy-target.md``).

Two behaviours: explain=False (simulate's hot path) gives the same numbers and codes as
explain=True with no text, and an AverageValue / Value External metric's count on a service
whose replicas are not all ready.
"""

from __future__ import annotations

import pytest

from autoscaler.model import Metric, MetricProposal, ReplicaSample
from autoscaler.policy.target import ExternalTarget, Tolerance, external_tracking, target_tracking

OLD = 3600.0  # seconds since start: long past any initialization window
BAND = Tolerance(0.1, 0.1)


def _cpu(*values: float | None, not_ready: int = 0) -> tuple[ReplicaSample, ...]:
    """Ready replicas with these CPU readings (None: no reading), then not-ready ones at 10%."""
    ready = tuple(ReplicaSample(f"web-{i}", True, OLD, value) for i, value in enumerate(values))
    return ready + tuple(ReplicaSample(f"web-new-{i}", False, OLD, 10.0) for i in range(not_ready))


# id -> (replicas, target, current, proposal, reason); current = the number of replicas.
TRACKING: dict[str, tuple[tuple[ReplicaSample, ...], float, int, int, str]] = {
    # 55% on a 50% target: ratio 1.1, the band's upper edge.
    "within-tolerance": (_cpu(55.0, 55.0), 50.0, 2, 2, "within_tolerance"),
    # 90% on 50%: ceil(1.8 x 2) = 4.
    "scale": (_cpu(90.0, 90.0), 50.0, 2, 4, "scale"),
    # 90% on 50% with one missing counted as 0 on the way up: 180 / 3 = 60%, ceil(1.2 x 3) = 4.
    "rework-scale-up-with-a-missing-replica": (_cpu(90.0, 90.0, None), 50.0, 3, 4, "scale"),
    # 10% on 50% with one missing counted as 100% on the way down: 120 / 3 = 40%, ceil(0.8 x 3) = 3.
    "rework-scale-down-with-a-missing-replica": (_cpu(10.0, 10.0, None), 50.0, 3, 3, "scale"),
    # 90% on 50% with one not ready counted as 0: 180 / 3 = 60%, ceil(1.2 x 3) = 4.
    "rework-scale-up-with-a-not-ready-replica": (_cpu(90.0, 90.0, not_ready=1), 50.0, 3, 4, "scale"),
    # 60% on 50% with one missing counted as 0: 120 / 3 = 40%, the direction flips: hold.
    "rework-hold": (_cpu(60.0, 60.0, None), 50.0, 3, 3, "hold"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("replicas", "target", "current", "proposal", "reason"), TRACKING.values(), ids=list(TRACKING)
)
def test_unexplained_target_tracking_is_the_explained_one_without_text(
    replicas: tuple[ReplicaSample, ...], target: float, current: int, proposal: int, reason: str
) -> None:
    # simulate runs target_tracking every simulated step with explain=False: the count, the
    # code and the numbers must be those a live decision gets, and no message is formatted (a
    # fifth of simulate's time), the rework's hold included.
    explained = target_tracking(Metric.CPU, replicas, target, BAND, current)
    quiet = target_tracking(Metric.CPU, replicas, target, BAND, current, explain=False)
    assert (explained.proposal, explained.reason) == (proposal, reason)
    assert explained.message  # the live decision explains itself
    assert quiet[:4] == explained[:4] and quiet.reason == explained.reason
    assert quiet.message == ""


AVERAGE = ExternalTarget("jobs", 5.0, True, 0.0)
VALUE = ExternalTarget("latency", 2.0, False, 0.0)

# id -> (metric, value, current, ready, proposal, reason, message)
EXTERNAL: dict[str, tuple[ExternalTarget, float, int, int, int, str, str]] = {
    # AverageValue: a queue is split over every replica, ready or not: ceil(30 / 5) = 6, not
    # ceil(3 x 1 ready) = 3.
    "average-up-counts-every-replica": (AVERAGE, 30.0, 2, 1, 6, "scale", "jobs 30 (15 per replica) > target 5 per replica"),
    # Value: ratio 1.5 on 1 ready of 2: ceil(1.5 x 1) = 2, the current count. Not against the
    # ratio (it does not shrink), so the metric scales (to the same count), it does not hold.
    "value-up-to-the-current-count-scales": (VALUE, 3.0, 2, 1, 2, "scale", "latency 3 > target 2"),
    # Value: ratio 1.5 on 1 ready of 4: ceil(1.5) = 2 would shrink 4 while the ratio asks more.
    "value-hold-against-the-ratio": (VALUE, 3.0, 4, 1, 4, "hold", "latency 3 > target 2 (1 ready of 4): hold"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("metric", "value", "current", "ready", "proposal", "reason", "message"), EXTERNAL.values(), ids=list(EXTERNAL)
)
def test_external_tracking_with_replicas_not_all_ready(
    metric: ExternalTarget, value: float, current: int, ready: int, proposal: int, reason: str, message: str
) -> None:
    # The External metric's count and code (the HPA's GetExternalPerPodMetricReplicas and
    # GetExternalMetricReplicas) decide the service's size and the decision's reason; with
    # explain=False (simulate) they are the same and no text is formatted, holds included.
    explained = external_tracking(metric, value, None, BAND, current, ready)
    assert explained == MetricProposal(metric.name, value, metric.target, proposal, message, reason)
    quiet = external_tracking(metric, value, None, BAND, current, ready, explain=False)
    assert quiet == explained._replace(message="")
