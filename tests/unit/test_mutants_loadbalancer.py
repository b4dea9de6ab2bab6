"""The load balancer's keeper (engine/loadbalancer.py) and the small state parts (backoff.py,
state.py) as mutation testing found them held by no test.

Each test names the behaviour; `mutmut` showed that a change to the lines it covers left every
other unit test passing. The keeper runs here against a host that records every call with its
arguments and an API that is up or down as the test says, so that what it asks of the engine,
what it logs and what `status` and the metrics show are all visible. Equivalent mutants:
tests/unit/mutants/loadbalancer.md.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from engine_fakes import service_config
from prometheus_client import CollectorRegistry

from autoscaler.engine import backoff as bo
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.loadbalancer import LB_POLL_SECONDS, LoadBalancerKeeper
from autoscaler.engine.membership import lb_spec
from autoscaler.engine.ports import (
    BackendError,
    BackendStat,
    ExitReport,
    LoadBalancer,
    LoadBalancerContainer,
    MembershipError,
    Replica,
    ServerStat,
)
from autoscaler.engine.replicas import ReplicaView, Tracked, choose_victims
from autoscaler.engine.state import Context, ServiceState
from autoscaler.telemetry import Telemetry

SERVICE = "web"
LB_NAME = "autoscaler-web-lb"
OLD_ID = "old-lb"  # the load balancer in use (adopted at set-up)
NEW_ID = "new-lb"  # one the keeper creates
WALL = 1_800_000_000.0
CONFIG = service_config()  # backoff 1 s, doubling up to 60 s
SPEC = lb_spec(SERVICE, "autoscaler-web", CONFIG)
API_DOWN = "runtime API: connection refused"
REPORT = "exit code 1, OOM killed: no; last output: haproxy: cannot bind"
STAT = BackendStat(0, 3, 0.0, None)


def info(lb_id: str) -> LoadBalancer:
    return LoadBalancer(lb_id, LB_NAME, f"/run/autoscaler/{lb_id}.sock", "127.0.0.1", 41000, "127.0.0.1:8080")


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = WALL

    def now(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class Host:
    """LoadBalancerHost in memory: the container is what the test says (a repair does not
    change it), and every call is recorded with its arguments."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.container: LoadBalancerContainer | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.create_error: BackendError | None = None
        self.list_error: BackendError | None = None

    def set(self, state: str | None, started_ago: float | None = None, lb_id: str = OLD_ID) -> None:
        if state is None:
            self.container = None
            return
        started = self.clock.wall - started_ago if started_ago is not None else None
        self.container = LoadBalancerContainer(lb_id, LB_NAME, state, "fp", "127.0.0.1:8080", started)

    def load_balancer_container(self, service: str) -> LoadBalancerContainer | None:
        self.calls.append(("container", service))
        if self.list_error is not None:
            raise self.list_error
        return self.container

    def create_load_balancer(self, spec: Any) -> str:
        self.calls.append(("create", spec))
        if self.create_error is not None:
            raise self.create_error
        return NEW_ID

    def start_load_balancer(self, service: str, lb_id: str) -> None:
        self.calls.append(("start", service, lb_id))

    def remove_load_balancer(self, service: str, lb_id: str) -> None:
        self.calls.append(("remove", service, lb_id))

    def load_balancer_info(self, service: str, lb_id: str) -> LoadBalancer:
        self.calls.append(("info", service, lb_id))
        return info(lb_id)

    def load_balancer_report(self, service: str, lb_id: str) -> ExitReport:
        self.calls.append(("report", service, lb_id))
        return ExitReport(1, False, "", ("haproxy: cannot bind",))


class Api:
    """LoadBalancerAPI: answers, or not, as the test says; fails its first `fail_first` looks."""

    def __init__(self) -> None:
        self.down = False
        self.fail_first = 0
        self.looks = 0

    def snapshot(self) -> tuple[BackendStat, dict[str, ServerStat]]:
        return STAT, self.servers()

    def servers(self) -> dict[str, ServerStat]:
        self.looks += 1
        if self.down or self.looks <= self.fail_first:
            raise MembershipError(API_DOWN)
        return {}


