"""ServiceController with in-memory fakes of its two protocols and a fake clock.

The fakes behave like the real ones (autoscaler/docker/backend.py, autoscaler/lb/haproxy.py):
a new HAProxy server starts in MAINT and its check reports "INI" until it passes, which here
happens after a set number of stats polls; set_ready makes it "UP", set_drain "DRAIN", and
delete_server removes it. The fake sleep advances the fake clocks, so nothing really waits.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import LoadBalancer, LoadBalancerSpec, Replica, ReplicaSpec
from autoscaler.docker.stats import StatsReading
from autoscaler.engine.controller import HEALTH_POLL_SECONDS, ReplicaView, ServiceController, choose_victims
from autoscaler.lb.haproxy import BackendStat, HAProxyError, ServerStat
from autoscaler.telemetry import Telemetry

SERVICE = "web"
NETWORK = "autoscaler-web"
PORT = 8000
MiB = 1024**2
MEMORY_LIMIT = 256 * MiB
CPU_LIMIT = 0.5
OLD = 3600.0  # age of adopted replicas: far beyond every timeout
PASSED = "L7OK"


def service_config(**overrides: Any) -> ServiceConfig:
    policy = {"initialization_seconds": 0, "scale_down_stabilization_seconds": 0, "drain_timeout_seconds": 3}
    policy.update(overrides.pop("policy", {}))
    data: dict[str, Any] = {
        "image": "demo:latest",
        "port": PORT,
        "cpu_limit": CPU_LIMIT,
        "memory_limit": "256MiB",
        "min_replicas": 1,
        "max_replicas": 6,
        "startup_timeout_seconds": 10,
        "load_balancer": {"publish": "127.0.0.1:8080"},
        "policy": policy,
        **overrides,
    }
    return ServiceConfig.model_validate(data)


class FakeClock:
    """Monotonic and wall clock that only move when told to, or when the controller sleeps."""

    def __init__(self) -> None:
        self.monotonic = 1000.0
        self.wall = 1_800_000_000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.monotonic

    def time(self) -> float:
        return self.wall

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds


class CallLog:
    """(operation, replica name) of every state-changing call to either fake, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # scale-out and scale-in call the fakes from a pool

    def add(self, operation: str, name: str) -> None:
        with self._lock:
            self.entries.append((operation, name))

    def of(self, name: str) -> list[str]:
        return [op for op, n in self.entries if n == name]

    def names(self, operation: str) -> list[str]:
        return [n for op, n in self.entries if op == operation]

    def ops(self) -> set[str]:
        return {op for op, _ in self.entries}

    def index(self, operation: str, name: str) -> int:
        return self.entries.index((operation, name))


