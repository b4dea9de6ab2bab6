"""Replicas as containers on one engine: the scale target whose replicas the engine itself
creates, starts, stops and removes (ContainerRuntime)."""

from __future__ import annotations

import logging
import secrets
import time

import docker
import docker.errors

from autoscaler.docker.engine import DockerEngine, docker_epoch
from autoscaler.docker.images import DockerImages
from autoscaler.docker.labels import LABEL_PORT, LABEL_VERSION, ROLE_REPLICA, is_owned, label_filter
from autoscaler.docker.template import create_body, read_template
from autoscaler.engine.ports import BackendError, ContainerTemplate, ExitReport, Replica, ReplicaSpec

log = logging.getLogger("autoscaler.docker")

LOG_TAIL_LINES = 5

# The container list has no structured health, but its Status says it the way `docker ps` does
# ("Up 3 seconds (health: starting)"): read there, one list call a pass, rather than one
# inspect per replica.
_HEALTH_IN_STATUS = (("(health: starting)", "starting"), ("(unhealthy)", "unhealthy"), ("(healthy)", "healthy"))


def health_of(status: str) -> str | None:
    """Docker's health status from a container list entry's Status; None: no check."""
    for marker, health in _HEALTH_IN_STATUS:
        if status.endswith(marker):
            return health
    return None


class DockerContainers:
    def __init__(self, engine: DockerEngine, images: DockerImages | None = None) -> None:
        self._engine = engine
        self._images = images or DockerImages(engine)

    def list_replicas(self, service: str, network: str) -> list[Replica]:
        engine = self._engine
        found = engine.call("container_list", service, engine.api.containers,
                            all=True, filters=label_filter(service, ROLE_REPLICA))
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
                    health=health_of(str(c.get("Status") or "")),
                    version=(c.get("Labels") or {}).get(LABEL_VERSION),
                    image=c.get("Image") or None,
                )
            )
        return sorted(replicas, key=lambda r: (r.created_at_seconds, r.name))

    def new_replica_name(self, service: str) -> str:
        # Chosen before the create, so the caller knows an in-flight start by its name.
        return f"autoscaler-{service}-{secrets.token_hex(3)}"

    def resolve_image(self, spec: ReplicaSpec) -> str:
        return self._images.resolve(spec)

    def check_image(self, spec: ReplicaSpec) -> tuple[str | None, str]:
        return self._images.refresh(spec)

    def start_replica(self, spec: ReplicaSpec, name: str) -> Replica:
        """Creates and starts one replica (from its template, if any, and the config on top).
        On a failed start nothing is left behind."""
        engine = self._engine
        api = engine.change_api
        body, more_networks = create_body(spec)
        created = engine.call("container_create", spec.service, api.create_container_from_config, body, name)
        container_id = created["Id"]
        try:
            # API 1.41 attaches one network at create; the template's others (each with its
            # aliases) are joined before the start, so the process sees all of them.
            for network, aliases in more_networks:
                engine.call("network_connect", spec.service, api.connect_container_to_network, container_id, network,
                            aliases=list(aliases) or None)
            engine.call("container_start", spec.service, api.start, container_id)
            info = engine.call("container_inspect", spec.service, engine.api.inspect_container, container_id)
        except (BackendError, docker.errors.APIError):
            force_remove(engine, spec.service, container_id)
            raise
        ip = info["NetworkSettings"]["Networks"].get(spec.network, {}).get("IPAddress") or None
        created_at = docker_epoch(info.get("Created")) or time.time()
        health = (info["State"].get("Health") or {}).get("Status") or None
        return Replica(container_id, name, spec.service, info["State"]["Status"], ip, created_at, spec.port,
                       health=health, version=spec.version, image=spec.image)

    def read_template(self, service: str, container: str | None, compose: tuple[str, str] | None) -> ContainerTemplate:
        return read_template(self._engine, service, container, compose)

    def exit_report(self, service: str, replica_id: str) -> ExitReport:
        return container_exit_report(self._engine, service, replica_id)

    def remove_replica(self, service: str, replica_id: str, stop_timeout_seconds: int, force: bool = False) -> None:
        """SIGTERM, wait up to stop_timeout_seconds, then remove; force=True kills at once (a
        replica that failed serves nobody). Refuses containers we don't own."""
        engine = self._engine
        api = engine.change_api
        try:
            info = engine.call("container_inspect", service, engine.api.inspect_container, replica_id)
        except docker.errors.NotFound:
            return
        if not is_owned(info["Config"]["Labels"], service):
            raise BackendError("container_remove", service, f"refusing to touch {replica_id[:12]}: not ours")
        try:
            if force:
                engine.call("container_remove", service, api.remove_container, replica_id, force=True)
                return
            if info["State"]["Running"]:
                engine.call("container_stop", service, api.stop, replica_id, timeout=stop_timeout_seconds)
            engine.call("container_remove", service, api.remove_container, replica_id)
        except docker.errors.NotFound:
            return


def container_exit_report(engine: DockerEngine, service: str, container_id: str) -> ExitReport:
    """Exit code, OOM flag, the engine's error and the last lines of output of a container."""
    try:
        info = engine.call("container_inspect", service, engine.api.inspect_container, container_id)
    except docker.errors.NotFound:
        return ExitReport(None, False, "container vanished", ())
    state = info.get("State") or {}
    lines: list[str] = []
    try:
        raw = engine.call("container_logs", service, engine.api.logs, container_id, tail=20)
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


def force_remove(engine: DockerEngine, service: str, container_id: str) -> None:
    try:
        engine.call("container_remove", service, engine.change_api.remove_container, container_id, force=True)
    except (BackendError, docker.errors.NotFound):
        log.warning("could not remove container %s", container_id[:12], extra={"service": service})