class Rig:
    def __init__(self, *, dry_run: bool = False) -> None:
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.health = ServiceHealth()
        telemetry = Telemetry(self.registry)
        telemetry.register_service(SERVICE)  # as the controller does: the counters start at 0
        self.ctx = Context(SERVICE, "autoscaler-web", telemetry, self.health, self.clock.now, self.clock.time, dry_run)
        self.host = Host(self.clock)
        self.api = Api()
        self.infos: list[LoadBalancer] = []  # what the keeper opened an API for, in order
        self.sleeps: list[float] = []
        self.keeper = LoadBalancerKeeper(self.ctx, self.host, self.factory, self.sleep)  # type: ignore[arg-type]

    def factory(self, lb: LoadBalancer) -> Api:
        self.infos.append(lb)
        return self.api

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def adopted(self) -> Rig:
        """The keeper uses the load balancer set-up adopted (OLD_ID)."""
        self.keeper.use(info(OLD_ID))
        self.infos.clear()
        return self

    def look(self) -> tuple[BackendStat | None, dict[str, ServerStat] | None, bool]:
        return self.keeper.state(CONFIG, SPEC, self.clock.mono)

    def metric(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, {"service": SERVICE})

    @property
    def up(self) -> float | None:
        return self.metric("autoscaler_load_balancer_up")

    @property
    def repairs(self) -> float | None:
        return self.metric("autoscaler_load_balancer_repairs_total")

    def creates(self) -> int:
        return sum(1 for call in self.host.calls if call[0] == "create")


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "autoscaler.engine"]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="autoscaler.engine")
    return caplog


# --- one repair step, by what the engine shows of the container -----------------------------------

WARN, INFO = logging.WARNING, logging.INFO


@pytest.mark.parametrize(
    ("state", "started_ago", "calls", "renewed", "log", "repairs"),
    [
        # Gone: created again from the spec, and used.
        (None, None, [("container", SERVICE), ("create", SPEC), ("info", SERVICE, NEW_ID)], True,
         (WARN, f"load balancer missing ({API_DOWN}): creating it"), 1),
        # Stopped: started again (the same container), with why it stopped.
        ("exited", None, [("container", SERVICE), ("report", SERVICE, OLD_ID), ("start", SERVICE, OLD_ID),
                          ("info", SERVICE, OLD_ID)], True,
         (WARN, f"load balancer {LB_NAME} is exited ({REPORT}): starting it"), 1),
        ("created", None, [("container", SERVICE), ("report", SERVICE, OLD_ID), ("start", SERVICE, OLD_ID),
                           ("info", SERVICE, OLD_ID)], True,
         (WARN, f"load balancer {LB_NAME} is created ({REPORT}): starting it"), 1),
        # Running long past its start-up grace with a silent API: broken, replaced.
        ("running", 3600.0, [("container", SERVICE), ("remove", SERVICE, OLD_ID), ("create", SPEC),
                             ("info", SERVICE, NEW_ID)], True,
         (WARN, f"load balancer {LB_NAME} runs but its API has not answered for 15s ({API_DOWN}): replacing it"), 1),
        # The grace is 15 s: at 15 s it is over.
        ("running", 15.0, [("container", SERVICE), ("remove", SERVICE, OLD_ID), ("create", SPEC),
                           ("info", SERVICE, NEW_ID)], True,
         (WARN, f"load balancer {LB_NAME} runs but its API has not answered for 15s ({API_DOWN}): replacing it"), 1),
        # Started a moment ago: given its grace, nothing done.
        ("running", 14.5, [("container", SERVICE)], False, (INFO, f"load balancer {LB_NAME} is starting"), 0),
        # Docker restarts it by its policy: nothing to do but say why and back off.
        ("restarting", None, [("container", SERVICE), ("report", SERVICE, OLD_ID)], False,
         (WARN, f"load balancer {LB_NAME} keeps restarting ({REPORT})"), 1),
        # Being removed (by someone else): wait for it to go.
        ("removing", None, [("container", SERVICE)], False, (INFO, f"load balancer {LB_NAME} is being removed: waiting"), 0),
        ("dead", None, [("container", SERVICE)], False, (INFO, f"load balancer {LB_NAME} is being removed: waiting"), 0),
    ],
    ids=["missing", "exited", "created", "running-broken", "running-at-grace", "running-starting", "restarting",
         "removing", "dead"],
)
def test_a_silent_load_balancer_is_repaired_by_what_its_container_shows(
    logs: pytest.LogCaptureFixture, state: str | None, started_ago: float | None, calls: list[tuple[Any, ...]],
    renewed: bool, log: tuple[int, str], repairs: int,
) -> None:
    # The repair asks the engine for exactly these steps (on this service's container, by its
    # id), says what it does and why in one line, counts what it (re)created or restarted,
    # and tells the pass whether the load balancer is a new one (every replica is registered
    # again) -- which it is only after a create or a start.
    rig = Rig().adopted()
    rig.api.down = True
    rig.host.set(state, started_ago)
    assert rig.look() == (None, None, renewed)
    assert rig.host.calls == calls
    assert lines(logs) == [log]
    assert logs.records[0].service == SERVICE  # type: ignore[attr-defined]
    assert rig.repairs == repairs
    assert rig.infos == ([info(calls[-1][2])] if renewed else [])
    assert rig.keeper.info == (info(calls[-1][2]) if renewed else info(OLD_ID))