class FakeBackend:
    """ReplicaBackend in memory. CPU is burnt at a constant rate per replica (cores)."""

    def __init__(self, clock: FakeClock, calls: CallLog) -> None:
        self.clock = clock
        self.calls = calls
        self.replicas: dict[str, Replica] = {}  # by id
        self.specs: list[ReplicaSpec] = []
        self.lb_specs: list[LoadBalancerSpec] = []
        self.cpu_cores: dict[str, float] = {}  # by name
        self.default_cpu_cores = 0.3  # 60 % of CPU_LIMIT: the default target, so "hold"
        self.memory_bytes = 64 * MiB
        self.stats_available = True
        self._cpu_ns: dict[str, float] = {}
        self._last_read: dict[str, float] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def _new(self, name: str | None, state: str, created_at: float) -> Replica:
        with self._lock:
            self._seq += 1
            seq = self._seq
        replica = Replica(
            id=f"{seq:064x}",
            name=name or f"autoscaler-{SERVICE}-new{seq}",
            service=SERVICE,
            state=state,
            ip=f"10.0.0.{seq}",
            created_at_seconds=created_at,
        )
        self.replicas[replica.id] = replica
        return replica

    def add(self, name: str, *, state: str = "running", age_seconds: float = OLD) -> Replica:
        """A replica that exists before the controller starts (to be adopted)."""
        return self._new(name, state, self.clock.wall - age_seconds)

    def by_name(self, name: str) -> Replica:
        return next(r for r in self.replicas.values() if r.name == name)

    def kill(self, name: str) -> None:
        replica = self.by_name(name)
        self.replicas[replica.id] = replace(replica, state="exited")

    @property
    def running(self) -> list[str]:
        return sorted(r.name for r in self.replicas.values() if r.running)

    # --- ReplicaBackend ---

    def ensure_network(self, service: str, name: str) -> None:
        self.calls.add("ensure_network", name)

    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> tuple[LoadBalancer, bool]:
        self.lb_specs.append(spec)
        self.calls.add("ensure_load_balancer", spec.service)
        lb = LoadBalancer("lb-id", f"autoscaler-{spec.service}-lb", "127.0.0.1", 40000 + len(self.lb_specs),
                          "127.0.0.1", 41000, f"{spec.publish_host}:{spec.publish_port}")
        return lb, len(self.lb_specs) == 1

    def existing_load_balancer(self, service: str) -> LoadBalancer | None:
        self.calls.add("existing_load_balancer", service)
        return LoadBalancer("lb-id", f"autoscaler-{service}-lb", "127.0.0.1", 40001, "127.0.0.1", 41000, "127.0.0.1:8080")

    def list_replicas(self, service: str, network: str) -> list[Replica]:
        assert (service, network) == (SERVICE, NETWORK)
        return sorted(self.replicas.values(), key=lambda r: (r.created_at_seconds, r.name))

    def start_replica(self, spec: ReplicaSpec) -> Replica:
        self.specs.append(spec)
        replica = self._new(None, "running", self.clock.wall)
        self.calls.add("start_replica", replica.name)
        return replica

    def remove_replica(self, service: str, container_id: str, stop_timeout_seconds: int) -> None:
        replica = self.replicas.pop(container_id, None)  # the real one ignores a vanished container
        self.calls.add("remove_replica", replica.name if replica else container_id)

    def read_stats(self, service: str, container_ids: list[str]) -> dict[str, StatsReading | None]:
        result: dict[str, StatsReading | None] = {}
        for cid in container_ids:
            replica = self.replicas.get(cid)
            if replica is None or not self.stats_available:
                result[cid] = None
                continue
            now = self.clock.wall
            cores = self.cpu_cores.get(replica.name, self.default_cpu_cores)
            elapsed = now - self._last_read.get(cid, replica.created_at_seconds)
            self._cpu_ns[cid] = self._cpu_ns.get(cid, 0.0) + cores * elapsed * 1e9
            self._last_read[cid] = now
            result[cid] = StatsReading(
                cpu_total_ns=round(self._cpu_ns[cid]),
                system_cpu_ns=None,  # like cgroup readings without a host counter: wall time is used
                online_cpus=2,
                read_at_seconds=now,
                memory_used_bytes=self.memory_bytes,
                memory_limit_bytes=MEMORY_LIMIT,
            )
        return result


@dataclass
class FakeServer:
    name: str
    address: str
    admin: str = "MAINT"  # MAINT | READY | DRAIN: the state the runtime API sets
    health: bool = False
    check_status: str = ""  # "" until health checks are enabled, then INI until the first result
    passes_in: int | None = None  # polls until the check passes; None: it never does
    sessions_current: int = 0
    sessions_total: int = 0
    drains_in: int | None = None  # polls after set_drain until the sessions end; None: never

    @property
    def check_passed(self) -> bool:
        return self.check_status in ("L7OK", "L6OK", "L4OK")

    @property
    def status(self) -> str:
        if self.admin == "MAINT":
            return "MAINT"
        if self.admin == "DRAIN":
            return "DRAIN"
        return "UP" if self.check_passed else "DOWN"

    def stat(self) -> ServerStat:
        return ServerStat(self.name, self.address, self.status, self.check_status, self.sessions_current,
                          self.sessions_total, 0.0, None, 0, 0)


