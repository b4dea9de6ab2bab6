"""A worker (no load balancer) through the controller: the DirectGate part decides readiness
from the container's state and Docker's health status, and a scale-in stops a replica with its
stop signal, never by force.

The world is the fake engine of engine_fakes.py; a worker's config has no port and no
[load_balancer], so the controller composes DirectGate instead of Membership.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from autoscaler.config import ExternalMetric
from autoscaler.engine import wiring
from autoscaler.engine.controller import ServiceController
from autoscaler.engine.membership import DirectGate
from autoscaler.engine.ports import SourceError
from engine_fakes import NETWORK, SERVICE, World, name, service_config

A, B = name("a"), name("b")
STARTUP_TIMEOUT = 10  # service_config's startup_timeout_seconds
HEALTHCHECK = {"test": ["CMD", "/bin/alive"]}


def worker(world: World, **config: Any) -> ServiceController:
    controller = world.controller(with_load_balancer=False, load_balancer=None, port=None, **config)
    assert isinstance(controller.gate, DirectGate) and controller.config.is_worker
    return controller


def counts(world: World) -> tuple[float | None, float | None]:
    states = world.replica_counts()
    return states["ready"], states["starting"]


# --- readiness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "state", "health", "ready"),
    [
        (False, "running", None, True),  # no check anywhere: running is ready
        (False, "running", "starting", False),  # the image's own HEALTHCHECK counts too
        (False, "running", "healthy", True),
        (False, "running", "unhealthy", False),
        (True, "running", None, False),  # a check was asked for and no status exists: not a pass
        (True, "running", "starting", False),
        (True, "running", "healthy", True),
        (True, "running", "unhealthy", False),
        (False, "paused", None, False),
        (True, "paused", "healthy", False),  # healthy when it was frozen: it serves nobody now
        (False, "restarting", None, False),
    ],
    ids=[
        "no-check-running", "image-check-starting", "image-check-healthy", "image-check-unhealthy",
        "configured-no-status", "configured-starting", "configured-healthy", "configured-unhealthy",
        "paused", "paused-healthy", "restarting",
    ],
)  # fmt: skip
def test_a_worker_replica_is_ready_when_it_runs_and_docker_says_healthy(
    world: World, configured: bool, state: str, health: str | None, ready: bool
) -> None:
    world.backend.add(A, state=state, health=health)
    controller = worker(world, healthcheck=HEALTHCHECK if configured else None)
    decision = controller.run_cycle()
    assert decision is not None and decision.current == 1
    assert counts(world) == ((1, 0) if ready else (0, 1))
    assert [r.ready for r in controller.last_snapshot.replicas] == [ready]  # type: ignore[union-attr]


def test_a_started_replica_is_ready_once_healthy(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.backend.health_on_start = "starting"
    controller = worker(world, healthcheck=HEALTHCHECK)
    controller.run_cycle()  # min 1: starts one
    [started] = world.calls.names("start_replica")
    world.clock.advance(1)
    controller.run_cycle()
    assert counts(world) == (0, 1)
    assert world.backend.specs[0].healthcheck is not None and world.backend.specs[0].port is None

    world.backend.set_health(started, "healthy")
    world.clock.advance(1)
    caplog.set_level(logging.INFO, "autoscaler.engine")
    controller.run_cycle()

    assert counts(world) == (1, 0)
    assert f"replica {started} is healthy: ready" in caplog.text
    assert not {op for op in world.calls.ops() if op in ("add_server", "ensure_load_balancer", "set_ready")}


def test_a_replica_that_turns_unhealthy_is_replaced_after_the_startup_timeout(world: World) -> None:
    world.backend.add(A, health="healthy")
    controller = worker(world, healthcheck=HEALTHCHECK)
    controller.run_cycle()
    assert counts(world) == (1, 0)

    world.backend.set_health(A, "unhealthy")
    world.clock.advance(1)
    controller.run_cycle()
    assert counts(world) == (0, 1), "out of the ready count at once"
    world.clock.advance(STARTUP_TIMEOUT)
    controller.run_cycle()
    assert A in world.backend.running, "not before startup_timeout_seconds"

    world.clock.advance(1)
    controller.run_cycle()

    assert (A, True) in world.backend.removed, "a failed replica is removed at once"
    assert world.metric("autoscaler_replica_failures_total", reason="unhealthy") == 1
    world.clock.advance(1)  # the start backoff's first second
    controller.run_cycle()
    [replacement] = world.calls.names("start_replica")
    assert world.backend.running == [replacement]


def test_a_replica_healthy_again_in_time_stays(world: World) -> None:
    world.backend.add(A, health="healthy")
    controller = worker(world, healthcheck=HEALTHCHECK)
    controller.run_cycle()
    world.backend.set_health(A, "unhealthy")
    world.clock.advance(1)
    controller.run_cycle()
    world.backend.set_health(A, "healthy")
    world.clock.advance(STARTUP_TIMEOUT)
    controller.run_cycle()
    world.clock.advance(STARTUP_TIMEOUT)
    controller.run_cycle()
    assert counts(world) == (1, 0)
    assert world.backend.removed == [] and world.calls.names("start_replica") == []


def test_a_configured_check_without_a_health_status_is_never_ready(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # A container made before the check was configured (or by an image that turns checks off)
    # has no health status: it never passes the check the config asks for.
    world.backend.add(A, health=None)
    controller = worker(world, healthcheck=HEALTHCHECK)
    for _ in range(STARTUP_TIMEOUT):
        controller.run_cycle()
        assert counts(world) == (0, 1)
        world.clock.advance(1)
    world.clock.advance(1)
    controller.run_cycle()
    assert world.metric("autoscaler_replica_start_failures_total", reason="unhealthy") == 1
    assert "no health status, but a healthcheck is configured" in caplog.text
    assert A not in world.backend.running


def test_a_replica_that_never_gets_healthy_is_replaced_with_backoff(world: World) -> None:
    world.backend.health_on_start = "starting"
    controller = worker(world, healthcheck=HEALTHCHECK)
    world.run(controller, 120)
    started = world.calls.names("start_replica")
    # Each try takes its 10 s timeout, then waits 1, 2, 4, 8... s: about 6 in 2 minutes, not 12.
    assert 4 <= len(started) <= 7, started
    failures = world.metric("autoscaler_replica_start_failures_total", reason="unhealthy")
    assert failures in (len(started) - 1, len(started))


# --- leaving: the stop signal ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "victim"),
    [("healthy", B), ("starting", B), ("unhealthy", B)],
    ids=["ready", "not-ready-yet", "unhealthy"],
)
def test_scale_in_of_a_worker_never_kills(world: World, health: str, victim: str, caplog: pytest.LogCaptureFixture) -> None:
    # A worker that is not healthy yet may already hold a job: it gets its stop signal and its
    # stop timeout, as a ready one does (a replica behind a load balancer that serves nobody
    # yet is killed at once instead).
    world.backend.add(A, health="healthy", age_seconds=7200)
    world.backend.add(B, health=health)
    controller = worker(world, min_replicas=1, max_replicas=2, healthcheck=HEALTHCHECK)
    controller.run_cycle()
    controller.update_config(controller.config.model_copy(update={"max_replicas": 1}))
    world.clock.advance(1)
    caplog.set_level(logging.INFO, "autoscaler.engine")

    decision = controller.run_cycle()

    assert decision is not None and (decision.current, decision.desired, decision.reason) == (2, 1, "above_max")
    assert world.backend.removed == [(victim, False)]
    assert f"removing replica {victim} (stop signal, then removed)" in caplog.text
    assert world.calls.ops().isdisjoint({"set_drain", "delete_server"})


def test_the_gate_without_a_load_balancer_never_drains_or_stops_at_once(world: World) -> None:
    controller = worker(world)
    gate = controller.gate
    assert gate.load_balancer is None
    assert gate.attach(controller.config, 5.0) is False
    look = gate.look(controller.config, 0.0)
    assert (look.up, look.servers, look.backend) == (True, None, None)
    assert gate.progress(controller.config, 0.0, []) == []


# --- scale from and to zero, end to end ----------------------------------------------------


class QueueSource:
    """An external source whose value the test sets; None makes it fail."""

    def __init__(self) -> None:
        self.value: float | None = 0.0

    def read(self) -> float:
        if self.value is None:
            raise SourceError("redis: connection refused")
        return self.value

    def close(self) -> None:
        pass


def test_a_worker_wakes_from_zero_and_goes_back(world: World) -> None:
    queue = QueueSource()

    def source(metric: ExternalMetric) -> QueueSource:
        return queue

    config = service_config(
        load_balancer=None, port=None, min_replicas=0, max_replicas=4,
        policy={"metrics": [{"name": "jobs_waiting", "target_average_value": 5,
                             "redis": {"url": "redis://redis:6379/0", "list": "jobs"}}],
                "scale_to_zero_after_seconds": 30},
    )
    controller = ServiceController(
        SERVICE, config, NETWORK, target=wiring.containers(world.backend, world.operations),  # type: ignore[arg-type]
        metrics=world.backend, networks=world.backend, telemetry=world.telemetry,  # type: ignore[arg-type]
        clock=world.clock.now, wall_clock=world.clock.time, operations=world.operations,  # type: ignore[arg-type]
        external=source,
    )
    world.controllers.append(controller)
    controller.setup()

    reasons = [d.reason for d in world.run(controller, 5) if d is not None]
    assert set(reasons) == {"inactive"} and world.backend.running == []

    queue.value = 3
    decision = controller.run_cycle()
    assert decision is not None and (decision.current, decision.desired, decision.reason) == (0, 1, "activation")
    world.tick(controller, 1)
    assert len(world.backend.running) == 1

    queue.value = 0
    decisions = [d for d in world.run(controller, 40) if d is not None]
    assert "scale_to_zero" in [d.reason for d in decisions]
    assert world.backend.running == []
    assert all(force is False for _, force in world.backend.removed), "to zero by the stop signal too"