def test_a_load_balancer_not_known_yet_is_created(logs: pytest.LogCaptureFixture) -> None:
    # A keeper that has no load balancer yet reports the outage as such, in `status` too, and
    # creates one.
    rig = Rig()
    assert rig.look() == (None, None, True)
    assert rig.host.calls == [("container", SERVICE), ("create", SPEC), ("info", SERVICE, NEW_ID)]
    assert rig.infos == [info(NEW_ID)]
    assert rig.health.lb_error == "no load balancer yet"
    assert lines(logs) == [(WARN, "load balancer missing (no load balancer yet): creating it")]


def test_a_starting_load_balancer_is_used_once_known(logs: pytest.LogCaptureFixture) -> None:
    # A load balancer someone else (re)created is starting: the keeper opens its API once, so
    # that the next pass reads it, and does not open it again each pass.
    rig = Rig().adopted()
    rig.api.down = True
    rig.host.set("running", 5.0, lb_id=NEW_ID)
    assert rig.look() == (None, None, False)
    assert rig.host.calls == [("container", SERVICE), ("info", SERVICE, NEW_ID)]
    assert rig.infos == [info(NEW_ID)] and rig.keeper.info == info(NEW_ID)
    rig.clock.advance(1.0)
    rig.look()
    assert rig.infos == [info(NEW_ID)], "opened once"
    assert lines(logs) == [(INFO, f"load balancer {LB_NAME} is starting")], "said once"


def test_a_keeper_without_a_load_balancer_uses_a_starting_one() -> None:
    # Not even set-up's load balancer known (no API yet): a starting one is adopted as it is.
    rig = Rig()
    rig.host.set("running", 5.0, lb_id=NEW_ID)
    assert rig.look() == (None, None, False)
    assert rig.infos == [info(NEW_ID)]


def test_a_restarting_load_balancer_is_looked_at_again_after_the_backoff() -> None:
    # Docker restarts it; the keeper reads its report once per backoff delay, not every pass.
    rig = Rig().adopted()
    rig.api.down = True
    rig.host.set("restarting")
    rig.look()
    rig.clock.advance(0.5)
    rig.look()
    assert [c[0] for c in rig.host.calls] == ["container", "report", "container"]
    rig.clock.advance(0.5)  # 1 s: the first delay is over
    assert rig.look() == (None, None, False)
    assert [c[0] for c in rig.host.calls] == ["container", "report", "container", "container", "report"]
    assert rig.repairs == 2


# --- the repair backoff -------------------------------------------------------------------------


def test_a_failed_repair_is_retried_when_its_backoff_ends(logs: pytest.LogCaptureFixture) -> None:
    # The engine refuses the create: said once at error with the engine's words and the wait,
    # nothing tried before the delay (1 s), tried again at the very end of it.
    rig = Rig().adopted()
    rig.api.down = True
    rig.host.create_error = BackendError("container_start", SERVICE, "port is already allocated")
    assert rig.look() == (None, None, False)
    rig.clock.advance(0.5)
    assert rig.look() == (None, None, False)
    assert rig.creates() == 1
    rig.clock.advance(0.5)
    assert rig.look() == (None, None, False)
    assert rig.creates() == 2
    assert lines(logs) == [
        (WARN, f"load balancer missing ({API_DOWN}): creating it"),
        (logging.ERROR, ("cannot bring the load balancer back: docker container_start for service 'web': "
                         "port is already allocated (next try in 1s)")),
    ]


def test_an_unreachable_engine_is_no_repair_failure(logs: pytest.LogCaptureFixture) -> None:
    # The engine's own trouble (shown by its own condition) neither backs the load balancer's
    # repair off nor logs a repair error, and nothing is new.
    rig = Rig().adopted()
    rig.api.down = True
    rig.host.list_error = BackendError("container_list", SERVICE, "connection refused", unreachable=True)
    assert rig.look() == (None, None, False)
    assert lines(logs) == []
    rig.host.list_error = None
    assert rig.look() == (None, None, True), "repaired at once: no backoff"