class FakeLoadBalancer:
    """LoadBalancerAPI in memory. Every look at the stats is one health-check interval."""

    def __init__(self, calls: CallLog) -> None:
        self.calls = calls
        self.members: dict[str, FakeServer] = {}
        self.checks_pass_after: int | None = 2  # for servers added from now on
        self.sessions_drop_after: int | None = 2  # for servers drained from now on
        self.unreachable_polls = 0  # the next N stats reads fail, as during a restart
        self.ready_before_check: list[str] = []
        self.sessions_at_delete: dict[str, int] = {}
        self._lock = threading.Lock()

    def preset(self, replica: Replica, admin: str = "READY", check: str = PASSED, sessions: int = 0,
               address: str | None = None) -> None:
        """A server a previous run of the daemon registered."""
        self.members[replica.name] = FakeServer(
            replica.name, address or f"{replica.ip}:{PORT}", admin, health=True, check_status=check,
            sessions_current=sessions, sessions_total=sessions,
        )

    def restart(self) -> None:
        """HAProxy restarted: the runtime API is gone for a moment and every dynamic server too."""
        self.members.clear()
        self.unreachable_polls = 1

    def status(self, name: str) -> str:
        return self.members[name].status

    def _server(self, operation: str, name: str) -> FakeServer:
        server = self.members.get(name)
        if server is None:
            raise HAProxyError(operation, f"{name}: 'No such server.'")
        return server

    def _poll(self) -> None:
        if self.unreachable_polls:
            self.unreachable_polls -= 1
            raise HAProxyError("show_stat", "runtime API: connection refused")
        with self._lock:
            for server in self.members.values():
                if server.health and not server.check_passed:
                    if server.passes_in is None:
                        server.check_status = "L4CON"
                    else:
                        server.passes_in -= 1
                        server.check_status = PASSED if server.passes_in <= 0 else "INI"
                if server.admin == "DRAIN" and server.drains_in is not None:
                    server.drains_in -= 1
                    if server.drains_in <= 0:
                        server.sessions_current = 0

    # --- LoadBalancerAPI ---

    def servers(self) -> dict[str, ServerStat]:
        self._poll()
        return {name: s.stat() for name, s in self.members.items()}

    def snapshot(self) -> tuple[BackendStat, dict[str, ServerStat]]:
        servers = self.servers()
        sessions = sum(s.sessions_current for s in servers.values())
        return BackendStat(0, sessions, 0.0, None), servers

    def add_server(self, name: str, address: str, port: int) -> None:
        if name in self.members:
            raise HAProxyError("add_server", f"{name}: 'Already exists a server with the same name.'")
        self.members[name] = FakeServer(name, f"{address}:{port}", passes_in=self.checks_pass_after)
        self.calls.add("add_server", name)

    def enable_health(self, name: str) -> None:
        server = self._server("enable_health", name)
        server.health = True
        server.check_status = "INI"
        self.calls.add("enable_health", name)

    def set_ready(self, name: str) -> None:
        server = self._server("set_ready", name)
        if not server.check_passed:
            self.ready_before_check.append(name)
        server.admin = "READY"
        self.calls.add("set_ready", name)

    def set_drain(self, name: str) -> None:
        server = self._server("set_drain", name)
        server.admin = "DRAIN"
        server.drains_in = self.sessions_drop_after
        self.calls.add("set_drain", name)

    def delete_server(self, name: str) -> None:
        server = self._server("del_server", name)
        self.sessions_at_delete[name] = server.sessions_current
        del self.members[name]
        self.calls.add("delete_server", name)


class World:
    def __init__(self) -> None:
        self.calls = CallLog()
        self.clock = FakeClock()
        self.backend = FakeBackend(self.clock, self.calls)
        self.lb = FakeLoadBalancer(self.calls)
        self.registry = CollectorRegistry()
        self.telemetry = Telemetry(self.registry)
        self.lb_infos: list[LoadBalancer] = []
        self.controllers: list[ServiceController] = []

    def lb_factory(self, info: LoadBalancer) -> FakeLoadBalancer:
        self.lb_infos.append(info)
        return self.lb

    def adopt(self, name: str, *, admin: str | None = "READY", check: str = PASSED, sessions: int = 0,
              state: str = "running", age_seconds: float = OLD) -> Replica:
        """A replica from before; admin=None: the load balancer does not know it."""
        replica = self.backend.add(name, state=state, age_seconds=age_seconds)
        if admin is not None:
            self.lb.preset(replica, admin, check, sessions)
        return replica

    def controller(self, *, dry_run: bool = False, setup: bool = True, **config: Any) -> ServiceController:
        controller = ServiceController(
            SERVICE, service_config(**config), NETWORK, self.backend, self.lb_factory, self.telemetry,
            dry_run=dry_run, clock=self.clock.now, wall_clock=self.clock.time, sleep=self.clock.sleep,
        )
        self.controllers.append(controller)
        if setup:
            controller.setup()
        return controller

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"service": SERVICE, **labels})

    def replica_counts(self) -> dict[str, float | None]:
        return {state: self.metric("autoscaler_replicas", state=state) for state in ("ready", "starting", "draining")}


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    for controller in w.controllers:
        controller.close()


