"""In-memory fakes of the controller's protocols, each able to fail as the real one can.

They behave like the real ones (autoscaler/docker/backend.py, autoscaler/lb/haproxy.py,
autoscaler/docker/lease.py): a new HAProxy server starts in MAINT and its check reports "INI"
until it passes, which here happens after a set number of stats polls; set_ready makes it "UP",
set_drain "DRAIN", set_maint "MAINT", and delete_server removes it. A paused replica fails its
check. Failures are switched on per fake: creates that raise, replicas that exit at once (with
an exit code, OOM flag and output), an engine that stops answering, a load balancer whose API
is gone, a lease someone else holds. Operations run when the test says so (or at once).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry

from autoscaler.config import ServiceConfig
from autoscaler.engine import wiring
from autoscaler.engine.controller import ServiceController
from autoscaler.engine.operations import Outcome
from autoscaler.engine.ports import (
    BackendError,
    BackendStat,
    ExitReport,
    LoadBalancer,
    LoadBalancerContainer,
    LoadBalancerSpec,
    Replica,
    ReplicaSpec,
    ServerStat,
    StatsReading,
)
from autoscaler.lb.haproxy import HAProxyError, ServerBusy
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


def name(n: str) -> str:
    return f"autoscaler-{SERVICE}-{n}"


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
    """(operation, replica name) of every state-changing call to the fakes, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self._lock = threading.Lock()

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


