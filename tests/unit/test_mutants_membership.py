"""The gate a replica passes to serve (autoscaler/engine/membership.py), one step at a time.

Behaviours of `Membership` (the load balancer: register, check, promote, drain, delete) and
`DirectGate` (a worker) that mutation testing found no test holding: each test drives the gate
itself against the in-memory load balancer (engine_fakes.py) and names what a user or operator
sees, the calls made on the load balancer, the step's answer, the state other parts read, and
the log line that says why. Equivalent mutants: tests/unit/mutants/membership.md.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from autoscaler.engine import backoff as bo
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.membership import DirectGate, Look, Membership, lb_spec
from autoscaler.engine.ports import BackendError, BackendStat, LoadBalancerSpec, MembershipError, Replica, ServerStat
from autoscaler.engine.replicas import ReplicaView, Tracked, Unhealthy
from autoscaler.engine.state import Context, ServiceState
from engine_fakes import NETWORK, OLD, PASSED, PORT, SERVICE, World, name, service_config

A, B = name("a"), name("b")
DRAIN = 3.0  # service_config's drain_timeout_seconds
TIMEOUT = 10.0  # service_config's startup_timeout_seconds
HEALTHCHECK = {"test": ["CMD", "/bin/alive"]}


class Gate:
    """One service's gate with its own context and state, on the world's fakes."""

    def __init__(self, world: World, dry_run: bool = False, **config: Any) -> None:
        self.world = world
        self.config = service_config(**config)
        self.ctx = Context(SERVICE, NETWORK, world.telemetry, ServiceHealth(), world.clock.now, world.clock.time,
                           dry_run=dry_run)
        self.state = ServiceState(started_at=world.clock.now())
        self.membership = Membership(self.ctx, self.state, world.backend, world.lb_factory, world.clock.sleep)

    @property
    def now(self) -> float:
        return self.world.clock.now()

    def attach(self) -> Gate:
        self.membership.attach(self.config, 0)
        return self

    def look(self) -> Look:
        """What a pass sees now, without the fake's poll moving any check along."""
        servers = {n: s.stat() for n, s in self.world.lb.members.items()}
        return Look(BackendStat(0, 0, 0.0, None), servers, True)

    def step(self, replica: Replica, tracked: Tracked, look: Look | None = None, repair: bool = True) -> Any:
        return self.membership.step(self.config, replica, tracked, look or self.look(), self.now, repair)


def replica(replica_name: str = A, state: str = "running", ip: str | None = "10.0.0.7", port: int | None = PORT,
            leaving: bool = False, health: str | None = None) -> Replica:
    return Replica("c-" + replica_name, replica_name, SERVICE, state, ip, 1_700_000_000.0, port=port,
                   leaving=leaving, health=health)


def tracked(world: World, **fields: Any) -> Tracked:
    """An adopted replica, seen and created long ago unless told otherwise."""
    fields.setdefault("first_seen_at", world.clock.now() - OLD)
    return Tracked("c", created_at_wall=world.clock.time() - OLD, **fields)


def server(world: World, r: Replica, admin: str = "READY", check: str = PASSED, sessions: int = 0,
           address: str | None = None) -> ServerStat:
    """Puts a server for `r` in the load balancer; its stats as a look sees them."""
    world.lb.preset(r, admin, check, sessions, address)
    return world.lb.members[r.name].stat()


def listen(caplog: pytest.LogCaptureFixture, level: int) -> None:
    """From now on, the engine's records at `level` and above (none from before)."""
    caplog.set_level(level, "autoscaler.engine")
    caplog.clear()