def name(n: str) -> str:
    return f"autoscaler-{SERVICE}-{n}"


A, B, C, GONE = name("a"), name("b"), name("c"), name("gone")
CHANGES = {"start_replica", "remove_replica", "add_server", "enable_health", "set_ready", "set_drain",
           "delete_server"}


# --- set-up and observe: membership repair -----------------------------------------------------


def test_setup_creates_what_is_missing_and_changes_no_replica(world: World) -> None:
    world.adopt(A, admin=None)
    world.adopt(B, admin=None)
    world.adopt(C, admin=None, state="exited")

    world.controller()

    assert world.calls.entries == [("ensure_network", NETWORK), ("ensure_load_balancer", SERVICE)]
    spec = world.backend.lb_specs[0]
    assert (spec.network, spec.publish_host, spec.publish_port, spec.health_path) == (
        NETWORK, "127.0.0.1", 8080, "/healthz")
    assert [info.admin_port for info in world.lb_infos] == [40001]


def test_setup_waits_for_the_runtime_api(world: World) -> None:
    world.lb.unreachable_polls = 3
    world.controller()
    assert world.clock.sleeps == [HEALTH_POLL_SECONDS] * 3


# Each case: replicas (name, docker state, age), servers the load balancer already has
# (name, admin state, check status, address or None for the replica's own), the calls observe()
# makes in order, and the state of each replica it reports (None: not checked).
OBSERVE_CASES = [
    pytest.param(
        [(A, "running", OLD), (B, "running", OLD)], [],
        [("add_server", A), ("enable_health", A), ("add_server", B), ("enable_health", B)],
        {A: "starting", B: "starting"},
        id="adopts-running-replicas-the-lb-lacks",
    ),
    pytest.param(
        [(A, "running", OLD)], [(A, "MAINT", PASSED, None)],
        [("set_ready", A)], None,
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
        id="forgets-a-server-with-no-running-replica",
    ),
    pytest.param(
        [(A, "running", OLD), (B, "exited", OLD)], [(A, "READY", PASSED, None), (B, "READY", "L4CON", None)],
        [("delete_server", B), ("remove_replica", B)], {A: "ready"},
        id="removes-an-exited-replica-and-its-server",
    ),
    pytest.param(
        [(A, "running", OLD), (B, "dead", OLD)], [(A, "READY", PASSED, None)],
        [("remove_replica", B)], {A: "ready"},
        id="removes-a-dead-replica-without-server",
    ),
    pytest.param(
        [(A, "running", OLD)], [(A, "READY", PASSED, "10.9.9.9:8000")],
        [("delete_server", A), ("add_server", A), ("enable_health", A)], {A: "starting"},
        id="re-registers-a-server-with-a-stale-address",
    ),
    pytest.param(
        [(A, "running", OLD)], [(A, "DRAIN", PASSED, None)],
        [], {A: "draining"},
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
]


@pytest.mark.parametrize(("replicas", "servers", "calls", "states"), OBSERVE_CASES)
def test_observe_repairs_membership(
    world: World,
    replicas: list[tuple[str, str, float]],
    servers: list[tuple[str, str, str, str | None]],
    calls: list[tuple[str, str]],
    states: dict[str, str] | None,
) -> None:
    for replica_name, state, age in replicas:
        world.backend.add(replica_name, state=state, age_seconds=age)
    for server_name, admin, check, address in servers:
        replica = next((r for r in world.backend.replicas.values() if r.name == server_name), None)
        if replica is None:
            world.lb.members[server_name] = FakeServer(server_name, address or "", admin, True, check)
        else:
            world.lb.preset(replica, admin, check, address=address)
    controller = world.controller()
    world.calls.entries.clear()

    observation = controller.observe()

    assert world.calls.entries == calls
    if states is not None:
        assert {v.replica.name: v.state for v in observation.views} == states
    running = {r for r, state, _ in replicas if state == "running"}
    assert set(world.lb.members) == running, "the load balancer ends up with exactly the running replicas"
    assert world.backend.running == sorted(running)
    for replica_name in running:
        assert world.lb.members[replica_name].address == f"{world.backend.by_name(replica_name).ip}:{PORT}"
        assert world.lb.members[replica_name].health


def test_observe_promotes_registered_replicas_once_their_check_passes(world: World) -> None:
    world.adopt(A, admin=None)
    world.lb.checks_pass_after = 2
    controller = world.controller()

    controller.observe()  # registers A in MAINT (its stats poll was before the registration)
    assert world.lb.status(A) == "MAINT"
    controller.observe()  # first check: not passed yet
    assert world.lb.status(A) == "MAINT"
    assert "set_ready" not in world.calls.of(A)
    controller.observe()  # second check passed: promoted
    assert world.calls.of(A) == ["add_server", "enable_health", "set_ready"]
    assert world.lb.status(A) == "UP"
    assert world.lb.ready_before_check == []
    assert [v.state for v in controller.observe().views] == ["ready"]


def test_haproxy_restart_re_registers_every_replica_and_keeps_them(world: World) -> None:
    world.adopt(A)
    world.adopt(B)
    controller = world.controller()
    controller.run_cycle()
    assert world.calls.ops() <= {"ensure_network", "ensure_load_balancer"}

    world.lb.restart()
    world.lb.checks_pass_after = 3
    world.clock.advance(5)
    controller.run_cycle()  # the runtime API refuses once: the lb is looked up again; both re-registered
    assert [info.admin_port for info in world.lb_infos] == [40001, 40002]
    assert {world.lb.status(n) for n in (A, B)} == {"MAINT"}

    # Old containers, but freshly registered: their check gets startup_timeout_seconds again
    # instead of the replicas being removed all at once.
    for _ in range(3):
        world.clock.advance(5)
        controller.run_cycle()
    for replica_name in (A, B):
        assert world.calls.of(replica_name) == ["add_server", "enable_health", "set_ready"]
        assert world.lb.status(replica_name) == "UP"
    assert "start_replica" not in world.calls.ops()
    assert "remove_replica" not in world.calls.ops()


# --- scale out ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adopted", "min_replicas", "checks_pass_after"),
    [(1, 3, 1), (1, 3, 3), (2, 6, 2)],
    ids=["1-to-3-check-passes-at-once", "1-to-3-check-passes-on-third-poll", "2-to-6"],
)
def test_scale_out_registers_in_maintenance_and_sets_ready_after_the_check(
    world: World, adopted: int, min_replicas: int, checks_pass_after: int
) -> None:
    for index in range(adopted):
        world.adopt(name(f"old{index}"))
    world.lb.checks_pass_after = checks_pass_after
    controller = world.controller(min_replicas=min_replicas)
    world.calls.entries.clear()

    decision = controller.run_cycle()

    assert (decision.current, decision.desired, decision.reason) == (adopted, min_replicas, "below_min")
    started = world.calls.names("start_replica")
    assert len(started) == min_replicas - adopted
    # Side by side: every container is started before the first is registered.
    assert max(world.calls.index("start_replica", n) for n in started) < min(
        world.calls.index("add_server", n) for n in started)
    for replica_name in started:
        assert world.calls.of(replica_name) == ["start_replica", "add_server", "enable_health", "set_ready"]
        server = world.lb.members[replica_name]
        assert server.address == f"{world.backend.by_name(replica_name).ip}:{PORT}"
        assert server.health and server.status == "UP"
    assert world.lb.ready_before_check == []
    # The first poll after registration is check 1: the wait sleeps between polls only.
    assert world.clock.sleeps == [HEALTH_POLL_SECONDS] * (checks_pass_after - 1)
    assert world.backend.specs == [controller.replica_spec()] * len(started)
    spec = world.backend.specs[0]
    assert (spec.image, spec.port, spec.network, spec.cpu_limit_cores, spec.memory_limit_bytes) == (
        "demo:latest", PORT, NETWORK, CPU_LIMIT, MEMORY_LIMIT)


