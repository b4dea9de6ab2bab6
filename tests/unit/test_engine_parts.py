"""The reconciler's pure pieces and parts on their own: the start backoff, the container plan,
work in flight, and a service with no load balancer (the same engine without the membership
part)."""

from __future__ import annotations


import pytest

from autoscaler.engine import backoff as bo
from autoscaler.engine.containers import plan
from autoscaler.engine.controller import ServiceController
from autoscaler.engine.ports import Replica, ServerStat
from autoscaler.engine.replicas import ReplicaView, Tracked
from autoscaler.engine.state import InFlight
from engine_fakes import PASSED, SERVICE, World, name

A, B, C = name("a"), name("b"), name("c")

# --- the start backoff -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (70, 60.0), (10**6, 60.0)],
    ids=["none", "first", "second", "third", "capped", "far-past-cap", "huge"],
)
def test_delay_doubles_up_to_its_cap(failures: int, delay: float) -> None:
    assert bo.delay_seconds(failures, 1.0, 60.0) == delay


def test_a_ready_replica_does_not_reset_the_backoff_a_healthy_period_does() -> None:
    """As CrashLoopBackOff: failures are forgotten only after backoff_max_seconds healthy, so a
    replica that fails again shortly after becoming ready keeps doubling."""
    backoff = bo.Backoff()
    for at in (0.0, 1.0, 3.0):
        backoff = bo.after_failure(backoff, at, "exited", 1.0, 60.0)
    started_at = 8.0  # after the last failure
    backoff = bo.after_ready(backoff, 9.0, started_at)
    assert backoff.active and backoff.failures == 3 and backoff.recovered_at == 9.0
    assert bo.maybe_reset(backoff, 9.0 + 59.9, 60.0) == backoff, "not healthy long enough yet"
    again = bo.after_failure(backoff, 20.0, "exited", 1.0, 60.0)
    assert again.failures == 4 and again.retry_at == 20.0 + 8.0, "the doubling goes on"
    assert bo.maybe_reset(backoff, 9.0 + 60.0, 60.0) == bo.Backoff(), "forgotten after 60 s healthy"


def test_a_replica_started_before_the_last_failure_is_no_recovery() -> None:
    backoff = bo.after_failure(bo.Backoff(), 10.0, "exited", 1.0, 60.0)
    assert bo.after_ready(backoff, 12.0, started_at=5.0).recovered_at is None


@pytest.mark.parametrize(
    ("backoff", "now", "wanted", "starting", "allowed"),
    [
        (bo.Backoff(), 0.0, 5, 0, 5),
        (bo.Backoff(), 0.0, 0, 0, 0),
        (bo.Backoff(2, retry_at=10.0), 9.0, 5, 0, 0),
        (bo.Backoff(2, retry_at=10.0), 10.0, 5, 0, 1),
        (bo.Backoff(2, retry_at=10.0), 10.0, 5, 1, 0),
        (bo.Backoff(2, retry_at=10.0, recovered_at=11.0), 12.0, 5, 1, 5),
    ],
    ids=["healthy-all", "none-wanted", "waiting", "one-probe", "probe-on-its-way", "recovered-batches"],
)
def test_starts_allowed(backoff: bo.Backoff, now: float, wanted: int, starting: int, allowed: int) -> None:
    assert bo.starts_allowed(backoff, now, wanted, starting) == allowed


# --- the plan: what to start or retire --------------------------------------------------------


def view(replica_name: str, state: str, sessions: int | None = 0, age: float = 0.0) -> ReplicaView:
    replica = Replica(replica_name, replica_name, SERVICE, "running", "10.0.0.1", 1000.0 - age)
    server = None if sessions is None else ServerStat(replica_name, "", "UP", PASSED, sessions, 0, 0.0, None, 0, 0)
    return ReplicaView(replica, state, server)


def tracked_for(*views: ReplicaView, started_by_us: bool = False) -> dict[str, Tracked]:
    return {v.replica.name: Tracked(v.replica.id, 0.0, 0.0, started_by_us=started_by_us,
                                    ready_since=0.0 if v.state == "ready" else None) for v in views}


