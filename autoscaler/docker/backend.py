"""Everything that talks to the Docker Engine API: networks, the load-balancer container,
replicas, and stats.

Ownership is by label. Nothing here stops, removes or reconfigures a container that does not
carry autoscaler.managed=true and the service's autoscaler.service label.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from autoscaler.docker.cgroups import CgroupReader, host_mounts
from autoscaler.docker.stats import StatsFormatError, StatsReading, parse_docker_time, parse_stats
from autoscaler.instrument import NULL_OBSERVER, CallObserver

log = logging.getLogger("autoscaler.docker")

LABEL_MANAGED = "autoscaler.managed"
LABEL_SERVICE = "autoscaler.service"
LABEL_ROLE = "autoscaler.role"
LABEL_PUBLISH = "autoscaler.publish"
LABEL_PORT = "autoscaler.port"  # the port a replica listens on (it keeps it across config reloads)
LABEL_LB_SPEC = "autoscaler.lb-spec"  # hash of what a load balancer was created from
ROLE_REPLICA = "replica"
ROLE_LOAD_BALANCER = "load-balancer"

LB_CLIENT_PORT = 8080  # inside the load-balancer container, see deploy/haproxy/haproxy.cfg
LB_METRICS_PORT = 8405
# Where each load balancer sees the admin-socket directory; the daemon mounts its own side.
LB_ADMIN_DIR = "/run/autoscaler"
LOG_TAIL_LINES = 5
# Stats through the API block for the engine's 1 s tick each: all of them run at once, so that
# N replicas take one tick, not N / pool size. Threads are made as needed, up to this.
API_STATS_WORKERS = 256


class BackendError(Exception):
    """A Docker call failed. `unreachable`: the engine did not answer at all (stopped,
    restarting, socket gone), as opposed to answering with an error."""

    def __init__(self, operation: str, service: str | None, message: str, unreachable: bool = False) -> None:
        self.operation = operation
        self.service = service
        self.unreachable = unreachable
        where = f" for service {service!r}" if service else ""
        super().__init__(f"docker {operation}{where}: {message}")


class Unusable(BackendError):
    """What the config names exists but cannot be used as it is (a global service to scale,
    a service without our label): the config must change, so the daemon exits 2."""


@dataclass(frozen=True)
class ReplicaSpec:
    service: str
    image: str
    port: int
    network: str
    cpu_limit_cores: float
    memory_limit_bytes: int
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


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

    def fingerprint(self) -> str:
        """What a load balancer was created from; an adopted one that differs is re-created."""
        fields = [self.image, self.network, self.publish_host, self.publish_port, self.health_path, self.algorithm]
        if self.node is not None:
            fields.append(self.node)
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]


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
    orchestrated: bool = False  # started and removed by an orchestrator, not by us

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
class LoadBalancerContainer:
    """The load-balancer container as the engine reports it, running or not."""

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


def owner_labels(service: str, role: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_SERVICE: service, LABEL_ROLE: role}


def _label_filter(service: str, role: str) -> dict[str, list[str]]:
    return {"label": [f"{k}={v}" for k, v in owner_labels(service, role).items()]}


def is_owned(labels: dict[str, str] | None, service: str) -> bool:
    labels = labels or {}
    return labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_SERVICE) == service


def default_admin_socket_dir() -> str:
    """/run/autoscaler for root, else the user's runtime directory: somewhere only we can write."""
    if os.geteuid() == 0:
        return "/run/autoscaler"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return f"{runtime}/autoscaler" if runtime else f"/tmp/autoscaler-{os.geteuid()}"


