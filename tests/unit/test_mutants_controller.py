"""Behaviours of the reconciler's pass (controller.py) and its sampling (sampling.py) that
mutation testing found no test holding.

Each test names the behaviour; `mutmut` (README: "Mutation testing") showed that a change to
the lines it covers left every other unit test passing. The equivalent mutants of these two
files are listed, with why, in tests/unit/mutants/controller.md.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import pytest

from autoscaler.config import ServiceConfig
from autoscaler.engine import wiring
from autoscaler.engine.controller import TEMPLATE_REFRESH_SECONDS, ServiceController
from autoscaler.engine.daemon import service_status
from autoscaler.engine.ports import BackendError, BackendStat, ContainerTemplate, Replica, ServerStat, StatsReading
from autoscaler.engine.replicas import Observation, ReplicaView
from autoscaler.engine.sampling import Sampler
from autoscaler.model import Decision, ReplicaSample
from autoscaler.telemetry import ReplicaMetrics
from engine_fakes import MiB, NETWORK, OLD, PASSED, SERVICE, World, name, service_config
from test_external_config import METRIC

A, B, C, D, X, Y = (name(n) for n in ("a", "b", "c", "d", "x", "y"))
LOGGER = "autoscaler.engine"


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def status(world: World, controller: ServiceController) -> dict[str, Any]:
    return service_status(controller, world.clock.wall, 1.0)


# --- what status and /metrics show before the first pass -----------------------------------------


def test_before_the_first_pass_status_shows_no_replica_no_decision_and_the_series_exist(world: World) -> None:
    # `status` may be asked for before a pass ran (the daemon just started): it must answer,
    # with nothing counted yet, and the series that must exist from the start are at 0.
    controller = world.controller(setup=False)

    shown = status(world, controller)

    assert shown["replicas"] == {"ready": 0, "starting": 0, "draining": 0}
    assert shown["last_decision"] is None and shown["queue_current"] is None
    assert shown["versions"] == {} and shown["state"] == "active"
    assert world.metric("autoscaler_docker_engine_outages_total") == 0
    assert world.metric("autoscaler_start_backoff_seconds") == 0


def test_status_names_the_failing_metrics_sources_of_this_service(world: World) -> None:
    # Swarm agents that do not answer are asked for by the service's name.
    world.backend.source_errors = lambda service: {"node-1": "timed out"} if service == SERVICE else {}  # type: ignore[method-assign]
    controller = world.controller()
    assert "agent on node node-1 not answering (timed out): its tasks have no readings" in status(world, controller)["warnings"]


def test_a_schedule_sets_the_bounds_of_the_pass_and_of_status(world: World) -> None:
    # A window that is always open raises min_replicas to 3: the pass scales to it, and status
    # shows the bounds in force now.
    world.adopt(A)
    window = {"name": "always", "cron": "* * * * *", "duration_seconds": 3600, "min_replicas": 3}
    controller = world.controller(schedule=[window])

    decision = controller.run_cycle()

    assert decision is not None and (decision.desired, decision.reason) == (3, "below_min")
    shown = status(world, controller)
    assert (shown["min_replicas"], shown["bounds_source"]) == (3, "schedule always")
    assert shown["last_decision"]["at"] == world.clock.wall, "when the decision was made, for readiness"


# --- set-up ---------------------------------------------------------------------------------------


def test_setup_returns_what_it_created_and_names_the_service_and_network() -> None:
    # What setup() created is what a failed start removes again: the names must match.
    world = World()
    asked: list[tuple[str, str]] = []

    def ensure_network(service: str, network: str) -> bool:
        asked.append((service, network))
        return True

    world.backend.ensure_network = ensure_network  # type: ignore[method-assign]
    world.backend.lb_state = None  # no load balancer yet: created
    controller = world.controller(setup=False)

    assert controller.setup() == ["network", "load-balancer"]
    assert asked == [(SERVICE, NETWORK)]


def test_setup_with_nothing_to_create_returns_an_empty_list(world: World) -> None:
    controller = world.controller(setup=False)
    assert controller.setup() == []


def test_a_failed_setup_removes_everything_it_created_newest_first() -> None:
    # The orchestrator's service, the network and the load balancer were created, then the
    # set-up failed: a failed start leaves nothing half-made.
    world = World()
    specs: list[Any] = []
    removed_networks: list[tuple[str, str]] = []

    def prepare(spec: Any, initial_replicas: int, stop_grace_seconds: float, adopt: bool) -> bool:
        specs.append(spec)
        return True

    def remove_network(service: str, network: str) -> None:
        removed_networks.append((service, network))
        world.calls.add("remove_network", network)

    def renew() -> None:
        raise BackendError("container_start", SERVICE, "lease container gone")

    world.orchestrator.prepare = prepare  # type: ignore[method-assign]
    world.backend.ensure_network = lambda service, network: True  # type: ignore[method-assign]
    world.backend.remove_network = remove_network  # type: ignore[method-assign]
    world.backend.lb_state = None
    world.lease.renew = renew  # type: ignore[method-assign]
    controller = world.controller(setup=False, orchestrated=True, lease=True)

    with pytest.raises(BackendError, match="lease container gone"):
        controller.setup()

    assert [(op, n) for op, n in world.calls.entries if op.startswith("remove")] == [
        ("remove_load_balancer", SERVICE), ("remove_service", SERVICE), ("remove_network", NETWORK)]
    assert removed_networks == [(SERVICE, NETWORK)]
    (spec,) = specs
    assert (spec.service, spec.network, spec.image) == (SERVICE, NETWORK, "demo:latest")


def test_a_removal_that_fails_after_a_failed_setup_is_logged_and_the_setup_error_raised(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    def ensure_load_balancer(spec: Any) -> Any:
        raise BackendError("container_create", SERVICE, "port is already allocated")

    def remove_network(service: str, network: str) -> None:
        raise BackendError("network_remove", SERVICE, "has active endpoints")

    world.backend.ensure_network = lambda service, network: True  # type: ignore[method-assign]
    world.backend.ensure_load_balancer = ensure_load_balancer  # type: ignore[method-assign]
    world.backend.remove_network = remove_network  # type: ignore[method-assign]
    controller = world.controller(setup=False)

    with pytest.raises(BackendError, match="port is already allocated"):
        controller.setup()

    (record,) = records(caplog, "could not remove")
    assert record.getMessage() == ("could not remove what the failed start created: docker network_remove for "
                                   "service 'web': has active endpoints")
    assert (record.levelno, record.service) == (logging.WARNING, SERVICE)  # type: ignore[attr-defined]


def test_the_lease_is_renewed_after_a_long_wait_for_a_new_load_balancer(world: World) -> None:
    # The wait for a new HAProxy's API can outlast the lease's retry period: renewed at its end.
    controller = world.controller(setup=False, lease=True)
    assert controller.acquire_lease() is None
    world.lb.unreachable_polls = 15  # 15 polls of 0.2 s: 3 s

    controller.setup()

    assert world.lease.renewals == [world.clock.now()]


def test_the_first_pass_sets_up_without_waiting_for_the_load_balancer(world: World) -> None:
    # A pass never waits: a load balancer whose API does not answer yet is repaired by later
    # passes, not waited for inside this one.
    world.adopt(A)
    world.lb.unreachable_polls = 3
    controller = world.controller(setup=False)

    decision = controller.run_cycle()

    assert decision is not None
    assert world.clock.sleeps == []
    assert world.calls.entries[:2] == [("ensure_network", NETWORK), ("ensure_load_balancer", SERVICE)]


def test_a_pass_that_cannot_set_up_says_so_once_at_error(world: World, caplog: pytest.LogCaptureFixture) -> None:
    def ensure_load_balancer(spec: Any) -> Any:
        raise BackendError("container_create", SERVICE, "port is already allocated")

    world.backend.ensure_load_balancer = ensure_load_balancer  # type: ignore[method-assign]
    controller = world.controller(setup=False)

    assert [controller.run_cycle(), controller.run_cycle()] == [None, None]

    (record,) = records(caplog, "cannot set up")
    assert record.getMessage() == ("cannot set up the service: docker container_create for service 'web': "
                                   "port is already allocated (trying again)")
    assert (record.levelno, record.service) == (logging.ERROR, SERVICE)  # type: ignore[attr-defined]


# --- the template container ----------------------------------------------------------------------

TEMPLATE = ContainerTemplate("container 'shop_web_1'", "sha256:" + "a" * 64, {}, {}, {}, "v1")


class TemplateSource:
    """What `read_template` answers: a template, or an error to raise."""

    def __init__(self, world: World) -> None:
        self.answer: ContainerTemplate | BackendError = TEMPLATE
        self.reads: list[tuple[str, str | None, float]] = []
        self.clock = world.clock
        world.backend.read_template = self.read  # type: ignore[attr-defined]

    def read(self, service: str, container: str | None, compose: tuple[str, str] | None) -> ContainerTemplate:
        self.reads.append((service, container, self.clock.now()))
        if isinstance(self.answer, BackendError):
            raise self.answer
        return self.answer


def template_controller(world: World, **config: Any) -> ServiceController:
    return world.controller(image=None, template={"container": "shop_web_1"}, **config)


def test_setup_reads_the_template_and_says_what_replicas_are_made_from(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    source = TemplateSource(world)
    caplog.set_level(logging.INFO, logger=LOGGER)

    controller = template_controller(world)
    controller.run_cycle()  # no replica: one is started from the template

    (record,) = records(caplog, "replicas are made from")
    assert record.getMessage() == "replicas are made from container 'shop_web_1' (version v1)"
    assert record.service == SERVICE  # type: ignore[attr-defined]
    assert source.reads[0][:2] == (SERVICE, "shop_web_1")
    assert [spec.image for spec in world.backend.specs] == [TEMPLATE.image]


def test_the_template_is_read_again_every_refresh_period_not_every_pass(world: World) -> None:
    source = TemplateSource(world)
    controller = template_controller(world)
    set_up_at = world.clock.now()

    for _ in range(21):
        controller.run_cycle()
        world.clock.advance(1)

    assert [at - set_up_at for *_, at in source.reads] == [0, TEMPLATE_REFRESH_SECONDS, 2 * TEMPLATE_REFRESH_SECONDS]


def test_a_changed_template_is_logged_once_and_used_for_new_replicas(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    source = TemplateSource(world)
    controller = template_controller(world)
    controller.run_cycle()
    caplog.set_level(logging.INFO, logger=LOGGER)

    world.clock.advance(TEMPLATE_REFRESH_SECONDS)
    controller.run_cycle()  # the same version read again: nothing to say
    assert records(caplog, "template changed") == []

    new = ContainerTemplate("container 'shop_web_1'", "sha256:" + "b" * 64, {}, {}, {}, "v2")
    source.answer = new
    world.clock.advance(TEMPLATE_REFRESH_SECONDS)
    controller.run_cycle()

    (record,) = records(caplog, "template changed")
    assert record.getMessage() == "the template changed: container 'shop_web_1' is now version v2"
    assert (record.levelno, record.service) == (logging.INFO, SERVICE)  # type: ignore[attr-defined]
    assert controller.state.template == new


def test_a_reload_makes_new_replicas_from_the_template_read_for_it(world: World) -> None:
    # A reload (SIGHUP) reads the template again and hands it over with the new config: the
    # next start uses it, not the one read at set-up.
    TemplateSource(world)
    controller = template_controller(world)
    controller.run_cycle()
    reloaded = ContainerTemplate("container 'shop_web_1'", "sha256:" + "c" * 64, {}, {}, {}, "v3")

    controller.update_config(controller.config.model_copy(update={"min_replicas": 2}), reloaded)
    world.clock.advance(1)
    controller.run_cycle()

    assert [spec.image for spec in world.backend.specs] == [TEMPLATE.image, reloaded.image]


def test_an_unreadable_template_keeps_the_last_one_and_is_logged_once_per_outage(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    source = TemplateSource(world)
    controller = template_controller(world)
    controller.run_cycle()
    error = BackendError("container_inspect", SERVICE, "No such container: shop_web_1")

    def refresh(answer: ContainerTemplate | BackendError) -> None:
        source.answer = answer
        world.clock.advance(TEMPLATE_REFRESH_SECONDS)
        controller.run_cycle()

    for answer in (error, error, TEMPLATE, error):
        refresh(answer)

    lines = records(caplog, "cannot read the template again")
    assert len(lines) == 2, "once when it fails, once more after it was readable again"
    assert lines[0].getMessage() == (
        "cannot read the template again: docker container_inspect for service 'web': No such container: "
        "shop_web_1 (replicas are made from what was read last)")
    assert lines[0].levelno == logging.WARNING
    assert controller.state.template == TEMPLATE


# --- the lease ------------------------------------------------------------------------------------


def test_standing_by_is_logged_once_and_again_after_holding_the_lease_in_between(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.adopt(A)
    world.lease.holder = "other-host:4242"
    controller = world.controller(setup=False, lease=True)

    for _ in range(3):
        assert controller.run_cycle() is None
    world.lease.holder = None
    assert controller.run_cycle() is not None, "taken over"
    world.lease.mine, world.lease.holder = False, "other-host:4242"  # lost to the other daemon again
    assert controller.run_cycle() is None

    lines = records(caplog, "another daemon")
    assert [r.getMessage() for r in lines] == [
        "another daemon holds this service (other-host:4242): standing by, will take over when it exits"] * 2
    assert all(r.levelno == logging.WARNING and r.service == SERVICE for r in lines)  # type: ignore[attr-defined]


def test_a_lease_that_cannot_be_taken_is_logged_once_per_outage(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A)
    controller = world.controller(setup=False, lease=True)
    take = world.lease.try_acquire

    def failing() -> str | None:
        raise BackendError("container_create", SERVICE, "lease image missing")

    for acquire in (failing, failing, take, failing):
        world.lease.mine = False
        world.lease.try_acquire = acquire  # type: ignore[method-assign]
        controller.run_cycle()

    lines = records(caplog, "cannot take the lease")
    assert [r.getMessage() for r in lines] == [
        "cannot take the lease: docker container_create for service 'web': lease image missing (trying again)"] * 2
    assert all(r.levelno == logging.WARNING for r in lines)


def test_a_lease_lost_between_passes_is_logged_once_and_shown_at_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.adopt(A)
    controller = world.controller(setup=False, lease=True)
    controller.run_cycle()
    assert world.metric("autoscaler_lease_held") == 1
    world.clock.advance(11)  # stopped past the renew deadline

    for _ in range(3):
        controller.progress()

    (record,) = records(caplog, "lost the lease")
    assert record.getMessage() == "lost the lease: acting on nothing until it is ours again"
    assert (record.levelno, record.service) == (logging.WARNING, SERVICE)  # type: ignore[attr-defined]
    assert world.metric("autoscaler_lease_held") == 0


@pytest.mark.parametrize("after_a_pass", [False, True], ids=["before-any-pass", "after-a-pass"])
def test_a_progress_step_while_close_holds_the_controller_neither_fails_nor_renews(
    world: World, after_a_pass: bool
) -> None:
    # close() holds the controller while it waits for the operations: the progress step, which
    # renews the lease only for a pass in progress, must neither renew it nor fail.
    world.adopt(A)
    controller = world.controller(setup=False, lease=True)
    if after_a_pass:
        controller.run_cycle()
    else:
        controller.acquire_lease()
        controller.setup()
    waiting, done = threading.Event(), threading.Event()

    def wait_idle(timeout_seconds: float) -> bool:
        waiting.set()
        return done.wait(10)

    world.operations.wait_idle = wait_idle  # type: ignore[method-assign]
    closer = threading.Thread(target=controller.close, args=(5,))
    closer.start()
    try:
        assert waiting.wait(5)
        renewals = list(world.lease.renewals)
        world.clock.advance(3)
        controller.progress()
        assert world.lease.renewals == renewals
    finally:
        done.set()
        closer.join(10)


# --- the Docker engine goes away --------------------------------------------------------------------


def test_an_engine_outage_counts_from_when_the_failed_call_began_and_is_logged_each_way(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.adopt(A)
    controller = world.controller()
    controller.run_cycle()
    listing = world.backend.list_replicas

    def frozen(service: str, network: str) -> list[Replica]:
        raise BackendError("container_list", SERVICE, "timed out", unreachable=True, waited_seconds=5)

    world.backend.list_replicas = frozen  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert controller.run_cycle() is None
    shown = status(world, controller)
    assert shown["state"] == "engine_unreachable"
    assert "Docker engine not reachable for 5s (" + str(BackendError("container_list", SERVICE, "timed out")) + ")" in shown["warnings"]

    world.clock.advance(10)
    world.backend.list_replicas = listing  # type: ignore[method-assign]
    assert controller.run_cycle() is not None
    assert status(world, controller)["state"] == "active"

    lines = records(caplog, "Docker engine")
    assert [r.getMessage() for r in lines] == [
        "Docker engine not reachable (docker container_list for service 'web': timed out): holding, retrying "
        "every interval",
        "Docker engine reachable again after 15s",
    ]
    assert all(r.levelno == logging.WARNING and r.service == SERVICE for r in lines)  # type: ignore[attr-defined]


def test_the_progress_step_does_nothing_while_the_engine_is_down(world: World) -> None:
    # A replica whose check passes while the engine is down is promoted once it answers again.
    world.adopt(A, admin=None)
    world.lb.checks_pass_after = 1
    controller = world.controller(min_replicas=1, max_replicas=1)
    controller.run_cycle()  # registers A
    world.backend.engine_down = True
    assert controller.run_cycle() is None

    for _ in range(3):
        controller.progress()

    assert "set_ready" not in world.calls.ops()
    world.backend.engine_down = False
    controller.run_cycle()
    controller.progress()
    assert world.calls.of(A)[-1] == "set_ready"


# --- repair: what a pass leaves alone, and what it goes on with ------------------------------------


def test_a_replica_whose_start_is_in_flight_is_left_to_the_start_and_the_others_are_repaired() -> None:
    # Listed while its start has not returned yet: not registered twice nor counted twice.
    world = World(auto_operations=False)
    world.adopt(A)
    controller = world.controller(min_replicas=2, max_replicas=2)
    controller.run_cycle()
    (starting,) = world.operations.in_flight("start")
    world.backend.add(starting, age_seconds=OLD + 10)  # created (listed first), its start not returned
    world.adopt(B, admin=None)  # the load balancer lacks B
    world.clock.advance(1)

    controller.run_cycle()

    assert world.calls.of(starting) == []
    assert world.calls.of(B) == ["add_server", "enable_health"]


def test_a_container_being_removed_is_not_repaired(world: World) -> None:
    # Docker's "removing": on its way out; registering it would send requests to a corpse.
    world.adopt(A)
    world.backend.add(X, state="removing", age_seconds=OLD + 10)
    world.adopt(B, admin=None)
    controller = world.controller(min_replicas=2, max_replicas=2)

    controller.run_cycle()

    assert world.calls.of(X) == []
    assert world.calls.of(B) == ["add_server", "enable_health"]


def test_a_replica_whose_removal_is_in_flight_does_not_hide_the_next_ones() -> None:
    world = World(auto_operations=False)
    world.adopt(A, sessions=0, age_seconds=OLD + 10)  # the oldest and idle: drained first
    world.adopt(B, sessions=5)
    world.lb.sessions_drop_after = 1
    controller = world.controller(max_replicas=1)
    controller.run_cycle()  # drains A
    controller.progress()  # drained: its removal is submitted, not run yet
    assert list(world.operations.in_flight("remove")) == [A]
    world.clock.advance(1)

    controller.run_cycle()

    assert controller.last_snapshot is not None
    assert [r.name for r in controller.last_snapshot.replicas] == [B], "B counts"
    assert world.operations.in_flight("start") == {}, "nothing is missing: no start"


def test_a_dry_run_skips_an_exited_replica_and_counts_the_next_ones(world: World) -> None:
    world.adopt(GONE := name("gone"), state="exited", age_seconds=OLD + 10)
    world.adopt(A)
    controller = world.controller(dry_run=True)

    decision = controller.run_cycle()

    assert decision is not None and decision.current == 1
    assert GONE in [r.name for r in world.backend.replicas.values()], "a dry run removes nothing"


def test_an_exited_replica_is_reported_and_the_next_ones_still_counted(world: World) -> None:
    world.adopt(X, state="exited", age_seconds=OLD + 10)
    world.adopt(A)
    controller = world.controller(min_replicas=1)

    controller.run_cycle()

    assert controller.last_snapshot is not None
    assert [r.name for r in controller.last_snapshot.replicas] == [A]


def test_a_dry_run_registers_nothing(world: World) -> None:
    # A dry run looks at the load balancer but repairs nothing in it.
    world.adopt(A)
    world.adopt(B, admin=None)
    controller = world.controller(dry_run=True)

    controller.run_cycle()

    assert world.calls.of(B) == []


def test_a_dry_run_does_not_count_a_replica_that_died_as_one_on_its_way(world: World) -> None:
    # A dry run replaces nothing, so a dead replica is not "pending": the current count is what runs.
    world.adopt(A)
    world.adopt(B)
    controller = world.controller(dry_run=True)
    controller.run_cycle()
    world.backend.kill(B)
    world.clock.advance(1)

    decision = controller.run_cycle()

    assert decision is not None and decision.current == 1


@pytest.mark.parametrize(
    ("exited", "failures"),
    [([B], 1), ([B, C], 1)],
    ids=["after-a-live-replica", "two-in-one-pass"],
)
def test_replicas_found_dead_in_one_pass_are_one_failure_for_the_backoff(
    world: World, exited: list[str], failures: int
) -> None:
    # An engine restart kills many at once: one failure, not many. The first dead one counts,
    # wherever it is listed.
    world.adopt(A, age_seconds=OLD + 10)
    for index, replica_name in enumerate(exited):
        world.adopt(replica_name, admin=None, state="exited", age_seconds=OLD - index)
    controller = world.controller(min_replicas=1)

    controller.run_cycle()

    assert world.metric("autoscaler_start_backoff_failures") == failures


def test_a_drain_finished_by_a_pass_stops_the_replica_and_says_which(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A)
    world.adopt(B, admin="DRAIN", sessions=0)  # an earlier run was killed mid-drain
    controller = world.controller()
    caplog.set_level(logging.INFO, logger=LOGGER)

    controller.run_cycle()

    (record,) = records(caplog, "(drained)")
    assert record.getMessage() == f"removed replica {B} from the load balancer (drained); stopping it"
    assert record.replica == B  # type: ignore[attr-defined]


# --- the orchestrator's tasks: their servers' counters are read ----------------------------------


def rates_after_50_sessions_in_5s(world: World, controller: Any) -> dict[str, float | None]:
    """The request rates of the next pass's snapshot, after X's server counted 50 sessions in 5 s."""
    world.lb.members[X].sessions_total = 50
    world.clock.advance(5)
    controller.run_cycle()
    assert controller.last_snapshot is not None
    return {r.name: r.requests_per_second for r in controller.last_snapshot.replicas}


def test_a_task_the_orchestrator_is_starting_is_sampled_with_its_server(world: World) -> None:
    # A Swarm task still "created" counts as starting, with its load balancer counters (the
    # request rate is read from them), and does not hide the tasks listed after it.
    task = world.backend.add(X, state="created", age_seconds=OLD + 10)
    world.lb.preset(task, admin="MAINT", check="INI")
    world.adopt(A)
    world.orchestrator.count = 2
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    controller.run_cycle()

    assert rates_after_50_sessions_in_5s(world, controller) == {X: 10.0, A: 0.0}


def test_an_unhealthy_task_left_to_the_orchestrator_is_sampled_with_its_server(world: World) -> None:
    world.adopt(A)
    world.adopt(X, check="L4CON", admin="READY")
    world.orchestrator.count = 2
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2, startup_timeout_seconds=10)
    world.lb.checks_pass_after = None
    controller.run_cycle()
    world.clock.advance(11)  # out of rotation longer than the startup timeout
    controller.run_cycle()

    assert rates_after_50_sessions_in_5s(world, controller)[X] == 10.0


# --- the count to keep: a surplus found before deciding ---------------------------------------------


def test_a_serving_replica_over_the_count_drains_and_no_longer_counts(world: World) -> None:
    # Someone started a replica by hand: over the count to keep, it drains at once; the
    # decision is made on the replicas that stay.
    world.adopt(A, sessions=5)
    controller = world.controller(min_replicas=1)
    controller.run_cycle()
    world.adopt(B, sessions=0, age_seconds=10)
    world.lb.sessions_drop_after = None
    world.clock.advance(1)

    decision = controller.run_cycle()

    assert decision is not None and decision.current == 1
    assert controller.last_snapshot is not None
    assert [r.name for r in controller.last_snapshot.replicas] == [A]
    assert world.lb.status(B) == "DRAIN"
    history = controller.state.history  # what the rate rules count
    assert [e.value for e in history.scale_down_events] == [1]
    assert sum(e.value for e in history.scale_up_events) == 0, "a scale-in is no scale-up"


def test_a_starting_replica_over_the_count_is_dropped_and_the_other_starting_ones_count(world: World) -> None:
    world.adopt(A)
    world.adopt(C, admin=None, age_seconds=OLD - 1)
    world.lb.checks_pass_after = None  # C and D stay starting
    controller = world.controller(min_replicas=1)
    controller.run_cycle()  # keeps 2: A and C
    world.adopt(D, admin=None, age_seconds=10)
    world.clock.advance(1)

    decision = controller.run_cycle()

    assert controller.last_snapshot is not None
    assert [r.name for r in controller.last_snapshot.replicas] == [A, C]
    assert decision is not None and decision.current == 2


# --- the pass's cost, its config, its measures ---------------------------------------------------


def test_the_loop_duration_is_the_time_the_pass_took(world: World) -> None:
    world.adopt(A)
    controller = world.controller()
    world.backend.on_read_stats = lambda: world.clock.advance(0.5)

    controller.run_cycle()

    assert world.metric("autoscaler_loop_duration_seconds_sum") == pytest.approx(0.5)


def test_a_reload_during_a_pass_applies_from_the_next_pass(world: World) -> None:
    # "A pass reads the config once": memory is measured against the limit the pass began with.
    world.adopt(A)
    controller = world.controller()
    listing = world.backend.list_replicas
    bigger = controller.config.model_copy(update={"memory_limit": 512 * MiB})

    def list_and_reload(service: str, network: str) -> list[Replica]:
        controller.update_config(bigger)
        return listing(service, network)

    world.backend.list_replicas = list_and_reload  # type: ignore[method-assign]
    controller.run_cycle()

    assert controller.last_snapshot is not None
    assert controller.last_snapshot.replicas[0].memory_percent == pytest.approx(25.0)


def test_the_load_balancer_queue_and_request_rate_are_measured_and_exported(world: World) -> None:
    world.adopt(A)
    controller = world.controller()
    snapshot = world.lb.snapshot

    def queued() -> tuple[BackendStat, dict[str, ServerStat]]:
        stat, servers = snapshot()
        return BackendStat(7, stat.sessions_current, 0.0, 12.0), servers

    world.lb.snapshot = queued  # type: ignore[method-assign]
    controller.run_cycle()
    world.lb.members[A].sessions_total = 50
    world.clock.advance(5)
    controller.run_cycle()

    assert controller.last_snapshot is not None and controller.last_snapshot.queue_current == 7.0
    assert status(world, controller)["queue_current"] == 7.0
    assert world.metric("autoscaler_lb_queued_requests") == 7
    assert world.metric("autoscaler_lb_requests_per_second") == 10
    assert world.metric("autoscaler_lb_response_time_seconds") == pytest.approx(0.012)


def test_each_replica_has_its_gauges(world: World) -> None:
    world.adopt(A)
    controller = world.controller()
    controller.run_cycle()
    world.clock.advance(5)
    controller.run_cycle()

    def gauge(metric: str) -> float | None:
        return world.metric(metric, replica=A)

    assert gauge("autoscaler_replica_cpu_percent") == pytest.approx(60)
    assert gauge("autoscaler_replica_memory_percent") == pytest.approx(25)
    assert gauge("autoscaler_replica_memory_bytes") == 64 * MiB
    assert gauge("autoscaler_replica_ready") == 1


def test_stats_that_fail_as_a_whole_are_a_metrics_failure_with_the_engines_words(world: World) -> None:
    world.adopt(A)
    controller = world.controller()

    def read_stats(service: str, ids: list[str]) -> dict[str, StatsReading | None]:
        raise BackendError("container_stats", SERVICE, "connection reset")

    world.backend.read_stats = read_stats  # type: ignore[method-assign]
    decision = controller.run_cycle()

    assert decision is not None and decision.reason == "metrics_unavailable"
    assert "docker container_stats for service 'web': connection reset" in decision.message


def test_stats_are_read_for_this_service_and_only_for_replicas_that_count() -> None:
    world = World(auto_operations=False)
    reads: list[tuple[str, list[str]]] = []
    sources: list[str] = []
    read_stats, stats_source = world.backend.read_stats, world.backend.stats_source

    def spy_read(service: str, ids: list[str]) -> dict[str, StatsReading | None]:
        reads.append((service, ids))
        return read_stats(service, ids)

    def spy_source(service: str) -> str | None:
        sources.append(service)
        return stats_source(service)

    world.backend.read_stats = spy_read  # type: ignore[method-assign]
    world.backend.stats_source = spy_source  # type: ignore[method-assign]
    controller = world.controller(min_replicas=1)

    controller.run_cycle()  # nothing runs yet: its start is in flight
    assert reads == [] and sources == [SERVICE]

    world.operations.finish()
    world.clock.advance(1)
    controller.run_cycle()
    (started,) = world.backend.replicas.values()
    assert reads == [(SERVICE, [started.id])]


@pytest.mark.parametrize(
    ("sources", "lines", "shown"),
    [
        (["cgroup", "cgroup"], [], "cgroup"),
        (["docker_api"], ["CPU and memory now come from the Docker API"], "docker_api"),
        (["cgroup", "mixed", "mixed"], ["CPU and memory now come from the cgroup files or the Docker API"], "mixed"),
        (["weird"], ["CPU and memory now come from weird"], "weird"),
        (["cgroup", None], [], "cgroup"),
    ],
    ids=["cgroup-from-the-start", "docker-api-from-the-start", "a-change", "unknown-source", "no-answer"],
)
def test_where_cpu_and_memory_come_from_is_logged_when_it_changes(
    world: World, caplog: pytest.LogCaptureFixture, sources: list[str | None], lines: list[str], shown: str
) -> None:
    # The cgroup files are the expected source: only another one, or a change, is news.
    world.adopt(A)
    controller = world.controller()
    caplog.set_level(logging.INFO, logger=LOGGER)
    for source in sources:
        world.backend.stats_source = lambda service, source=source: source  # type: ignore[method-assign]
        controller.run_cycle()
        world.clock.advance(1)

    logged = records(caplog, "CPU and memory")
    assert [r.getMessage() for r in logged] == lines
    assert all(r.service == SERVICE for r in logged)  # type: ignore[attr-defined]
    assert status(world, controller)["stats_source"] == shown
    if shown != "weird":  # the gauge has a series per known source only
        assert world.metric("autoscaler_stats_source", source=shown) == 1


def test_a_dry_run_exports_what_it_would_scale_to(world: World) -> None:
    world.adopt(A)
    controller = world.controller(dry_run=True, min_replicas=3)
    controller.run_cycle()
    assert world.metric("autoscaler_dry_run_desired_replicas") == 3


def test_an_external_metric_without_a_source_fails_the_pass_naming_it(world: World) -> None:
    # Wiring that gives no source for external metrics says which metric lacks one.
    world.adopt(A)
    controller = world.controller(policy={"metrics": [METRIC]})
    with pytest.raises(BackendError) as raised:
        controller.run_cycle()
    assert str(raised.value) == "docker setup: no source for the external metric 'jobs_waiting' was wired in"


# --- replica counts, versions, backoff: gauges and status ------------------------------------------


def test_replica_counts_and_versions_count_every_replica_in_each_state(world: World) -> None:
    # Two drains an earlier run left behind, one serving, two starting: each counted once,
    # whatever the order they are listed in; the live ones by version ("unknown" from before).
    world.adopt(X, admin="DRAIN", sessions=1, age_seconds=OLD + 20)
    world.adopt(Y, admin="DRAIN", sessions=1, age_seconds=OLD + 10)
    world.adopt(A)
    world.adopt(C, admin=None, age_seconds=OLD - 10)
    world.adopt(D, admin=None, age_seconds=OLD - 20)
    world.lb.checks_pass_after = None
    controller = world.controller(min_replicas=3, max_replicas=3)

    controller.run_cycle()

    shown = status(world, controller)
    assert shown["replicas"] == {"ready": 1, "starting": 2, "draining": 2}
    assert world.replica_counts() == {"ready": 1, "starting": 2, "draining": 2}
    assert shown["versions"] == {"unknown": 3}
    assert world.metric("autoscaler_replica_versions", version="unknown") == 3


def versioned_starts(world: World) -> None:
    """New replicas carry the version of the spec they were made from, as Docker's label does."""
    start = world.backend.start_replica

    def start_replica(spec: Any, replica_name: str) -> Replica:
        started = replace(start(spec, replica_name), version=spec.version)
        world.backend.replicas[started.id] = started
        return started

    world.backend.start_replica = start_replica  # type: ignore[method-assign]


