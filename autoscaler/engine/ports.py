"""The engine's ports: what it needs from the world, and the value types they exchange.

Every backend implements the ports it serves and imports them from here; no backend imports
another backend's types. The engine is written against these protocols only.

What varies between services is split along these ports:
- the **scale target**, what keeps N replicas:
    `ContainerRuntime`     containers the engine itself starts and stops (one Docker engine);
    `OrchestratedService`  a count an orchestrator keeps (a Swarm service), as Nomad's target
                           plugin (`Status`, `Scale`) or the HPA's scale subresource;
- **membership**, the optional load balancer in front of the replicas:
    `LoadBalancerHost`     where it runs (a container, a Swarm service) and how it is repaired;
    `LoadBalancerAPI`      its runtime API: register, check, ready, drain, delete;
- `MetricsSource` (CPU and memory of replicas), `ExternalSource` (one number from outside the
  replicas: a query, a queue's length), `Networks`, `LeaseHolder`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

# --- errors ---------------------------------------------------------------------------------


class BackendError(Exception):
    """A call to the engine or orchestrator failed. `unreachable`: it did not answer at all
    (stopped, restarting, socket gone, timed out), as opposed to answering with an error."""

    def __init__(self, operation: str, service: str | None, message: str, unreachable: bool = False,
                 waited_seconds: float = 0.0) -> None:
        self.operation = operation
        self.service = service
        self.unreachable = unreachable
        self.waited_seconds = waited_seconds  # how long the call waited for an answer that never came
        where = f" for service {service!r}" if service else ""
        super().__init__(f"docker {operation}{where}: {message}")


class Unusable(BackendError):
    """What the config names exists but cannot be used as it is (a global service to scale,
    a service without our label): the config must change, so the daemon exits 2."""


class MembershipError(Exception):
    """A call to the load balancer's runtime API failed."""


class ServerBusy(MembershipError):
    """A server cannot be deleted yet: connections are still attached to it."""


class SourceError(Exception):
    """An external metric's source gave no usable number this time; the message is one line in
    the source's own words (Prometheus's error, Redis's reply)."""


# --- replicas -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthcheckSpec:
    """A Docker HEALTHCHECK, as the engine runs it."""

    test: tuple[str, ...]  # ("CMD", prog, args...) or ("CMD-SHELL", command)
    interval_seconds: float
    timeout_seconds: float
    retries: int
    start_period_seconds: float


# Where a replica's image comes from (autoscaler/docker/images.py): the engine's own when it has
# it, else the registry ("missing"); the registry's when first needed ("always"); only the engine's
# ("never").
PullPolicy = Literal["missing", "always", "never"]


@dataclass(frozen=True)
class ContainerTemplate:
    """A container the replicas copy (docker/template.py), in Docker's own API structures, with
    what cannot be shared between replicas taken out: the name, the hostname, published host
    ports, fixed addresses, compose's identity labels."""

    source: str  # for people: "container 'shop_web_1'"
    image: str  # the template's image id: every replica runs the same bytes as the template
    config: dict[str, Any]  # the create body's container fields (Entrypoint, Cmd, Env, User, Labels, ...)
    host_config: dict[str, Any]  # HostConfig (mounts, capabilities, log driver, limits, ...)
    networks: dict[str, tuple[str, ...]]  # every network it is on -> its aliases there
    version: str  # a hash of all of the above: what a rollout compares


@dataclass(frozen=True)
class ContainerFields:
    """compose's common service fields, as the TOML gives them (config/container.py)."""

    volumes: tuple[str, ...] = ()  # "[source:]target[:mode]"
    networks: tuple[tuple[str, tuple[str, ...]], ...] = ()  # extra networks and their aliases
    labels: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    read_only: bool = False
    tmpfs: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    stop_signal: str | None = None
    log_driver: str | None = None
    log_options: tuple[tuple[str, str], ...] = ()


# How a spec's image is fetched is not what a replica is made from: no rollout when it changes.
_NOT_VERSIONED = frozenset({"pull", "pull_timeout_seconds", "resolved_from"})