PLAN_CASES = {
    "at-the-count": ([view(A, "ready"), view(B, "ready")], 2, 0, 0, bo.Backoff(), True, (0, 0, 0, [])),
    "one-missing": ([view(A, "ready")], 2, 0, 0, bo.Backoff(), True, (1, 0, 0, [])),
    "missing-but-starting": ([view(A, "ready")], 3, 2, 0, bo.Backoff(), True, (0, 0, 0, [])),
    "draining-does-not-count": ([view(A, "ready"), view(B, "draining")], 2, 0, 0, bo.Backoff(), True, (1, 0, 0, [])),
    "backoff-holds-all": ([view(A, "ready")], 4, 0, 0, bo.Backoff(1, retry_at=99.0), True, (0, 3, 0, [])),
    "backoff-one-probe": ([view(A, "ready")], 4, 0, 0, bo.Backoff(1, retry_at=0.0), True, (1, 2, 0, [])),
    "surplus-fewest-sessions": (
        [view(A, "ready", 5, age=3), view(B, "ready", 1, age=2), view(C, "ready", 3, age=1)], 2, 0, 0,
        bo.Backoff(), True, (0, 0, 0, [B])),
    "surplus-not-serving-first": (
        [view(A, "ready", 0), view(B, "starting", None)], 1, 0, 0, bo.Backoff(), True, (0, 0, 0, [B])),
    "surplus-minus-starts-in-flight": (
        [view(A, "ready"), view(B, "ready")], 1, 1, 0, bo.Backoff(), True, (0, 0, 0, [A])),
    "no-retire-without-the-gate": ([view(A, "ready"), view(B, "ready")], 1, 0, 0, bo.Backoff(), False, (0, 0, 0, [])),
    "decided-starts-dropped": ([view(A, "ready"), view(B, "ready")], 2, 0, 3, bo.Backoff(), True, (0, 0, 3, [])),
    "decided-starts-kept": ([view(A, "ready")], 3, 0, 3, bo.Backoff(), True, (2, 0, 1, [])),
}


@pytest.mark.parametrize(("views", "keep", "in_flight", "decided", "backoff", "can_retire", "expected"),
                         PLAN_CASES.values(), ids=list(PLAN_CASES))
def test_plan(views: list[ReplicaView], keep: int, in_flight: int, decided: int, backoff: bo.Backoff,
              can_retire: bool, expected: tuple[int, int, int, list[str]]) -> None:
    result = plan(views, keep, in_flight, decided, backoff, tracked_for(*views), can_retire, now=10.0)
    assert (result.start, result.held_back, result.drop_decided, [v.replica.name for v in result.retire]) == (
        expected[0], expected[1], expected[2], expected[3])


def test_plan_counts_our_own_unready_starts_as_on_their_way() -> None:
    starting = view(B, "starting", None)
    result = plan([view(A, "ready"), starting], 4, 0, 0, bo.Backoff(1, retry_at=0.0),
                  tracked_for(starting, started_by_us=True), True, now=10.0)
    assert result.start == 0, "while the backoff holds, one start at a time: B is still on its way"


# --- work in flight ----------------------------------------------------------------------------


def test_in_flight_starts_decisions_removals_and_deletions() -> None:
    work = InFlight()
    work.expect_start("x")
    assert work.starting("x") and work.starts == 1
    work.start_observed("x")
    assert not work.starting("x") and work.starts == 0
    work.decide_starts(3, at=5.0)
    assert work.drop_decided(1) == [5.0] and work.decided == 2
    assert work.next_decided() == 5.0 and work.decided == 1
    work.expect_removal("y")
    work.forget_removals({"y"})
    assert work.removing("y")
    work.forget_removals(set())
    assert not work.removing("y")
    assert work.deletion_started("z", 1.0) == 1.0 and work.deletion_started("z", 9.0) == 1.0
    work.forget_deletions(["other"])
    assert not work.deleting("z")


# --- a failed replica with connections still attached ----------------------------------------



def kill_a_replica_with_sessions(world: World, drain_timeout_seconds: float) -> ServiceController:
    """B serves 3 sessions (HAProxy retrying them elsewhere, say) when it dies."""
    world.adopt(A)
    world.adopt(B, sessions=3)
    controller = world.controller(min_replicas=2, max_replicas=2, policy={"drain_timeout_seconds": drain_timeout_seconds})
    controller.run_cycle()
    world.backend.kill(B)
    return controller


def test_the_server_of_a_replica_that_died_waits_for_its_connections(world: World) -> None:
    """Deleting it at once would cut requests HAProxy is still retrying elsewhere."""
    controller = kill_a_replica_with_sessions(world, drain_timeout_seconds=30)
    world.clock.advance(1)

    controller.run_cycle()
    assert B in world.lb.members, "not deleted while 3 sessions are attached"
    world.lb.members[B].sessions_current = 0
    world.clock.advance(1)
    controller.run_cycle()

    assert B not in world.lb.members and world.lb.sessions_at_delete[B] == 0


def test_a_server_whose_connections_never_end_is_deleted_at_the_drain_timeout(world: World) -> None:
    controller = kill_a_replica_with_sessions(world, drain_timeout_seconds=5)
    for _ in range(4):
        world.clock.advance(1)
        controller.run_cycle()
    assert B in world.lb.members
    world.clock.advance(2)
    controller.run_cycle()
    assert world.lb.sessions_at_delete[B] == 3, "forced once drain_timeout_seconds passed"


# --- a service with no load balancer: the same engine without the membership part -------------


def test_without_a_load_balancer_replicas_are_ready_when_they_run_and_leave_by_their_stop_signal(world: World) -> None:
    world.adopt(A)
    controller = world.controller(with_load_balancer=False, min_replicas=3, max_replicas=3)

    controller.run_cycle()

    assert len(world.backend.running) == 3
    assert not {op for op in world.calls.ops() if op in ("add_server", "ensure_load_balancer")}
    controller.run_cycle()
    assert world.replica_counts() == {"ready": 3, "starting": 0, "draining": 0}

    controller.update_config(controller.config.model_copy(update={"min_replicas": 1, "max_replicas": 1}))
    world.clock.advance(1)
    decision = controller.run_cycle()

    assert decision is not None and (decision.current, decision.desired) == (3, 1)
    assert len(world.backend.running) == 1
    assert [force for _, force in world.backend.removed] == [False, False], "stopped with their stop signal"