def test_the_versions_of_new_replicas_are_counted_by_version(world: World) -> None:
    world.lb.checks_pass_after = 1
    versioned_starts(world)
    controller = world.controller(min_replicas=2)
    controller.run_cycle()
    world.tick(controller, 1)

    (version,) = status(world, controller)["versions"]
    assert version != "unknown" and status(world, controller)["versions"] == {version: 2}


def test_the_start_backoff_gauge_shows_the_seconds_until_the_next_start(world: World) -> None:
    world.adopt(A)
    world.backend.create_errors = ["No such image: demo:latest"]
    controller = world.controller(min_replicas=2)
    controller.run_cycle()  # the start fails
    controller.run_cycle()  # its failure is collected: 1 s of backoff

    assert world.metric("autoscaler_start_backoff_seconds") == pytest.approx(1.0)


# --- decisions in the log ---------------------------------------------------------------------------

HOLD, UP = "within_tolerance", "below_min"


@pytest.mark.parametrize(
    ("decisions", "levels"),
    [
        ([(HOLD, 1, 1, 0)], ["INFO"]),
        ([(HOLD, 1, 1, 0), (HOLD, 1, 1, 0)], ["INFO", "DEBUG"]),
        ([(HOLD, 2, 2, 0), (HOLD, 3, 3, 0)], ["INFO", "DEBUG"]),
        ([(HOLD, 1, 1, 0), (UP, 1, 3, 0)], ["INFO", "INFO"]),
        ([(UP, 1, 3, 0), (UP, 1, 3, 0)], ["INFO", "DEBUG"]),
        ([(UP, 1, 3, 0), (UP, 2, 3, 0)], ["INFO", "INFO"]),
        ([(UP, 1, 3, 0), (UP, 2, 3, 0), (UP, 1, 3, 0)], ["INFO", "INFO", "INFO"]),
        ([("metrics_unavailable", 1, 1, 1)], ["WARNING"]),
        ([("metrics_unavailable", 1, 1, 1), ("metrics_unavailable", 1, 1, 2)], ["WARNING", "DEBUG"]),
    ],
    ids=["first", "same-hold-again", "hold-at-another-count", "new-reason", "same-scale-out-held-back",
         "same-reason-new-counts", "back-to-earlier-counts", "metrics-failing", "metrics-failing-again"],
)
def test_each_change_and_each_new_reason_is_logged_at_info_repeats_at_debug(
    world: World, caplog: pytest.LogCaptureFixture, decisions: list[tuple[str, int, int, int]], levels: list[str]
) -> None:
    # The log reads as a history of decisions: the same one again (a hold every interval, a
    # scale-out the backoff holds back) only at debug; failing metrics at warning.
    controller = world.controller()
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    previous = None
    for reason, current, desired, failures in decisions:
        controller.state.history = controller.state.history._replace(consecutive_failures=failures)
        decision = Decision(SERVICE, current, desired, reason, f"{reason}: {current} -> {desired}")
        controller._log_decision(decision, previous)
        previous = decision
    logged = [r for r in caplog.records if getattr(r, "reason", None) is not None]
    assert [r.levelname for r in logged] == levels