@dataclass(frozen=True)
class ReplicaSpec:
    service: str
    image: str  # as configured; ContainerRuntime.resolve_image says what to create replicas from
    port: int | None  # None: a worker, which nothing connects to
    network: str
    cpu_limit_cores: float
    memory_limit_bytes: int
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    healthcheck: HealthcheckSpec | None = None  # None: the image's own, if it has one
    fields: ContainerFields = field(default_factory=ContainerFields)
    template: ContainerTemplate | None = None  # set: the replicas copy it, the fields above on top
    pull: PullPolicy = "missing"
    pull_timeout_seconds: float = 300.0
    # The version of the spec as configured, kept when its image is resolved to a digest for
    # a start (the resolved spec is the same version).
    resolved_from: str | None = None

    @cached_property
    def version(self) -> str:
        """A hash of everything a replica is made from (how the image is pulled aside): replicas
        of another version are rolled over to this one (a rolling update)."""
        if self.resolved_from is not None:
            return self.resolved_from
        made_of = {k: v for k, v in asdict(self).items() if k not in _NOT_VERSIONED}
        return hashlib.sha256(json.dumps(made_of, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Replica:
    id: str
    name: str
    service: str
    state: str  # docker's: created, running, paused, restarting, exited, dead, removing
    ip: str | None  # on the service's network
    created_at_seconds: float  # epoch
    port: int | None = None  # from the replica's own label; None for replicas that predate it
    leaving: bool = False  # an orchestrator (Swarm) marked it for removal; it still runs
    node: str | None = None  # Swarm: the node it runs on
    # Docker's health status where a HEALTHCHECK is defined: "starting", "healthy" or
    # "unhealthy"; None where the container has no check.
    health: str | None = None
    # What it was made from (ReplicaSpec.version, from its label); None for replicas that
    # predate versions: they count as the current version, so an upgrade rolls nothing.
    version: str | None = None
    # The image it was created from, as resolved (`repo@sha256:...` once pinned). None where
    # unknown (Swarm tasks).
    image: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def terminated(self) -> bool:
        """Stopped for good: it will not serve again without a restart we never do."""
        return self.state in ("exited", "dead")


@dataclass(frozen=True)
class ExitReport:
    """Why a container stopped, read before it is removed (its logs go with it)."""

    exit_code: int | None
    oom_killed: bool
    error: str  # the engine's own error (e.g. "exec: not found"), often empty
    log_tail: tuple[str, ...]

    def describe(self) -> str:
        parts = [f"exit code {self.exit_code}" if self.exit_code is not None else "exit code unknown"]
        parts.append("OOM killed: yes" if self.oom_killed else "OOM killed: no")
        if self.error:
            parts.append(f"error: {self.error}")
        text = ", ".join(parts)
        if self.log_tail:
            text += "; last output: " + " | ".join(self.log_tail)
        return text


@dataclass(frozen=True)
class StatsReading:
    cpu_total_ns: int  # cumulative CPU time of the container
    system_cpu_ns: int | None  # cumulative CPU time of the host (all CPUs), same instant
    online_cpus: int
    read_at_seconds: float  # the engine's timestamp of this reading (epoch seconds)
    memory_used_bytes: int | None  # usage minus inactive page cache, as `docker stats` shows
    memory_limit_bytes: int | None


# --- the load balancer ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoadBalancerSpec:
    service: str
    image: str
    network: str
    publish_host: str
    publish_port: int
    health_path: str
    algorithm: str = "roundrobin"
    node: str | None = None  # Swarm: the node that runs it (None: the daemon's)
    per_try_timeout_seconds: float | None = None  # retry a request without a response after this long

    def fingerprint(self) -> str:
        """What a load balancer was created from; an adopted one that differs is re-created."""
        fields: list[object] = [self.image, self.network, self.publish_host, self.publish_port, self.health_path,
                                self.algorithm]
        # Optional fields count only when set, so that load balancers created before they
        # existed are adopted as they are.
        if self.node is not None:
            fields.append(self.node)
        if self.per_try_timeout_seconds is not None:
            fields.append(["per_try_timeout_seconds", self.per_try_timeout_seconds])
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LoadBalancerContainer:
    """The load balancer as the engine reports it, running or not."""

    id: str
    name: str
    state: str
    fingerprint: str
    publish: str
    started_at_seconds: float | None  # epoch, when running


@dataclass(frozen=True)
class LoadBalancer:
    id: str
    name: str
    admin_socket: str  # path on the daemon's side of the admin mount
    metrics_host: str
    metrics_port: int
    publish: str


@dataclass(frozen=True)
class ServerStat:
    name: str
    address: str  # "ip:port"
    status: str  # UP, DOWN, MAINT, DRAIN, NOLB, "UP 1/2", ...
    check_status: str  # L7OK, L4CON, INI, ...
    sessions_current: int
    sessions_total: int
    request_rate: float  # requests in the last second (req_rate)
    response_time_ms: float | None  # mean of the last 1024 responses (rtime)
    queue_current: int
    http_5xx_total: int

    @property
    def maintenance(self) -> bool:
        return self.status.startswith("MAINT")

    @property
    def draining(self) -> bool:
        return self.status.startswith("DRAIN")

    @property
    def check_passed(self) -> bool:
        return self.check_status in ("L7OK", "L6OK", "L4OK")

    @property
    def serving(self) -> bool:
        """In rotation and healthy: gets new traffic."""
        return self.status.startswith("UP") and not self.maintenance


@dataclass(frozen=True)
class BackendStat:
    queue_current: int
    sessions_current: int
    request_rate: float
    response_time_ms: float | None


# --- the ports ------------------------------------------------------------------------------


class ContainerRuntime(Protocol):
    """The scale target of containers the engine starts and stops itself."""

    def list_replicas(self, service: str, network: str) -> list[Replica]: ...
    def new_replica_name(self, service: str) -> str: ...
    def resolve_image(self, spec: ReplicaSpec) -> str:
        """The reference to create the spec's replicas from, pulled as `spec.pull` says and
        pinned by digest once resolved. A pull takes up to `spec.pull_timeout_seconds`: called
        in a start operation's thread, never in a pass."""
        ...
    def check_image(self, spec: ReplicaSpec) -> tuple[str | None, str]:
        """Pulls the tag again (pull = "always"): (the digest reference pinned until now or
        None, the one pinned from now on). In an operation's thread, never in a pass."""
        ...
    def start_replica(self, spec: ReplicaSpec, name: str) -> Replica: ...
    def remove_replica(self, service: str, replica_id: str, stop_timeout_seconds: int, force: bool = False) -> None: ...
    def exit_report(self, service: str, replica_id: str) -> ExitReport: ...
    def read_template(self, service: str, container: str | None, compose: tuple[str, str] | None) -> ContainerTemplate: ...


class OrchestratedService(Protocol):
    """The scale target of an orchestrator that keeps the count itself: it picks, starts,
    restarts and stops the replicas; we read them and set how many."""

    def prepare(self, spec: ReplicaSpec, initial_replicas: int, stop_grace_seconds: float, adopt: bool) -> bool: ...
    def remove_service(self, service: str) -> None: ...
    def list_replicas(self, service: str, network: str) -> list[Replica]: ...
    def desired_count(self, service: str) -> int | None: ...
    def scale(self, service: str, replicas: int) -> None: ...
    def version_of(self, service: str) -> str | None: ...
    def roll_out(self, spec: ReplicaSpec) -> None: ...
    def exit_report(self, service: str, replica_id: str) -> ExitReport: ...


class Networks(Protocol):
    def ensure_network(self, service: str, name: str) -> bool: ...
    def remove_network(self, service: str, name: str) -> None: ...


class LoadBalancerHost(Protocol):
    """Where the service's load balancer runs: created, adopted, started, replaced."""

    def existing_load_balancer(self, service: str) -> LoadBalancer | None: ...
    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> tuple[LoadBalancer, bool]: ...
    def load_balancer_container(self, service: str) -> LoadBalancerContainer | None: ...
    def create_load_balancer(self, spec: LoadBalancerSpec) -> str: ...
    def start_load_balancer(self, service: str, lb_id: str) -> None: ...
    def remove_load_balancer(self, service: str, lb_id: str) -> None: ...
    def load_balancer_info(self, service: str, lb_id: str) -> LoadBalancer: ...
    def load_balancer_report(self, service: str, lb_id: str) -> ExitReport: ...


class LoadBalancerAPI(Protocol):
    """The load balancer's runtime API (HAProxy's): membership without a reload."""

    def snapshot(self) -> tuple[BackendStat, dict[str, ServerStat]]: ...
    def servers(self) -> dict[str, ServerStat]: ...
    def add_server(self, name: str, address: str, port: int) -> None: ...
    def enable_health(self, name: str) -> None: ...
    def set_ready(self, name: str) -> None: ...
    def set_drain(self, name: str) -> None: ...
    def set_health_down(self, name: str) -> None: ...
    def delete_server(self, name: str, force: bool = False) -> None: ...


class ExternalSource(Protocol):
    """One external metric's current value (autoscaler/sources/). Raises SourceError; waits at
    most its own timeout."""

    def read(self) -> float: ...
    def close(self) -> None: ...


class MetricsSource(Protocol):
    """CPU and memory of replicas. None per replica it could not read this time."""

    def read_stats(self, service: str, replica_ids: list[str]) -> dict[str, StatsReading | None]: ...
    def stats_source(self, service: str) -> str | None: ...
    def source_errors(self, service: str) -> dict[str, str]: ...


class LeaseHolder(Protocol):
    """One daemon per service: None from try_acquire when ours, else who holds it. held() is
    False once the renew deadline passed without a renewal (a holder that hung)."""

    renew_deadline_seconds: float

    def try_acquire(self) -> str | None: ...
    def held(self) -> bool: ...
    def renew(self) -> None: ...
    def release(self) -> None: ...
