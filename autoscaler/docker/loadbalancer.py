"""The service's HAProxy as a container on one engine (LoadBalancerHost): created, adopted,
started and replaced. Its admin socket is in a directory only the daemon shares with it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import docker
import docker.errors
import docker.types

from autoscaler.docker.containers import container_exit_report, force_remove
from autoscaler.docker.engine import DockerEngine, docker_epoch
from autoscaler.docker.labels import (
    LABEL_LB_SPEC,
    LABEL_PUBLISH,
    ROLE_LOAD_BALANCER,
    is_owned,
    label_filter,
    owner_labels,
)
from autoscaler.engine.ports import BackendError, ExitReport, LoadBalancer, LoadBalancerContainer, LoadBalancerSpec

log = logging.getLogger("autoscaler.docker")

LB_CLIENT_PORT = 8080  # inside the load-balancer container, see deploy/haproxy/haproxy.cfg
LB_METRICS_PORT = 8405
# Where each load balancer sees the admin-socket directory; the daemon mounts its own side.
LB_ADMIN_DIR = "/run/autoscaler"


def default_admin_socket_dir() -> str:
    """/run/autoscaler for root, else the user's runtime directory: somewhere only we can write."""
    if os.geteuid() == 0:
        return "/run/autoscaler"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return f"{runtime}/autoscaler" if runtime else f"/tmp/autoscaler-{os.geteuid()}"


def lb_name(service: str) -> str:
    return f"autoscaler-{service}-lb"


def lb_environment(spec: LoadBalancerSpec, name: str) -> dict[str, str]:
    """What deploy/haproxy/haproxy.cfg reads from its environment."""
    environment = {
        "HEALTH_PATH": spec.health_path,
        "BALANCE": spec.algorithm,
        "ADMIN_SOCKET": f"{LB_ADMIN_DIR}/{name}.sock",
        "ADMIN_UID": str(os.geteuid()),
    }
    if spec.per_try_timeout_seconds is not None:
        environment["PER_TRY_TIMEOUT"] = f"{max(1, round(spec.per_try_timeout_seconds * 1000))}ms"
    return environment


class AdminMount:
    """What to mount at LB_ADMIN_DIR in a load balancer so that the daemon sees its admin socket.

    A daemon on the host mounts its admin_socket_dir. A daemon in a container passes on the
    volume (or host directory) mounted at admin_socket_dir in its own container: the load
    balancers and the daemon then share it, and no replica does.
    """

    def __init__(self, engine: DockerEngine, admin_socket_dir: str | None = None) -> None:
        self._engine = engine
        self.directory = admin_socket_dir or default_admin_socket_dir()
        self._found: tuple[str, str] | None = None  # (type, source), found on first use

    def socket_path(self, name: str) -> str:
        return f"{self.directory}/{name}.sock"

    def source(self) -> tuple[str, str]:
        if self._found is None:
            own = self._engine.own_container()
            if own is None:
                self._found = ("bind", self.directory)
            else:
                mount = next((m for m in own.get("Mounts") or [] if m.get("Destination") == self.directory), None)
                if mount is None:
                    raise BackendError(
                        "admin_mount", None,
                        f"the daemon runs in container {own['Name'].lstrip('/')} but nothing is mounted at "
                        f"daemon.admin_socket_dir {self.directory}; mount a volume there "
                        "(see deploy/docker-compose.yml)",
                    )
                if mount.get("Type") == "volume":
                    self._found = ("volume", mount["Name"])
                else:
                    self._found = ("bind", mount["Source"])
        if self._found[0] == "bind":
            Path(self.directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._found


class DockerLoadBalancers:
    def __init__(self, engine: DockerEngine, admin: AdminMount, access: str = "published") -> None:
        self._engine = engine
        self._admin = admin
        self._access = access  # see DaemonConfig.load_balancer_access

    def load_balancer_container(self, service: str) -> LoadBalancerContainer | None:
        """The service's load-balancer container in whatever state it is, or None."""
        engine = self._engine
        found = engine.call("container_list", service, engine.api.containers,
                            all=True, filters=label_filter(service, ROLE_LOAD_BALANCER))
        if not found:
            return None
        c = found[0]
        labels = c.get("Labels") or {}
        started_at = None
        if c["State"] == "running":
            info = engine.call("container_inspect", service, engine.api.inspect_container, c["Id"])
            started_at = docker_epoch(info["State"].get("StartedAt"))
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
        engine = self._engine
        api = engine.change_api
        name = lb_name(spec.service)
        mount_type, source = self._admin.source()
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
        created = engine.call(
            "container_create", spec.service, api.create_container,
            spec.image,
            name=name,
            labels=labels,
            environment=lb_environment(spec, name),
            ports=[LB_CLIENT_PORT, LB_METRICS_PORT],
            host_config=host_config,
        )
        container_id: str = created["Id"]
        try:
            engine.call("container_start", spec.service, api.start, container_id)
        except BackendError:
            # Leave nothing half-made behind (e.g. the published port is taken).
            force_remove(engine, spec.service, container_id)
            raise
        return container_id

    def start_load_balancer(self, service: str, lb_id: str) -> None:
        self._engine.call("container_start", service, self._engine.change_api.start, lb_id)

    def remove_load_balancer(self, service: str, lb_id: str) -> None:
        engine = self._engine
        info = engine.call("container_inspect", service, engine.api.inspect_container, lb_id)
        if not is_owned(info["Config"]["Labels"], service):
            raise BackendError("container_remove", service, f"refusing to touch {lb_id[:12]}: not ours")
        force_remove(engine, service, lb_id)

    def load_balancer_report(self, service: str, lb_id: str) -> ExitReport:
        return container_exit_report(self._engine, service, lb_id)

    def load_balancer_info(self, service: str, lb_id: str) -> LoadBalancer:
        engine = self._engine
        info = engine.call("container_inspect", service, engine.api.inspect_container, lb_id)
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
            id=lb_id,
            name=name,
            admin_socket=self._admin.socket_path(name),
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            publish=info["Config"]["Labels"].get(LABEL_PUBLISH, ""),
        )