def test_a_replica_that_never_passes_stays_out_of_rotation_and_is_replaced_later(world: World) -> None:
    world.adopt(A)
    world.lb.checks_pass_after = None
    controller = world.controller(min_replicas=2, startup_timeout_seconds=4)

    controller.run_cycle()
    (bad,) = world.calls.names("start_replica")
    assert world.calls.of(bad) == ["start_replica", "add_server", "enable_health"]
    assert world.lb.status(bad) == "MAINT" and world.lb.members[bad].check_status == "L4CON"
    waited = sum(world.clock.sleeps)
    assert 4 <= waited <= 4 + HEALTH_POLL_SECONDS + 1e-9, "scale-out waits startup_timeout_seconds, no longer"

    # Older than startup_timeout_seconds: removed on the next cycle and replaced by a healthy one.
    world.lb.checks_pass_after = 1
    world.clock.advance(2)
    controller.run_cycle()
    assert world.calls.of(bad) == ["start_replica", "add_server", "enable_health", "delete_server", "remove_replica"]
    (replacement,) = [n for n in world.calls.names("start_replica") if n != bad]
    assert world.calls.index("remove_replica", bad) < world.calls.index("start_replica", replacement)
    assert world.lb.status(replacement) == "UP"
    assert world.backend.running == sorted([A, replacement])