def records(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[tuple[int, str, Any]]:
    """(level, message, replica field) of each engine record at `level` or above."""
    return [(r.levelno, r.getMessage(), getattr(r, "replica", "-")) for r in caplog.records
            if r.name == "autoscaler.engine" and r.levelno >= level]


def assert_service_field(caplog: pytest.LogCaptureFixture) -> None:
    assert all(getattr(r, "service", None) == SERVICE for r in caplog.records if r.name == "autoscaler.engine")


# --- set-up ----------------------------------------------------------------------------------------


def test_the_load_balancer_is_made_from_the_services_config(world: World) -> None:
    # Every setting of [load_balancer] reaches the container: a lost one would silently
    # run the default image, algorithm, node or retry timeout.
    gate = Gate(world, backend="swarm", load_balancer={
        "publish": "127.0.0.1:8081", "image": "haproxy:3.0", "algorithm": "leastconn", "node": "node-1",
        "per_try_timeout_seconds": 2,
    })
    gate.attach()
    assert world.backend.lb_specs == [LoadBalancerSpec(
        service=SERVICE, image="haproxy:3.0", network=NETWORK, publish_host="127.0.0.1", publish_port=8081,
        health_path="/healthz", algorithm="leastconn", node="node-1", per_try_timeout_seconds=2.0,
    )]


@pytest.mark.parametrize(("lb_state", "fresh", "word"), [("running", False, "adopted"), (None, True, "new")])
def test_set_up_says_whether_the_load_balancer_was_adopted_or_created(
    world: World, caplog: pytest.LogCaptureFixture, lb_state: str | None, fresh: bool, word: str
) -> None:
    # The first line an operator reads: which load balancer, and whether it was made just now.
    world.backend.lb_state = lb_state
    listen(caplog, logging.INFO)
    assert Gate(world).membership.attach(service_config(), 0) is fresh
    assert records(caplog) == [(logging.INFO, f"ready: load balancer autoscaler-{SERVICE}-lb ({word})", "-")]
    assert_service_field(caplog)


def test_a_dry_run_adopts_the_running_load_balancer_and_creates_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # It only looks for the service's running one: nothing is created, started or removed.
    gate = Gate(world, dry_run=True)
    listen(caplog, logging.INFO)
    assert gate.membership.attach(gate.config, 0) is False
    assert world.calls.entries == [("existing_load_balancer", SERVICE)]
    assert records(caplog) == [(logging.INFO, f"ready: load balancer autoscaler-{SERVICE}-lb (adopted)", "-")]
    gate.membership.remove_created()  # a failed start of a dry run removes nothing it adopted
    assert "remove_load_balancer" not in world.calls.ops()


def test_a_dry_run_without_a_load_balancer_stops_with_what_to_do(world: World) -> None:
    # The operator reads this at start-up: what failed, for which service, and the way out.
    world.backend.lb_state = None
    gate = Gate(world, dry_run=True)
    with pytest.raises(BackendError) as raised:
        gate.membership.attach(gate.config, 0)
    assert (raised.value.operation, raised.value.service) == ("setup", SERVICE)
    assert str(raised.value) == (
        f"docker setup for service '{SERVICE}': a dry run changes nothing, and this service has no running "
        "load balancer yet; run once without --dry-run to create it"
    )


def test_set_up_waits_for_a_new_load_balancers_api_only_when_asked(world: World) -> None:
    # wait_seconds 0: no wait at all, even for an API that does not answer yet.
    world.lb.down = True
    Gate(world).membership.attach(service_config(), 0)
    assert world.clock.sleeps == []
    # Under a second is still a wait: the API answers on the second poll.
    world.lb.down = False
    world.lb.unreachable_polls = 1
    Gate(world).membership.attach(service_config(), 0.5)
    assert world.clock.sleeps == [0.2] and world.lb.unreachable_polls == 0


def test_a_failed_start_removes_the_load_balancer_it_created_and_only_that(world: World, monkeypatch: Any) -> None:
    # A failed set-up leaves nothing half-made, and never removes a load balancer it adopted
    # (one that serves traffic now).
    removed: list[tuple[str, str]] = []
    monkeypatch.setattr(world.backend, "remove_load_balancer", lambda service, cid: removed.append((service, cid)))
    adopted = Gate(world).attach()
    adopted.membership.remove_created()
    assert removed == []
    world.backend.lb_state = None
    Gate(world).attach().membership.remove_created()
    assert removed == [(SERVICE, "lb-id")]


def test_a_gate_that_never_set_up_removes_no_load_balancer(world: World) -> None:
    # A look before set-up may bring the load balancer back; that one was not made by attach().
    world.backend.lb_state = None
    gate = Gate(world)
    gate.membership.look(gate.config, gate.now)
    assert world.backend.lb_state == "running"
    gate.membership.remove_created()
    assert "remove_load_balancer" not in world.calls.ops()


# --- the look --------------------------------------------------------------------------------------


def test_a_look_shows_the_backends_stats(world: World) -> None:
    # The backend's sessions and queue feed the policy's metrics; each server, its replica's view.
    gate = Gate(world).attach()
    r = world.adopt(A, sessions=4)
    look = gate.membership.look(gate.config, gate.now)
    assert look.backend == BackendStat(0, 4, 0.0, None) and look.up and not look.renewed
    assert look.server(r.name) == world.lb.members[A].stat() and look.server(B) is None


def test_a_load_balancer_brought_back_by_a_look_is_the_services_and_registers_every_replica_again(
    world: World, monkeypatch: Any
) -> None:
    # A load balancer whose container vanished is made again from the service's own spec (its
    # network, name and settings), and the new one knows no replica.
    gate = Gate(world).attach()
    created: list[LoadBalancerSpec] = []
    create = world.backend.create_load_balancer

    def recording_create(spec: LoadBalancerSpec) -> str:
        created.append(spec)
        return create(spec)

    monkeypatch.setattr(world.backend, "create_load_balancer", recording_create)
    t = tracked(world, registered_at=gate.now - 1)
    gate.state.tracked[A] = t
    world.backend.lb_state = None  # its container is gone
    world.lb.members.clear()

    look = gate.membership.look(gate.config, gate.now)

    assert created == [lb_spec(SERVICE, NETWORK, gate.config)]
    assert look.renewed and not look.up and look.servers is None
    # Registered again from scratch: a replica without an address has had its startup
    # timeout since it was first seen, and the new load balancer never saw it.
    no_address = replica(ip=None)
    assert gate.step(no_address, t, Look(None, {}, True)) == Unhealthy("check no address on the network")


# --- a replica this daemon started ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "lb_down", "registered"),
    [
        (replica(), False, True),
        (replica(state="created"), False, False),
        (replica(ip=None), False, False),
        (replica(), True, False),
    ],
    ids=["running-with-address", "not-running", "no-address", "load-balancer-down"],
)
def test_a_started_replica_enters_the_load_balancer_at_once_only_when_it_can(
    world: World, r: Replica, lb_down: bool, registered: bool
) -> None:
    # Registered in the same pass it started (no pass lost), but only with an address to send
    # traffic to and a load balancer that answers; the next pass's step does the rest.
    gate = Gate(world).attach()
    if lb_down:
        gate.ctx.health.lb_down_since = world.clock.time()
    gate.membership.started(gate.config, r, tracked(world), gate.now)
    assert world.calls.names("add_server") == ([A] if registered else [])


