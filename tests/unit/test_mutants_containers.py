"""The container scale target (ContainerSet, containers.py) on its own: what it starts, stops,
reports and rolls out, and the log line each decision leaves.

Mutation testing (README: "Mutation testing") showed these behaviours held by no unit test: the
controller tests run ContainerSet through the fake World, whose engine has no versions, no tag
checks and no templates. Here a small runtime records every call, operations run when the test
says so, and the clock is a number the test sets. Equivalent and open mutants are listed in
tests/unit/mutants/containers.md.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest
from engine_fakes import FakeOperations, World, service_config
from prometheus_client import CollectorRegistry

from autoscaler.engine import backoff as bo
from autoscaler.engine.containers import ContainerSet, Plan, plan
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.ports import (
    BackendError,
    ContainerTemplate,
    ExitReport,
    Replica,
    ReplicaSpec,
)
from autoscaler.engine.replicas import ReplicaView, Tracked
from autoscaler.engine.state import Context, LeaseLost, Rollout, ServiceState
from autoscaler.engine.target import replica_spec
from autoscaler.model import Decision, TimedValue
from autoscaler.telemetry import Telemetry

SERVICE = "web"
NET = "net"
WALL = 1_800_000_000.0
TAG = "demo:latest"
DIGEST_A = "demo@sha256:" + "a" * 64
DIGEST_B = "demo@sha256:" + "b" * 64
TEMPLATE = ContainerTemplate("container 'shop_web_1'", "sha256:" + "c" * 64, {}, {}, {}, "0123456789ab")


class Runtime:
    """ContainerRuntime in memory: every call recorded with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.pinned: dict[str, str] = {}  # image -> what resolve_image answers
        self.check_results: list[tuple[str | None, str] | Exception] = []  # each check_image: the next
        self.start_errors: list[Exception] = []  # each start raises the next one
        self.remove_errors: list[Exception] = []
        self.exit: ExitReport | Exception = ExitReport(1, False, "", ())
        self.template = TEMPLATE
        self._seq = 0

    def of(self, call: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == call]

    def list_replicas(self, service: str, network: str) -> list[Replica]:
        return []

    def new_replica_name(self, service: str) -> str:
        self.calls.append(("new_replica_name", service))
        self._seq += 1
        return f"{service}-n{self._seq}"

    def resolve_image(self, spec: ReplicaSpec) -> str:
        self.calls.append(("resolve_image", spec))
        return self.pinned.get(spec.image, spec.image)

    def check_image(self, spec: ReplicaSpec) -> tuple[str | None, str]:
        self.calls.append(("check_image", spec))
        result = self.check_results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def start_replica(self, spec: ReplicaSpec, name: str) -> Replica:
        self.calls.append(("start_replica", spec, name))
        if self.start_errors:
            raise self.start_errors.pop(0)
        return Replica(f"id-{name}", name, spec.service, "running", "10.0.0.9", WALL, version=spec.version,
                       image=spec.image)

    def remove_replica(self, service: str, replica_id: str, stop_timeout_seconds: int, force: bool = False) -> None:
        self.calls.append(("remove_replica", service, replica_id, stop_timeout_seconds, force))
        if self.remove_errors:
            raise self.remove_errors.pop(0)

    def exit_report(self, service: str, replica_id: str) -> ExitReport:
        self.calls.append(("exit_report", service, replica_id))
        if isinstance(self.exit, Exception):
            raise self.exit
        return self.exit

    def read_template(self, service: str, container: str | None, compose: tuple[str, str] | None) -> ContainerTemplate:
        self.calls.append(("read_template", service, container, compose))
        return self.template


class Harness:
    """One ContainerSet with its state, runtime and operations; `now` is the controller clock."""

    def __init__(self, *, auto: bool = True, dry_run: bool = False, **config: Any) -> None:
        self.config = service_config(**config)
        self.now = 100.0
        self.registry = CollectorRegistry()
        self.ctx = Context(SERVICE, NET, Telemetry(self.registry), ServiceHealth(), lambda: self.now, lambda: WALL,
                           dry_run=dry_run)
        self.state = ServiceState(0.0, count_to_keep=0)
        self.runtime = Runtime()
        self.ops = FakeOperations(auto)
        self.released: list[tuple[str, float]] = []
        self.target = ContainerSet(self.ctx, self.state, self.runtime, self.ops,  # type: ignore[arg-type]
                                   lambda config, name, now: self.released.append((name, now)))

    def spec(self) -> ReplicaSpec:
        return replica_spec(SERVICE, NET, self.config, self.state.template)

    def converge(self, views: list[ReplicaView] | None = None, can_retire: bool = True) -> list[ReplicaView]:
        return self.target.converge(self.config, list(views or []), can_retire, self.now)

    def collect(self) -> list[tuple[Replica, Tracked]]:
        return self.target.collect(self.config, self.now)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"service": SERVICE, **labels})