@pytest.mark.parametrize("dry_run", [False, True], ids=["acting", "dry-run"])
def test_a_decision_is_logged_with_its_message_counts_reason_and_mode(
    world: World, caplog: pytest.LogCaptureFixture, dry_run: bool
) -> None:
    world.adopt(A)
    controller = world.controller(dry_run=dry_run, min_replicas=3)
    caplog.set_level(logging.INFO, logger=LOGGER)

    decision = controller.run_cycle()

    assert decision is not None
    (record,) = [r for r in caplog.records if getattr(r, "reason", None) == "below_min"]
    assert record.getMessage() == ("[dry run] " if dry_run else "") + decision.message
    assert record.levelno == logging.INFO
    fields = {key: getattr(record, key) for key in ("service", "current", "desired", "reason", "dry_run")}
    assert fields == {"service": SERVICE, "current": 1, "desired": 3, "reason": "below_min", "dry_run": dry_run}
    assert type(record.dry_run) is bool  # type: ignore[attr-defined]


# --- between passes: registration time and the rolling update's next step -------------------------


@pytest.mark.parametrize("collected_by", ["pass", "progress"])
def test_the_startup_timeout_of_a_started_replica_counts_from_its_registration(collected_by: str) -> None:
    # A start that returned late (its container created at once, the start collected 8 s later)
    # gets its full startup timeout from when it joined the load balancer.
    world = World(auto_operations=False)
    world.adopt(A)
    world.lb.checks_pass_after = None  # its check never passes
    controller = world.controller(min_replicas=2, max_replicas=2, startup_timeout_seconds=10)
    controller.run_cycle()
    world.clock.advance(1)
    world.operations.finish("start")
    (started,) = [n for n in world.backend.running if n != A]
    world.clock.advance(8)
    if collected_by == "pass":
        controller.run_cycle()
    else:
        controller.progress()
    assert world.calls.of(started)[-2:] == ["add_server", "enable_health"]

    world.clock.advance(6)  # 15 s after its start, 6 s after its registration
    controller.run_cycle()

    assert world.calls.of(started)[-1] == "enable_health", "still waiting for its check, not replaced"
    assert world.operations.in_flight("remove") == {}