@pytest.mark.parametrize(("replica_port", "config_port", "address"),
                         [(8000, 9000, "10.0.0.7:8000"), (None, 9000, "10.0.0.7:9000")],
                         ids=["its-own-port-label", "no-label-the-configs-port"])
def test_a_replica_is_registered_at_its_address_and_port(
    world: World, replica_port: int | None, config_port: int, address: str
) -> None:
    # Its own port label wins (the config's port may have changed since it was made); with
    # health checks on, so that it serves only once its check passes.
    gate = Gate(world, port=config_port).attach()
    gate.membership.started(gate.config, replica(port=replica_port), tracked(world), gate.now)
    assert world.lb.members[A].address == address and world.lb.members[A].check_status == "INI"


def test_registering_is_logged_with_the_address(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # At debug: where the load balancer will send its traffic, for one looking into a replica.
    gate = Gate(world).attach()
    listen(caplog, logging.DEBUG)
    gate.membership.started(gate.config, replica(), tracked(world), gate.now)
    assert records(caplog) == [(logging.DEBUG, f"registered replica {A} (10.0.0.7:{PORT}); waiting for its check", A)]
    assert_service_field(caplog)


def test_the_startup_timeout_of_a_registered_replica_counts_from_its_registration(world: World) -> None:
    # An adopted replica that had to be registered (again) gets its full startup timeout in
    # the load balancer before it is called unhealthy.
    gate = Gate(world).attach()
    t = tracked(world)
    r = replica()
    gate.membership.started(gate.config, r, t, gate.now)
    world.clock.advance(TIMEOUT - 1)
    assert gate.step(r, t) == ReplicaView(r, "starting", world.lb.members[A].stat())
    world.clock.advance(2)
    assert gate.step(r, t) == Unhealthy("check INI")


def test_a_replica_that_serves_without_a_promotion_was_never_out_of_rotation(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Its set_ready's answer was lost (or someone set it ready by hand): it serves for the first
    # time, which is no "passes its check again".
    gate = Gate(world).attach()
    t, r = tracked(world), replica()
    gate.membership.started(gate.config, r, t, gate.now)
    world.lb.members[A].admin, world.lb.members[A].check_status = "READY", PASSED
    listen(caplog, logging.INFO)
    assert gate.step(r, t) == ReplicaView(r, "ready", world.lb.members[A].stat())
    assert records(caplog) == [] and (t.ready_since, t.unhealthy_since) == (gate.now, None)


# --- one step of a replica ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"ready_since": 1.0, "drain_deadline": 9.0}, "draining"),
        ({"ready_since": 1.0}, "ready"),
        ({"ready_since": 1.0, "unhealthy_since": 5.0}, "starting"),
        ({}, "starting"),
    ],
    ids=["draining", "ready", "out-of-rotation", "never-ready"],
)
def test_while_the_load_balancer_is_down_a_replica_keeps_what_was_last_known(
    world: World, fields: dict[str, float], state: str
) -> None:
    # While HAProxy restarts, the counts (and so the policy) go on from what was known.
    gate = Gate(world).attach()
    r = replica()
    assert gate.step(r, tracked(world, **fields), Look(None, None, False)) == ReplicaView(r, state, None)
    assert world.calls.entries == [("ensure_load_balancer", SERVICE)], "nothing changed"