class FakeOperations:
    """Operations.  auto=True runs each one at submit time (its outcome waits for the next
    collect, as a real one that finished quickly); auto=False keeps them in flight until
    finish()."""

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self._pending: list[tuple[str, str, Callable[[], Any], dict[str, Any]]] = []
        self._done: list[Outcome] = []
        self.closed = False
        self.waited: list[float] = []  # the timeouts wait_idle was given

    def submit(self, kind: str, key: str, fn: Callable[[], Any], **context: Any) -> None:
        self._pending.append((kind, key, fn, context))
        if self.auto:
            self.finish()

    def finish(self, kind: str | None = None) -> None:
        keep = []
        for task in self._pending:
            if kind is not None and task[0] != kind:
                keep.append(task)
                continue
            op_kind, key, fn, context = task
            try:
                self._done.append(Outcome(op_kind, key, value=fn(), context=context))
            except Exception as exc:
                self._done.append(Outcome(op_kind, key, error=exc, context=context))
        self._pending = keep

    def in_flight(self, kind: str) -> dict[str, dict[str, Any]]:
        return {key: context for k, key, _, context in self._pending if k == kind}

    def busy(self) -> bool:
        return bool(self._pending)

    def completed(self) -> list[Outcome]:
        done, self._done = self._done, []
        return done

    def wait_idle(self, timeout_seconds: float) -> bool:
        """Nothing finishes by waiting here (only finish() does): records how long the caller
        was willing to wait, and says whether anything is still running after that."""
        self.waited.append(timeout_seconds)
        return not self._pending

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """One engine in memory, for every port a container service uses: ContainerRuntime,
    LoadBalancerHost, Networks and MetricsSource. CPU is burnt at a constant rate per replica
    (cores)."""

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
        # Failures to switch on:
        self.engine_down = False  # every call raises, as with dockerd stopped
        self.create_errors: list[str] = []  # each start raises the next one
        self.pull_errors: list[str] = []  # each image resolution raises the next one (a pull that failed)
        self.pinned: dict[str, str] = {}  # image -> the reference its replicas are created from
        self.exit_on_start: ExitReport | None = None  # new replicas exit right after starting
        self.health_on_start: str | None = None  # Docker's health status of new replicas (None: no check)
        self.lb_state: str | None = "running"  # the load-balancer container (None: missing)
        self.lb_create_error: str | None = None
        self.exits: dict[str, ExitReport] = {}
        self.removed: list[tuple[str, bool]] = []  # (name, force)
        self.on_read_stats: Callable[[], None] | None = None  # runs inside read_stats (a stop mid-pass)
        self.hold_listing: threading.Event | None = None  # list_replicas waits for it (a hung call)
        self.listing = threading.Event()  # set while list_replicas runs
        self._cpu_ns: dict[str, float] = {}
        self._last_read: dict[str, float] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def _check_engine(self, operation: str) -> None:
        if self.engine_down:
            raise BackendError(operation, SERVICE, "Connection aborted: connection refused")

    def _new(self, name: str | None, state: str, created_at: float, health: str | None = None) -> Replica:
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
            port=PORT,
            health=health,
        )
        self.replicas[replica.id] = replica
        return replica

    def add(self, name: str, *, state: str = "running", age_seconds: float = OLD, health: str | None = None) -> Replica:
        """A replica that exists before the controller starts (to be adopted)."""
        return self._new(name, state, self.clock.wall - age_seconds, health)

    def by_name(self, name: str) -> Replica:
        return next(r for r in self.replicas.values() if r.name == name)

    def set_state(self, name: str, state: str, report: ExitReport | None = None) -> None:
        replica = self.by_name(name)
        self.replicas[replica.id] = replace(replica, state=state)
        if report is not None:
            self.exits[replica.id] = report

    def set_health(self, name: str, health: str | None) -> None:
        """Docker's health status of a replica changes (its HEALTHCHECK passed or failed)."""
        replica = self.by_name(name)
        self.replicas[replica.id] = replace(replica, health=health)

    def kill(self, name: str, exit_code: int = 137) -> None:
        self.set_state(name, "exited", ExitReport(exit_code, False, "", ()))

    @property
    def running(self) -> list[str]:
        return sorted(r.name for r in self.replicas.values() if r.running)

    @property
    def containers(self) -> int:
        return len(self.replicas)

    # --- the ports ---

    def ensure_network(self, service: str, name: str) -> bool:
        self._check_engine("network_list")
        self.calls.add("ensure_network", name)
        return False

    def remove_network(self, service: str, name: str) -> None:
        self.calls.add("remove_network", name)

    def _lb(self, spec_or_service: Any) -> LoadBalancer:
        return LoadBalancer("lb-id", f"autoscaler-{SERVICE}-lb", f"/run/autoscaler/autoscaler-{SERVICE}-lb.sock",
                            "127.0.0.1", 41000, "127.0.0.1:8080")

    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> tuple[LoadBalancer, bool]:
        self._check_engine("container_list")
        self.lb_specs.append(spec)
        self.calls.add("ensure_load_balancer", spec.service)
        fresh = self.lb_state != "running"
        self.lb_state = "running"
        return self._lb(spec), fresh

    def existing_load_balancer(self, service: str) -> LoadBalancer | None:
        self.calls.add("existing_load_balancer", service)
        return self._lb(service) if self.lb_state == "running" else None

    def load_balancer_container(self, service: str) -> LoadBalancerContainer | None:
        self._check_engine("container_list")
        if self.lb_state is None:
            return None
        # Started long ago: a silent API means it is broken, not starting.
        return LoadBalancerContainer("lb-id", f"autoscaler-{SERVICE}-lb", self.lb_state, "", "127.0.0.1:8080",
                                     self.clock.wall - OLD if self.lb_state == "running" else None)

    def create_load_balancer(self, spec: LoadBalancerSpec) -> str:
        self.calls.add("create_load_balancer", spec.service)
        if self.lb_create_error:
            raise BackendError("container_start", SERVICE, self.lb_create_error)
        self.lb_state = "running"
        return "lb-id"

    def start_load_balancer(self, service: str, container_id: str) -> None:
        self.calls.add("start_load_balancer", service)
        self.lb_state = "running"

    def remove_load_balancer(self, service: str, container_id: str) -> None:
        self.calls.add("remove_load_balancer", service)
        self.lb_state = None

    def load_balancer_info(self, service: str, container_id: str) -> LoadBalancer:
        return self._lb(service)

    def list_replicas(self, service: str, network: str) -> list[Replica]:
        assert (service, network) == (SERVICE, NETWORK)
        self._check_engine("container_list")
        if self.hold_listing is not None:
            self.listing.set()
            self.hold_listing.wait(30)
        return sorted(self.replicas.values(), key=lambda r: (r.created_at_seconds, r.name))

    def new_replica_name(self, service: str) -> str:
        with self._lock:
            self._seq += 1
            return f"autoscaler-{service}-n{self._seq}"

    def resolve_image(self, spec: ReplicaSpec) -> str:
        self._check_engine("image_inspect")
        if self.pull_errors:
            self.calls.add("pull_failed", spec.image)
            raise BackendError("image_pull", SERVICE, self.pull_errors.pop(0))
        return self.pinned.get(spec.image, spec.image)

    def start_replica(self, spec: ReplicaSpec, name: str) -> Replica:
        self._check_engine("container_create")
        self.specs.append(spec)
        if self.create_errors:
            self.calls.add("start_failed", name or "")
            raise BackendError("container_create", SERVICE, self.create_errors.pop(0))
        replica = replace(self._new(name, "running", self.clock.wall, self.health_on_start), image=spec.image)
        self.replicas[replica.id] = replica
        self.calls.add("start_replica", replica.name)
        if self.exit_on_start is not None:
            self.set_state(replica.name, "exited", self.exit_on_start)
        return replica

    def remove_replica(self, service: str, container_id: str, stop_timeout_seconds: int, force: bool = False) -> None:
        replica = self.replicas.pop(container_id, None)  # the real one ignores a vanished container
        self.calls.add("remove_replica", replica.name if replica else container_id)
        self.removed.append((replica.name if replica else container_id, force))

    def exit_report(self, service: str, container_id: str) -> ExitReport:
        return self.exits.get(container_id, ExitReport(None, False, "", ()))

    def load_balancer_report(self, service: str, lb_id: str) -> ExitReport:
        return ExitReport(1, False, "", ("haproxy: cannot bind",))

    def stats_source(self, service: str) -> str | None:
        return "cgroup"

    def source_errors(self, service: str) -> dict[str, str]:
        return {}

    def read_stats(self, service: str, container_ids: list[str]) -> dict[str, StatsReading | None]:
        if self.on_read_stats is not None:
            self.on_read_stats()
        result: dict[str, StatsReading | None] = {}
        for cid in container_ids:
            replica = self.replicas.get(cid)
            if replica is None or not self.stats_available or not replica.running:
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
    forced_down: bool = False  # `health down`: DOWN until its check passes again
    paused_polls: int = 0  # looks while its replica is paused; the third one finds its check failed

    @property
    def check_passed(self) -> bool:
        return self.check_status in ("L7OK", "L6OK", "L4OK")

    @property
    def status(self) -> str:
        if self.admin == "MAINT":
            return "MAINT"
        if self.admin == "DRAIN":
            return "DRAIN"
        return "UP" if self.check_passed and not self.forced_down else "DOWN"

    def stat(self) -> ServerStat:
        return ServerStat(self.name, self.address, self.status, self.check_status, self.sessions_current,
                          self.sessions_total, 0.0, None, 0, 0)