def view(name: str, state: str = "ready", version: str | None = None, created: float = WALL - 100) -> ReplicaView:
    return ReplicaView(Replica(f"id-{name}", name, SERVICE, "running", "10.0.0.1", created, version=version),
                       state, None)


def records(caplog: pytest.LogCaptureFixture, containing: str = "") -> list[logging.LogRecord]:
    return [r for r in caplog.records if containing in r.getMessage()]


def lines(caplog: pytest.LogCaptureFixture, containing: str = "") -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in records(caplog, containing)]


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="autoscaler.engine")


# --- set-up ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "read"),
    [
        (None, []),
        ({"container": "shop_web_1"}, [(SERVICE, "shop_web_1", None)]),
        ({"compose_project": "shop", "compose_service": "web"}, [(SERVICE, None, ("shop", "web"))]),
    ],
    ids=["no-template", "a-container", "a-compose-service"],
)
def test_the_template_is_read_from_the_container_or_compose_service_named(
    template: dict[str, str] | None, read: list[tuple[Any, ...]]
) -> None:
    # The replicas copy exactly the container the config names, looked up as the user named it.
    h = Harness(**({"image": None, "template": template} if template else {}))
    result = h.target.resolve_template(h.config)
    assert result == (TEMPLATE if template else None)
    assert h.runtime.of("read_template") == read


def test_setup_creates_no_service_for_containers() -> None:
    # Each replica is started as it is needed: nothing is created at set-up that a failed
    # start would have to remove.
    world = World()
    controller = world.controller(setup=False)
    try:
        assert "service" not in controller.setup()
    finally:
        controller.close(0)


def test_the_first_count_includes_starts_on_their_way() -> None:
    # After a restart-free pass the count is what runs plus what is being started, so a start
    # in flight is not started a second time.
    h = Harness(auto=False)
    h.state.count_to_keep = 1
    h.converge()
    assert h.target.first_count(2) == 3


def test_a_scale_up_decision_becomes_decided_starts_and_history() -> None:
    # The rate rules count a scale-up when it is decided, one start per added replica.
    h = Harness()
    h.target.apply(Decision(SERVICE, 1, 2, "cpu", "cpu up"), 90.0)
    assert h.state.count_to_keep == 2
    assert h.state.in_flight.decided == 1
    assert h.state.history.scale_up_events == (TimedValue(90.0, 1),)


# --- starts ----------------------------------------------------------------------------------------


def test_a_start_runs_the_resolved_image_as_the_configured_version_and_is_tracked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The digest a tag resolves to is what runs, but the replica keeps the version of the spec
    # as configured (else every start would look like another version and be rolled); the
    # start is tracked from when it was asked for, with the decision it belongs to.
    h = Harness(auto=False)
    h.runtime.pinned = {TAG: DIGEST_A}
    spec = h.spec()
    h.target.apply(Decision(SERVICE, 0, 1, "cpu", "cpu up"), 90.0)
    h.converge()
    assert h.runtime.of("new_replica_name") == [(SERVICE,)]
    h.ops.finish()
    h.now = 103.5
    started = h.collect()
    assert h.runtime.of("start_replica") == [(replace(spec, image=DIGEST_A, resolved_from=spec.version), "web-n1")]
    replica = started[0][0]
    expected = Tracked("id-web-n1", 100.0, WALL, started_by_us=True, counted_at=90.0, version=spec.version)
    assert started == [(replica, expected)]
    assert h.state.tracked["web-n1"] == expected
    assert lines(caplog, "started replica") == [(logging.INFO, "started replica web-n1 (3.50s)")]
    record = records(caplog, "started replica")[0]
    assert (record.replica, record.service) == ("web-n1", SERVICE)  # type: ignore[attr-defined]


@pytest.mark.parametrize("error", [BackendError("container_create", SERVICE, "engine gone", unreachable=True),
                                   LeaseLost("held by b")], ids=["engine-unreachable", "lease-lost"])