@pytest.mark.parametrize("where", ["step", "progress"])
def test_a_replica_the_orchestrator_marks_for_removal_drains_first(
    world: World, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    # Swarm stops it soon: its sessions get the drain timeout to finish, and the log says why.
    gate = Gate(world).attach()
    r = replica(leaving=True)
    stat = server(world, r, sessions=2)
    t = tracked(world, ready_since=1.0)
    gate.state.tracked[A] = t
    listen(caplog, logging.INFO)
    if where == "step":
        assert gate.step(r, t, Look(None, {A: stat}, True)) == ReplicaView(r, "draining", stat)
    else:
        world.lb.sessions_drop_after = None
        assert gate.membership.progress(gate.config, gate.now, [r]) == []
    assert world.calls.names("set_drain") == [A] and t.drain_deadline == gate.now + DRAIN
    assert records(caplog) == [
        (logging.INFO, f"draining replica {A} (marked for removal by the orchestrator; 2 session(s))", A)]
    assert_service_field(caplog)


def test_a_replica_marked_for_removal_and_already_draining_is_not_drained_again(world: World) -> None:
    # A second drain would push its deadline out at every pass.
    gate = Gate(world).attach()
    r = replica(leaving=True)
    stat = server(world, r, admin="DRAIN", sessions=2)
    t = tracked(world, ready_since=1.0, drain_deadline=gate.now + 2)
    assert gate.step(r, t, Look(None, {A: stat}, True)) == ReplicaView(r, "draining", stat)
    assert world.calls.names("set_drain") == [] and t.drain_deadline == gate.now + 2


def test_a_dry_run_shows_a_draining_replica_and_touches_nothing(world: World) -> None:
    # A drain left by an earlier run: shown as draining (with its sessions), neither timed nor finished.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, admin="DRAIN", sessions=0)
    t = tracked(world, ready_since=1.0)
    assert gate.step(r, t, repair=False) == ReplicaView(r, "draining", stat)
    assert t.drain_deadline is None and A in world.lb.members


def test_a_draining_replica_with_sessions_keeps_draining_until_its_deadline(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # drain_timeout_seconds is what its sessions get, no less and no more; the one cut is a warning.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, admin="DRAIN", sessions=1)
    t = tracked(world, ready_since=1.0, drain_deadline=gate.now + DRAIN)
    assert gate.step(r, t) == ReplicaView(r, "draining", stat)
    listen(caplog, logging.INFO)
    world.clock.advance(DRAIN)  # at the deadline exactly: closed
    assert gate.step(r, t) == "drained"
    assert world.lb.sessions_at_delete == {A: 1}, "its last session was closed"
    assert records(caplog) == [(logging.WARNING, f"drain timeout (3s) for {A}: closing 1 session(s)", A)]
    assert_service_field(caplog)


def test_progress_closes_a_drain_at_its_deadline(world: World) -> None:
    # Between passes too: a drain ends at its deadline, not at the next pass.
    gate = Gate(world).attach()
    r = replica()
    server(world, r, admin="DRAIN", sessions=2)
    world.lb.members[A].drains_in = None
    gate.state.tracked[A] = tracked(world, ready_since=1.0, drain_deadline=gate.now + DRAIN)
    world.clock.advance(DRAIN)
    assert gate.membership.progress(gate.config, gate.now, []) == [A]
    assert world.lb.sessions_at_delete == {A: 2}


def test_a_draining_replica_whose_server_is_gone_is_drained(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Nothing left to close (no session cut, no warning): the target stops the replica.
    gate = Gate(world).attach()
    listen(caplog, logging.INFO)
    t = tracked(world, ready_since=1.0, drain_deadline=gate.now + DRAIN)
    assert gate.step(replica(), t, Look(None, {}, True)) == "drained"
    assert "delete_server" not in world.calls.ops() and records(caplog) == []


def test_a_drained_server_that_got_a_connection_since_the_look_is_deleted_at_a_later_step(world: World) -> None:
    # The look saw no session, the load balancer has one now: deleting it without force would
    # cut it; the replica is "gone" this pass (not stopped) and the next step tries again.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, admin="DRAIN", sessions=0)
    world.lb.members[A].sessions_current = 1
    t = tracked(world, ready_since=1.0, drain_deadline=gate.now + DRAIN)
    assert gate.step(r, t, Look(None, {A: stat}, True)) == "gone"
    assert A in world.lb.members and gate.state.in_flight.deleting(A)


def test_a_drain_whose_delete_fails_is_finished_at_a_later_step(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # The runtime API fails: the replica is not stopped while its server may still get traffic.
    gate = Gate(world).attach()
    r = replica()
    look = Look(None, {A: server(world, r, admin="DRAIN", sessions=0)}, True)
    world.lb.down = True
    listen(caplog, logging.INFO)
    assert gate.step(r, tracked(world, ready_since=1.0, drain_deadline=gate.now + DRAIN), look) == "gone"
    assert records(caplog) == [(logging.WARNING, "haproxy del_server: runtime API: connection refused", A)]
    assert_service_field(caplog)


def test_a_replica_at_another_address_is_registered_again_cutting_what_the_old_one_held(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # The old address is another container's (or nobody's): its sessions are not this replica's.
    gate = Gate(world, port=9000).attach()
    r = replica(port=None)
    server(world, r, sessions=2, address="10.0.0.99:9000")
    listen(caplog, logging.INFO)
    assert gate.step(r, tracked(world, ready_since=1.0)) == ReplicaView(r, "starting", None)
    assert world.lb.sessions_at_delete == {A: 2} and world.lb.members[A].address == "10.0.0.7:9000"
    assert records(caplog) == [(logging.INFO, f"replica {A} is not in the load balancer: registering it", A)]
    assert not gate.state.in_flight.deleting(A)


def test_a_replica_at_its_address_and_port_is_not_registered_again(world: World) -> None:
    # A replica without a port label is at the config's port: registering it again would cut it.
    gate = Gate(world, port=9000).attach()
    r = replica(port=None)
    stat = server(world, r, address="10.0.0.7:9000")
    assert gate.step(r, tracked(world, ready_since=1.0)) == ReplicaView(r, "ready", stat)
    assert world.calls.names("add_server") == []


def test_a_server_deleted_to_register_a_replica_again_starts_a_new_wait_for_its_next_delete(world: World) -> None:
    # The delete at the re-registration is done: a later delete of the new server (a replica that
    # failed) waits for its connections from then, not from the first one.
    gate = Gate(world).attach()
    r = replica()
    server(world, r, address="10.0.0.99:8000")
    gate.step(r, tracked(world))
    world.clock.advance(DRAIN + 1)
    world.lb.members[A].sessions_current = 2
    gate.membership.look(gate.config, gate.now)
    gate.membership.release(gate.config, A, gate.now)
    assert A in world.lb.members, "not cut: its sessions get the drain timeout"


def test_a_failed_delete_at_re_registration_still_lets_a_later_delete_wait_out_its_connections(world: World) -> None:
    # The first try of a delete is remembered with its time, whatever the try that made it.
    gate = Gate(world).attach()
    r = replica()
    look = Look(None, {A: server(world, r, address="10.0.0.99:8000")}, True)
    world.lb.down = True
    assert gate.step(r, tracked(world), look) == ReplicaView(r, "starting", None)
    world.lb.down = False
    world.lb.members[A].sessions_current = 2
    world.clock.advance(1)
    gate.membership.sweep(gate.config, gate.look(), set(), gate.now)
    assert A in world.lb.members, "busy: waits"
    world.clock.advance(DRAIN)
    gate.membership.sweep(gate.config, gate.look(), set(), gate.now)
    assert world.lb.sessions_at_delete == {A: 2}, "forced once the drain timeout passed since the first try"


def test_a_paused_replica_leaves_rotation_at_once_and_times_out_from_its_pause(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Frozen, it accepts connections and answers none: out now, replaced if it stays frozen
    # for the startup timeout counted from the first pass that saw it paused.
    gate = Gate(world).attach()
    r = replica(state="paused")
    stat = server(world, r)
    t = tracked(world, ready_since=1.0)
    listen(caplog, logging.INFO)
    assert gate.step(r, t) == ReplicaView(r, "starting", stat)
    assert world.calls.names("set_health_down") == [A] and t.unhealthy_since == gate.now
    assert records(caplog) == [
        (logging.INFO, f"replica {A} is paused: out of rotation until it passes its check again", A)]
    world.clock.advance(TIMEOUT / 2)
    world.lb.members[A].forced_down = False  # still UP on the next look: set down again
    gate.step(r, t)
    world.clock.advance(TIMEOUT / 2 + 1)
    world.lb.members[A].forced_down = True
    assert gate.step(r, t) == Unhealthy("paused")


def test_a_replica_serving_again_is_back_in_rotation(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Its check passes again: counted ready again, and the operator reads that it recovered.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r)
    t = tracked(world, ready_since=1.0, unhealthy_since=gate.now - 1)
    listen(caplog, logging.INFO)
    assert gate.step(r, t) == ReplicaView(r, "ready", stat)
    assert records(caplog) == [(logging.INFO, f"replica {A} passes its check again: serving", A)]
    # Ready again for every part: shown ready even while the load balancer is down next.
    assert gate.step(r, t, Look(None, None, False)) == ReplicaView(r, "ready", None)
    caplog.clear()
    gate.step(r, t)
    assert records(caplog) == [], "said once"


def test_a_replica_whose_check_passed_waits_for_promotion_in_a_dry_run(world: World) -> None:
    # A dry run changes nothing: shown starting, with its server, and not set ready.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, admin="MAINT")
    assert gate.step(r, tracked(world), repair=False) == ReplicaView(r, "starting", stat)
    assert world.calls.names("set_ready") == []


def test_a_starting_replica_shows_its_server(world: World) -> None:
    # Its server's sessions and check are what scale-in and `status` read of it.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, admin="MAINT", check="INI")
    world.clock.advance(1)
    assert gate.step(r, tracked(world, first_seen_at=gate.now, registered_at=gate.now)) == \
        ReplicaView(r, "starting", stat)


def test_a_ready_replica_that_fails_its_check_gets_the_startup_timeout_from_then(world: World) -> None:
    # An old replica is not replaced at its first failed check: it has the timeout to recover.
    gate = Gate(world).attach()
    r = replica()
    server(world, r, check="L4CON")
    t = tracked(world, ready_since=1.0)
    first = gate.step(r, t)
    assert isinstance(first, ReplicaView) and first.state == "starting" and t.unhealthy_since == gate.now
    world.clock.advance(TIMEOUT + 1)
    assert gate.step(r, t) == Unhealthy("check L4CON")


@pytest.mark.parametrize(
    ("state", "ip", "check", "why"),
    [
        ("running", "10.0.0.7", "L4CON", "check L4CON"),
        ("running", "10.0.0.7", "", "check not run"),
        ("running", None, None, "check no address on the network"),
        ("paused", "10.0.0.7", "L4TOUT", "paused"),
    ],
    ids=["check-failed", "check-not-run", "no-address", "paused"],
)
def test_a_replica_out_of_rotation_past_its_startup_timeout_is_unhealthy_with_its_reason(
    world: World, state: str, ip: str | None, check: str | None, why: str
) -> None:
    # The reason is what the failure line and `status` show the operator.
    gate = Gate(world).attach()
    r = replica(state=state, ip=ip)
    if check is not None:
        server(world, r, admin="MAINT", check=check)
    assert gate.step(r, tracked(world)) == Unhealthy(why)


# --- scale-in ------------------------------------------------------------------------------------


def test_a_starting_replica_leaves_the_load_balancer_at_once_on_scale_in(world: World) -> None:
    # It serves nobody: no drain, its server goes now and the target removes it.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, admin="MAINT", check="INI")
    assert gate.membership.drain(gate.config, ReplicaView(r, "starting", stat), tracked(world), gate.now) is False
    assert world.calls.names("delete_server") == [A] and world.calls.names("set_drain") == []
    assert gate.membership.stop_at_once(ReplicaView(r, "starting", stat))


def test_a_starting_replica_not_in_the_load_balancer_is_removed_without_a_delete(world: World) -> None:
    # Nothing to take out of the load balancer (a delete would fail and log a warning).
    gate = Gate(world).attach()
    assert gate.membership.drain(gate.config, ReplicaView(replica(), "starting", None), tracked(world), gate.now) \
        is False
    assert "delete_server" not in world.calls.ops()


def test_a_starting_replica_whose_server_holds_connections_waits_for_them_on_scale_in(world: World) -> None:
    # Connections HAProxy still holds on it (retries elsewhere) are not cut at the first try.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, admin="MAINT", check="INI", sessions=1)
    gate.membership.drain(gate.config, ReplicaView(r, "starting", stat), tracked(world), gate.now)
    assert A in world.lb.members and gate.state.in_flight.deleting(A)


@pytest.mark.parametrize(("with_server", "sessions"), [(True, 2), (False, 0)], ids=["server", "no-server-seen"])
def test_a_ready_replica_drains_on_scale_in_and_says_how_many_sessions_it_holds(
    world: World, caplog: pytest.LogCaptureFixture, with_server: bool, sessions: int
) -> None:
    # A serving replica finishes its sessions before it stops (a server the look did not see
    # counts none); the log says how many it had.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, sessions=2)
    t = tracked(world, ready_since=1.0)
    listen(caplog, logging.INFO)
    view = ReplicaView(r, "ready", stat if with_server else None)
    assert gate.membership.drain(gate.config, view, t, gate.now) is True
    assert world.calls.names("set_drain") == [A] and t.drain_deadline == gate.now + DRAIN
    assert records(caplog) == [(logging.INFO, f"draining replica {A} ({sessions} session(s))", A)]
    assert_service_field(caplog)
    assert not gate.membership.stop_at_once(view), "it drains first"


def test_a_drain_the_load_balancer_refuses_sets_no_deadline_and_is_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Not draining in HAProxy: no deadline would end it; the failure is a warning, retried later.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, sessions=2)
    world.lb.down = True
    t = tracked(world, ready_since=1.0)
    listen(caplog, logging.INFO)
    assert gate.membership.drain(gate.config, ReplicaView(r, "ready", stat), t, gate.now) is True
    assert t.drain_deadline is None
    assert records(caplog) == [(logging.WARNING, "haproxy set_drain: runtime API: connection refused", "-")]
    assert_service_field(caplog)


def test_a_draining_replica_is_not_stopped_at_once(world: World) -> None:
    # Only a ready replica is spared a stop at once (it drains); a draining one has had its drain.
    assert Gate(world).membership.stop_at_once(ReplicaView(replica(), "draining", None))


# --- failed replicas and servers without a replica --------------------------------------------------


def test_a_failed_replica_leaves_only_a_server_the_last_look_saw(world: World) -> None:
    # One registered since the look (by this pass) is left to the next pass's sweep.
    gate = Gate(world).attach()
    gate.membership.release(gate.config, A, gate.now)  # before any look
    gate.membership.look(gate.config, gate.now)
    server(world, replica())
    gate.membership.release(gate.config, A, gate.now)
    assert A in world.lb.members
    gate.membership.look(gate.config, gate.now)
    gate.membership.release(gate.config, A, gate.now)
    assert A not in world.lb.members


def test_a_dry_run_releases_and_sweeps_nothing(world: World) -> None:
    # A dry run changes nothing in the load balancer.
    gate = Gate(world, dry_run=True).attach()
    server(world, replica())
    look = gate.membership.look(gate.config, gate.now)
    gate.membership.release(gate.config, A, gate.now)
    gate.membership.sweep(gate.config, look, set(), gate.now)
    assert A in world.lb.members


def test_a_sweep_while_the_load_balancer_is_down_does_nothing(world: World) -> None:
    # No servers seen: none can be found without a replica.
    gate = Gate(world).attach()
    gate.membership.sweep(gate.config, Look(None, None, False), set(), gate.now)
    assert "delete_server" not in world.calls.ops()


def test_the_server_of_a_replica_being_started_is_not_swept(world: World) -> None:
    # A start in flight is not listed yet; its server is not an orphan.
    gate = Gate(world).attach()
    server(world, replica())
    gate.state.in_flight.expect_start(A)
    gate.membership.sweep(gate.config, gate.look(), set(), gate.now)
    assert A in world.lb.members


def test_a_server_without_a_replica_is_removed_and_said_once(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # An orphan server goes, said once even while its connections make it wait.
    gate = Gate(world).attach()
    server(world, replica(), sessions=1)
    listen(caplog, logging.INFO)
    gate.membership.sweep(gate.config, gate.look(), set(), gate.now)
    assert records(caplog) == [
        (logging.INFO, f"server {A} has no replica: removing it from the load balancer", A)]
    assert_service_field(caplog)
    world.clock.advance(1)
    gate.membership.sweep(gate.config, gate.look(), set(), gate.now)  # still busy: tried again, not said again
    assert len(caplog.records) == 1 and A in world.lb.members


# --- between passes ---------------------------------------------------------------------------------


def _counting_polls(world: World, monkeypatch: Any) -> list[int]:
    polls: list[int] = []
    servers = world.lb.servers

    def counting_servers() -> dict[str, ServerStat]:
        polls.append(1)
        return servers()

    monkeypatch.setattr(world.lb, "servers", counting_servers)
    return polls


def test_progress_asks_the_load_balancer_nothing_when_nothing_is_in_transition(world: World, monkeypatch: Any) -> None:
    # The progress step runs four times a second: it costs a stats poll only while a replica
    # waits for its check or drains, and a replica being removed waits for nothing.
    gate = Gate(world)
    gate.state.tracked[A] = tracked(world)  # never ready: in transition, but no load balancer yet
    assert gate.membership.progress(gate.config, gate.now, []) == []
    gate.attach()
    polls = _counting_polls(world, monkeypatch)
    gate.state.tracked[A] = tracked(world, ready_since=1.0)
    gate.state.tracked[B] = tracked(world)
    gate.state.in_flight.expect_removal(B)
    assert gate.membership.progress(gate.config, gate.now, []) == []
    assert polls == []


def test_progress_leaves_a_replica_being_removed_alone(world: World) -> None:
    # Its removal is in the target's hands; progress does not delete its server under it.
    gate = Gate(world).attach()
    server(world, replica(), admin="DRAIN")
    gate.state.tracked[A] = tracked(world, ready_since=1.0, drain_deadline=gate.now + DRAIN)
    gate.state.in_flight.expect_removal(A)
    gate.state.tracked[B] = tracked(world)  # in transition: progress polls
    assert gate.membership.progress(gate.config, gate.now, []) == []
    assert A in world.lb.members


def test_progress_promotes_a_replica_after_one_the_load_balancer_does_not_know(world: World) -> None:
    # One replica without a server does not hold back the others' promotion.
    gate = Gate(world).attach()
    gate.state.tracked[A] = tracked(world)  # no server (not registered yet)
    server(world, replica(B), admin="MAINT")
    gate.state.tracked[B] = tracked(world)
    gate.membership.progress(gate.config, gate.now, [])
    assert world.calls.names("set_ready") == [B]


# --- promotion ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("started_by_us", "suffix"), [(True, " (4.5s after its start)"), (False, "")], ids=["started", "adopted"])
def test_a_promotion_is_logged_with_the_time_since_the_start(
    world: World, caplog: pytest.LogCaptureFixture, started_by_us: bool, suffix: str
) -> None:
    # How long a start takes to serve is what an operator tunes startup_timeout_seconds from.
    gate = Gate(world).attach()
    r = replica()
    stat = server(world, r, admin="MAINT")
    t = tracked(world, first_seen_at=gate.now - 4.5, registered_at=gate.now - 2, started_by_us=started_by_us)
    listen(caplog, logging.INFO)
    assert gate.step(r, t) == ReplicaView(r, "ready", stat)
    assert world.calls.names("set_ready") == [A] and (t.ready_since, t.unhealthy_since) == (gate.now, None)
    assert records(caplog) == [(logging.INFO, f"replica {A} passed its health check: serving{suffix}", A)]
    assert_service_field(caplog)


@pytest.mark.parametrize(
    ("backoff", "first_seen", "recovered", "noted"),
    [
        (bo.Backoff(2, 900.0, 950.0), 960.0, True, True),  # started after the last failure: recovery
        (bo.Backoff(2, 900.0, 950.0), 940.0, False, False),  # started before it: no recovery
        (bo.Backoff(), 960.0, False, False),  # no backoff
        (bo.Backoff(2, 900.0, 950.0, recovered_at=990.0), 960.0, True, False),  # recovered already
    ],
    ids=["recovery", "started-before-the-failure", "no-backoff", "recovered-already"],
)
def test_a_promotion_after_start_failures_resumes_batched_starts(
    world: World, caplog: pytest.LogCaptureFixture, backoff: bo.Backoff, first_seen: float, recovered: bool,
    noted: bool,
) -> None:
    # The backoff allows one probe start at a time until a replica started after the last failure
    # serves; then batches again, said once.
    gate = Gate(world).attach()
    gate.state.backoff = backoff
    r = replica()
    server(world, r, admin="MAINT")
    listen(caplog, logging.INFO)
    gate.step(r, tracked(world, first_seen_at=first_seen))
    assert (gate.state.backoff.recovered_at is not None) == recovered
    if backoff.recovered_at is None and recovered:
        assert gate.state.backoff.recovered_at == gate.now
    note = (logging.INFO, "a replica started after the last failure is ready: starting in batches again", None)
    assert (note in records(caplog)) == noted


def test_a_promotion_the_load_balancer_refuses_is_tried_again(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Not counted ready while HAProxy does not send it traffic; the failure is a warning.
    gate = Gate(world).attach()
    r = replica()
    look = Look(None, {A: server(world, r, admin="MAINT")}, True)
    world.lb.down = True
    t = tracked(world)
    listen(caplog, logging.INFO)
    gate.step(r, t, look)
    assert t.ready_since is None
    assert records(caplog) == [(logging.WARNING, "haproxy set_ready: runtime API: connection refused", "-")]
    assert_service_field(caplog)


# --- a worker: DirectGate ---------------------------------------------------------------------------


class Worker:
    def __init__(self, world: World, healthcheck: bool = True) -> None:
        self.world = world
        self.config = service_config(load_balancer=None, port=None, healthcheck=HEALTHCHECK if healthcheck else None)
        self.ctx = Context(SERVICE, "bridge", world.telemetry, ServiceHealth(), world.clock.now, world.clock.time)
        self.state = ServiceState(started_at=world.clock.now())
        self.gate = DirectGate(self.ctx, self.state)

    def step(self, r: Replica, t: Tracked, repair: bool = True) -> Any:
        return self.gate.step(self.config, r, t, Look(None, None, True), self.world.clock.now(), repair)


@pytest.mark.parametrize(
    ("started_by_us", "suffix"), [(True, " (4.5s after its start)"), (False, "")], ids=["started", "adopted"])
def test_a_worker_replica_healthy_for_the_first_time_is_logged_with_the_time_since_its_start(
    world: World, caplog: pytest.LogCaptureFixture, started_by_us: bool, suffix: str
) -> None:
    worker = Worker(world)
    r = replica(health="healthy")
    t = tracked(world, first_seen_at=world.clock.now() - 4.5, started_by_us=started_by_us)
    listen(caplog, logging.INFO)
    assert worker.step(r, t) == ReplicaView(r, "ready", None)
    assert records(caplog) == [(logging.INFO, f"replica {A} is healthy: ready{suffix}", A)]
    assert_service_field(caplog)


def test_a_worker_replica_started_after_the_last_failure_recovers_the_start_backoff(world: World) -> None:
    # As with a load balancer: a healthy replica started after the last failure ends the probing.
    worker = Worker(world)
    now = world.clock.now()
    worker.state.backoff = bo.Backoff(2, now - 10, now - 50)
    worker.step(replica(health="healthy"), tracked(world, first_seen_at=now - 40))
    assert worker.state.backoff.recovered_at == now


def test_a_worker_replica_healthy_again_says_so_once(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Back from unhealthy: counted ready again, said once.
    worker = Worker(world)
    r = replica(health="healthy")
    t = tracked(world, ready_since=1.0, unhealthy_since=5.0)
    listen(caplog, logging.INFO)
    worker.step(r, t)
    worker.step(r, t)
    assert records(caplog) == [(logging.INFO, f"replica {A} is healthy again", A)] and t.unhealthy_since is None


@pytest.mark.parametrize(("health", "shown"), [("unhealthy", "unhealthy"), (None, "not checked")])
def test_a_worker_replica_that_stops_being_healthy_says_what_docker_says(
    world: World, caplog: pytest.LogCaptureFixture, health: str | None, shown: str
) -> None:
    # A ready replica that is no longer: the log says what Docker reports, and its timeout starts.
    worker = Worker(world)
    r = replica(health=health)
    t = tracked(world, ready_since=1.0)
    listen(caplog, logging.INFO)
    assert worker.step(r, t) == ReplicaView(r, "starting", None)
    assert records(caplog) == [(logging.INFO, f"replica {A} is {shown}", A)] and t.unhealthy_since == world.clock.now()


@pytest.mark.parametrize(
    ("state", "health", "why"),
    [
        ("restarting", None, "restarting"),
        ("running", "unhealthy", "health unhealthy"),
        ("running", None, "no health status, but a healthcheck is configured"),
    ],
    ids=["not-running", "unhealthy", "no-health-status"],
)
def test_a_worker_replica_never_healthy_past_its_startup_timeout_is_unhealthy_with_its_reason(
    world: World, state: str, health: str | None, why: str
) -> None:
    # The reason is what the failure line and `status` show the operator.
    assert Worker(world).step(replica(state=state, health=health), tracked(world)) == Unhealthy(why)


def test_a_worker_replica_not_healthy_yet_is_starting(world: World) -> None:
    # Within its startup timeout: counted as on its way, not ready and not failed.
    r = replica(health="starting")
    assert Worker(world).step(r, tracked(world, first_seen_at=world.clock.now())) == ReplicaView(r, "starting", None)


def test_a_start_whose_new_load_balancer_never_answers_leaves_nothing_behind(world: World, monkeypatch: Any) -> None:
    # Set-up created the network and the load balancer, whose API then never answered within
    # the wait: the failed start removes the load balancer it made, then the network (which
    # Docker refuses to remove while a container is still attached to it).
    world.backend.lb_state = None
    world.lb.down = True
    monkeypatch.setattr(world.backend, "ensure_network", lambda service, name: world.calls.add("ensure_network", name) or True)
    controller = world.controller(setup=False)
    with pytest.raises(MembershipError):
        controller.setup(5)
    ops = [op for op, _ in world.calls.entries]
    assert ops.index("ensure_load_balancer") < ops.index("remove_load_balancer") < ops.index("remove_network")
    assert ops.count("remove_load_balancer") == 1
