"""Behaviours of the Swarm scale target (OrchestratedCount) and of the external metrics reader
(ExternalMetrics) that mutation testing found no test holding.

Each test names the behaviour; `mutmut` showed that a change to the lines it covers left every
other unit test passing. The equivalent mutants are in tests/unit/mutants/orchestrated.md. The
orchestrator is the fake with Swarm's behaviour of test_orchestrated.py (engine_fakes.py), with
the records a test needs added in a subclass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from engine_fakes import NETWORK, SERVICE, FakeOrchestrator, World, name
from test_external_metrics_part import SERVICE as EXTERNAL_SERVICE
from test_external_metrics_part import Part, config, metric, read_three_at_a_barrier

from autoscaler.engine.external import MAX_PARALLEL_READS
from autoscaler.engine.ports import BackendError, ExitReport, ReplicaSpec, SourceError

A, B, C = name("a"), name("b"), name("c")


class StrictOrchestrator(FakeOrchestrator):
    """The fake Swarm, which also checks that every call names this service (the real one acts
    on the service it is given) and records what it was asked; its reads can fail on demand."""

    def __init__(self, world: World, created: bool = False) -> None:
        super().__init__(world.backend, world.calls)
        self.created = created  # prepare() answers "made it now"
        self.prepared: list[tuple[ReplicaSpec, int, float, bool]] = []
        self.specs: list[ReplicaSpec] = []
        self.count_error: str | None = None  # desired_count raises it
        self.version_error: str | None = None  # version_of raises it
        self.report_error: str | None = None  # exit_report raises it
        self.on_prepare: Any = None

    def prepare(self, spec: ReplicaSpec, initial_replicas: int, stop_grace_seconds: float, adopt: bool) -> bool:
        self.prepared.append((spec, initial_replicas, stop_grace_seconds, adopt))
        if self.on_prepare is not None:
            self.on_prepare()
        return self.created

    def remove_service(self, service: str) -> None:
        assert service == SERVICE
        super().remove_service(service)

    def desired_count(self, service: str) -> int | None:
        assert service == SERVICE
        if self.count_error is not None:
            raise BackendError("service_inspect", SERVICE, self.count_error)
        return super().desired_count(service)

    def scale(self, service: str, replicas: int) -> None:
        assert service == SERVICE
        super().scale(service, replicas)

    def version_of(self, service: str) -> str | None:
        assert service == SERVICE
        if self.version_error is not None:
            raise BackendError("service_inspect", SERVICE, self.version_error)
        return super().version_of(service)

    def roll_out(self, spec: ReplicaSpec) -> None:
        self.specs.append(spec)
        super().roll_out(spec)

    def exit_report(self, service: str, replica_id: str) -> ExitReport:
        assert service == SERVICE
        if self.report_error is not None:
            raise BackendError("task_inspect", SERVICE, self.report_error)
        return super().exit_report(service, replica_id)


def strict(world: World, tasks: list[str], count: int | None = None, created: bool = False) -> StrictOrchestrator:
    orchestrator = world.orchestrator = StrictOrchestrator(world, created)
    for task in tasks:
        world.adopt(task)
    orchestrator.count = len(tasks) if count is None else count
    return orchestrator


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# --- set-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "grace", "adopt"),
    [
        ({"stop_timeout_seconds": 10, "policy": {"drain_timeout_seconds": 3}}, 10.0, False),
        ({"stop_timeout_seconds": 2, "policy": {"drain_timeout_seconds": 30}}, 30.0, False),
        ({"backend": "swarm", "swarm_service": "shop"}, 10.0, True),
    ],
    ids=["stop-timeout-longer", "drain-longer", "adopted"],
)
def test_the_service_is_prepared_with_its_spec_first_count_grace_and_ownership(
    world: World, config: dict[str, Any], grace: float, adopt: bool
) -> None:
    # The orchestrator's service is created with the replicas' spec and min_replicas tasks; a
    # task's grace after its stop signal covers both a drain and the stop timeout; a service
    # named in the config is the user's and is adopted, not created.
    orchestrator = strict(world, [])
    world.controller(orchestrated=True, min_replicas=2, **config)

    [(spec, initial, stop_grace, adopted)] = orchestrator.prepared
    assert (spec.service, spec.network, spec.image) == (SERVICE, NETWORK, "demo:latest")
    assert (initial, stop_grace, adopted) == (2, grace, adopt)
    assert isinstance(stop_grace, float)


def test_a_service_made_by_a_set_up_that_then_fails_is_removed_again(world: World) -> None:
    # A start that fails leaves nothing half-made: the Swarm service created by this set-up is
    # removed when the load balancer cannot be set up after it.
    orchestrator = strict(world, [], created=True)

    def engine_stops() -> None:
        world.backend.engine_down = True

    orchestrator.on_prepare = engine_stops
    controller = world.controller(orchestrated=True, setup=False)

    with pytest.raises(BackendError):
        controller.setup(wait_seconds=0)

    assert world.calls.names("remove_service") == [SERVICE]


# --- the count -------------------------------------------------------------------------------


def test_a_count_that_cannot_be_read_at_first_sight_keeps_what_runs(world: World) -> None:
    # Without the orchestrator's count, the first look keeps the tasks that run (as with
    # containers) rather than deciding from nothing.
    orchestrator = strict(world, [A, B])
    orchestrator.count_error = "service inspect timed out"
    controller = world.controller(orchestrated=True, max_replicas=4)

    decision = controller.run_cycle()

    assert controller.state.count_to_keep == 2
    assert decision is not None and decision.current == 2
    assert orchestrator.scales == []


def test_an_unreadable_count_is_a_warning_and_the_pass_goes_on(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # The count is read each pass: when it cannot be, a warning says why, once per outage (not
    # once per pass), and the pass goes on with the count read last (no scale on a guess).
    orchestrator = strict(world, [A, B])
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")
    world.run(controller, 1)
    orchestrator.count_error = "service inspect timed out"

    decisions = world.run(controller, 3)

    [line] = records(caplog, "cannot read the service's replica count")
    assert line.getMessage() == "cannot read the service's replica count: " + str(
        BackendError("service_inspect", SERVICE, "service inspect timed out"))
    assert (line.levelno, getattr(line, "service", None)) == (logging.WARNING, SERVICE)
    assert all(d is not None and d.current == 2 for d in decisions)
    assert orchestrator.scales == []
    # Readable again, then a second outage: said again.
    orchestrator.count_error = None
    world.run(controller, 1)
    orchestrator.count_error = "service inspect timed out"
    world.run(controller, 2)
    assert len(records(caplog, "cannot read the service's replica count")) == 2


def test_setting_the_count_is_logged_with_the_service(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Every change of the count is one info line: from what the orchestrator held to what it
    # keeps now, with the service as a field (what a log search filters on).
    strict(world, [A, B])
    controller = world.controller(orchestrated=True, min_replicas=3)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    controller.run_cycle()

    [line] = records(caplog, "replica count of the swarm service")
    assert line.getMessage() == "replica count of the swarm service set 2 -> 3"
    assert (line.levelno, getattr(line, "service", None)) == (logging.INFO, SERVICE)


def test_a_refused_count_is_said_again_after_the_count_was_set(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # "Not setting the count" is said once while the orchestrator refuses; once a count was
    # set, the next refusal is a new condition and is said again.
    orchestrator = strict(world, [A])
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")
    orchestrator.busy = "updating"
    world.run(controller, 3)
    [first] = records(caplog, "not setting the replica count")
    assert first.getMessage() == "not setting the replica count to 2: " + str(
        BackendError("service_update", SERVICE, "swarm service is updating: holding"))
    assert (first.levelno, getattr(first, "service", None)) == (logging.WARNING, SERVICE)

    orchestrator.busy = None
    world.run(controller, 1)  # set to 2
    assert orchestrator.scales == [2]
    orchestrator.count, orchestrator.busy = 1, "updating"  # someone scales it down and updates it
    controller.run_cycle()
    assert len(records(caplog, "not setting the replica count")) == 2


def test_a_refused_count_is_said_again_after_someone_else_set_it(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # When the orchestrator already holds the count to keep (someone set it), the refusal is
    # over: a later refusal is said again.
    orchestrator = strict(world, [A])
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")
    orchestrator.busy = "updating"
    world.run(controller, 2)
    orchestrator.count = 2  # `docker service scale web=2`
    world.run(controller, 1)
    orchestrator.count = 1  # and back, still being updated
    world.run(controller, 2)

    assert len(records(caplog, "not setting the replica count to 2")) == 2
    assert orchestrator.scales == []


def test_a_count_changed_by_someone_else_is_set_back_and_a_decision_of_the_same_pass_carried_out(world: World) -> None:
    # The pass first sets back a count changed behind its back, then carries out what the
    # policy decides in the same pass, without waiting for the next pass.
    orchestrator = strict(world, [A, B])
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    controller.run_cycle()
    orchestrator.count = 1  # someone scaled it down
    controller.update_config(controller.config.model_copy(update={"min_replicas": 3, "max_replicas": 3}))

    decision = controller.run_cycle()

    assert decision is not None and decision.desired == 3
    assert orchestrator.scales == [2, 3]


# --- the rolling update ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dry_run", "config"),
    [(True, {}), (False, {"backend": "swarm", "swarm_service": "shop"})],
    ids=["dry-run", "adopted-service"],
)
def test_no_rolling_update_in_a_dry_run_or_of_an_adopted_service(
    world: World, dry_run: bool, config: dict[str, Any]
) -> None:
    # A dry run changes nothing; an adopted service is the user's, updated by the user.
    orchestrator = strict(world, [A, B])
    orchestrator.version = "old"
    controller = world.controller(orchestrated=True, dry_run=dry_run, min_replicas=2, **config)

    world.run(controller, 2)

    assert orchestrator.rolled_out == []


def test_a_rolling_update_goes_out_with_the_services_spec_and_is_shown(world: World) -> None:
    # The update is asked for this service's spec (its name and network), and `status` shows
    # the version in force.
    orchestrator = strict(world, [A, B])
    orchestrator.version = "old"
    controller = world.controller(orchestrated=True, min_replicas=2)

    controller.run_cycle()

    [spec] = orchestrator.specs
    assert (spec.service, spec.network) == (SERVICE, NETWORK)
    rollout = controller.state.rollout
    assert rollout is not None and rollout.spec.version == spec.version == orchestrator.version


def test_a_rolling_update_that_cannot_start_is_said_once_and_tried_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # The orchestrator not answering holds the update back: one warning names the version and
    # the error, and the next pass tries again.
    orchestrator = strict(world, [A, B])
    orchestrator.version = "old"
    orchestrator.version_error = "service inspect timed out"
    controller = world.controller(orchestrated=True, min_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    world.run(controller, 3)

    [line] = records(caplog, "cannot roll out version")
    version = controller.state.rollout.spec.version if controller.state.rollout else None
    assert version is None, "no version is in force before the update went out"
    assert line.levelno == logging.WARNING and getattr(line, "service", None) == SERVICE
    message = line.getMessage()
    error = str(BackendError("service_inspect", SERVICE, "service inspect timed out"))
    assert message.startswith("cannot roll out version ") and message.endswith(f" yet: {error} (trying again)")
    wanted = message.removeprefix("cannot roll out version ").removesuffix(f" yet: {error} (trying again)")
    orchestrator.version_error = None
    controller.run_cycle()
    assert orchestrator.rolled_out == [wanted], "tried again, with the version the line named"
    # Once an update went out, the next one that cannot start (a reload) is news: said again.
    orchestrator.version_error = "service inspect timed out"
    controller.update_config(controller.config.model_copy(update={"env": {"APP_VERSION": "2"}}))
    world.run(controller, 2)
    assert len(records(caplog, "cannot roll out version")) == 2


# --- the tasks Swarm marks for removal -------------------------------------------------------


def test_the_progress_step_looks_for_marked_tasks_for_15_seconds_after_a_scale_in(world: World) -> None:
    # Swarm marks the tasks it picks at once; the progress step lists the tasks (a call to the
    # engine every step) only for WATCH_LEAVING_SECONDS after a scale-in, then stops.
    orchestrator = strict(world, [A, B, C])
    listed: list[float] = []
    list_replicas = orchestrator.list_replicas

    def counting(service: str, network: str) -> list[Any]:
        listed.append(world.clock.now())
        return list_replicas(service, network)

    orchestrator.list_replicas = counting  # type: ignore[method-assign]
    controller = world.controller(orchestrated=True, max_replicas=2)
    scaled_at = world.clock.now()
    controller.run_cycle()
    assert orchestrator.scales == [2]
    listed.clear()

    world.tick(controller, 15)

    assert listed and max(listed) == scaled_at + 14.75 and scaled_at + 15 not in listed


def test_a_drained_task_is_out_of_the_count_until_the_orchestrator_stops_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Once drained, a task the orchestrator marked is done with: passes before Swarm stops it
    # neither count it nor touch its load-balancer server again; the drain is logged.
    strict(world, [A, B, C])
    controller = world.controller(orchestrated=True, max_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")
    controller.run_cycle()
    world.tick(controller, 1)
    assert world.calls.of(C)[:2] == ["set_drain", "delete_server"]
    calls_before = list(world.calls.of(C))

    world.run(controller, 3)  # Swarm has not stopped it yet

    assert world.calls.of(C) == calls_before
    assert world.replica_counts() == {"ready": 2, "starting": 0, "draining": 0}
    observation = controller.last_observation
    assert observation is not None and {v.replica.name for v in observation.views} == {A, B}
    [line] = records(caplog, "from the load balancer (drained)")
    assert line.getMessage() == f"removed replica {C} from the load balancer (drained)"
    assert (line.levelno, getattr(line, "service", None), getattr(line, "replica", None)) == (logging.INFO, SERVICE, C)


# --- tasks that end --------------------------------------------------------------------------


def _dies(world: World, task: str, created_at: float, state: str = "dead", report: ExitReport | None = None) -> None:
    replica = world.backend.by_name(task)
    world.backend.replicas[replica.id] = replace(replica, state=state, created_at_seconds=created_at)
    if report is not None:
        world.backend.exits[replica.id] = report


@pytest.mark.parametrize(
    ("created", "reported"),
    [(-10.0, False), (-1.5, False), (-1.0, True), (2.0, True)],
    ids=["long-before-the-daemon", "just-over-the-1s-margin", "within-the-1s-margin", "after-the-daemon-started"],
)
def test_a_dead_task_is_reported_only_if_it_was_created_since_the_daemon_started(
    world: World, created: float, reported: bool
) -> None:
    # Swarm lists dead tasks for a while: one created before this daemon began (history) is not
    # a failure to report; one created since (1 s margin for the clocks) is.
    orchestrator = strict(world, [A, B])
    started_wall = world.clock.time()
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    world.run(controller, 5)
    _dies(world, B, started_wall + created, report=ExitReport(1, False, "", ()))

    world.run(controller, 2)

    failures = world.metric("autoscaler_replica_failures_total", reason="task_failed")
    assert failures == (1 if reported else None)
    assert orchestrator.scales == []


def test_a_task_stopped_by_the_orchestrator_is_no_failure(world: World) -> None:
    # An "exited" task is one Swarm stopped (a scale-in, an update): out of the load balancer,
    # not a failure.
    strict(world, [A, B])
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    world.run(controller, 2)
    _dies(world, B, world.clock.time(), state="exited")

    world.run(controller, 2)

    assert world.metric("autoscaler_replica_failures_total", reason="task_failed") is None
    assert B not in world.lb.members


def test_a_task_that_fails_without_oom_is_a_task_failure(world: World) -> None:
    # The reason label says what happened: only an OOM kill is "oom_killed".
    strict(world, [A, B])
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    world.run(controller, 2)
    _dies(world, B, world.clock.time(), report=ExitReport(3, False, "", ("boom",)))

    world.run(controller, 2)

    assert world.metric("autoscaler_replica_failures_total", reason="task_failed") == 1
    assert world.metric("autoscaler_replica_failures_total", reason="oom_killed") is None


def test_a_task_whose_exit_cannot_be_read_is_still_reported_with_why(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # The failure is reported once even when the orchestrator cannot say how the task ended:
    # the line says it could not be read, names the task and says what happens next.
    orchestrator = strict(world, [A, B])
    orchestrator.report_error = "no such task"
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")
    world.run(controller, 2)
    _dies(world, B, world.clock.time())

    world.run(controller, 3)

    assert world.metric("autoscaler_replica_failures_total", reason="task_failed") == 1
    [line] = records(caplog, f"replica {B} failed")
    error = str(BackendError("task_inspect", SERVICE, "no such task"))
    assert line.getMessage() == (f"replica {B} failed (task_failed): exit code unknown, OOM killed: no, "
                                 f"error: unreadable: {error}; the orchestrator restarts it")
    assert (line.levelno, getattr(line, "replica", None), getattr(line, "reason", None)) == (
        logging.WARNING, B, "task_failed")


def test_a_task_that_dies_before_it_was_ever_ready_is_a_start_failure(world: World) -> None:
    # A task that never passed its check counts among the start failures, not among the
    # replicas that served and then failed.
    strict(world, [A])
    world.adopt(B, admin=None)
    world.lb.checks_pass_after = None
    world.orchestrator.count = 2
    controller = world.controller(orchestrated=True, min_replicas=2, max_replicas=2)
    world.run(controller, 2)
    _dies(world, B, world.clock.time(), report=ExitReport(1, False, "", ()))

    world.run(controller, 2)

    assert world.metric("autoscaler_replica_start_failures_total", reason="task_failed") == 1
    assert world.metric("autoscaler_replica_failures_total", reason="task_failed") is None


# --- tasks that never pass their check -------------------------------------------------------


def test_each_task_out_of_rotation_is_said_once_and_counts_as_starting(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Each task that does not pass its check is one warning (its own, not one shared line that
    # flips between them), says for how long and why; it stays a starting replica, whose
    # load-balancer readings the policy still gets (0 requests/s: not ready, not missing).
    strict(world, [A])
    world.adopt(B, admin=None)
    world.adopt(C, admin=None)
    world.lb.checks_pass_after = None
    world.orchestrator.count = 3
    controller = world.controller(orchestrated=True, min_replicas=3, max_replicas=3, startup_timeout_seconds=5)
    caplog.set_level(logging.INFO, logger="autoscaler.engine")

    world.run(controller, 12)

    lines = records(caplog, "left to the orchestrator")
    assert sorted(r.getMessage() for r in lines) == sorted(
        f"replica {task} not healthy for 5s (check L4CON): out of rotation, left to the orchestrator" for task in (B, C))
    assert all(r.levelno == logging.WARNING and getattr(r, "service", None) == SERVICE for r in lines)
    assert world.replica_counts() == {"ready": 1, "starting": 2, "draining": 0}
    snapshot = controller.last_snapshot
    assert snapshot is not None
    samples = {s.name: s for s in snapshot.replicas}
    assert samples[B].requests_per_second == 0.0 and not samples[B].ready


# --- external metrics (ExternalMetrics) ------------------------------------------------------


@pytest.fixture
def part() -> Iterator[Part]:
    made = Part()
    yield made
    made.external.close()


class Gate:
    """Reads that hold until `size` of them are under way at once (or 5 s pass, as a guard:
    then the read fails); the most that ever were."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.full = threading.Event()

    def read(self) -> float:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            if self.active >= self.size:
                self.full.set()
        try:
            if not self.full.wait(5):
                raise SourceError("not read side by side")
            return 1.0
        finally:
            with self.lock:
                self.active -= 1