@pytest.mark.parametrize("decided", [True, False], ids=["scale-up", "replacement"])
def test_a_start_the_engine_never_answered_is_given_back_not_counted_as_a_failure(
    error: Exception, decided: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The engine (or the lease) went away, not the replica: a scale-up start is taken back
    # from the count and the rate rules, and only a debug line is left.
    h = Harness()
    h.runtime.start_errors = [error]
    if decided:
        h.target.apply(Decision(SERVICE, 0, 1, "cpu", "cpu up"), 90.0)
    else:
        h.state.count_to_keep = 1
    h.converge()
    h.collect()
    assert h.state.count_to_keep == 0 if decided else h.state.count_to_keep == 1
    assert h.state.history.scale_up_events == ((TimedValue(90.0, 1), TimedValue(90.0, -1)) if decided else ())
    assert h.state.backoff == bo.Backoff()
    assert lines(caplog) == [(logging.DEBUG, f"replica web-n1 not started: {error}")]
    assert caplog.records[0].replica == "web-n1"  # type: ignore[attr-defined]


def test_start_failures_are_warnings_each_new_error_again(caplog: pytest.LogCaptureFixture) -> None:
    # Failed starts are reported by their error: a different error is news (warning), the same
    # one again is not (info).
    h = Harness()
    h.state.count_to_keep = 1
    h.runtime.start_errors = [BackendError("container_create", SERVICE, error) for error in ("no space", "bad mount",
                                                                                               "bad mount")]
    for _ in range(3):
        h.converge()
        h.collect()
        h.now += 10
    failures = records(caplog, "could not be started")
    assert [(r.levelno, r.replica) for r in failures] == [  # type: ignore[attr-defined]
        (logging.WARNING, "web-n1"), (logging.WARNING, "web-n2"), (logging.INFO, "web-n3")]
    assert failures[0].getMessage() == (
        "replica web-n1 could not be started: docker container_create for service 'web': no space; "
        "next start in 1s (failure 1 in a row)")


# --- failures of running replicas ------------------------------------------------------------------


def _replica(name: str = "web-1", state: str = "exited", version: str | None = None) -> Replica:
    return Replica(f"id-{name}", name, SERVICE, state, "10.0.0.1", WALL - 100, version=version)


@pytest.mark.parametrize(
    ("state", "seen_ago", "expected"),
    [
        ("created", 10.5, ("gone", True)),
        ("created", 10.0, ("alive", False)),
        ("created", 2.0, ("alive", False)),
        ("running", 100.0, ("alive", False)),
    ],
    ids=["created-past-timeout", "created-at-timeout", "created-recently", "running"],
)
def test_a_replica_created_and_never_started_fails_after_the_startup_timeout(
    state: str, seen_ago: float, expected: tuple[str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    # A container stuck in "created" is a start that failed, but only once it had its whole
    # startup timeout (10 s here); a running one is the gate's business.
    h = Harness()
    tracked = Tracked("id-web-1", h.now - seen_ago, WALL - 100)
    assert h.target.triage(h.config, _replica(state=state), tracked, h.now, True) == expected
    if expected[0] == "gone":
        assert lines(caplog) == [(logging.WARNING, ("replica web-1 failed to start (never_started): created but "
                                  "never started for 10s; next start in 1s (failure 1 in a row)"))]
        assert h.released == [("web-1", h.now)]
        assert h.runtime.of("remove_replica") == [(SERVICE, "id-web-1", 10, True)]
        assert tracked.failed is True
    else:
        assert caplog.records == [] and h.released == [] and h.runtime.calls == []


@pytest.mark.parametrize(
    ("exit_report", "ready", "message"),
    [
        (ExitReport(3, False, "", ()), False,
         ("replica web-1 failed to start (exited): exited: exit code 3, OOM killed: no; next start in 1s "
         "(failure 1 in a row)")),
        (ExitReport(3, False, "", ()), True,
         "replica web-1 failed (crashed): exited: exit code 3, OOM killed: no; next start in 1s (failure 1 in a row)"),
        (BackendError("container_inspect", SERVICE, "no such container"), False,
         ("replica web-1 failed to start (exited): exited: exit code unknown, OOM killed: no, error: unreadable: "
         "docker container_inspect for service 'web': no such container; next start in 1s (failure 1 in a row)")),
    ],
    ids=["never-ready", "served-then-crashed", "report-unreadable"],
)
def test_a_replica_that_exited_is_reported_with_its_exit_and_removed(
    exit_report: ExitReport | Exception, ready: bool, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    # What the engine says of the exit is the report an operator reads; an exit report that
    # cannot be read is said so, not taken for an OOM kill.
    h = Harness()
    h.runtime.exit = exit_report
    tracked = Tracked("id-web-1", 0.0, WALL - 100, ready_since=50.0 if ready else None)
    assert h.target.triage(h.config, _replica(), tracked, h.now, True) == ("gone", True)
    assert h.runtime.of("exit_report") == [(SERVICE, "id-web-1")]
    assert lines(caplog) == [(logging.WARNING, message)]
    assert caplog.records[0].replica == "web-1"  # type: ignore[attr-defined]
    assert tracked.failed is True
    assert h.metric("autoscaler_replica_start_failures_total" if not ready else "autoscaler_replica_failures_total",
                    reason="crashed" if ready else "exited") == 1


def test_a_failed_start_of_a_scale_up_gives_the_scale_up_back() -> None:
    # A replica of a scale-up that never became ready did not add capacity: the count to keep
    # and the rate rules' history drop it again.
    h = Harness()
    h.state.count_to_keep = 3
    tracked = Tracked("id-web-1", 0.0, WALL - 100, started_by_us=True, counted_at=40.0)
    h.target.triage(h.config, _replica(), tracked, h.now, True)
    assert h.state.count_to_keep == 2
    assert h.state.history.scale_up_events == (TimedValue(40.0, -1),)


def test_an_unhealthy_replica_is_taken_out_removed_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    # Out of the load balancer first, then killed (it serves nobody), with the check that failed.
    h = Harness()
    tracked = Tracked("id-web-1", 0.0, WALL - 100, ready_since=50.0)
    assert h.target.unhealthy(h.config, _replica(state="running"), tracked, None, h.now, "check L4CON") is None
    assert h.released == [("web-1", h.now)]
    assert h.runtime.of("remove_replica") == [(SERVICE, "id-web-1", 10, True)]
    assert h.state.in_flight.removing("web-1")
    assert lines(caplog) == [(logging.WARNING, ("replica web-1 failed (unhealthy): not healthy for 10s (check L4CON); "
                              "next start in 1s (failure 1 in a row)"))]


# --- removals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("force", "why"), [(True, "not serving yet"), (False, "stop signal, then removed")])
def test_a_scale_in_removal_stops_the_replica_and_says_how(
    force: bool, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Killed at once when it serves nobody, else its stop signal with stop_timeout_seconds.
    h = Harness(stop_timeout_seconds=7)
    tracked = Tracked("id-web-1", 0.0, WALL - 100)
    h.target.remove(h.config, view("web-1"), tracked, force=force)
    assert h.runtime.of("remove_replica") == [(SERVICE, "id-web-1", 7, force)]
    assert h.state.in_flight.removing("web-1")
    assert lines(caplog) == [(logging.INFO, f"removing replica web-1 ({why})")]
    assert (caplog.records[0].replica, caplog.records[0].service) == ("web-1", SERVICE)  # type: ignore[attr-defined]


def test_a_drained_replica_is_stopped_with_its_stop_signal(caplog: pytest.LogCaptureFixture) -> None:
    # Its connections are done: a graceful stop, not a kill, and the line says why it goes.
    h = Harness()
    h.target.drained(h.config, "web-1", Tracked("id-web-1", 0.0, WALL - 100))
    assert h.runtime.of("remove_replica") == [(SERVICE, "id-web-1", 10, False)]
    assert lines(caplog) == [(logging.INFO, "removed replica web-1 from the load balancer (drained); stopping it")]
    assert (caplog.records[0].replica, caplog.records[0].service) == ("web-1", SERVICE)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (BackendError("container_remove", SERVICE, "container is restarting"), logging.WARNING),
        (RuntimeError("socket closed"), logging.WARNING),
        (BackendError("container_remove", SERVICE, "timed out", unreachable=True), logging.DEBUG),
        (LeaseLost("held by b"), logging.DEBUG),
    ],
    ids=["refused", "other-error", "engine-unreachable", "lease-lost"],
)
def test_a_removal_that_failed_is_logged_by_how_it_failed(
    error: Exception, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    # A refusal is news (warning); an engine or lease that went away is said elsewhere, and the
    # removal is tried again anyway (debug).
    h = Harness()
    h.runtime.remove_errors = [error]
    h.target.remove(h.config, view("web-1"), Tracked("id-web-1", 0.0, WALL - 100), force=True)
    caplog.clear()
    h.collect()
    assert lines(caplog) == [(level, f"could not remove replica web-1: {error} (trying again)")]
    assert (caplog.records[0].replica, caplog.records[0].service) == ("web-1", SERVICE)  # type: ignore[attr-defined]


def test_a_removal_that_worked_is_not_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    # Only a removal that failed is news when its outcome comes in.
    h = Harness()
    h.target.remove(h.config, view("web-1"), Tracked("id-web-1", 0.0, WALL - 100), force=True)
    caplog.clear()
    assert h.collect() == []
    assert caplog.records == []


# --- the start backoff -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_in", "message"),
    [
        (5.0, "start backoff: 3 replica(s) wanted, next start in 5s (3 failure(s): replica web-1 exited)"),
        (0.0, "start backoff: 2 replica(s) wanted, next start in 0s (3 failure(s): replica web-1 exited)"),
    ],
    ids=["waiting", "probe-due"],
)
def test_starts_held_back_by_the_backoff_are_logged_once(
    retry_in: float, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    # What is held back and until when, once for the whole backoff, not every pass.
    h = Harness()
    h.state.count_to_keep = 3
    h.state.backoff = bo.Backoff(3, retry_at=h.now + retry_in, last_failure_at=h.now - 1,
                                 reason="replica web-1 exited")
    h.converge()
    h.converge()
    assert lines(caplog) == [(logging.INFO, message)]
    assert caplog.records[0].service == SERVICE  # type: ignore[attr-defined]


def test_no_backoff_line_when_nothing_is_held_back(caplog: pytest.LogCaptureFixture) -> None:
    # A backoff that holds nothing back (the count is there) is not news.
    h = Harness()
    h.state.backoff = bo.Backoff(3, retry_at=h.now + 5, last_failure_at=h.now - 1, reason="replica web-1 exited")
    h.converge([view("web-1")])
    assert caplog.records == []


@pytest.mark.parametrize("between", ["reset", "recovered"])
def test_a_new_backoff_after_the_last_one_ended_is_logged_again(
    between: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The once-per-change line is forgotten when the backoff ends (or a replica started since
    # the failures became ready), so the next backoff is news even if it reads the same.
    h = Harness()
    h.state.count_to_keep = 1
    failing = bo.Backoff(3, retry_at=h.now + 5, last_failure_at=h.now - 1, reason="replica web-1 exited")
    h.state.backoff = failing
    h.converge()
    h.state.backoff = bo.Backoff() if between == "reset" else failing._replace(recovered_at=h.now)
    h.converge([view("web-1")])
    h.state.backoff = failing
    h.converge()
    assert len(records(caplog, "start backoff:")) == 2


def test_the_backoff_is_reset_after_a_healthy_period_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # As CrashLoopBackOff: failures are forgotten after backoff_max_seconds healthy, and the
    # operator who saw the backoff lines sees it end.
    h = Harness()
    h.state.backoff = bo.Backoff(2, retry_at=0.0, last_failure_at=0.0, recovered_at=h.now - 60, reason="x")
    h.converge()
    assert h.state.backoff == bo.Backoff()
    assert lines(caplog) == [(logging.INFO, "healthy for 60s since the last failure: start backoff reset")]
    # A line about the service, not about a replica (a JSON log once showed "replica": 60.0).
    [line] = caplog.records
    assert (getattr(line, "service", None), getattr(line, "replica", None)) == (SERVICE, None)
    h.converge()
    assert len(caplog.records) == 1, "said once, when it happens"


def test_decided_starts_the_count_no_longer_needs_leave_the_history(caplog: pytest.LogCaptureFixture) -> None:
    # A scale-up decided but not started before the count went down again never happened: the
    # rate rules must not count it.
    h = Harness()
    h.target.apply(Decision(SERVICE, 1, 3, "cpu", "cpu up"), 90.0)
    h.target.apply(Decision(SERVICE, 3, 1, "cpu", "cpu down"), 95.0)
    h.converge([view("web-1")])
    assert h.state.history.scale_up_events == (TimedValue(90.0, 2), TimedValue(90.0, -1), TimedValue(90.0, -1))
    assert h.state.in_flight.decided == 0
    assert h.runtime.of("start_replica") == []


def test_the_backoff_probe_waits_for_a_replica_of_ours_still_starting() -> None:
    # One probe at a time: a start of ours that has not become ready holds the next one back.
    h = Harness()
    h.state.count_to_keep = 2
    h.state.backoff = bo.Backoff(1, retry_at=h.now, last_failure_at=h.now - 1, reason="x")
    h.state.tracked["web-1"] = Tracked("id-web-1", 90.0, WALL, started_by_us=True)
    h.converge([view("web-1", "starting")])
    assert h.runtime.of("start_replica") == []


# --- a tag that moves (pull = "always") ------------------------------------------------------------


def test_the_tag_is_checked_every_pull_check_seconds_from_what_replicas_are_made_of() -> None:
    # pull = "always": the registry is asked again every pull_check_seconds (not every pass),
    # for the image replicas are made from (here a template's).
    h = Harness(image=None, template={"container": "shop_web_1"}, pull="always")
    h.state.template = TEMPLATE
    h.runtime.check_results = [(None, DIGEST_A)] * 3
    for at in (100.0, 159.9, 160.0, 200.0):
        h.now = at
        h.converge()
    assert h.runtime.of("check_image") == [(h.spec(),), (h.spec(),)]


@pytest.mark.parametrize(("pull", "dry_run"), [("missing", False), ("never", False), ("always", True)])
def test_no_tag_check_unless_pull_is_always_and_changes_are_made(pull: str, dry_run: bool) -> None:
    # Another pull policy never pulls a tag again; a dry run changes nothing, pulls included.
    h = Harness(pull=pull, dry_run=dry_run)
    h.converge()
    assert h.runtime.of("check_image") == [] and not h.ops.busy()


def test_a_check_still_running_is_not_asked_for_again() -> None:
    # A slow registry does not pile up pulls of the same tag.
    h = Harness(pull="always", auto=False)
    h.converge()
    h.now += 120
    h.converge()
    assert h.ops.in_flight("check") == {TAG: {}}
    h.ops.finish()
    assert len(h.runtime.of("check_image")) == 1


def test_a_new_digest_behind_the_tag_is_rolled_out(caplog: pytest.LogCaptureFixture) -> None:
    # The next replicas are made from the new digest (a new version), once per move; a reload
    # to another pull policy makes them from the tag again.
    h = Harness(pull="always")
    h.runtime.check_results = [(DIGEST_A, DIGEST_B), (DIGEST_A, DIGEST_B)]
    h.converge()
    assert h.collect() == []
    assert lines(caplog) == [(logging.INFO, f"a new image behind {TAG}: {DIGEST_B} (was {DIGEST_A}): rolling it out")]
    assert caplog.records[0].service == SERVICE  # type: ignore[attr-defined]
    h.now += 60
    h.state.count_to_keep = 1
    h.converge()
    h.collect()
    assert len(records(caplog, "a new image")) == 1, "the same move is not news twice"
    assert [spec.image for (spec,) in h.runtime.of("resolve_image")] == [DIGEST_B]
    h.config = service_config(pull="missing")
    h.state.count_to_keep = 2
    h.converge([view("web-n1", "starting", h.state.rollout.spec.version if h.state.rollout else None)])
    assert [spec.image for (spec,) in h.runtime.of("resolve_image")] == [DIGEST_B, TAG, TAG]


@pytest.mark.parametrize(("before", "after"), [(None, DIGEST_A), (DIGEST_A, DIGEST_A)],
                         ids=["first-pull", "unchanged"])
def test_a_tag_that_did_not_move_changes_nothing(
    before: str | None, after: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The first pull of a tag (nothing pinned before) or the same digest again is no new
    # version: nothing is rolled.
    h = Harness(pull="always")
    h.runtime.check_results = [(before, after)]
    h.converge()
    h.collect()
    h.state.count_to_keep = 1
    h.converge()
    assert caplog.records == []
    assert [spec.image for (spec,) in h.runtime.of("resolve_image")] == [TAG]


def test_a_check_that_failed_is_a_warning_once_until_a_check_works(caplog: pytest.LogCaptureFixture) -> None:
    # A registry that stays down is one warning, not one per check; down again after a check
    # that worked is news again.
    h = Harness(pull="always")
    down = BackendError("image_pull", SERVICE, "registry down")
    h.runtime.check_results = [down, down, (DIGEST_A, DIGEST_A), down]
    for _ in range(4):
        h.converge()
        h.collect()
        h.now += 60
    message = (f"cannot check {TAG} for a new image: docker image_pull for service 'web': registry down "
               "(trying again in pull_check_seconds)")
    assert lines(caplog) == [(logging.WARNING, message), (logging.WARNING, message)]
    assert caplog.records[0].service == SERVICE  # type: ignore[attr-defined]


# --- rollouts --------------------------------------------------------------------------------------


def _rolling_harness(**config: Any) -> tuple[Harness, ReplicaSpec, list[ReplicaView]]:
    """Two ready replicas of v1, then a reload that changes what replicas are made of (v2)."""
    h = Harness(**config)
    v1 = h.spec()
    h.state.count_to_keep = 2
    old = [view("web-a", version=v1.version, created=WALL - 200), view("web-b", version=v1.version)]
    h.converge(old)
    h.config = service_config(env={"RELEASE": "2"}, **config)
    return h, v1, old


@pytest.mark.parametrize(
    ("rollout", "starts", "retired", "message"),
    [
        ({"max_surge": 1, "max_unavailable": 0}, 1, [], "at most 1 extra and 0 fewer"),
        ({"max_surge": 0, "max_unavailable": 1}, 1, ["web-b"], "at most 0 extra and 1 fewer"),
        ({"max_surge": 2, "max_unavailable": 1}, 2, ["web-b"], "at most 2 extra and 1 fewer"),
    ],
    ids=["surge-one", "one-fewer", "surge-two-one-fewer"],
)
def test_a_reload_rolls_the_replicas_over_within_the_surge_and_unavailability(
    rollout: dict[str, int], starts: int, retired: list[str], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    h, v1, old = _rolling_harness(rollout=rollout)
    v2 = h.spec()
    victims = h.converge(old)
    assert [v.replica.name for v in victims] == retired
    assert [spec.version for spec, _ in h.runtime.of("start_replica")] == [v2.version] * starts
    assert lines(caplog, "rolling out") == [(logging.INFO, (
        f"rolling out version {v2.version} (from {v1.version}): {message} replica(s), each new one ready before an "
        "old one drains"))]
    assert records(caplog, "rolling out")[0].service == SERVICE  # type: ignore[attr-defined]
    assert h.state.rollout == Rollout(v2, v1, in_progress=True)


def test_a_rollout_is_done_when_no_replica_of_another_version_is_left(caplog: pytest.LogCaptureFixture) -> None:
    # Said once, with how many replicas of it serve; the rollback target and the failures of the
    # rollout are forgotten (status shows no rollout in progress).
    h, v1, old = _rolling_harness(rollout={"failure_threshold": 3})
    v2 = h.spec()
    h.converge(old[:1])  # one old replica left: a rollout in progress
    assert h.state.rollout is not None and h.state.rollout.in_progress
    h.state.rollout.failures = 1
    new = [view("web-n1", version=v2.version), view("web-n2", version=v2.version), view("web-a", "draining", v1.version)]
    h.converge(new)
    h.converge(new)
    assert lines(caplog, "done") == [(logging.INFO, f"rollout of version {v2.version} done: 2 replica(s) of it")]
    assert records(caplog, "done")[0].service == SERVICE  # type: ignore[attr-defined]
    assert h.state.rollout == Rollout(v2, None, failures=0, in_progress=False)


def test_a_failure_after_the_rollout_is_done_rolls_nothing_back() -> None:
    # Once every replica is of the new version there is nothing to roll back to: a failure is
    # only a failure.
    h, _v1, old = _rolling_harness(rollout={"failure_threshold": 1})
    v2 = h.spec()
    h.converge(old)
    h.converge([view("web-n1", version=v2.version)])
    tracked = Tracked("id-web-n1", 0.0, WALL - 100, version=v2.version)
    h.target.triage(h.config, _replica("web-n1", version=v2.version), tracked, h.now, True)
    assert h.state.rollout is not None and h.state.rollout.spec == v2
    assert h.metric("autoscaler_rollbacks_total") in (None, 0.0)


def test_new_replicas_follow_a_template_read_again() -> None:
    # A template read again with another version is a new version to roll out.
    h = Harness(image=None, template={"container": "shop_web_1"})
    h.state.template = TEMPLATE
    h.state.count_to_keep = 1
    h.converge()
    h.collect()
    h.state.template = replace(TEMPLATE, version="ba9876543210")
    h.state.count_to_keep = 2
    h.converge([view("web-n1", "ready", replica_spec(SERVICE, NET, h.config, TEMPLATE).version)])
    templates = [spec.template for spec, _ in h.runtime.of("start_replica")]
    assert templates == [TEMPLATE, h.state.template, h.state.template]
    assert h.state.rollout is not None and h.state.rollout.previous is not None
    assert h.state.rollout.previous.template == TEMPLATE


def _fail_new(h: Harness, version: str, name: str = "web-n9") -> None:
    tracked = Tracked(f"id-{name}", 0.0, WALL - 100, started_by_us=True, version=version)
    h.target.triage(h.config, _replica(name, version=version), tracked, h.now, True)


def test_the_circuit_breaker_rolls_back_after_the_threshold_of_failed_new_replicas(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As ECS's deployment circuit breaker: failure_threshold replicas of the new version that
    # never became ready stop the rollout; replicas are made from the old version again, and
    # the stopped version is not rolled out again until the config changes once more.
    h, v1, old = _rolling_harness(rollout={"failure_threshold": 2})
    v2 = h.spec()
    h.converge(old)
    _fail_new(h, v2.version, "web-n1")
    assert h.state.rollout == Rollout(v2, v1, failures=1, in_progress=True)
    assert h.metric("autoscaler_rollbacks_total") in (None, 0.0)
    _fail_new(h, v2.version, "web-n2")
    assert h.state.rollout == Rollout(v1, None, rolled_back=frozenset({v2.version}), in_progress=True)
    assert h.metric("autoscaler_rollbacks_total") == 1
    assert lines(caplog, "stopped after") == [(logging.WARNING, (
        f"rollout of version {v2.version} stopped after 2 failed replica(s) (last: exited: exited: exit code 1, "
        f"OOM killed: no): rolling back to {v1.version}"))]
    assert records(caplog, "stopped after")[0].service == SERVICE  # type: ignore[attr-defined]

    caplog.clear()
    h.converge(old)  # the config still names v2
    h.converge(old)
    stays = (f"version {v2.version} was rolled back: replicas stay at {v1.version} until what they are made from "
             "changes again")
    assert lines(caplog, "rolled back") == [(logging.WARNING, stays)]
    assert records(caplog, "rolled back")[0].service == SERVICE  # type: ignore[attr-defined]
    assert h.state.rollout is not None and h.state.rollout.spec == v1

    v2_config = h.config
    h.config = service_config(env={"RELEASE": "3"}, rollout={"failure_threshold": 2})
    v3 = h.spec()
    h.converge(old)
    assert h.state.rollout == Rollout(v3, v1, rolled_back=frozenset({v2.version}), in_progress=True)
    h.config = v2_config
    h.converge(old)
    assert len(records(caplog, "was rolled back")) == 2, "back to the stopped version: said again"


@pytest.mark.parametrize(
    ("rollout", "failing"),
    [
        ("v2-from-v1", "v1"),
        ("v2-from-v1-not-in-progress", "v2"),
        ("v2-first-version", "v2"),
    ],
    ids=["an-old-replica-fails", "no-rollout-in-progress", "nothing-to-roll-back-to"],
)
def test_only_failures_of_the_version_rolled_out_count_toward_a_rollback(rollout: str, failing: str) -> None:
    # The circuit breaker judges the new version, during its rollout, when there is an old one
    # to go back to; an old replica that fails says nothing about the new one.
    h = Harness(rollout={"failure_threshold": 1})
    v1 = h.spec()
    h.config = service_config(env={"RELEASE": "2"}, rollout={"failure_threshold": 1})
    v2 = h.spec()
    h.state.rollout = {
        "v2-from-v1": Rollout(v2, v1, in_progress=True),
        "v2-from-v1-not-in-progress": Rollout(v2, v1, in_progress=False),
        "v2-first-version": Rollout(v2, None, in_progress=True),
    }[rollout]
    before = replace(h.state.rollout)
    _fail_new(h, {"v1": v1, "v2": v2}[failing].version)
    assert h.state.rollout == before
    assert h.metric("autoscaler_rollbacks_total") in (None, 0.0)


# --- the plan: one step of a rolling update --------------------------------------------------------


def _v(name: str, state: str, version: str, age: float = 0.0) -> ReplicaView:
    return view(name, state, version, created=WALL - age)


def _tracked(*views: ReplicaView) -> dict[str, Tracked]:
    return {v.replica.name: Tracked(v.replica.id, 0.0, 0.0, started_by_us=True) for v in views}


@pytest.mark.parametrize(
    ("views", "keep", "surge", "unavailable", "start", "retired"),
    [
        # Outdated replicas that serve nobody go first, but only down to the count to keep.
        ([_v("a", "starting", "v1"), _v("b", "starting", "v1"), _v("c", "ready", "v2"), _v("d", "ready", "v2")],
         3, 1, 0, 1, ["a"]),
        ([_v("a", "starting", "v1"), _v("b", "starting", "v1"), _v("c", "ready", "v2"), _v("d", "ready", "v2")],
         3, 1, 1, 1, ["a", "b"]),
        # Every ready outdated replica the others cover goes in the same step.
        ([_v("a", "ready", "v1", 9), _v("b", "ready", "v1", 5), _v("c", "ready", "v2"), _v("d", "ready", "v2")],
         2, 1, 0, 0, ["b", "a"]),
        # Up to the count to keep in the new version, not up to the surge.
        ([_v("a", "ready", "v1"), _v("b", "ready", "v2")], 2, 3, 0, 1, []),
    ],
    ids=["unready-down-to-count", "unready-down-to-one-fewer", "all-covered-ready", "only-what-is-missing"],
)
def test_a_rolling_step_retires_and_starts_what_it_may(
    views: list[ReplicaView], keep: int, surge: int, unavailable: int, start: int, retired: list[str]
) -> None:
    # Never fewer than count_to_keep - max_unavailable replicas, never more new ones than the
    # count to keep needs.
    step = plan(views, keep, 0, 0, bo.Backoff(), _tracked(*views), True, 10.0, "v2", surge, unavailable)
    assert (step.start, [v.replica.name for v in step.retire]) == (start, retired)


@pytest.mark.parametrize(
    ("backoff", "decided", "expected"),
    [
        (bo.Backoff(1, retry_at=20.0), 0, Plan(0, 1, 0, (), 2)),
        (bo.Backoff(1, retry_at=10.0), 0, Plan(1, 0, 0, (), 2)),
        (bo.Backoff(), 3, Plan(1, 0, 3, (), 2)),
    ],
    ids=["backoff-waiting", "backoff-probe", "decided-starts-over-the-count"],
)
def test_a_rolling_step_is_held_by_the_backoff_and_drops_decided_starts(
    backoff: bo.Backoff, decided: int, expected: Plan
) -> None:
    # The surge start of a rollout is a start like any other: the backoff holds it, and
    # decided scale-up starts the count no longer needs are dropped as in any pass.
    views = [_v("a", "ready", "v1"), _v("b", "ready", "v1")]
    assert plan(views, 2, 0, decided, backoff, _tracked(*views), True, 10.0, "v2", 1, 0) == expected