def test_the_repair_backoff_is_forgotten_after_a_healthy_period() -> None:
    # After backoff_max_seconds (60 s) of a load balancer that answers, a new outage starts
    # from the first delay again (1 s), not from the next one (2 s).
    rig = Rig().adopted()
    rig.api.down = True
    rig.look()  # create: failure 1
    rig.api.down = False
    rig.clock.advance(1.0)
    rig.look()  # answers: recovered
    rig.clock.advance(60.0)
    rig.look()  # healthy for 60 s: forgotten
    rig.api.down = True
    rig.clock.advance(1.0)
    rig.look()  # create: failure 1 again
    rig.clock.advance(1.0)
    rig.look()  # 1 s later: due again
    assert rig.creates() == 3


# --- what status and the metrics show of an outage -----------------------------------------------


def test_an_outage_and_its_end_are_shown_and_logged(logs: pytest.LogCaptureFixture) -> None:
    rig = Rig().adopted()
    rig.api.down = True
    rig.host.set("removing")  # nothing done: only what is shown
    assert rig.look() == (None, None, False)
    assert (rig.health.lb_down_since, rig.health.lb_error, rig.up) == (WALL, API_DOWN, 0.0)
    rig.clock.advance(30.0)
    rig.look()
    assert rig.health.lb_down_since == WALL, "down since the first pass that saw it"
    logs.clear()
    rig.api.down = False
    assert rig.look() == (STAT, {}, False)
    assert rig.health.lb_down_since is None and rig.up == 1.0
    assert lines(logs) == [(WARN, "load balancer answering again after 30s")]
    assert logs.records[0].service == SERVICE  # type: ignore[attr-defined]


_NUMBERS = re.compile(r"\d+")


@pytest.mark.parametrize(
    ("state", "started_ago", "create_error"),
    [
        (None, None, None),
        (None, None, "port is already allocated"),
        ("exited", None, None),
        ("running", 3600.0, None),
        ("running", 5.0, None),
        ("restarting", None, None),
        ("removing", None, None),
    ],
    ids=["missing", "create-fails", "exited", "running-broken", "running-starting", "restarting", "removing"],
)
def test_each_outage_is_logged_again_after_a_recovery(
    logs: pytest.LogCaptureFixture, state: str | None, started_ago: float | None, create_error: str | None,
) -> None:
    # A condition is logged once while it lasts, and again when it comes back after the load
    # balancer answered in between: the recovery forgets what was said.
    rig = Rig().adopted()
    rig.host.set(state, started_ago)
    if create_error is not None:
        rig.host.create_error = BackendError("container_start", SERVICE, create_error)

    def outage() -> list[tuple[int, str]]:
        logs.clear()
        rig.api.down = True
        rig.look()
        rig.look()  # the same pass again: nothing new to say
        return [(level, _NUMBERS.sub("#", text)) for level, text in lines(logs)]

    first = outage()
    assert first
    rig.api.down = False
    rig.clock.advance(1.0)
    rig.look()
    rig.clock.advance(1.0)
    assert outage() == first


def test_a_dry_run_repairs_nothing() -> None:
    # A dry run changes nothing: the outage is shown, no repair is tried, nothing is new.
    rig = Rig(dry_run=True)
    assert rig.look() == (None, None, False)
    assert rig.host.calls == []
    assert rig.health.lb_error == "no load balancer yet"


# --- set-up's wait for a new load balancer -------------------------------------------------------


def test_set_up_waits_for_the_api_up_to_its_deadline() -> None:
    # The API gets the whole timeout: a try at the deadline that fails is followed by one more.
    rig = Rig().adopted()
    rig.clock.mono = 0.0
    rig.api.fail_first = 3  # fails at 0.0, 0.2 and 0.4 s, answers at 0.6 s
    rig.keeper.wait(2 * LB_POLL_SECONDS)
    assert rig.sleeps == [LB_POLL_SECONDS] * 3


def test_set_up_gives_up_past_the_deadline() -> None:
    rig = Rig().adopted()
    rig.clock.mono = 0.0
    rig.api.fail_first = 4
    with pytest.raises(MembershipError):
        rig.keeper.wait(2 * LB_POLL_SECONDS)
    assert rig.sleeps == [LB_POLL_SECONDS] * 3


# --- the start backoff ---------------------------------------------------------------------------


def test_a_recovery_keeps_the_time_of_the_first_ready_replica() -> None:
    # The healthy period that resets the backoff runs from the first replica that became ready
    # after the failure; later ones do not push the reset back.
    backoff = bo.Backoff(1, retry_at=5.0, last_failure_at=4.0, recovered_at=10.0)
    assert bo.after_ready(backoff, 20.0, 15.0).recovered_at == 10.0