def test_startup_timeout_counts_from_registration_for_adopted_replicas(world: World) -> None:
    world.adopt(A, admin=None)  # an old container the (fresh) load balancer does not know
    world.lb.checks_pass_after = None
    controller = world.controller(startup_timeout_seconds=10)

    controller.observe()  # registers it
    world.clock.advance(8)
    controller.observe()
    assert world.backend.running == [A], "old container, but registered 8 s ago: not yet timed out"
    world.clock.advance(3)
    controller.observe()
    assert world.calls.of(A) == ["add_server", "enable_health", "delete_server", "remove_replica"]


# --- scale in ----------------------------------------------------------------------------------


def view(replica_name: str, sessions: int | None, created_at: float) -> ReplicaView:
    replica = Replica(replica_name, replica_name, SERVICE, "running", "10.0.0.1", created_at)
    server = None if sessions is None else ServerStat(replica_name, "", "UP", PASSED, sessions, 0, 0.0, None, 0, 0)
    return ReplicaView(replica, "ready", server)


@pytest.mark.parametrize(
    ("sessions", "count", "victims"),
    [
        ({A: 5, B: 1, C: 3}, 1, [B]),
        ({A: 5, B: 1, C: 3}, 2, [B, C]),
        ({A: 0, B: 0, C: 2}, 1, [B]),
        ({A: 0, B: 0, C: 0}, 2, [C, B]),
        ({A: 1, B: None, C: 4}, 1, [B]),
    ],
    ids=["fewest-sessions", "two-victims", "tie-goes-to-newest", "all-idle-newest-first", "no-server-is-idle"],
)
def test_choose_victims(sessions: dict[str, int | None], count: int, victims: list[str]) -> None:
    views = [view(n, s, created_at=float(i)) for i, (n, s) in enumerate(sessions.items())]  # A oldest
    assert [v.replica.name for v in choose_victims(views, count)] == victims


# sessions of A (oldest), B, C (newest); the victim; how many polls it waits for its sessions
# to end (they end on the third poll after set_drain; an idle victim needs none).
@pytest.mark.parametrize(
    ("sessions", "victim", "sleeps"),
    [((5, 1, 3), B, 2), ((0, 0, 0), C, 0), ((2, 0, 0), C, 0), ((0, 3, 3), A, 0), ((4, 2, 2), C, 2)],
    ids=["fewest-sessions", "all-idle-newest", "tie-newest", "oldest-if-only-idle", "busy-tie-newest"],
)
def test_scale_in_drains_waits_for_sessions_then_deletes_server_then_removes_container(
    world: World, sessions: tuple[int, int, int], victim: str, sleeps: int
) -> None:
    for index, (replica_name, count) in enumerate(zip((A, B, C), sessions)):
        world.adopt(replica_name, sessions=count, age_seconds=OLD - index)  # C is the newest
    world.lb.sessions_drop_after = 3
    controller = world.controller(max_replicas=2)
    world.calls.entries.clear()

    decision = controller.run_cycle()

    assert (decision.current, decision.desired, decision.reason) == (3, 2, "above_max")
    assert world.calls.entries == [("set_drain", victim), ("delete_server", victim), ("remove_replica", victim)]
    assert world.lb.sessions_at_delete[victim] == 0, "deleted only once its sessions ended"
    assert world.clock.sleeps == [HEALTH_POLL_SECONDS] * sleeps, "waited for the sessions, then no longer"
    assert world.backend.running == sorted({A, B, C} - {victim})


