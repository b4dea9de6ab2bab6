"""Everything that talks to the Docker Engine API: networks, the load-balancer container,
replicas, and stats.

Ownership is by label. Nothing here stops, removes or reconfigures a container that does not
carry autoscaler.managed=true and the service's autoscaler.service label.
"""

from __future__ import annotations

import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests.exceptions

from autoscaler.docker.stats import StatsFormatError, StatsReading, parse_stats
from autoscaler.instrument import NULL_OBSERVER, CallObserver

log = logging.getLogger("autoscaler.docker")

LABEL_MANAGED = "autoscaler.managed"
LABEL_SERVICE = "autoscaler.service"
LABEL_ROLE = "autoscaler.role"
LABEL_PUBLISH = "autoscaler.publish"
ROLE_REPLICA = "replica"
ROLE_LOAD_BALANCER = "load-balancer"

LB_CLIENT_PORT = 8080  # inside the load-balancer container, see deploy/haproxy/haproxy.cfg
LB_METRICS_PORT = 8405
LB_ADMIN_PORT = 9999


class BackendError(Exception):
    def __init__(self, operation: str, service: str | None, message: str) -> None:
        self.operation = operation
        self.service = service
        where = f" for service {service!r}" if service else ""
        super().__init__(f"docker {operation}{where}: {message}")


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


@dataclass(frozen=True)
class Replica:
    id: str
    name: str
    service: str
    state: str  # docker's: created, running, exited, dead, ...
    ip: str | None  # on the service's network
    created_at_seconds: float  # epoch

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class LoadBalancer:
    id: str
    name: str
    admin_host: str
    admin_port: int
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