def request_pass_controller(world: World, **config: Any) -> tuple[ServiceController, list[float]]:
    """A controller as the daemon makes it: it asks for the next pass at once when it must."""
    requests: list[float] = []
    controller = ServiceController(
        SERVICE, service_config(**config), NETWORK,
        target=wiring.containers(world.backend, world.operations),  # type: ignore[arg-type]
        gate=wiring.load_balancer(world.backend, world.lb_factory, world.clock.sleep),  # type: ignore[arg-type]
        metrics=world.backend, networks=world.backend, telemetry=world.telemetry,  # type: ignore[arg-type]
        clock=world.clock.now, wall_clock=world.clock.time, operations=world.operations,  # type: ignore[arg-type]
        request_pass=lambda: requests.append(world.clock.now()),
    )
    world.controllers.append(controller)
    controller.setup()
    return controller, requests


def test_a_rolling_update_asks_for_the_next_pass_as_soon_as_a_new_replica_is_ready(world: World) -> None:
    # As a Deployment controller reacts to a pod becoming ready: the next old replica drains
    # and the next new one starts now, not at the next interval.
    world.lb.checks_pass_after = 1
    versioned_starts(world)
    controller, requests = request_pass_controller(world, min_replicas=2, max_replicas=2)
    controller.run_cycle()
    world.tick(controller, 1)  # two replicas of the first version, ready
    requests.clear()
    world.lb.checks_pass_after = 3
    controller.update_config(controller.config.model_copy(update={"image": "demo:v2"}))

    world.clock.advance(1)
    controller.run_cycle()  # starts the first replica of v2
    assert world.metric("autoscaler_rollout_in_progress") == 1
    controller.progress()  # registered
    controller.progress()  # its check runs
    assert requests == []
    world.clock.advance(0.1)
    controller.progress()  # its check passes: ready
    assert requests == [world.clock.now()]
    controller.progress()
    assert requests == [world.clock.now()], "asked once, for the replica that became ready"