class FakeLoadBalancer:
    """LoadBalancerAPI in memory. Every look at the stats is one health-check interval."""

    def __init__(self, calls: CallLog, backend: FakeBackend) -> None:
        self.calls = calls
        self.backend = backend
        self.members: dict[str, FakeServer] = {}
        self.checks_pass_after: int | None = 2  # for servers added from now on
        self.sessions_drop_after: int | None = 2  # for servers drained from now on
        self.unreachable_polls = 0  # the next N stats reads fail, as during a restart
        self.down = False  # the API does not answer at all (container gone or broken)
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
        if self.down:
            raise HAProxyError(operation, "runtime API: connection refused")
        server = self.members.get(name)
        if server is None:
            raise HAProxyError(operation, f"{name}: 'No such server.'")
        return server

    def _paused(self, name: str) -> bool:
        replica = next((r for r in self.backend.replicas.values() if r.name == name), None)
        return replica is not None and replica.state == "paused"

    def _poll(self) -> None:
        if self.down or self.backend.lb_state != "running":
            raise HAProxyError("show_stat", "runtime API: connection refused")
        if self.unreachable_polls:
            self.unreachable_polls -= 1
            raise HAProxyError("show_stat", "runtime API: connection refused")
        with self._lock:
            for server in self.members.values():
                if server.health and self._paused(server.name):
                    server.paused_polls += 1
                    if server.paused_polls >= 3:
                        server.check_status = "L4TOUT"
                    continue
                server.paused_polls = 0
                if server.check_status == "L4TOUT":  # unpaused: the application answers again
                    server.check_status = PASSED
                    server.forced_down = False
                    continue
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
        if self.down:
            raise HAProxyError("add_server", "runtime API: connection refused")
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

    def set_health_down(self, name: str) -> None:
        server = self._server("set_health_down", name)
        server.forced_down = True
        self.calls.add("set_health_down", name)

    def delete_server(self, name: str, force: bool = False) -> None:
        server = self._server("del_server", name)
        if server.sessions_current and not force:
            raise ServerBusy("del_server", f"{name}: connections still attached")
        self.sessions_at_delete[name] = server.sessions_current
        del self.members[name]
        self.calls.add("delete_server", name)


class FakeLease:
    """The lease as docker/lease.py keeps it: ours until the renew deadline passes without a
    renewal (by the controller's clock), renewed at most every retry period."""

    renew_deadline_seconds = 10.0
    retry_period_seconds = 2.0

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.holder: str | None = None  # someone else holds it
        self.mine = False
        self.released = 0
        self.renewed_at = -1e9
        self.renewals: list[float] = []

    def try_acquire(self) -> str | None:
        if self.holder is not None:
            return self.holder
        self.mine = True
        self.renewed_at = self.clock.now()
        return None

    def held(self) -> bool:
        if self.mine and self.clock.now() - self.renewed_at >= self.renew_deadline_seconds:
            self.mine = False  # not renewed in time: lost
        return self.mine

    def renew(self) -> None:
        if self.mine and self.clock.now() - self.renewed_at >= self.retry_period_seconds:
            self.renewed_at = self.clock.now()
            self.renewals.append(self.renewed_at)

    def release(self) -> None:
        self.mine = False
        self.released += 1


