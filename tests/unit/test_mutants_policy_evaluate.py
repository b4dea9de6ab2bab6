"""Behaviours of `autoscaler/policy/evaluate.py` that the final mutation run found no test holding.

Each test names the behaviour it holds; the mutants it kills and the equivalent ones are in
tests/unit/mutants/policy-evaluate.md.
"""

from __future__ import annotations

import pytest

from autoscaler.config import PolicyConfig
from autoscaler.model import Bounds, History, Metric, MetricProposal, Recommendations, ServiceSnapshot, TimedValue
from autoscaler.policy.evaluate import evaluate
from test_external_policy import ZERO, policy, snap, zero_policy

NOW = 10_000.0

# id -> (policy, snapshot, bounds, history, desired, reason)
QUIET: dict[str, tuple[PolicyConfig, ServiceSnapshot, Bounds, History, int, str]] = {
    # cpu 100% of 50% on 2 replicas asks for 4; jobs 10 = 5 per replica is on target.
    "scale-up": (policy(), snap([100, 100], jobs=10), Bounds(1, 10), History(), 4, "scale_up"),
    # The same, with a max of 3: limit_rate's bound decides (its own reason and message).
    "held-by-the-max": (policy(), snap([100, 100], jobs=10), Bounds(1, 3), History(), 3, "too_many_replicas"),
    # cpu 10% on 4 asks for 1, jobs 0 for 0: the down window's 4 of 10 s ago holds the count.
    "held-by-the-down-window": (
        policy(scale_down={"stabilization_seconds": 300}), snap([10, 10, 10, 10], jobs=0), Bounds(1, 10),
        History(recommendations=Recommendations((TimedValue(NOW - 10, 4),))), 4, "scale_down_stabilized",
    ),
    # cpu 50% of 50%: on target, and jobs 10 on 2 too: nothing to do.
    "within-tolerance": (policy(), snap([50, 50], jobs=10), Bounds(1, 10), History(), 2, "within_tolerance"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("config", "snapshot", "bounds", "history", "desired", "reason"), QUIET.values(), ids=list(QUIET)
)
def test_explain_false_formats_no_text_and_decides_the_same(
    config: PolicyConfig, snapshot: ServiceSnapshot, bounds: Bounds, history: History, desired: int, reason: str
) -> None:
    # `simulate` evaluates with explain=False on its hot path and reads only the codes: the
    # decision (count, reason, recommendation, history) must be the same as with explain=True,
    # and no message may be formatted, neither the decision's nor its metrics' (formatting was
    # a fifth of a step's time; a message left as None or junk would also break the contract
    # "empty when nothing went wrong").
    loud, loud_history = evaluate(snapshot, config, bounds, history, NOW)
    quiet, quiet_history = evaluate(snapshot, config, bounds, history, NOW, explain=False)
    assert (loud.desired, loud.reason) == (desired, reason)
    assert loud.message and all(p.message for p in loud.proposals)
    assert (quiet.desired, quiet.reason, quiet.recommendation) == (loud.desired, loud.reason, loud.recommendation)
    assert quiet_history == loud_history
    assert [(p.metric, p.proposal, p.reason) for p in quiet.proposals] == [
        (p.metric, p.proposal, p.reason) for p in loud.proposals
    ]
    assert quiet.message == ""
    assert [p.message for p in quiet.proposals] == ["", ""]


@pytest.mark.parametrize("explain", [True, False], ids=["explained", "quiet"])
def test_replica_metrics_failing_with_external_metrics_are_proposals_with_no_reading(explain: bool) -> None:
    # The replicas' metrics failed as a whole while the policy has external metrics: each
    # replica metric is still listed (daemon log, `status`, `decide`) with its target, the
    # source's error and the code "no_reading"; an external metric not read this cycle says so.
    snapshot = snap([50, 50], metrics_error="docker stats: timeout")
    decision, _ = evaluate(snapshot, policy(), Bounds(1, 10), History(), NOW, explain)
    assert (decision.desired, decision.reason) == (2, "metrics_unavailable")
    assert decision.proposals == (
        MetricProposal(Metric.CPU, None, 50.0, None, "cpu: docker stats: timeout", "no_reading"),
        MetricProposal("jobs", None, 5.0, None, "jobs: not read this cycle", "no_reading"),
    )


def test_the_scale_to_zero_message_counts_the_inactive_time_and_names_the_service() -> None:
    # The operator reads how long every external metric has been inactive: from the last
    # active cycle (100 s) to now (400 s), 300 s; and the decision is the service's own.
    history = History(last_active_seconds=100.0)
    decision, _ = evaluate(snap([10], jobs=0), zero_policy(), ZERO, history, 400.0)
    assert (decision.service, decision.current, decision.desired, decision.reason) == ("jobs", 1, 0, "scale_to_zero")
    assert decision.message == (
        "every external metric at or below its activation for 300s (scale_to_zero_after_seconds 300) -> 1 -> 0"
    )


def test_a_cycle_whose_metrics_all_fail_restarts_the_scale_to_zero_timer() -> None:
    # A source that cannot be read may hide load: the cycle counts as active (its time is
    # remembered in the history), so the wait to 0 runs from it, not from the next cycle.
    config = zero_policy()
    failing = snap([None], error="redis: connection refused", jobs=None)
    decision, history = evaluate(failing, config, ZERO, History(), 0.0)
    assert (decision.desired, decision.reason) == (1, "metrics_unavailable")
    assert (history.consecutive_failures, history.last_active_seconds) == (1, 0.0)
    # 300 s later every metric reads idle: scale_to_zero_after_seconds (300) has passed.
    decision, history = evaluate(snap([10], jobs=0), config, ZERO, history, 300.0)
    assert (decision.desired, decision.reason) == (0, "scale_to_zero")