class DockerBackend:
    def __init__(
        self,
        client: docker.DockerClient,
        observer: CallObserver = NULL_OBSERVER,
        stats_workers: int = 16,
        access: str = "published",
    ) -> None:
        self._client = client
        self._observer = observer
        self._access = access  # see DaemonConfig.load_balancer_access
        # Stats calls block for the engine's 1 s collection tick: run them side by side.
        self._stats_pool = ThreadPoolExecutor(stats_workers, thread_name_prefix="docker-stats")

    @classmethod
    def from_env(
        cls, observer: CallObserver = NULL_OBSERVER, timeout_seconds: int = 30, access: str = "published"
    ) -> DockerBackend:
        try:
            client = docker.from_env(timeout=timeout_seconds, max_pool_size=32)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise BackendError(
                "connect", None,
                f"the Docker engine is not reachable ({exc}); start dockerd or set DOCKER_HOST",
            ) from exc
        return cls(client, observer, access=access)

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
                raise BackendError(operation, service, str(exc)) from exc

    # --- checks -------------------------------------------------------------------------

    def missing_images(self, images: list[str]) -> list[str]:
        missing = []
        for image in dict.fromkeys(images):
            try:
                self._call("image_inspect", None, self._client.api.inspect_image, image)
            except docker.errors.NotFound:
                missing.append(image)
        return missing

    # --- network --------------------------------------------------------------------------

    def ensure_network(self, service: str, name: str) -> None:
        found = self._call("network_list", service, self._client.api.networks, names=[name])
        if any(n.get("Name") == name for n in found):
            return
        log.info("creating network %s", name, extra={"service": service})
        self._call(
            "network_create", service, self._client.api.create_network, name,
            driver="bridge", check_duplicate=True,
            labels={LABEL_MANAGED: "true", LABEL_SERVICE: service},
        )

    # --- load balancer --------------------------------------------------------------------

    def find_load_balancer(self, service: str) -> dict[str, Any] | None:
        found = self._call(
            "container_list", service, self._client.api.containers,
            all=True, filters=_label_filter(service, ROLE_LOAD_BALANCER),
        )
        return found[0] if found else None

    def existing_load_balancer(self, service: str) -> LoadBalancer | None:
        """The service's running load balancer, without creating or starting anything."""
        found = self.find_load_balancer(service)
        if found is None or found["State"] != "running":
            return None
        return self._load_balancer_info(service, found["Id"])

    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> tuple[LoadBalancer, bool]:
        """Adopts the service's load balancer (starting it if stopped) or creates it.

        Returns the load balancer and whether it was created or (re)started, i.e. whether its
        runtime membership is empty and must be rebuilt.
        """
        publish = f"{spec.publish_host}:{spec.publish_port}"
        existing = self.find_load_balancer(spec.service)
        fresh = False
        if existing is None:
            log.info("creating load balancer for %s on %s", spec.service, publish,
                     extra={"service": spec.service})
            container_id = self._create_load_balancer(spec)
            fresh = True
        else:
            container_id = existing["Id"]
            if existing["Labels"].get(LABEL_PUBLISH) != publish:
                log.warning(
                    "adopted load balancer %s publishes %s, config says %s: remove it to apply",
                    existing["Names"][0].lstrip("/"), existing["Labels"].get(LABEL_PUBLISH),
                    publish, extra={"service": spec.service},
                )
            if existing["State"] != "running":
                log.info("starting stopped load balancer %s", container_id[:12],
                         extra={"service": spec.service})
                self._call("container_start", spec.service, self._client.api.start, container_id)
                fresh = True
        return self._load_balancer_info(spec.service, container_id), fresh

    def _create_load_balancer(self, spec: LoadBalancerSpec) -> str:
        api = self._client.api
        host_config = api.create_host_config(
            port_bindings={
                LB_CLIENT_PORT: (spec.publish_host, spec.publish_port),
                # Admin API and exporter: loopback only, on a port the engine picks.
                LB_ADMIN_PORT: ("127.0.0.1",),
                LB_METRICS_PORT: ("127.0.0.1",),
            },
            network_mode=spec.network,
            restart_policy={"Name": "unless-stopped"},
        )
        labels = owner_labels(spec.service, ROLE_LOAD_BALANCER)
        labels[LABEL_PUBLISH] = f"{spec.publish_host}:{spec.publish_port}"
        created = self._call(
            "container_create", spec.service, api.create_container,
            spec.image,
            name=f"autoscaler-{spec.service}-lb",
            labels=labels,
            environment={"HEALTH_PATH": spec.health_path, "BALANCE": spec.algorithm},
            ports=[LB_CLIENT_PORT, LB_ADMIN_PORT, LB_METRICS_PORT],
            host_config=host_config,
        )
        container_id: str = created["Id"]
        try:
            self._call("container_start", spec.service, api.start, container_id)
        except BackendError:
            # Leave nothing half-made behind (e.g. the published port is taken).
            self._call("container_remove", spec.service, api.remove_container, container_id, force=True)
            raise
        return container_id

    def _load_balancer_info(self, service: str, container_id: str) -> LoadBalancer:
        info = self._call("container_inspect", service, self._client.api.inspect_container, container_id)
        ports = info["NetworkSettings"]["Ports"] or {}

        def host_port(port: int) -> tuple[str, int]:
            bindings = ports.get(f"{port}/tcp") or []
            if not bindings:
                raise BackendError("container_inspect", service, f"load balancer port {port} is not published")
            return bindings[0]["HostIp"] or "127.0.0.1", int(bindings[0]["HostPort"])

        name = info["Name"].lstrip("/")
        if self._access == "network":
            # The daemon shares the service's network: Docker's DNS resolves the container name.
            admin_host, admin_port = name, LB_ADMIN_PORT
            metrics_host, metrics_port = name, LB_METRICS_PORT
        else:
            admin_host, admin_port = host_port(LB_ADMIN_PORT)
            metrics_host, metrics_port = host_port(LB_METRICS_PORT)
        return LoadBalancer(
            id=container_id,
            name=name,
            admin_host=admin_host,
            admin_port=admin_port,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            publish=info["Config"]["Labels"].get(LABEL_PUBLISH, ""),
        )

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
            replicas.append(
                Replica(
                    id=c["Id"],
                    name=c["Names"][0].lstrip("/"),
                    service=service,
                    state=c["State"],
                    ip=ip,
                    created_at_seconds=float(c["Created"]),
                )
            )
        return sorted(replicas, key=lambda r: (r.created_at_seconds, r.name))

    def start_replica(self, spec: ReplicaSpec) -> Replica:
        api = self._client.api
        name = f"autoscaler-{spec.service}-{secrets.token_hex(3)}"
        host_config = api.create_host_config(
            network_mode=spec.network,
            nano_cpus=int(spec.cpu_limit_cores * 1e9),
            mem_limit=spec.memory_limit_bytes,
            # An init reaps zombies and forwards SIGTERM, so stops take 0.1 s instead of 10 s.
            init=True,
        )
        created = self._call(
            "container_create", spec.service, api.create_container,
            spec.image,
            command=list(spec.command) or None,
            name=name,
            labels=owner_labels(spec.service, ROLE_REPLICA),
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
        created_at = time.time()
        return Replica(container_id, name, spec.service, info["State"]["Status"], ip, created_at)

    def _force_remove(self, service: str, container_id: str) -> None:
        try:
            self._call("container_remove", service, self._client.api.remove_container, container_id, force=True)
        except (BackendError, docker.errors.NotFound):
            log.warning("could not remove container %s", container_id[:12], extra={"service": service})

    def remove_replica(self, service: str, container_id: str, stop_timeout_seconds: int) -> None:
        """SIGTERM, wait up to stop_timeout_seconds, then remove. Refuses containers we don't own."""
        api = self._client.api
        try:
            info = self._call("container_inspect", service, api.inspect_container, container_id)
        except docker.errors.NotFound:
            return
        if not is_owned(info["Config"]["Labels"], service):
            raise BackendError("container_remove", service, f"refusing to touch {container_id[:12]}: not ours")
        try:
            if info["State"]["Running"]:
                self._call("container_stop", service, api.stop, container_id, timeout=stop_timeout_seconds)
            self._call("container_remove", service, api.remove_container, container_id)
        except docker.errors.NotFound:
            return

    # --- stats ----------------------------------------------------------------------------

    def read_stats(self, service: str, container_ids: list[str]) -> dict[str, StatsReading | None]:
        """One-shot stats for every container, concurrently. None = no reading this time."""

        def one(container_id: str) -> StatsReading | None:
            try:
                doc = self._call(
                    "container_stats", service, self._client.api.stats,
                    container_id, stream=False, one_shot=True,
                )
                return parse_stats(doc)
            except (BackendError, docker.errors.NotFound, StatsFormatError) as exc:
                log.debug("no stats for %s: %s", container_id[:12], exc, extra={"service": service})
                return None

        return dict(zip(container_ids, self._stats_pool.map(one, container_ids)))