class DockerBackend:
    """Replicas are containers on one engine: the controller starts and removes them."""

    orchestrated = False

    def __init__(
        self,
        client: docker.DockerClient,
        observer: CallObserver = NULL_OBSERVER,
        stats_workers: int = API_STATS_WORKERS,
        access: str = "published",
        admin_socket_dir: str | None = None,
        cgroups: bool | None = None,
    ) -> None:
        self._client = client
        self._observer = observer
        self._access = access  # see DaemonConfig.load_balancer_access
        self.admin_socket_dir = admin_socket_dir or default_admin_socket_dir()
        self._admin_mount: tuple[str, str] | None = None  # (type, source), found on first use
        self._stats_pool = ThreadPoolExecutor(stats_workers, thread_name_prefix="docker-stats")
        # Cgroup files are only ours to read when the engine runs on this host (a unix socket).
        if cgroups is None:
            cgroups = str(getattr(client.api, "base_url", "")).startswith("http+docker://")
        self._cgroup_mounts = host_mounts() if cgroups else []
        self._cgroup_readers: dict[str, CgroupReader] = {}
        self.stats_sources: dict[str, str] = {}  # service -> "cgroup" | "docker_api" | "mixed"

    @classmethod
    def from_env(
        cls,
        observer: CallObserver = NULL_OBSERVER,
        timeout_seconds: int = 30,
        access: str = "published",
        admin_socket_dir: str | None = None,
    ) -> DockerBackend:
        try:
            client = docker.from_env(timeout=timeout_seconds, max_pool_size=API_STATS_WORKERS)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise BackendError(
                "connect", None,
                f"the Docker engine is not reachable ({exc}); start dockerd or set DOCKER_HOST",
            ) from exc
        return cls(client, observer, access=access, admin_socket_dir=admin_socket_dir)

    @property
    def client(self) -> docker.DockerClient:
        return self._client

    def ping(self) -> bool:
        try:
            return bool(self._call("ping", None, self._client.ping))
        except BackendError:
            return False

    def close(self) -> None:
        self._stats_pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _call(self, operation: str, service: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._observer.call("docker", operation):
            try:
                return fn(*args, **kwargs)
            except docker.errors.NotFound:
                raise
            except docker.errors.APIError as exc:
                # The engine's own sentence, without the request URL around it.
                raise BackendError(operation, service, str(exc.explanation or exc)) from exc
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise BackendError(operation, service, str(exc), unreachable=_unreachable(exc)) from exc

    # --- the workload: nothing to prepare, the controller starts each container -------------

    def prepare(self, spec: ReplicaSpec, initial_replicas: int, drain_timeout_seconds: float, adopt: bool) -> bool:
        return False

    def remove_service(self, service: str) -> None:
        pass

    def desired_count(self, service: str) -> int | None:
        return None  # what runs is the count

    def scale(self, service: str, replicas: int) -> None:
        raise NotImplementedError("the controller starts and removes containers itself")

    # --- checks -------------------------------------------------------------------------

    def capacity(self) -> tuple[int, int]:
        """(CPUs, memory bytes) of the engine's host: no replica can have more."""
        info = self._call("info", None, self._client.api.info)
        return int(info.get("NCPU") or 0), int(info.get("MemTotal") or 0)

    def missing_images(self, images: list[str]) -> list[str]:
        missing = []
        for image in dict.fromkeys(images):
            try:
                self._call("image_inspect", None, self._client.api.inspect_image, image)
            except docker.errors.NotFound:
                missing.append(image)
        return missing

    # --- network --------------------------------------------------------------------------

    def ensure_network(self, service: str, name: str) -> bool:
        """Creates the service's network if it does not exist; returns whether it created it."""
        found = self._call("network_list", service, self._client.api.networks, names=[name])
        if any(n.get("Name") == name for n in found):
            return False
        log.info("creating network %s", name, extra={"service": service})
        self._call(
            "network_create", service, self._client.api.create_network, name,
            driver="bridge", check_duplicate=True,
            labels={LABEL_MANAGED: "true", LABEL_SERVICE: service},
        )
        return True

    def remove_network(self, service: str, name: str) -> None:
        """Removes a network this daemon created, if it is ours and nothing uses it any more."""
        for network in self._call("network_list", service, self._client.api.networks, names=[name]):
            if network.get("Name") == name and is_owned(network.get("Labels"), service):
                try:
                    self._call("network_remove", service, self._client.api.remove_network, network["Id"])
                except (BackendError, docker.errors.NotFound) as exc:
                    log.warning("could not remove network %s: %s", name, exc, extra={"service": service})

    # --- load balancer --------------------------------------------------------------------

    def load_balancer_container(self, service: str) -> LoadBalancerContainer | None:
        """The service's load-balancer container in whatever state it is, or None."""
        found = self._call(
            "container_list", service, self._client.api.containers,
            all=True, filters=_label_filter(service, ROLE_LOAD_BALANCER),
        )
        if not found:
            return None
        c = found[0]
        labels = c.get("Labels") or {}
        started_at = None
        if c["State"] == "running":
            info = self._call("container_inspect", service, self._client.api.inspect_container, c["Id"])
            started_at = _epoch(info["State"].get("StartedAt"))
        return LoadBalancerContainer(
            id=c["Id"], name=c["Names"][0].lstrip("/"), state=c["State"],
            fingerprint=labels.get(LABEL_LB_SPEC, ""), publish=labels.get(LABEL_PUBLISH, ""),
            started_at_seconds=started_at,
        )

    def existing_load_balancer(self, service: str) -> LoadBalancer | None:
        """The service's running load balancer, without creating or starting anything."""
        found = self.load_balancer_container(service)
        if found is None or found.state != "running":
            return None
        return self.load_balancer_info(service, found.id)

    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> tuple[LoadBalancer, bool]:
        """Adopts the service's load balancer (starting it if stopped) or creates it.

        A load balancer created from another spec (health path, algorithm, image, address) is
        re-created, so that a changed config applies after a restart. Returns the load balancer
        and whether it is new or (re)started, i.e. whether its membership must be rebuilt.
        """
        existing = self.load_balancer_container(spec.service)
        if existing is not None and existing.fingerprint != spec.fingerprint():
            log.warning(
                "load balancer %s was created from another config (publish %s, or health path, "
                "algorithm or image): re-creating it; clients see a short interruption",
                existing.name, existing.publish or "?", extra={"service": spec.service},
            )
            self.remove_load_balancer(spec.service, existing.id)
            existing = None
        if existing is None:
            log.info("creating load balancer for %s on %s:%d", spec.service, spec.publish_host,
                     spec.publish_port, extra={"service": spec.service})
            return self.load_balancer_info(spec.service, self.create_load_balancer(spec)), True
        if existing.state != "running":
            log.info("starting stopped load balancer %s", existing.name, extra={"service": spec.service})
            self.start_load_balancer(spec.service, existing.id)
            return self.load_balancer_info(spec.service, existing.id), True
        return self.load_balancer_info(spec.service, existing.id), False

    def create_load_balancer(self, spec: LoadBalancerSpec) -> str:
        api = self._client.api
        name = f"autoscaler-{spec.service}-lb"
        mount_type, source = self.admin_mount()
        if mount_type == "bind":
            Path(self.admin_socket_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        host_config = api.create_host_config(
            port_bindings={
                LB_CLIENT_PORT: (spec.publish_host, spec.publish_port),
                # The exporter is read-only stats: loopback, on a port the engine picks.
                LB_METRICS_PORT: ("127.0.0.1",),
            },
            network_mode=spec.network,
            restart_policy={"Name": "unless-stopped"},
            # no_copy: the engine must not copy the image's files or ownership onto the volume.
            mounts=[docker.types.Mount(LB_ADMIN_DIR, source, type=mount_type, no_copy=mount_type == "volume")],
        )
        labels = owner_labels(spec.service, ROLE_LOAD_BALANCER)
        labels[LABEL_PUBLISH] = f"{spec.publish_host}:{spec.publish_port}"
        labels[LABEL_LB_SPEC] = spec.fingerprint()
        created = self._call(
            "container_create", spec.service, api.create_container,
            spec.image,
            name=name,
            labels=labels,
            environment={
                "HEALTH_PATH": spec.health_path,
                "BALANCE": spec.algorithm,
                "ADMIN_SOCKET": f"{LB_ADMIN_DIR}/{name}.sock",
                "ADMIN_UID": str(os.geteuid()),
            },
            ports=[LB_CLIENT_PORT, LB_METRICS_PORT],
            host_config=host_config,
        )
        container_id: str = created["Id"]
        try:
            self._call("container_start", spec.service, api.start, container_id)
        except BackendError:
            # Leave nothing half-made behind (e.g. the published port is taken).
            self._force_remove(spec.service, container_id)
            raise
        return container_id

    def start_load_balancer(self, service: str, container_id: str) -> None:
        self._call("container_start", service, self._client.api.start, container_id)

    def remove_load_balancer(self, service: str, container_id: str) -> None:
        info = self._call("container_inspect", service, self._client.api.inspect_container, container_id)
        if not is_owned(info["Config"]["Labels"], service):
            raise BackendError("container_remove", service, f"refusing to touch {container_id[:12]}: not ours")
        self._force_remove(service, container_id)

    def load_balancer_info(self, service: str, container_id: str) -> LoadBalancer:
        info = self._call("container_inspect", service, self._client.api.inspect_container, container_id)
        ports = info["NetworkSettings"]["Ports"] or {}
        name = info["Name"].lstrip("/")
        if self._access == "network":
            # The daemon shares the service's network: Docker's DNS resolves the container name.
            metrics_host, metrics_port = name, LB_METRICS_PORT
        else:
            bindings = ports.get(f"{LB_METRICS_PORT}/tcp") or []
            if bindings:
                metrics_host, metrics_port = bindings[0]["HostIp"] or "127.0.0.1", int(bindings[0]["HostPort"])
            else:  # not running: the engine publishes ports only while it runs
                metrics_host, metrics_port = "127.0.0.1", 0
        return LoadBalancer(
            id=container_id,
            name=name,
            admin_socket=f"{self.admin_socket_dir}/{name}.sock",
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            publish=info["Config"]["Labels"].get(LABEL_PUBLISH, ""),
        )

    def admin_mount(self) -> tuple[str, str]:
        """What to mount at LB_ADMIN_DIR in a load balancer so the daemon sees its admin socket.

        A daemon on the host mounts its admin_socket_dir. A daemon in a container passes on the
        volume (or host directory) mounted at admin_socket_dir in its own container: the load
        balancers and the daemon then share it, and no replica does.
        """
        if self._admin_mount is None:
            own = self._own_container()
            if own is None:
                self._admin_mount = ("bind", self.admin_socket_dir)
            else:
                mount = next(
                    (m for m in own.get("Mounts") or [] if m.get("Destination") == self.admin_socket_dir), None
                )
                if mount is None:
                    raise BackendError(
                        "admin_mount", None,
                        f"the daemon runs in container {own['Name'].lstrip('/')} but nothing is mounted at "
                        f"daemon.admin_socket_dir {self.admin_socket_dir}; mount a volume there "
                        "(see deploy/docker-compose.yml)",
                    )
                if mount.get("Type") == "volume":
                    self._admin_mount = ("volume", mount["Name"])
                else:
                    self._admin_mount = ("bind", mount["Source"])
        return self._admin_mount

    def _own_container(self) -> dict[str, Any] | None:
        """The container this process runs in, if the engine we talk to runs it."""
        if not Path("/.dockerenv").exists():
            return None
        try:
            return self._call("container_inspect", None, self._client.api.inspect_container, socket.gethostname())
        except (docker.errors.NotFound, BackendError):
            return None

    # --- replicas -------------------------------------------------------------------------

    def list_replicas(self, service: str, network: str) -> list[Replica]:
        found = self._call(
            "container_list", service, self._client.api.containers,
            all=True, filters=_label_filter(service, ROLE_REPLICA),
        )
        replicas = []
        for c in found:
            networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
            ip = (networks.get(network) or {}).get("IPAddress") or None
            port_label = (c.get("Labels") or {}).get(LABEL_PORT, "")
            replicas.append(
                Replica(
                    id=c["Id"],
                    name=c["Names"][0].lstrip("/"),
                    service=service,
                    state=c["State"],
                    ip=ip,
                    created_at_seconds=float(c["Created"]),
                    port=int(port_label) if port_label.isdigit() else None,
                )
            )
        return sorted(replicas, key=lambda r: (r.created_at_seconds, r.name))

    @staticmethod
    def new_replica_name(service: str) -> str:
        # Chosen before the create, so the caller knows an in-flight start by its name.
        return f"autoscaler-{service}-{secrets.token_hex(3)}"

    def start_replica(self, spec: ReplicaSpec, name: str | None = None) -> Replica:
        """Creates and starts one replica. On a failed start nothing is left behind."""
        api = self._client.api
        name = name or self.new_replica_name(spec.service)
        host_config = api.create_host_config(
            network_mode=spec.network,
            nano_cpus=int(spec.cpu_limit_cores * 1e9),
            mem_limit=spec.memory_limit_bytes,
            # An init reaps zombies and forwards SIGTERM, so stops take 0.1 s instead of 10 s.
            init=True,
        )
        labels = owner_labels(spec.service, ROLE_REPLICA)
        labels[LABEL_PORT] = str(spec.port)
        created = self._call(
            "container_create", spec.service, api.create_container,
            spec.image,
            command=list(spec.command) or None,
            name=name,
            labels=labels,
            environment=dict(spec.env),
            host_config=host_config,
        )
        container_id = created["Id"]
        try:
            self._call("container_start", spec.service, api.start, container_id)
            info = self._call("container_inspect", spec.service, api.inspect_container, container_id)
        except (BackendError, docker.errors.NotFound):
            self._force_remove(spec.service, container_id)
            raise
        ip = info["NetworkSettings"]["Networks"].get(spec.network, {}).get("IPAddress") or None
        created_at = _epoch(info.get("Created")) or time.time()
        return Replica(container_id, name, spec.service, info["State"]["Status"], ip, created_at, spec.port)

    def exit_report(self, service: str, container_id: str) -> ExitReport:
        """Exit code, OOM flag, the engine's error and the last lines of output of a container."""
        api = self._client.api
        try:
            info = self._call("container_inspect", service, api.inspect_container, container_id)
        except docker.errors.NotFound:
            return ExitReport(None, False, "container vanished", ())
        state = info.get("State") or {}
        lines: list[str] = []
        try:
            raw = self._call("container_logs", service, api.logs, container_id, tail=20)
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            lines = [line.strip()[:200] for line in text.splitlines() if line.strip()][-LOG_TAIL_LINES:]
        except (BackendError, docker.errors.NotFound):
            pass
        return ExitReport(
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
            log_tail=tuple(lines),
        )

    def _force_remove(self, service: str, container_id: str) -> None:
        try:
            self._call("container_remove", service, self._client.api.remove_container, container_id, force=True)
        except (BackendError, docker.errors.NotFound):
            log.warning("could not remove container %s", container_id[:12], extra={"service": service})

    def remove_replica(
        self, service: str, container_id: str, stop_timeout_seconds: int, force: bool = False
    ) -> None:
        """SIGTERM, wait up to stop_timeout_seconds, then remove; force=True kills at once (a
        replica that failed serves nobody). Refuses containers we don't own."""
        api = self._client.api
        try:
            info = self._call("container_inspect", service, api.inspect_container, container_id)
        except docker.errors.NotFound:
            return
        if not is_owned(info["Config"]["Labels"], service):
            raise BackendError("container_remove", service, f"refusing to touch {container_id[:12]}: not ours")
        try:
            if force:
                self._call("container_remove", service, api.remove_container, container_id, force=True)
                return
            if info["State"]["Running"]:
                self._call("container_stop", service, api.stop, container_id, timeout=stop_timeout_seconds)
            self._call("container_remove", service, api.remove_container, container_id)
        except docker.errors.NotFound:
            return

    # --- stats ----------------------------------------------------------------------------

    def read_stats(self, service: str, container_ids: list[str]) -> dict[str, StatsReading | None]:
        """CPU and memory of every container: from its cgroup files where this host has them,
        else one-shot Docker stats, all at once. None = no reading this time."""
        result: dict[str, StatsReading | None] = {}
        api_ids = list(container_ids)
        if self._cgroup_mounts:
            reader = self._cgroup_readers.get(service)
            if reader is None:
                reader = self._cgroup_readers[service] = CgroupReader(self._cgroup_mounts)
            reader.forget(set(container_ids))
            api_ids = []
            with self._observer.call("cgroup", "read_stats"):
                for container_id in container_ids:
                    if not reader.known(container_id):
                        reader.locate(container_id, self._pid(service, container_id))
                    reading = reader.read(container_id)
                    if reading is None:
                        api_ids.append(container_id)
                    else:
                        result[container_id] = reading
        if api_ids:
            result.update(zip(api_ids, self._stats_pool.map(lambda i: self._api_stats(service, i), api_ids)))
        if container_ids:
            self.stats_sources[service] = (
                "cgroup" if not api_ids else "docker_api" if len(api_ids) == len(container_ids) else "mixed"
            )
        return result

    def stats_source(self, service: str) -> str | None:
        """Where the last reading of the service came from: cgroup, docker_api or mixed."""
        return self.stats_sources.get(service)

    def _pid(self, service: str, container_id: str) -> int | None:
        try:
            info = self._call("container_inspect", service, self._client.api.inspect_container, container_id)
        except (BackendError, docker.errors.NotFound):
            return None
        return int(info["State"].get("Pid") or 0) or None

    def _api_stats(self, service: str, container_id: str) -> StatsReading | None:
        try:
            doc = self._call(
                "container_stats", service, self._client.api.stats, container_id, stream=False, one_shot=True,
            )
            return parse_stats(doc)
        except (BackendError, docker.errors.NotFound, StatsFormatError) as exc:
            log.debug("no stats for %s: %s", container_id[:12], exc, extra={"service": service})
            return None


def _epoch(text: str | None) -> float | None:
    """A Docker time as epoch seconds; None for none (Docker's zero time) or an unreadable one."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return parse_docker_time(text)
    except ValueError:
        return None


def _unreachable(exc: Exception) -> bool:
    """The engine did not answer (no socket, refused, reset, timed out), rather than refusing."""
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))
