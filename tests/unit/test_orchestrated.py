"""The scale target of an orchestrator that keeps the count itself (OrchestratedCount, the
Swarm backend's): the same controller sets the count and keeps the load balancer's membership;
the orchestrator (a fake with Swarm's behaviour) picks, starts and stops the tasks."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from autoscaler.engine.ports import ExitReport
from engine_fakes import World, name

A, B, C = name("a"), name("b"), name("c")


def swarm(world: World, tasks: list[str], count: int | None = None) -> None:
    for task in tasks:
        world.adopt(task)
    world.orchestrator.count = len(tasks) if count is None else count


def test_the_decided_count_is_set_on_the_orchestrator_which_starts_the_tasks(world: World) -> None:
    swarm(world, [A, B])
    controller = world.controller(orchestrated=True, min_replicas=3)

    decision = controller.run_cycle()

    assert decision is not None and (decision.current, decision.desired) == (2, 3)
    assert world.orchestrator.scales == [3]
    assert "start_replica" not in world.calls.ops(), "the engine never starts a task itself"
    assert world.metric("autoscaler_scale_events_total", direction="up", reason="below_min") == 1
    world.orchestrator.settle()  # Swarm starts the third task
    world.run(controller, 3)
    assert world.replica_counts() == {"ready": 3, "starting": 0, "draining": 0}
    assert world.orchestrator.scales == [3], "set once"


def test_first_sight_keeps_the_count_the_orchestrator_holds(world: World) -> None:
    swarm(world, [A, B], count=4)  # Swarm is still starting two of its four
    controller = world.controller(orchestrated=True, max_replicas=6)

    decision = controller.run_cycle()

    assert controller.state.count_to_keep == 4
    assert decision is not None and decision.current == 4, "the two on their way count, with no reading"
    assert world.orchestrator.scales == []


def test_tasks_the_orchestrator_marks_for_removal_drain_before_they_go(world: World, caplog: pytest.LogCaptureFixture) -> None:
    swarm(world, [A, B, C])
    world.lb.members[A].sessions_current = 0
    controller = world.controller(orchestrated=True, max_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    decision = controller.run_cycle()  # 3 -> 2: the count is set; Swarm marks the newest (C)
    assert decision is not None and (decision.current, decision.desired) == (3, 2)
    assert world.orchestrator.scales == [2]
    world.tick(controller, 1)  # the progress step watches for the task Swarm marked

    assert world.calls.of(C)[:2] == ["set_drain", "delete_server"], "drained, then out of the load balancer"
    assert "marked for removal by the orchestrator" in caplog.text
    world.orchestrator.settle()  # Swarm stops it
    world.run(controller, 2)
    assert world.replica_counts() == {"ready": 2, "starting": 0, "draining": 0}
    assert world.metric("autoscaler_replica_failures_total", reason="task_failed") is None, "a stop is no failure"
    assert "remove_replica" not in world.calls.ops(), "the orchestrator removes its tasks"


def test_a_service_someone_else_is_updating_is_held_and_said_once(world: World, caplog: pytest.LogCaptureFixture) -> None:
    swarm(world, [A])
    world.orchestrator.busy = "updating"
    controller = world.controller(orchestrated=True, min_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    world.run(controller, 5)

    lines = [r for r in caplog.records if "not setting the replica count to 2" in r.getMessage()]
    assert len(lines) == 1 and "updating" in lines[0].getMessage()
    assert world.orchestrator.scales == [] and world.orchestrator.count == 1
    world.orchestrator.busy = None
    world.run(controller, 1)
    assert world.orchestrator.scales == [2], "set once the update is over"


def test_a_task_that_dies_is_reported_once_and_replaced_by_the_orchestrator_without_backoff(world: World) -> None:
    swarm(world, [A, B])
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    controller.run_cycle()
    # Swarm keeps the task listed as dead; one this daemon saw start is reported (older history is not).
    task = world.backend.by_name(B)
    world.backend.replicas[task.id] = replace(task, state="dead", created_at_seconds=world.clock.time())
    world.backend.exits[task.id] = ExitReport(137, True, "OOM killed", ("allocating",))

    world.run(controller, 3)

    assert world.metric("autoscaler_replica_failures_total", reason="oom_killed") == 1, "once, not per pass"
    assert world.metric("autoscaler_start_backoff_failures") == 0, "the orchestrator's restart policy, not ours"
    assert B not in world.lb.members, "out of the load balancer"
    assert "remove_replica" not in world.calls.ops()


def test_a_task_that_never_passes_its_check_is_left_to_the_orchestrator(world: World, caplog: pytest.LogCaptureFixture) -> None:
    swarm(world, [A])
    world.adopt(B, admin=None)
    world.lb.checks_pass_after = None
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2, startup_timeout_seconds=5)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    world.run(controller, 12)

    lines = [r for r in caplog.records if "left to the orchestrator" in r.getMessage()]
    assert len(lines) == 1 and B in lines[0].getMessage()
    assert world.lb.status(B) == "MAINT", "registered, never put in rotation"
    assert B in world.backend.running and "remove_replica" not in world.calls.ops()


def test_a_task_being_created_counts_as_starting(world: World) -> None:
    swarm(world, [A])
    world.adopt(B, admin=None, state="created")
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)

    controller.run_cycle()

    observation = controller.last_observation
    assert observation is not None
    assert {v.replica.name: v.state for v in observation.views} == {A: "ready", B: "starting"}
    assert not world.calls.of(B), "nothing to register before it has an address"


def test_a_changed_spec_goes_out_through_the_orchestrators_own_update(world: World) -> None:
    """A service made from another version is updated once through the orchestrator's own
    rolling update (Swarm's `service update`), not by the daemon restarting tasks; the same
    spec is not rolled out again; a reload that changes it is the next update."""
    swarm(world, [A, B])
    world.orchestrator.version = "old"
    controller = world.controller(orchestrated=True, min_replicas=2)
    controller.run_cycle()
    assert len(world.orchestrator.rolled_out) == 1
    first = world.orchestrator.rolled_out[0]
    controller.run_cycle()
    assert world.orchestrator.rolled_out == [first], "the same spec is not rolled out again"
    controller.update_config(controller.config.model_copy(update={"env": {"APP_VERSION": "2"}}))
    controller.run_cycle()
    assert len(world.orchestrator.rolled_out) == 2 and world.orchestrator.rolled_out[1] != first


def test_a_service_of_the_current_version_is_not_updated(world: World) -> None:
    swarm(world, [A])
    controller = world.controller(orchestrated=True, min_replicas=1)
    world.orchestrator.version = None  # created before versions: left as it is
    controller.run_cycle()
    assert world.orchestrator.rolled_out == []