def test_no_pass_is_asked_for_outside_a_rolling_update(world: World) -> None:
    world.adopt(A)
    world.lb.checks_pass_after = 1
    controller, requests = request_pass_controller(world, min_replicas=3)
    controller.run_cycle()
    world.tick(controller, 1)
    assert world.replica_counts()["ready"] == 3
    assert requests == []
    assert world.metric("autoscaler_rollout_in_progress") == 0


# --- close ------------------------------------------------------------------------------------------


class BusyLock:
    """The controller's lock as close() finds it while a pass runs: never free."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.timeouts.append(timeout)
        return False

    def release(self) -> None:
        raise AssertionError("never acquired")


def test_close_during_a_pass_abandons_it_and_the_operations_without_waiting() -> None:
    world = World(auto_operations=False)
    world.adopt(A)
    controller = world.controller(min_replicas=2)
    controller.run_cycle()
    (start,) = world.operations.in_flight("start")
    lock = BusyLock()
    controller._lock = lock  # type: ignore[assignment]

    abandoned = controller.close(0)

    assert abandoned == ["a pass in progress", f"start of {start}"]
    assert lock.timeouts == [0.0], "close(0) does not wait for the pass"


def test_close_lists_the_removals_still_in_flight() -> None:
    world = World(auto_operations=False)
    world.adopt(A)
    world.adopt(B, age_seconds=10)
    controller = world.controller(with_load_balancer=False, max_replicas=1)
    controller.run_cycle()  # B goes: stopped by the target, not drained
    assert list(world.operations.in_flight("remove")) == [B]

    assert controller.close(0) == [f"remove of {B}"]


def test_close_reports_a_start_that_failed_in_time(caplog: pytest.LogCaptureFixture) -> None:
    world = World(auto_operations=False)
    world.adopt(A)
    world.backend.create_errors = ["No such image: demo:latest"]
    controller = world.controller(min_replicas=2)
    controller.run_cycle()
    world.operations.finish("start")  # failed before close

    assert controller.close(0) == []
    assert records(caplog, "could not be started")


def test_a_start_fenced_by_a_lost_lease_is_logged_at_debug_naming_the_service(caplog: pytest.LogCaptureFixture) -> None:
    world = World(auto_operations=False)
    world.adopt(A)
    controller = world.controller(lease=True, setup=False, min_replicas=2)
    controller.run_cycle()
    (start,) = world.operations.in_flight("start")
    world.clock.advance(40)
    world.operations.finish()
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    controller.run_cycle()

    assert [r.getMessage() for r in records(caplog, "not started")] == [f"replica {start} not started: the lease of {SERVICE} is no longer held by this daemon"]


# --- sampling: readings and counters into the policy's snapshot ------------------------------------

NOW, NOW_WALL = 1000.0, 1_800_000_000.0


def replica(replica_name: str, created: float = NOW_WALL - 100) -> Replica:
    return Replica(replica_name, replica_name, SERVICE, "running", "10.0.0.1", created)


def server(replica_name: str, total: int, response_time_ms: float | None = None) -> ServerStat:
    return ServerStat(replica_name, "10.0.0.1:8000", "UP", PASSED, 0, total, 0.0, response_time_ms, 0, 0)


def reading(cpu_ns: int = 0, memory: int = 64 * MiB, limit: int = 256 * MiB) -> StatsReading:
    return StatsReading(cpu_total_ns=cpu_ns, system_cpu_ns=None, online_cpus=2, read_at_seconds=NOW_WALL,
                        memory_used_bytes=memory, memory_limit_bytes=limit)


def sample(sampler: Sampler, views: list[ReplicaView], readings: dict[str, StatsReading | None] | None = None,
           *, now: float = NOW, backend: BackendStat | None = None, in_flight: int = 0, pending: int = 0,
           stats_error: str | None = None, source: str | None = "cgroup",
           config: ServiceConfig | None = None) -> Any:
    return sampler.sample(config or service_config(), Observation(tuple(views), backend, in_flight, pending),
                          readings if readings is not None else {}, stats_error, source, now, NOW_WALL)


@pytest.mark.parametrize(
    ("before", "after", "rate"),
    [((995.0, 100), (1000.0, 150), 10.0), ((990.0, 100), (1000.0, 100), 0.0), ((995.0, 100), (1000.0, 40), None),
     ((1000.0, 100), (1000.0, 150), None)],
    ids=["10-per-second", "idle-is-zero", "counter-reset", "no-time-passed"],
)
def test_the_request_rate_comes_from_two_counters(
    before: tuple[float, int], after: tuple[float, int], rate: float | None
) -> None:
    sampler = Sampler(SERVICE)
    first = sample(sampler, [ReplicaView(replica(A), "ready", server(A, before[1]))], now=before[0])
    assert first.snapshot.replicas[0].requests_per_second is None, "one counter: no rate yet"

    second = sample(sampler, [ReplicaView(replica(A), "ready", server(A, after[1], 12.5))], now=after[0])

    (replica_sample,) = second.snapshot.replicas
    assert replica_sample.requests_per_second == rate
    assert replica_sample.response_time_ms == 12.5
    assert second.requests_per_second == rate


def test_the_service_request_rate_is_the_sum_over_replicas_and_none_without_any() -> None:
    sampler = Sampler(SERVICE)
    views = [ReplicaView(replica(A), "ready", server(A, 100)), ReplicaView(replica(B), "ready", server(B, 0))]
    assert sample(sampler, views, now=995.0).requests_per_second is None
    views = [ReplicaView(replica(A), "ready", server(A, 150)), ReplicaView(replica(B), "ready", server(B, 20))]
    assert sample(sampler, views).requests_per_second == 14.0


def test_a_replica_sample_names_it_with_its_state_age_and_readings() -> None:
    sampler = Sampler(SERVICE)
    views = [ReplicaView(replica(A), "ready", None), ReplicaView(replica(B, created=NOW_WALL), "starting", None),
             ReplicaView(replica(C, created=NOW_WALL + 5), "starting", None)]
    config = service_config(memory_limit="512MiB")  # the configured limit, not the reading's

    result = sample(sampler, views, {A: reading(), B: None, C: reading(memory=128 * MiB)}, config=config)

    assert list(result.snapshot.replicas) == [
        ReplicaSample(A, True, 100.0, None, 12.5),
        ReplicaSample(B, False, 0.0),
        ReplicaSample(C, False, 0.0, None, 25.0),
    ]
    assert result.replicas == [
        ReplicaMetrics(A, True, None, 12.5, 64 * MiB),
        ReplicaMetrics(B, False, None, None, None),
        ReplicaMetrics(C, False, None, 25.0, 128 * MiB),
    ]


def test_replicas_on_their_way_count_as_samples_without_readings() -> None:
    result = sample(Sampler(SERVICE), [ReplicaView(replica(A), "ready", None)], {A: reading()}, in_flight=1, pending=1)
    assert list(result.snapshot.replicas[1:]) == [ReplicaSample("(pending 1)", False, 0.0),
                                                 ReplicaSample("(pending 2)", False, 0.0)]


@pytest.mark.parametrize(
    ("views", "stats_error", "source", "error"),
    [
        ([A], "docker container_stats: connection reset", "cgroup", "docker container_stats: connection reset"),
        ([A], None, "docker_api", "no stats from the Docker API"),
        ([A], None, None, "no stats from the Docker engine"),
        ([A], None, "weird", "no stats from the Docker engine"),
        ([], None, "cgroup", "no replica running"),
    ],
    ids=["stats-failed", "no-reading-known-source", "no-reading-no-source", "no-reading-unknown-source", "none-running"],
)
def test_metrics_that_fail_as_a_whole_say_why(
    views: list[str], stats_error: str | None, source: str | None, error: str
) -> None:
    result = sample(Sampler(SERVICE), [ReplicaView(replica(v), "ready", None) for v in views], {A: None},
                    stats_error=stats_error, source=source)
    assert result.snapshot.metrics_error == error


def test_the_load_balancer_queue_and_response_time_come_from_its_backend() -> None:
    view = ReplicaView(replica(A), "ready", None)
    with_backend = sample(Sampler(SERVICE), [view], {A: reading()}, backend=BackendStat(3, 0, 0.0, 40.0))
    assert (with_backend.snapshot.queue_current, with_backend.response_time_ms) == (3.0, 40.0)
    without = sample(Sampler(SERVICE), [view], {A: reading()})
    assert (without.snapshot.queue_current, without.response_time_ms) == (None, None)


def test_a_set_up_that_fails_again_after_one_that_worked_is_said_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Set up, then the lease lost and taken back: the set-up runs again, and its failure (the
    # same words as an earlier one) is a new outage, said again.
    world.adopt(A)
    real = world.backend.ensure_load_balancer

    def refused(spec: Any) -> Any:
        raise BackendError("container_create", SERVICE, "port is already allocated")

    world.backend.ensure_load_balancer = refused  # type: ignore[method-assign]
    controller = world.controller(setup=False, lease=True)
    assert controller.run_cycle() is None
    world.backend.ensure_load_balancer = real  # type: ignore[method-assign]
    assert controller.run_cycle() is not None, "set up"
    world.lease.mine, world.lease.holder = False, "other-host:4242"
    assert controller.run_cycle() is None
    world.lease.mine, world.lease.holder = True, None
    world.backend.ensure_load_balancer = refused  # type: ignore[method-assign]
    assert controller.run_cycle() is None

    assert len(records(caplog, "cannot set up the service")) == 2
