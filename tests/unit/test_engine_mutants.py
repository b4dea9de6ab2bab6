"""Behaviours of the reconciler's pure parts that mutation testing found no test holding.

Each test names the behaviour; `mutmut` (README: "Mutation testing") showed that a change to
the line it covers left every other unit test passing. Equivalent and open mutants are listed
in tests/unit/MUTANTS.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.engine import backoff as bo
from autoscaler.engine.containers import plan
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.ports import BackendError, Replica
from autoscaler.engine.replicas import ReplicaView, Tracked, in_transition, timed_out
from autoscaler.engine.state import Context, Failure, InFlight, ServiceState, record_failure
from autoscaler.model import TimedValue
from autoscaler.telemetry import Telemetry
from engine_fakes import World, name

A, B = name("a"), name("b")

# --- the start backoff ---------------------------------------------------------------------------


def test_a_failure_keeps_its_reason_for_status() -> None:
    backoff = bo.after_failure(bo.Backoff(), 5.0, "replica web-1 exited (code 3)", 1.0, 60.0)
    assert (backoff.failures, backoff.retry_at, backoff.reason) == (1, 6.0, "replica web-1 exited (code 3)")


@pytest.mark.parametrize(
    ("backoff", "now", "wanted", "starting", "allowed"),
    [
        (bo.Backoff(2, retry_at=10.0), 10.0, 0, 0, 0),
        (bo.Backoff(2, retry_at=10.0), 10.0, -2, 0, 0),
    ],
    ids=["none-wanted-when-a-probe-is-due", "fewer-than-none-wanted"],
)
def test_no_probe_start_when_none_is_wanted(
    backoff: bo.Backoff, now: float, wanted: int, starting: int, allowed: int
) -> None:
    # The backoff's one probe start is one of the starts wanted, never one more.
    assert bo.starts_allowed(backoff, now, wanted, starting) == allowed


# --- the plan ------------------------------------------------------------------------------------


def _view(name: str, state: str = "ready") -> ReplicaView:
    return ReplicaView(Replica(name, name, "web", "running", "10.0.0.1", 900.0), state, None)


def test_a_start_in_flight_over_the_count_retires_no_serving_replica() -> None:
    # One replica serves, one start is on its way, the count to keep is 1: the surplus is the
    # start, which cannot be retired yet; the serving replica stays.
    a = _view("a")
    result = plan([a], 1, 1, 0, bo.Backoff(), {"a": Tracked("a", 0.0, 0.0)}, True, now=10.0)
    assert (result.start, result.retire) == (0, ())


# --- what a replica is doing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tracked", "expected"),
    [
        (Tracked("a", 0.0, 0.0, ready_since=1.0), False),
        (Tracked("a", 0.0, 0.0), True),
        (Tracked("a", 0.0, 0.0, ready_since=1.0, drain_deadline=9.0), True),
        (Tracked("a", 0.0, 0.0, ready_since=1.0, unhealthy_since=5.0), True),
        (Tracked("a", 0.0, 0.0, failed=True), False),
    ],
    ids=["ready", "starting", "draining", "out-of-rotation", "failed"],
)
def test_in_transition(tracked: Tracked, expected: bool) -> None:
    assert in_transition(tracked) is expected


TIMEOUT = 10.0


@pytest.mark.parametrize(
    ("tracked", "now", "now_wall", "expected"),
    [
        # Out of rotation after serving: counted from when it stopped, strictly past the timeout.
        (Tracked("a", 0.0, 0.0, unhealthy_since=90.0), 100.0, 1100.0, False),
        (Tracked("a", 0.0, 0.0, unhealthy_since=89.9), 100.0, 1100.0, True),
        # Starting: every clock exactly at the timeout is not past it.
        (Tracked("a", 90.0, 1090.0), 100.0, 1100.0, False),
        (Tracked("a", 89.0, 1089.0), 100.0, 1100.0, True),
        # Registered again (say after an HAProxy restart) 5 s ago: a fresh chance, however old.
        (Tracked("a", 0.0, 0.0, registered_at=95.0), 100.0, 1100.0, False),
        (Tracked("a", 0.0, 0.0, registered_at=85.0), 100.0, 1100.0, True),
        # Adopted 5 s ago (first seen by this process then), created long before: a fresh chance.
        (Tracked("a", 95.0, 0.0), 100.0, 1100.0, False),
        # First seen long ago but created 5 s ago by the wall clock: not yet.
        (Tracked("a", 0.0, 1095.0), 100.0, 1100.0, False),
        # Each clock exactly at the timeout, the others past it: not yet.
        (Tracked("a", 90.0, 1085.0, registered_at=90.0), 100.0, 1100.0, False),
        (Tracked("a", 85.0, 1085.0, registered_at=90.0), 100.0, 1100.0, False),
        (Tracked("a", 85.0, 1090.0), 100.0, 1100.0, False),
    ],
    ids=[
        "unhealthy-at-timeout", "unhealthy-past-timeout", "starting-at-timeout", "starting-past-timeout",
        "registered-again-recently", "registered-long-ago", "adopted-recently", "created-recently",
        "first-seen-at-timeout", "registered-at-timeout", "created-at-timeout",
    ],
)
def test_timed_out(tracked: Tracked, now: float, now_wall: float, expected: bool) -> None:
    assert timed_out(tracked, TIMEOUT, now, now_wall) is expected


# --- work in flight ------------------------------------------------------------------------------


def test_a_finished_deletion_is_no_longer_in_flight() -> None:
    work = InFlight()
    work.deletion_done("never-started")  # nothing to finish: no error
    assert work.deletion_started("a", 1.0) == 1.0
    work.deletion_done("a")
    assert not work.deleting("a")
    assert work.deletion_started("a", 7.0) == 7.0, "a new deletion starts its own clock"


# --- reporting a failure -------------------------------------------------------------------------


WALL = 1_800_000_000.0


def _context() -> Context:
    return Context("web", "net", Telemetry(CollectorRegistry()), ServiceHealth(), lambda: 100.0, lambda: WALL)


def _failure(reason: str = "exited", *, never_ready: bool = True, counts: bool = True,
             counted_at: float | None = None, key: str | None = None) -> Failure:
    return Failure("web-1", reason, f"replica web-1 failed ({reason}): 100% of its memory",
                   never_ready, counts, counted_at, key=key)


def test_a_failure_is_shown_by_status_and_backs_off_with_its_message() -> None:
    ctx, state = _context(), ServiceState(0.0)
    record_failure(ctx, state, _failure(), 100.0, 1.0, 60.0)
    message = "replica web-1 failed (exited): 100% of its memory"
    assert (ctx.health.last_failure, ctx.health.last_failure_at) == (message, WALL)
    assert state.backoff.reason == message


def test_a_start_failure_of_no_scale_up_takes_nothing_back() -> None:
    # An adopted replica that never became ready belongs to no decision of this process.
    ctx, state = _context(), ServiceState(0.0, count_to_keep=3)
    record_failure(ctx, state, _failure(counted_at=None), 100.0, 1.0, 60.0)
    assert state.count_to_keep == 3 and state.history.scale_up_events == ()


def test_a_start_failure_of_a_scale_up_takes_it_back() -> None:
    ctx, state = _context(), ServiceState(0.0, count_to_keep=3)
    record_failure(ctx, state, _failure(counted_at=40.0), 100.0, 1.0, 60.0)
    assert state.count_to_keep == 2 and state.history.scale_up_events == (TimedValue(40.0, -1),)


def test_failures_are_logged_at_warning_once_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    ctx, state = _context(), ServiceState(0.0)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")
    for failure in (_failure("exited"), _failure("exited"), _failure("oom_killed"),
                    _failure("crashed", never_ready=False, counts=False)):
        record_failure(ctx, state, failure, 100.0, 1.0, 60.0)
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO, logging.WARNING, logging.WARNING]
    first, last = caplog.records[0], caplog.records[-1]
    # The whole message, verbatim (a "%" in a replica's output is no format directive), with
    # what happens next, and the replica and reason as fields of the line.
    assert first.getMessage() == (
        "replica web-1 failed (exited): 100% of its memory; next start in 1s (failure 1 in a row)")
    assert last.getMessage() == "replica web-1 failed (crashed): 100% of its memory; replacing it"
    assert (first.replica, first.reason, first.service) == ("web-1", "exited", "web")  # type: ignore[attr-defined]


# --- a removal that failed -----------------------------------------------------------------------


def _refusing_first_removal(world: World) -> list[str]:
    """The engine refuses the first removal (the container is still listed); the ids refused."""
    refusals: list[str] = []
    remove = world.backend.remove_replica

    def refuse_once(service: str, container_id: str, stop_timeout_seconds: int, force: bool = False) -> None:
        if not refusals:
            refusals.append(container_id)
            raise BackendError("remove", service, "container is restarting: stop it first")
        remove(service, container_id, stop_timeout_seconds, force)

    world.backend.remove_replica = refuse_once  # type: ignore[method-assign]
    return refusals


def test_a_removal_that_failed_is_tried_again_with_force() -> None:
    # The next pass removes it by force, once, instead of leaving a replica nobody counts.
    world = World()
    refusals = _refusing_first_removal(world)
    world.adopt(A)
    world.adopt(B, admin=None, state="exited")
    controller = world.controller(min_replicas=1, max_replicas=1)
    try:
        for _ in range(4):
            controller.run_cycle()
            world.tick(controller, 1.0)
    finally:
        controller.close(0)
    assert len(refusals) == 1
    assert world.backend.removed == [(B, True)]
    assert world.backend.running == [A]


def test_a_forced_removal_in_flight_is_not_asked_for_again() -> None:
    world = World(auto_operations=False)
    _refusing_first_removal(world)
    world.adopt(A)
    world.adopt(B, admin=None, state="exited")
    controller = world.controller(min_replicas=1, max_replicas=1)
    submitted: list[tuple[str, str]] = []
    submit = world.operations.submit

    def record(kind: str, key: str, fn: Callable[[], Any], **context: Any) -> None:
        submitted.append((kind, key))
        submit(kind, key, fn, **context)

    world.operations.submit = record  # type: ignore[method-assign]
    try:
        controller.run_cycle()  # B exited: its removal is asked for
        world.operations.finish("remove")  # and refused
        world.tick(controller, 1.0)
        controller.run_cycle()  # tried again, by force
        world.tick(controller, 1.0)
        controller.run_cycle()  # still on its way: not asked for again
        world.tick(controller, 1.0)
        assert [key for kind, key in submitted if kind == "remove"] == [B, B]
        world.operations.finish("remove")
    finally:
        controller.close(0)
    assert world.backend.removed == [(B, True)]