def test_scale_in_stops_waiting_after_drain_timeout(world: World) -> None:
    world.adopt(A, sessions=2)
    world.adopt(B, sessions=4)
    world.lb.sessions_drop_after = None
    controller = world.controller(max_replicas=1, policy={"drain_timeout_seconds": 3})
    world.calls.entries.clear()

    controller.run_cycle()

    assert world.calls.entries == [("set_drain", A), ("delete_server", A), ("remove_replica", A)]
    assert world.lb.sessions_at_delete[A] == 2
    assert 3 <= sum(world.clock.sleeps) <= 3 + HEALTH_POLL_SECONDS + 1e-9


def test_a_drain_left_behind_is_finished_first(world: World) -> None:
    world.adopt(A)
    world.adopt(B, admin="DRAIN", sessions=1)  # the daemon was killed mid-drain
    world.lb.sessions_drop_after = 1
    controller = world.controller()
    world.calls.entries.clear()

    decision = controller.run_cycle()

    assert world.calls.entries == [("set_drain", B), ("delete_server", B), ("remove_replica", B)]
    assert world.lb.sessions_at_delete[B] == 0
    assert decision.current == 1
    assert world.backend.running == [A]


# --- replacement -------------------------------------------------------------------------------


def test_a_replica_that_died_is_replaced_up_to_the_last_decided_count(world: World) -> None:
    world.adopt(A)
    world.adopt(B)
    controller = world.controller(min_replicas=1)  # the policy alone would settle for 1
    first = controller.run_cycle()
    assert (first.current, first.desired) == (2, 2)
    assert world.calls.ops() <= {"ensure_network", "ensure_load_balancer"}

    world.backend.kill(B)
    world.clock.advance(5)
    second = controller.run_cycle()

    (replacement,) = world.calls.names("start_replica")
    assert world.calls.of(B) == ["delete_server", "remove_replica"]
    assert world.calls.of(replacement) == ["start_replica", "add_server", "enable_health", "set_ready"]
    assert world.backend.running == sorted([A, replacement])
    assert second.current == 2
    assert not [s for m in world.registry.collect() if m.name == "autoscaler_scale_events"
                for s in m.samples if s.name.endswith("_total")], "a replacement is not a scale event"


# --- dry run -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "config", "desired"),
    [
        ([A], {"min_replicas": 3}, 3),
        ([A, B, C], {"max_replicas": 1}, 1),
    ],
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

    for _ in range(2):
        decision = controller.run_cycle()
        world.clock.advance(5)

    assert decision.desired == desired
    # Nothing is created, started, removed, registered or drained; the exited replica stays.
    assert world.calls.ops() <= {"existing_load_balancer"}
    assert set(world.backend.running) == set(replicas)
    assert world.metric("autoscaler_desired_replicas") == desired
    assert world.replica_counts() == {"ready": len(replicas), "starting": 0, "draining": 0}
    for direction in ("up", "down"):
        assert world.metric("autoscaler_scale_events_total", direction=direction, reason=decision.reason) is None


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_after_cycles(world: World) -> None:
    world.adopt(A)
    controller = world.controller(min_replicas=3)

    controller.run_cycle()  # 1 -> 3: below min
    # The replica gauge shows what the cycle's action left: both new replicas passed their checks.
    assert world.replica_counts() == {"ready": 3, "starting": 0, "draining": 0}
    assert world.metric("autoscaler_desired_replicas") == 3
    assert world.metric("autoscaler_scale_events_total", direction="up", reason="below_min") == 1

    world.clock.advance(5)
    controller.run_cycle()  # 3 at the 60 % target: hold
    assert world.replica_counts() == {"ready": 3, "starting": 0, "draining": 0}
    assert world.metric("autoscaler_desired_replicas") == 3
    assert world.metric("autoscaler_scale_events_total", direction="up", reason="below_min") == 1

    controller.update_config(service_config(max_replicas=2))
    world.clock.advance(5)
    controller.run_cycle()  # 3 -> 2: above max
    assert world.metric("autoscaler_desired_replicas") == 2
    assert world.metric("autoscaler_scale_events_total", direction="down", reason="above_max") == 1

    world.clock.advance(5)
    decision = controller.run_cycle()
    assert decision.desired == 2
    assert world.replica_counts() == {"ready": 2, "starting": 0, "draining": 0}
    assert world.metric("autoscaler_scale_events_total", direction="up", reason="below_min") == 1
    assert world.metric("autoscaler_scale_events_total", direction="down", reason="above_max") == 1
    assert world.metric("autoscaler_service_cpu_percent") == pytest.approx(60)
    assert world.metric("autoscaler_service_memory_percent") == pytest.approx(25)
    assert world.metric("autoscaler_loop_duration_seconds_count") == 4


