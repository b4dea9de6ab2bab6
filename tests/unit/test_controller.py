"""The reconciler (ServiceController) with fakes that can fail, and a fake clock.

Nothing really waits: a pass returns at once, the progress step between passes moves replicas
along, and the fakes' health checks advance one step per look at the load balancer's stats.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import pytest

from autoscaler.engine import backoff as bo
from autoscaler.engine.replicas import ReplicaView, choose_victims, classify_exit
from autoscaler.engine.ports import ExitReport, Replica, ServerStat
from engine_fakes import (
    NETWORK,
    OLD,
    PASSED,
    SERVICE,
    FakeServer,
    World,
    name,
)

A, B, C, GONE = name("a"), name("b"), name("c"), name("gone")
CHANGES = {"start_replica", "remove_replica", "add_server", "enable_health", "set_ready", "set_drain",
           "delete_server", "set_health_down"}



# --- set-up ------------------------------------------------------------------------------------


def test_setup_creates_what_is_missing_and_changes_no_replica(world: World) -> None:
    world.adopt(A, admin=None)
    world.adopt(B, admin=None)
    world.adopt(C, admin=None, state="exited")

    world.controller()

    assert world.calls.entries == [("ensure_network", NETWORK), ("ensure_load_balancer", SERVICE)]
    spec = world.backend.lb_specs[0]
    assert (spec.network, spec.publish_host, spec.publish_port, spec.health_path) == (
        NETWORK, "127.0.0.1", 8080, "/healthz")
    assert [info.admin_socket for info in world.lb_infos] == [f"/run/autoscaler/autoscaler-{SERVICE}-lb.sock"]


def test_setup_waits_for_the_runtime_api(world: World) -> None:
    world.lb.unreachable_polls = 3
    world.controller()
    assert len(world.clock.sleeps) == 3


# --- membership repair -------------------------------------------------------------------------

# Each case: replicas (name, docker state, age), servers the load balancer already has
# (name, admin state, check status, address or None for the replica's own), the membership calls
# one pass makes in order, and the state of each replica it reports (None: not checked).
REPAIR_CASES = [
    pytest.param(
        [(A, "running", OLD), (B, "running", OLD)], [],
        [("add_server", A), ("enable_health", A), ("add_server", B), ("enable_health", B)],
        {A: "starting", B: "starting"},
        id="adopts-running-replicas-the-lb-lacks",
    ),
    pytest.param(
        [(A, "running", OLD)], [(A, "MAINT", PASSED, None)],
        [("set_ready", A)], {A: "ready"},
        id="promotes-a-replica-whose-check-passed",
    ),
    pytest.param(
        [(A, "running", OLD)], [(A, "READY", PASSED, None)],
        [], {A: "ready"},
        id="leaves-a-serving-replica-alone",
    ),
    pytest.param(
        [(A, "running", OLD)], [(A, "READY", PASSED, None), (GONE, "READY", PASSED, "10.9.9.9:8000")],
        [("delete_server", GONE)], {A: "ready"},
        id="forgets-a-server-with-no-replica",
    ),
    pytest.param(
        [(A, "running", OLD)], [(A, "READY", PASSED, "10.9.9.9:8000")],
        [("delete_server", A), ("add_server", A), ("enable_health", A)], {A: "starting"},
        id="re-registers-a-server-with-a-stale-address",
    ),
    pytest.param(
        [(A, "running", OLD), (B, "running", OLD)], [(A, "READY", PASSED, None), (B, "DRAIN", PASSED, None)],
        [], {A: "ready", B: "draining"},
        id="reports-a-draining-replica",
    ),
    pytest.param(
        [(A, "running", OLD)], [(A, "READY", "L4CON", None)],
        [], {A: "starting"},
        id="a-serving-replica-failing-its-check-is-not-ready",
    ),
    pytest.param(
        [(A, "running", 5.0)], [(A, "MAINT", "L4CON", None)],
        [], {A: "starting"},
        id="keeps-a-young-replica-still-failing-its-check",
    ),
    pytest.param(
        [(A, "paused", OLD)], [(A, "READY", PASSED, None)],
        [("set_health_down", A)], {A: "starting"},
        id="takes-a-paused-replica-out-of-rotation-and-keeps-it",
    ),
]


@pytest.mark.parametrize(("replicas", "servers", "calls", "states"), REPAIR_CASES)
def test_a_pass_repairs_membership(
    world: World,
    replicas: list[tuple[str, str, float]],
    servers: list[tuple[str, str, str, str | None]],
    calls: list[tuple[str, str]],
    states: dict[str, str],
) -> None:
    for replica_name, state, age in replicas:
        world.backend.add(replica_name, state=state, age_seconds=age)
    for server_name, admin, check, address in servers:
        replica = next((r for r in world.backend.replicas.values() if r.name == server_name), None)
        if replica is None:
            world.lb.members[server_name] = FakeServer(server_name, address or "", admin, True, check)
        else:
            # A draining server still has a session, so its drain is under way, not over.
            world.lb.preset(replica, admin, check, sessions=1 if admin == "DRAIN" else 0, address=address)
    # min = max = the replicas that count: the policy holds, only membership changes.
    live = len(replicas) - sum(1 for *_, admin, _, _ in [(0,) + s for s in servers] if admin == "DRAIN")
    controller = world.controller(min_replicas=live, max_replicas=live)
    world.lb.checks_pass_after = None
    world.calls.entries.clear()

    controller.run_cycle()

    assert [e for e in world.calls.entries if e[0] in CHANGES] == calls
    observation = controller.last_observation
    assert observation is not None
    assert {v.replica.name: v.state for v in observation.views} == states
    assert world.backend.running == sorted(r for r, state, _ in replicas if state == "running")


def test_a_registered_replica_is_promoted_by_the_progress_step_as_soon_as_its_check_passes(world: World) -> None:
    world.adopt(A, admin=None)
    world.lb.checks_pass_after = 3
    controller = world.controller(min_replicas=1, max_replicas=1)

    controller.run_cycle()  # registers A in MAINT with checks on
    assert world.lb.status(A) == "MAINT"
    controller.progress()  # check 1
    controller.progress()  # check 2
    assert world.lb.status(A) == "MAINT" and world.lb.ready_before_check == []
    controller.progress()  # check 3 passes: promoted in the same step, not at the next pass
    assert world.lb.status(A) == "UP"
    assert world.calls.of(A) == ["add_server", "enable_health", "set_ready"]


# --- scale out: non-blocking, each replica joins when its own check passes ---------------------


def test_scale_out_returns_at_once_and_each_replica_joins_when_its_own_check_passes() -> None:
    world = World(auto_operations=False)
    world.adopt(A)
    controller = world.controller(min_replicas=3)

    decision = controller.run_cycle()

    assert decision is not None and (decision.current, decision.desired, decision.reason) == (1, 3, "below_min")
    assert world.clock.sleeps == [], "the pass never waits"
    assert world.backend.running == [A], "starts are operations in flight, not done inside the pass"
    world.operations.finish("start")  # both containers are up
    world.lb.checks_pass_after = 2
    controller.progress()  # registers both; first check not passed yet
    new = [n for n in world.backend.running if n != A]
    assert len(new) == 2
    for replica_name in new:
        assert world.calls.of(replica_name) == ["start_replica", "add_server", "enable_health"]
    world.lb.members[new[1]].passes_in = 5  # the second one is slower
    controller.progress()
    assert world.lb.status(new[0]) == "UP" and world.lb.status(new[1]) == "MAINT"
    for _ in range(5):
        controller.progress()
    assert world.lb.status(new[1]) == "UP"
    assert world.lb.ready_before_check == []
    assert world.replica_counts() == {"ready": 3, "starting": 0, "draining": 0}


def test_in_flight_starts_count_so_no_pass_starts_a_replica_twice() -> None:
    world = World(auto_operations=False)
    world.adopt(A)
    controller = world.controller(min_replicas=4)
    for _ in range(3):
        controller.run_cycle()
        world.clock.advance(1)
    assert len(world.operations.in_flight("start")) == 3
    world.operations.finish()
    controller.run_cycle()
    assert len(world.backend.running) == 4


def test_a_spike_during_a_long_drain_scales_out_at_the_next_interval(world: World) -> None:
    world.adopt(A, sessions=2)
    world.adopt(B, sessions=5)
    world.lb.sessions_drop_after = None  # B's sessions never end: the drain runs to its timeout
    controller = world.controller(max_replicas=1, policy={"drain_timeout_seconds": 30})
    controller.run_cycle()  # above max: drains the one with fewer sessions (A)
    (drained,) = world.calls.names("set_drain")

    controller.update_config(world.controllers[0].config.model_copy(update={"max_replicas": 4, "min_replicas": 3}))
    world.clock.advance(1)
    decision = controller.run_cycle()

    assert decision is not None and decision.desired == 3
    assert len(world.calls.names("start_replica")) >= 2, "scaled out while the drain goes on"
    assert world.lb.status(drained) == "DRAIN"


# --- failures never freeze decisions ----------------------------------------------------------


def test_a_create_that_raises_does_not_stop_the_policy_and_backs_off(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A)
    world.backend.create_errors = ["No such image: demo:latest"] * 20
    controller = world.controller(min_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    decisions = world.run(controller, 30)

    assert all(d is not None for d in decisions), "the policy evaluated every interval"
    attempts = world.calls.names("start_failed")
    # 1 s doubling: attempts at ~0, 1, 3, 7, 15 s and one more before 31 s.
    assert 4 <= len(attempts) <= 6, attempts
    assert world.metric("autoscaler_replica_start_failures_total", reason="create_failed") == len(attempts)
    assert world.metric("autoscaler_start_backoff_failures") == len(attempts)
    warnings = [r for r in caplog.records if "could not be started" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(warnings) == 1, "the reason is logged at warning once, then only when it changes"
    assert "No such image" in warnings[0].getMessage()

    world.backend.create_errors = []  # the image is back
    world.lb.checks_pass_after = 1
    world.run(controller, 40)
    assert len(world.backend.running) == 2


def test_a_pull_that_fails_is_a_failed_start_backed_off_and_running_replicas_are_untouched(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.adopt(A)
    world.backend.pull_errors = ["pull of demo:latest failed: unauthorized: authentication required"] * 20
    controller = world.controller(min_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    decisions = world.run(controller, 30)

    assert all(d is not None for d in decisions), "the policy evaluated every interval"
    attempts = world.calls.names("pull_failed")
    assert 4 <= len(attempts) <= 6, attempts  # the start backoff: ~0, 1, 3, 7, 15 s and one more
    assert world.calls.names("start_replica") == [], "no container is created without its image"
    assert world.backend.running == [A] and world.calls.of(A) == [], "the running replica is not touched"
    assert world.metric("autoscaler_replica_start_failures_total", reason="create_failed") == len(attempts)
    warnings = [r.getMessage() for r in caplog.records if "could not be started" in r.getMessage()
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unauthorized: authentication required" in warnings[0], warnings

    world.backend.pull_errors = []
    world.backend.pinned = {"demo:latest": "demo@sha256:" + "1" * 64}
    world.lb.checks_pass_after = 1
    world.run(controller, 40)
    assert len(world.backend.running) == 2
    started = [r for r in world.backend.replicas.values() if r.name != A]
    assert [r.image for r in started] == ["demo@sha256:" + "1" * 64], "created from the resolved reference"
    assert world.backend.specs[-1].image == "demo@sha256:" + "1" * 64


def _crash_loop_containers(world: World, seconds: float, interval: float, **config: Any) -> int:
    world.backend.exit_on_start = ExitReport(3, False, "", ("starting", "fatal: no config"))
    controller = world.controller(min_replicas=1, **config)
    world.run(controller, seconds, interval)
    return len(world.calls.names("start_replica"))


@pytest.mark.parametrize("interval", [1.0, 5.0], ids=["interval-1s", "interval-5s"])
def test_a_crash_loop_creates_a_bounded_number_of_containers_in_3_minutes(interval: float) -> None:
    world = World()
    created = _crash_loop_containers(world, 180, interval)
    # Defaults: 1 s doubling to 60 s. Attempts at 0, ~1, ~3, ~7, ~15, ~31, ~63, ~123 s (+ detection).
    delays = [bo.delay_seconds(n, 1, 60) for n in range(1, 20)]
    bound = 1 + sum(1 for i in range(len(delays)) if sum(delays[: i + 1]) <= 180)
    assert created <= bound <= 9, (created, bound)
    assert created >= 5
    assert world.backend.containers <= 1, "each failed replica was removed"


def test_an_exited_replica_is_reported_with_exit_code_oom_flag_and_output(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A)
    world.adopt(B)
    controller = world.controller(min_replicas=2)
    controller.run_cycle()
    caplog.set_level(logging.INFO, logger="autoscaler.engine")
    world.backend.set_state(B, "exited", ExitReport(137, True, "", ("allocating 512 MiB", "Killed")))
    world.clock.advance(1)

    controller.run_cycle()

    (record,) = [r for r in caplog.records if B in r.getMessage() and getattr(r, "reason", None) == "oom_killed"]
    text = record.getMessage()
    assert "exit code 137" in text and "OOM killed: yes" in text and "allocating 512 MiB | Killed" in text
    assert record.reason == "oom_killed"  # type: ignore[attr-defined]
    assert world.metric("autoscaler_replica_failures_total", reason="oom_killed") == 1
    assert (B, True) in world.backend.removed
    world.run(controller, 3)
    assert len(world.backend.running) == 2, "replaced after the backoff's first delay"


@pytest.mark.parametrize(
    ("report", "was_ready", "expected"),
    [
        (ExitReport(1, False, "", ()), False, ("exited", True)),
        (ExitReport(0, False, "", ()), False, ("exited", True)),
        (ExitReport(137, True, "", ()), True, ("oom_killed", True)),
        (ExitReport(143, False, "", ()), True, ("stopped", False)),
        (ExitReport(0, False, "", ()), True, ("stopped", False)),
        (ExitReport(137, False, "", ()), True, ("stopped", False)),
        (ExitReport(2, False, "", ()), True, ("crashed", True)),
    ],
    ids=["start-exit-1", "start-exit-0", "oom", "sigterm", "clean-exit", "sigkill", "crash"],
)
def test_classify_exit(report: ExitReport, was_ready: bool, expected: tuple[str, bool]) -> None:
    assert classify_exit(report, was_ready) == expected


def test_a_replica_that_never_passes_its_check_is_replaced_with_backoff(world: World) -> None:
    world.adopt(A)
    world.lb.checks_pass_after = None
    controller = world.controller(min_replicas=2, startup_timeout_seconds=10)

    world.run(controller, 120)

    started = world.calls.names("start_replica")
    # Each attempt takes its 10 s timeout, then waits 1, 2, 4, 8... s: about 6 in 2 minutes, not 12.
    assert 4 <= len(started) <= 7, started
    failures = world.metric("autoscaler_replica_start_failures_total", reason="unhealthy")
    assert failures in (len(started) - 1, len(started)), "every attempt but perhaps the last failed"
    assert world.backend.running[0] == A


def test_a_paused_replica_leaves_rotation_comes_back_on_unpause_and_is_replaced_if_it_stays_paused(world: World) -> None:
    world.adopt(A)
    world.adopt(B)
    controller = world.controller(min_replicas=2, startup_timeout_seconds=10)
    controller.run_cycle()
    world.backend.set_state(B, "paused")

    world.run(controller, 3)
    assert world.lb.status(B) == "DOWN", "out of rotation"
    assert B in [r.name for r in world.backend.replicas.values()], "not destroyed"
    assert B not in [n for n, _ in world.backend.removed]

    world.backend.set_state(B, "running")  # unpaused
    world.run(controller, 2)
    assert world.lb.status(B) == "UP"

    world.backend.set_state(B, "paused")
    world.run(controller, 15)
    assert (B, True) in world.backend.removed, "paused longer than startup_timeout_seconds: replaced"
    assert world.metric("autoscaler_replica_failures_total", reason="unhealthy") == 1
    assert len(world.backend.running) == 2


# --- honest accounting -------------------------------------------------------------------------


def test_a_partial_scale_out_counts_only_what_started() -> None:
    world = World()
    world.adopt(A)
    world.adopt(B)
    for replica_name in (A, B):
        world.backend.cpu_cores[replica_name] = 0.5  # 100 % of the limit: wants 4 (target 60)
    world.backend.create_errors = ["out of memory", "out of memory"]
    controller = world.controller(max_replicas=10, policy={"scale_up": {"rules": [{"type": "replicas", "value": 2, "period_seconds": 60}]}})
    controller.run_cycle()  # first sight: no CPU yet (one reading)
    world.clock.advance(1)

    decision = controller.run_cycle()  # 2 -> 4 decided: both starts fail
    assert decision is not None and (decision.current, decision.desired) == (2, 4)
    for replica_name in (A, B):
        world.backend.cpu_cores[replica_name] = 0.3  # load back at the target: the next pass holds
    world.clock.advance(1)
    held = controller.run_cycle()  # collects the failures
    assert held is not None and (held.current, held.desired) == (2, 2)

    history = controller.state.history
    assert sum(e.value for e in history.scale_up_events) == 0, "nothing started, nothing counted"
    assert controller.state.count_to_keep == 2


def test_restart_without_a_jump_the_window_is_seeded_with_the_current_count(world: World) -> None:
    for index in range(6):
        world.adopt(name(f"r{index}"))
        world.backend.cpu_cores[name(f"r{index}")] = 0.1  # 20 % of the limit, target 60: wants 2
    controller = world.controller(max_replicas=8, policy={"scale_down_stabilization_seconds": 300})

    decisions = world.run(controller, 60, interval=5)

    assert all(d is not None and d.desired == 6 for d in decisions), [d.message for d in decisions if d]
    assert any(d is not None and d.reason == "scale_down_stabilized" for d in decisions)
    assert len(world.backend.running) == 6


# --- scale in: drains never block --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sessions", "count", "victims"),
    [
        ({A: 5, B: 1, C: 3}, 1, [B]),
        ({A: 5, B: 1, C: 3}, 2, [B, C]),
        ({A: 0, B: 0, C: 2}, 1, [B]),
        ({A: 0, B: 0, C: 0}, 2, [C, B]),
        ({A: 1, B: None, C: 4}, 1, [B]),
    ],
    ids=["fewest-sessions", "two-victims", "tie-goes-to-newest", "all-idle-newest-first", "not-serving-first"],
)
def test_choose_victims(sessions: dict[str, int | None], count: int, victims: list[str]) -> None:
    views = []
    for index, (replica_name, s) in enumerate(sessions.items()):  # A oldest
        replica = Replica(replica_name, replica_name, SERVICE, "running", "10.0.0.1", float(index))
        server = None if s is None else ServerStat(replica_name, "", "UP", PASSED, s, 0, 0.0, None, 0, 0)
        views.append(ReplicaView(replica, "ready" if server else "starting", server))
    assert [v.replica.name for v in choose_victims(views, count)] == victims


def test_scale_in_drains_without_waiting_then_removes_once_idle(world: World) -> None:
    for index, (replica_name, count) in enumerate(zip((A, B, C), (5, 1, 3))):
        world.adopt(replica_name, sessions=count, age_seconds=OLD - index)
    world.lb.sessions_drop_after = 3
    controller = world.controller(max_replicas=2)
    world.calls.entries.clear()

    decision = controller.run_cycle()

    assert decision is not None and (decision.current, decision.desired, decision.reason) == (3, 2, "above_max")
    assert world.calls.entries == [("set_drain", B)], "the pass only starts the drain"
    assert world.replica_counts()["draining"] == 1
    for _ in range(3):
        controller.progress()
    assert world.calls.entries == [("set_drain", B), ("delete_server", B), ("remove_replica", B)]
    assert world.lb.sessions_at_delete[B] == 0, "deleted only once its sessions ended"
    assert (B, False) in world.backend.removed, "a drained replica is stopped gracefully"
    assert world.clock.sleeps == []


def test_a_drain_ends_at_its_timeout(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A, sessions=2)
    world.adopt(B, sessions=4)
    world.lb.sessions_drop_after = None
    controller = world.controller(max_replicas=1, policy={"drain_timeout_seconds": 3})
    controller.run_cycle()
    world.tick(controller, 2)
    assert A in world.lb.members
    world.tick(controller, 1.5)
    assert A not in world.lb.members and world.lb.sessions_at_delete[A] == 2
    assert "drain timeout" in caplog.text


def test_a_drain_left_behind_by_an_earlier_run_is_finished(world: World) -> None:
    world.adopt(A)
    world.adopt(B, admin="DRAIN", sessions=0)  # the daemon was killed mid-drain
    controller = world.controller()
    world.calls.entries.clear()

    decision = controller.run_cycle()

    assert world.calls.entries == [("delete_server", B), ("remove_replica", B)]
    assert decision is not None and decision.current == 1
    assert world.backend.running == [A]


# --- replacement -------------------------------------------------------------------------------


def test_a_replica_that_died_is_replaced_up_to_the_count_to_keep(world: World) -> None:
    world.adopt(A)
    world.adopt(B)
    controller = world.controller(min_replicas=1)  # the policy alone would settle for 1
    first = controller.run_cycle()
    assert first is not None and (first.current, first.desired) == (2, 2)

    world.backend.kill(B, exit_code=137)
    world.clock.advance(5)
    second = controller.run_cycle()

    (replacement,) = world.calls.names("start_replica")
    assert world.calls.of(B) == ["delete_server", "remove_replica"]
    assert world.backend.running == sorted([A, replacement])
    assert second is not None and second.current == 2
    assert world.metric("autoscaler_start_backoff_failures") == 0, "killed from outside: no backoff"
    assert not [s for m in world.registry.collect() if m.name == "autoscaler_scale_events"
                for s in m.samples if s.name.endswith("_total")], "a replacement is not a scale event"


# --- the engine and the load balancer go away --------------------------------------------------


def test_the_engine_going_away_is_one_log_line_each_way_and_counted(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A)
    controller = world.controller()
    controller.run_cycle()
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    world.backend.engine_down = True
    decisions = world.run(controller, 5)
    assert decisions == [None] * 5
    assert world.metric("autoscaler_docker_engine_up") == 0
    assert world.metric("autoscaler_docker_engine_outages_total") == 1
    assert controller.health.engine_down_since is not None

    world.backend.engine_down = False
    assert controller.run_cycle() is not None
    assert world.metric("autoscaler_docker_engine_up") == 1
    lines = [r.getMessage() for r in caplog.records if "engine" in r.getMessage()]
    assert len(lines) == 2 and "not reachable" in lines[0] and "reachable again" in lines[1], lines
    assert "Traceback" not in caplog.text


def test_a_removed_load_balancer_is_recreated_and_membership_rebuilt(world: World) -> None:
    world.adopt(A)
    world.adopt(B)
    controller = world.controller()
    controller.run_cycle()
    world.backend.lb_state = None  # `docker rm -f` of the load balancer
    world.lb.members.clear()

    controller.run_cycle()  # not answering: re-created
    assert "create_load_balancer" in world.calls.ops()
    world.clock.advance(1)
    controller.run_cycle()  # answering: every replica registered again
    world.tick(controller, 1)
    assert {world.lb.status(A), world.lb.status(B)} == {"UP"}


def test_a_load_balancer_that_cannot_start_backs_off(world: World) -> None:
    world.adopt(A)
    controller = world.controller()
    controller.run_cycle()
    world.backend.lb_state = None
    world.backend.lb_create_error = "port is already allocated"

    decisions = world.run(controller, 30)

    creates = world.calls.names("create_load_balancer")
    assert 4 <= len(creates) <= 6, creates
    assert all(d is not None for d in decisions), "decisions go on without a load balancer"


# --- one daemon per service --------------------------------------------------------------------


def test_standing_by_while_another_daemon_holds_the_lease(world: World) -> None:
    world.adopt(A)
    world.lease.holder = "other-host:4242"
    controller = world.controller(setup=False, lease=True, min_replicas=3)

    assert [controller.run_cycle() for _ in range(3)] == [None] * 3
    assert world.calls.entries == [], "a daemon standing by touches nothing"
    assert world.metric("autoscaler_lease_held") == 0

    world.lease.holder = None  # the other daemon died: its lease container went with it
    decision = controller.run_cycle()
    assert decision is not None and decision.desired == 3
    assert ("ensure_load_balancer", SERVICE) in world.calls.entries
    assert world.metric("autoscaler_lease_held") == 1


# --- a holder that hangs: the lease expires, and fences the holder --------------------------


def test_a_holder_stopped_past_its_renew_deadline_acts_on_nothing_and_stands_by(world: World) -> None:
    world.adopt(A)
    controller = world.controller(lease=True, setup=False, max_replicas=4)
    assert controller.run_cycle() is not None, "holds the lease and acts"
    world.backend.cpu_cores[A] = 0.5  # 100 % of the limit: the policy wants more
    world.clock.advance(40)  # SIGSTOP for 40 s: no renewal, and another daemon took the lease
    world.lease.holder = "other-host:4242"
    world.calls.entries.clear()

    assert [controller.run_cycle() for _ in range(3)] == [None] * 3
    world.tick(controller, 2)

    assert not world.calls.ops() & CHANGES, "no change after it lost the lease"
    assert world.metric("autoscaler_lease_held") == 0
    assert controller.health.standby_holder == "other-host:4242"


def test_a_stop_in_the_middle_of_a_pass_fences_the_rest_of_it(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A)
    world.backend.cpu_cores[A] = 0.5  # 100 % of the limit, target 60: wants 2
    controller = world.controller(lease=True, setup=False, max_replicas=4)
    controller.run_cycle()  # first reading
    world.clock.advance(1)
    world.backend.on_read_stats = lambda: world.clock.advance(40)  # stopped between measure and act
    world.calls.entries.clear()

    assert controller.run_cycle() is None, "the decided scale-out is not carried out"

    assert "start_replica" not in world.calls.ops()
    assert "lost the lease: acting on nothing until it is ours again" in caplog.text


def test_a_start_submitted_before_a_stop_is_not_run_after_the_lease_is_lost() -> None:
    world = World(auto_operations=False)
    world.adopt(A)
    controller = world.controller(lease=True, setup=False, min_replicas=2)
    controller.run_cycle()
    assert len(world.operations.in_flight("start")) == 1, "submitted, not run yet"
    world.clock.advance(40)  # the daemon was stopped with the start queued

    world.operations.finish()  # the operation's thread runs it now
    controller.run_cycle()

    assert "start_replica" not in world.calls.ops(), "fenced in the operation's thread too"
    assert world.metric("autoscaler_start_backoff_failures") == 0, "not a failed start: no backoff"
    assert len(world.operations.in_flight("start")) == 1, "holding the lease again, the next pass starts it anew"


def test_the_lease_is_renewed_between_passes_but_not_for_a_pass_that_hangs(world: World) -> None:
    world.adopt(A)
    controller = world.controller(lease=True, setup=False)
    controller.run_cycle()
    taken = world.clock.now()
    world.tick(controller, 6)
    assert world.lease.renewals == [pytest.approx(taken + t) for t in (2, 4, 6)], "every retry period"

    world.backend.hold_listing = threading.Event()  # the next pass hangs in a call
    stuck = threading.Thread(target=controller.run_cycle)
    stuck.start()
    try:
        assert world.backend.listing.wait(5)
        pass_started = world.clock.now()
        world.tick(controller, 20)
        renewed_during_pass = [t for t in world.lease.renewals if t > pass_started]
        assert renewed_during_pass, "a pass shorter than the renew deadline keeps the lease"
        assert max(renewed_during_pass) < pass_started + world.lease.renew_deadline_seconds
        assert not world.lease.held(), "a hung pass lets the lease go"
    finally:
        world.backend.hold_listing.set()
        stuck.join(10)


# --- dry run, metrics, logs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "config", "desired"),
    [([A], {"min_replicas": 3}, 3), ([A, B, C], {"max_replicas": 1}, 1)],
    ids=["would-scale-out", "would-scale-in"],
)
def test_dry_run_decides_and_records_metrics_but_changes_nothing(
    world: World, replicas: list[str], config: dict[str, Any], desired: int
) -> None:
    for replica_name in replicas:
        world.adopt(replica_name)
    world.adopt(GONE, admin=None, state="exited")
    world.lb.checks_pass_after = None
    controller = world.controller(dry_run=True, **config)

    decision = None
    for _ in range(2):
        decision = controller.run_cycle()
        world.tick(controller, 5)

    assert decision is not None and decision.desired == desired
    assert world.calls.ops() <= {"existing_load_balancer"}
    assert set(world.backend.running) == set(replicas)
    assert world.metric("autoscaler_desired_replicas") == desired
    assert world.replica_counts() == {"ready": len(replicas), "starting": 0, "draining": 0}


@pytest.mark.parametrize(
    ("cores", "cpu_percent"),
    [(0.0, 0.0), (0.1, 20.0), (0.25, 50.0), (0.5, 100.0), (0.75, 150.0)],
    ids=["idle", "20%", "50%", "at-limit", "above-limit"],
)
def test_cpu_percent_comes_from_two_successive_readings(world: World, cores: float, cpu_percent: float) -> None:
    world.adopt(A)
    world.backend.cpu_cores[A] = cores
    controller = world.controller(min_replicas=1, max_replicas=1)

    controller.run_cycle()
    assert controller.last_snapshot is not None
    (first,) = controller.last_snapshot.replicas
    assert first.cpu_percent is None, "one reading is missing, not 0 %"
    assert first.memory_percent == pytest.approx(25.0)

    world.clock.advance(5)
    controller.run_cycle()
    (second,) = controller.last_snapshot.replicas
    assert second.cpu_percent == pytest.approx(cpu_percent)


def test_cpu_drives_a_scale_up_from_the_second_pass(world: World) -> None:
    world.adopt(A)
    world.backend.cpu_cores[A] = 0.45  # 90 % of the limit, target 60 %
    controller = world.controller()

    first = controller.run_cycle()
    assert first is not None and (first.desired, first.reason) == (1, "metrics_unavailable")
    cpu = world.metric("autoscaler_service_cpu_percent")
    assert cpu is not None and math.isnan(cpu)

    world.clock.advance(5)
    second = controller.run_cycle()
    assert second is not None and (second.current, second.desired, second.reason) == (1, 2, "scale_up")
    assert world.metric("autoscaler_service_cpu_percent") == pytest.approx(90)
    assert world.metric("autoscaler_scale_events_total", direction="up", reason="scale_up") == 1
    assert len(world.backend.running) == 2


def test_no_stats_at_all_is_a_metrics_failure(world: World) -> None:
    world.adopt(A)
    world.adopt(B)
    world.backend.stats_available = False
    controller = world.controller()

    decision = controller.run_cycle()

    assert decision is not None and (decision.desired, decision.reason) == (2, "metrics_unavailable")
    assert "no stats from the cgroup files" in decision.message
    assert not world.calls.ops() & CHANGES


def test_metrics_after_passes(world: World) -> None:
    world.adopt(A)
    world.lb.checks_pass_after = 1
    controller = world.controller(min_replicas=3)

    controller.run_cycle()  # 1 -> 3: below min
    world.tick(controller, 1)
    assert world.replica_counts() == {"ready": 3, "starting": 0, "draining": 0}
    assert world.metric("autoscaler_desired_replicas") == 3
    assert world.metric("autoscaler_scale_events_total", direction="up", reason="below_min") == 1

    controller.update_config(controller.config.model_copy(update={"max_replicas": 2}))
    world.clock.advance(5)
    controller.run_cycle()  # 3 -> 2: above max
    assert world.metric("autoscaler_desired_replicas") == 2
    assert world.metric("autoscaler_scale_events_total", direction="down", reason="above_max") == 1
    world.tick(controller, 2)
    assert world.replica_counts() == {"ready": 2, "starting": 0, "draining": 0}
    assert world.metric("autoscaler_service_memory_percent") == pytest.approx(25)
    assert world.metric("autoscaler_loop_duration_seconds_count") == 2


def test_each_change_and_each_new_reason_is_logged_at_info(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A)
    world.lb.checks_pass_after = 1
    controller = world.controller(min_replicas=2)
    caplog.set_level(logging.DEBUG, logger="autoscaler.engine")
    for _ in range(4):
        controller.run_cycle()
        world.tick(controller, 5)
    decisions = [r for r in caplog.records if getattr(r, "reason", None) and getattr(r, "desired", None) is not None]
    assert len(decisions) == 4
    assert (decisions[0].reason, decisions[0].levelname) == ("below_min", "INFO")  # type: ignore[attr-defined]
    assert any(r.levelname == "DEBUG" for r in decisions), "a repeated no-change decision"


def test_close_waits_at_most_its_timeout_then_abandons_what_still_runs_and_releases_the_lease() -> None:
    world = World(auto_operations=False)
    world.adopt(A)
    controller = world.controller(lease=True, setup=False, min_replicas=2)
    controller.run_cycle()
    assert world.operations.busy()

    abandoned = controller.close(0.1)

    (waited,) = world.operations.waited
    assert 0 < waited <= 0.1, "the operations were given what was left of the timeout, no more"
    assert abandoned == [f"start of {name}" for name in world.operations.in_flight("start")]
    assert abandoned and world.lease.released == 1 and world.operations.closed