def test_a_replica_started_at_the_failure_counts_as_a_recovery() -> None:
    # Started in the pass that recorded the failure (the same clock reading), after it.
    backoff = bo.Backoff(1, retry_at=5.0, last_failure_at=4.0)
    assert bo.after_ready(backoff, 9.0, 4.0).recovered_at == 9.0


@pytest.mark.parametrize(
    ("backoff", "now", "seconds"),
    [
        (bo.Backoff(), 100.0, 0.0),
        (bo.Backoff(1, retry_at=50.0), 100.0, 0.0),
        (bo.Backoff(1, retry_at=103.5), 100.0, 3.5),
    ],
    ids=["no-backoff", "past-the-delay", "within-the-delay"],
)
def test_the_wait_before_the_next_start(backoff: bo.Backoff, now: float, seconds: float) -> None:
    # What the start-backoff gauge and `status` show: 0 when nothing holds starts back.
    assert bo.seconds_until_retry(backoff, now) == seconds


# --- how the engine's parts speak ----------------------------------------------------------------


def _context(dry_run: bool = False) -> Context:
    return Context(SERVICE, "net", Telemetry(CollectorRegistry()), ServiceHealth(), lambda: 0.0, lambda: WALL,
                   dry_run)


def test_a_condition_is_logged_once_per_topic_with_its_fields(logs: pytest.LogCaptureFixture) -> None:
    # Each topic keeps its own last message: another topic in between does not make the same
    # news new again. Every line carries the service and the fields given.
    ctx = _context()
    ctx.once("engine", WARN, "engine down: %s", "refused", replica="web-1")
    ctx.once("lease", INFO, "lease held by %s", "other")
    ctx.once("engine", WARN, "engine down: %s", "refused", replica="web-1")
    assert lines(logs) == [(WARN, "engine down: refused"), (INFO, "lease held by other")]
    first = logs.records[0]
    assert (first.service, first.replica) == (SERVICE, "web-1")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("dry_run", "level", "message"),
    [(False, INFO, "removing replica web-1 (idle)"), (True, logging.DEBUG, "[dry run] would do: removing replica web-1 (idle)")],
    ids=["acting", "dry-run"],
)
def test_a_repair_step_is_noted_with_its_replica(
    logs: pytest.LogCaptureFixture, dry_run: bool, level: int, message: str,
) -> None:
    # A repair step is said at info (a dry run: what it would do, at debug), with the replica
    # (its first argument) and the service as fields of the line.
    _context(dry_run).note("removing replica %s (%s)", "web-1", "idle")
    assert lines(logs) == [(level, message)]
    record = logs.records[0]
    assert (record.service, record.replica) == (SERVICE, "web-1")  # type: ignore[attr-defined]


# --- what the state remembers --------------------------------------------------------------------


def test_an_adopted_replica_is_tracked_with_its_version() -> None:
    # What `status` and the version gauge count the replica as.
    replica = Replica("id-1", "web-1", SERVICE, "running", "10.0.0.1", WALL - 60, version="v2")
    assert ServiceState(0.0).track(replica, 5.0).version == "v2"


def test_forgetting_what_is_gone_keeps_a_start_in_flight() -> None:
    # Memory stays bounded as replicas come and go, but a start not listed yet (its container
    # is being created) keeps what this process knows of it.
    state = ServiceState(0.0)
    for name in ("gone", "starting", "listed"):
        state.tracked[name] = Tracked(name, 1.0, WALL, started_by_us=True)
    state.in_flight.expect_start("starting")
    state.forget({"listed"})
    assert sorted(state.tracked) == ["listed", "starting"]


# --- which replicas go on a scale-in -------------------------------------------------------------


def test_a_starting_replica_without_a_server_serves_no_session() -> None:
    # Two starting replicas, one registered (no sessions) and a newer one not registered yet
    # (no server): neither serves anybody, so the tie goes to the newest, as for any tie.
    registered = ReplicaView(Replica("a", "web-a", SERVICE, "running", "10.0.0.1", WALL - 60), "starting",
                             ServerStat("web-a", "10.0.0.1:8000", "MAINT", "INI", 0, 0, 0.0, None, 0, 0))
    unregistered = ReplicaView(Replica("b", "web-b", SERVICE, "running", "10.0.0.2", WALL - 30), "starting", None)
    assert choose_victims([registered, unregistered], 1) == [unregistered]