def test_up_to_16_sources_are_read_side_by_side_never_more(part: Part) -> None:
    # A pass waits for its slowest source, not for their sum: every source is read at once, up
    # to MAX_PARALLEL_READS threads (then the others wait for a free one), named after the service.
    service = config(*(metric(f"m{i}") for i in range(MAX_PARALLEL_READS + 4)))
    part.external.read(service)
    gate = Gate(MAX_PARALLEL_READS)
    for source in part.factory.made:
        source.read = gate.read  # type: ignore[method-assign]
        source.thread = None

    readings = part.external.read(service)

    assert [r.value for r in readings] == [1.0] * (MAX_PARALLEL_READS + 4), readings
    assert gate.peak == MAX_PARALLEL_READS


def test_a_reload_that_adds_metrics_reads_them_side_by_side_too(part: Part) -> None:
    # The reader's threads grow with the metrics a reload adds: three sources, three at once.
    part.external.read(config(metric("a")))
    readings = read_three_at_a_barrier(part, config(metric("a"), metric("b"), metric("c")))

    assert [r.value for r in readings] == [1.0, 1.0, 1.0], readings
    assert all(s.thread and s.thread.startswith(f"metrics-{EXTERNAL_SERVICE}") for s in part.factory.made)


def test_close_does_not_wait_for_a_source_that_hangs(part: Part) -> None:
    # The daemon closes a service even while its pass is stuck in a read (its own timeout is
    # the source's): closing must not wait for that read.
    service = config(metric("slow"))
    part.external.read(service)
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def hang() -> float:
        entered.set()
        release.wait(5)
        finished.set()
        return 1.0

    part.factory.latest("slow").read = hang  # type: ignore[method-assign]
    reader = threading.Thread(target=part.external.read, args=(service,))
    reader.start()
    assert entered.wait(5)

    part.external.close()

    still_reading = not finished.is_set()
    release.set()
    reader.join(5)
    assert still_reading, "close() returned only after the read ended"
    assert part.factory.latest("slow").closed


def test_a_source_failing_without_a_sentence_says_no_reading(part: Part) -> None:
    # `status` shows why each failing metric has no value: a source error with no words of its
    # own still gets one.
    service = config(metric("jobs"))
    part.external.read(service)
    part.factory.latest("jobs").error = SourceError("")

    part.external.read(service)

    assert part.external.errors() == {"jobs": "no reading"}


def test_an_unexpected_failure_names_its_metric(part: Part, caplog: pytest.LogCaptureFixture) -> None:
    # A bug in a source is logged with its traceback and the metric it broke.
    service = config(metric("jobs"))
    part.external.read(service)
    part.factory.latest("jobs").error = RuntimeError("boom")

    part.external.read(service)

    [line] = [r for r in caplog.records if r.exc_info is not None]
    assert line.getMessage() == "metric jobs: reading its source failed unexpectedly"
    assert line.levelno == logging.ERROR