# --- CPU and memory ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "cpu_percent"),
    [(0.0, 0.0), (0.1, 20.0), (0.25, 50.0), (0.5, 100.0), (0.75, 150.0)],
    ids=["idle", "20%", "50%", "at-limit", "above-limit"],
)
def test_cpu_percent_comes_from_two_successive_readings(world: World, cores: float, cpu_percent: float) -> None:
    world.adopt(A)
    world.backend.cpu_cores[A] = cores
    controller = world.controller()

    (first,) = controller.snapshot(controller.observe()).replicas
    assert first.cpu_percent is None, "one reading is missing, not 0 %"
    assert first.memory_percent == pytest.approx(25.0)

    world.clock.advance(5)
    (second,) = controller.snapshot(controller.observe()).replicas
    assert second.cpu_percent == pytest.approx(cpu_percent)


def test_cpu_drives_a_scale_up_from_the_second_cycle(world: World) -> None:
    world.adopt(A)
    world.backend.cpu_cores[A] = 0.45  # 90 % of the limit, target 60 %
    controller = world.controller()

    first = controller.run_cycle()
    assert (first.desired, first.reason) == (1, "metrics_unavailable")
    cpu = world.metric("autoscaler_service_cpu_percent")
    assert cpu is not None and math.isnan(cpu)

    world.clock.advance(5)
    second = controller.run_cycle()
    assert (second.current, second.desired, second.reason) == (1, 2, "scale_up")
    assert world.metric("autoscaler_service_cpu_percent") == pytest.approx(90)
    assert world.metric("autoscaler_scale_events_total", direction="up", reason="scale_up") == 1
    assert len(world.backend.running) == 2


def test_no_stats_at_all_is_a_metrics_failure(world: World) -> None:
    world.adopt(A)
    world.adopt(B)
    world.backend.stats_available = False
    controller = world.controller()

    decision = controller.run_cycle()

    assert (decision.desired, decision.reason) == (2, "metrics_unavailable")
    assert "no stats from the Docker engine" in decision.message
    assert not world.calls.ops() & CHANGES


def test_each_change_and_each_new_reason_is_logged_at_info(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.adopt(A)
    controller = world.controller(min_replicas=2)
    caplog.set_level(logging.DEBUG, logger="autoscaler.engine")
    for _ in range(4):
        controller.run_cycle()
        world.clock.advance(5)
    decisions = [r for r in caplog.records if getattr(r, "reason", None)]
    assert len(decisions) == 4
    assert (decisions[0].reason, decisions[0].levelname) == ("below_min", "INFO")  # type: ignore[attr-defined]
    for before, record in zip(decisions, decisions[1:]):
        changed = record.desired != record.current or record.reason != before.reason  # type: ignore[attr-defined]
        assert record.levelname == ("INFO" if changed else "DEBUG"), (before.reason, record.reason)  # type: ignore[attr-defined]
    assert any(r.levelname == "DEBUG" for r in decisions), "a repeated no-change decision"