class World:
    def __init__(self, auto_operations: bool = True) -> None:
        self.calls = CallLog()
        self.clock = FakeClock()
        self.backend = FakeBackend(self.clock, self.calls)
        self.lb = FakeLoadBalancer(self.calls, self.backend)
        self.registry = CollectorRegistry()
        self.telemetry = Telemetry(self.registry)
        self.operations = FakeOperations(auto_operations)
        self.lease = FakeLease(self.clock)
        self.lb_infos: list[LoadBalancer] = []
        self.controllers: list[ServiceController] = []
        self.orchestrator = FakeOrchestrator(self.backend, self.calls)

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

    def controller(self, *, dry_run: bool = False, setup: bool = True, lease: bool = False,
                   with_load_balancer: bool = True, orchestrated: bool = False, **config: Any) -> ServiceController:
        backend = self.backend
        controller = ServiceController(
            SERVICE, service_config(**config), NETWORK,
            target=(wiring.orchestrated(self.orchestrator) if orchestrated  # type: ignore[arg-type]
                    else wiring.containers(backend, self.operations)),  # type: ignore[arg-type]
            gate=wiring.load_balancer(backend, self.lb_factory, self.clock.sleep) if with_load_balancer else None,
            metrics=backend, networks=backend, telemetry=self.telemetry,
            dry_run=dry_run, clock=self.clock.now, wall_clock=self.clock.time,
            lease=self.lease if lease else None, operations=self.operations,  # type: ignore[arg-type]
        )
        self.controllers.append(controller)
        if setup:
            controller.setup()
        return controller

    def tick(self, controller: ServiceController, seconds: float, progress_every: float = 0.25) -> None:
        """Lets `seconds` pass with the progress step running between passes, as the daemon does."""
        steps = round(seconds / progress_every)
        for _ in range(steps):
            self.clock.advance(progress_every)
            controller.progress()

    def run(self, controller: ServiceController, seconds: float, interval: float = 1.0) -> list[Any]:
        """Passes every `interval` for `seconds`, progress steps between them; the decisions."""
        decisions = []
        for _ in range(round(seconds / interval)):
            decisions.append(controller.run_cycle())
            self.tick(controller, interval)
        return decisions

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"service": SERVICE, **labels})

    def replica_counts(self) -> dict[str, float | None]:
        return {state: self.metric("autoscaler_replicas", state=state) for state in ("ready", "starting", "draining")}


class FakeOrchestrator:
    """OrchestratedService in memory, as Swarm behaves: it keeps `count` tasks (started when the
    test calls settle()), picks the newest to go on a scale-in (marked `leaving` until settle()
    stops them), and refuses a count while `busy` (being updated by someone else)."""

    def __init__(self, backend: FakeBackend, calls: CallLog) -> None:
        self.backend = backend
        self.calls = calls
        self.count = 0
        self.busy: str | None = None
        self.scales: list[int] = []
        self.version: str | None = None  # of the task template; None: from before versions
        self.rolled_out: list[str] = []

    def prepare(self, spec: ReplicaSpec, initial_replicas: int, stop_grace_seconds: float, adopt: bool) -> bool:
        return False  # adopted: it exists

    def remove_service(self, service: str) -> None:
        self.calls.add("remove_service", service)

    def list_replicas(self, service: str, network: str) -> list[Replica]:
        return self.backend.list_replicas(service, network)

    def desired_count(self, service: str) -> int | None:
        self.backend._check_engine("service_inspect")
        return self.count

    def scale(self, service: str, replicas: int) -> None:
        if self.busy is not None:
            raise BackendError("service_update", SERVICE, f"swarm service is {self.busy}: holding")
        self.scales.append(replicas)
        self.calls.add("scale", str(replicas))
        running = sorted((r for r in self.backend.replicas.values() if r.running and not r.leaving),
                         key=lambda r: r.created_at_seconds)
        for task in running[replicas:]:  # the newest go
            self.backend.replicas[task.id] = replace(task, leaving=True)
        self.count = replicas

    def version_of(self, service: str) -> str | None:
        return self.version

    def roll_out(self, spec: ReplicaSpec) -> None:
        self.calls.add("roll_out", spec.version)
        self.rolled_out.append(spec.version)
        self.version = spec.version

    def exit_report(self, service: str, replica_id: str) -> ExitReport:
        return self.backend.exit_report(service, replica_id)

    def settle(self) -> None:
        """The orchestrator acts: tasks marked for removal stop, missing ones start."""
        for task in [r for r in self.backend.replicas.values() if r.leaving]:
            del self.backend.replicas[task.id]
        running = [r for r in self.backend.replicas.values() if r.state in ("running", "created")]
        for _ in range(self.count - len(running)):
            self.backend._new(None, "running", self.backend.clock.wall)