def test_without_a_load_balancer_a_replica_that_exits_is_reported_and_replaced(world: World) -> None:
    world.adopt(A)
    world.adopt(B)
    controller = world.controller(with_load_balancer=False, min_replicas=2, max_replicas=2)
    controller.run_cycle()
    world.backend.kill(B, exit_code=3)
    world.clock.advance(1)

    controller.run_cycle()
    world.clock.advance(2)
    controller.run_cycle()

    assert world.metric("autoscaler_replica_failures_total", reason="crashed") == 1
    assert len(world.backend.running) == 2 and B not in world.backend.running


# --- rolling updates: replicas of another version over to the current one --------------------


def versioned(replica_name: str, state: str, version: str, age: float = 0.0) -> ReplicaView:
    base = view(replica_name, state, 0 if state != "starting" else None, age)
    return ReplicaView(Replica(base.replica.id, base.replica.name, SERVICE, "running", "10.0.0.1",
                               base.replica.created_at_seconds, version=version), state, base.server)


ROLLING_CASES = {
    # (views, keep, starts in flight, surge, unavailable) -> (start, retire, outdated)
    "first-step-surges-one": ([versioned(A, "ready", "v1"), versioned(B, "ready", "v1")], 2, 0, 1, 0, (1, [], 2)),
    "waits-for-the-new-one": ([versioned(A, "ready", "v1"), versioned(B, "ready", "v1")], 2, 1, 1, 0, (0, [], 2)),
    "new-starting-waits": (
        [versioned(A, "ready", "v1"), versioned(B, "ready", "v1"), versioned(C, "starting", "v2")], 2, 0, 1, 0,
        (0, [], 2)),
    "new-ready-retires-the-newest-old": (
        [versioned(A, "ready", "v1", age=9), versioned(B, "ready", "v1", age=5), versioned(C, "ready", "v2")], 2, 0, 1,
        0, (1, [B], 2)),
    "draining-old-frees-the-surge": (
        [versioned(A, "ready", "v1"), versioned(B, "draining", "v1"), versioned(C, "ready", "v2")], 2, 0, 1, 0,
        (1, [], 1)),
    "unready-old-goes-first": (
        [versioned(A, "starting", "v1"), versioned(B, "ready", "v1"), versioned(C, "ready", "v2")], 2, 0, 1, 0,
        (1, [A], 2)),
    "unavailable-one-without-surge": (
        [versioned(A, "ready", "v1"), versioned(B, "ready", "v1")], 2, 0, 0, 1, (1, [A], 2)),
    "surge-two": ([versioned(A, "ready", "v1"), versioned(B, "ready", "v1")], 2, 0, 2, 0, (2, [], 2)),
    "scale-up-during-rollout": ([versioned(A, "ready", "v1"), versioned(B, "ready", "v2")], 4, 0, 1, 0, (3, [], 1)),
    "unknown-version-is-current": ([versioned(A, "ready", "v1"), view(B, "ready")], 2, 0, 1, 0, (1, [], 1)),
}


@pytest.mark.parametrize(("views", "keep", "in_flight", "surge", "unavailable", "expected"), ROLLING_CASES.values(),
                         ids=ROLLING_CASES.keys())
def test_rolling_plan(views: list[ReplicaView], keep: int, in_flight: int, surge: int, unavailable: int,
                      expected: tuple[int, list[str], int]) -> None:
    result = plan(views, keep, in_flight, 0, bo.Backoff(), tracked_for(*views), True, now=10.0,
                  version="v2", max_surge=surge, max_unavailable=unavailable)
    assert (result.start, [v.replica.name for v in result.retire], result.outdated) == expected


def test_rolling_never_drops_ready_replicas_below_the_count_with_no_unavailable() -> None:
    """Simulated to the end: each step's starts become ready, retired ones leave; the ready
    count never falls below the count to keep and never exceeds it by more than the surge."""
    keep, surge = 4, 1
    views = [versioned(name(f"old{i}"), "ready", "v1", age=10 + i) for i in range(keep)]
    made = 0
    for _ in range(30):
        step = plan(views, keep, 0, 0, bo.Backoff(), tracked_for(*views), True, now=10.0, version="v2",
                    max_surge=surge, max_unavailable=0)
        retired = {v.replica.name for v in step.retire}
        views = [v for v in views if v.replica.name not in retired]
        for _ in range(step.start):
            made += 1
            views.append(versioned(name(f"new{made}"), "ready", "v2"))
        assert keep <= sum(1 for v in views if v.state == "ready") <= keep + surge
        if not step.outdated:
            break
    assert sorted(v.replica.version for v in views) == ["v2"] * keep
