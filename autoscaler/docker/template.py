"""What a replica container is created from, in Docker's own API structures.

`read_template` reads a container the user already runs (by name or id, or the container of a
compose service, found by the labels compose gives its containers) and keeps its whole
configuration as the engine reports it (`docker inspect`), with what cannot be shared between
replicas taken out:
  - the name and the hostname (each replica has its own),
  - published host ports (two replicas cannot bind one host port; clients come through the
    load balancer),
  - fixed IP and MAC addresses,
  - compose's identity labels (`com.docker.compose.*`: else the compose project would count the
    replicas as its own, and `docker-compose up` would remove or recreate them),
  - the template's anonymous volumes (each replica gets its own, from the image's VOLUME list),
  - its restart policy (the daemon replaces a failed replica itself, and reports why).
`create_body` turns a ReplicaSpec into the body of `POST /containers/create`: the template's
structures (or none), then the TOML's fields on top, then the limits and labels the daemon
owns. No hand-written subset of compose's file format: compose's grammar in the TOML is only
translated into these same structures.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import docker.errors

from autoscaler.config.container import parse_volume
from autoscaler.docker.engine import DockerEngine
from autoscaler.docker.labels import LABEL_MANAGED, LABEL_PORT, LABEL_VERSION, ROLE_REPLICA, owner_labels
from autoscaler.engine.ports import ContainerTemplate, HealthcheckSpec, ReplicaSpec, Unusable

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_NUMBER = "com.docker.compose.container-number"
_ANONYMOUS_VOLUME_RE = re.compile(r"[0-9a-f]{64}")

# Config fields of the create body a replica copies from its template.
_CONFIG_KEYS = (
    "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty", "OpenStdin",
    "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Volumes", "WorkingDir", "Entrypoint",
    "NetworkDisabled", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell",
)
# HostConfig fields that belong to one container only.
_HOST_CONFIG_DROPPED = ("PortBindings", "PublishAllPorts", "ContainerIDFile", "NetworkMode", "RestartPolicy", "AutoRemove",
                        "Links")


def _find(engine: DockerEngine, service: str, container: str | None, compose: tuple[str, str] | None) -> dict[str, Any]:
    if container is not None:
        try:
            found: dict[str, Any] = engine.call("template_inspect", service, engine.api.inspect_container, container)
            return found
        except docker.errors.NotFound:
            raise Unusable("template", service, f"template container {container!r} does not exist") from None
    assert compose is not None
    project, name = compose
    listed = engine.call("template_list", service, engine.api.containers, all=True,
                         filters={"label": [f"{COMPOSE_PROJECT}={project}", f"{COMPOSE_SERVICE}={name}"]})
    if not listed:
        raise Unusable("template", service, f"compose service {name!r} of project {project!r} has no container "
                       "(is the project up? `docker compose up -d`)")

    def order(c: dict[str, Any]) -> tuple[bool, int]:
        number = (c.get("Labels") or {}).get(COMPOSE_NUMBER, "")
        return c.get("State") != "running", int(number) if number.isdigit() else 1 << 30

    try:
        inspected: dict[str, Any] = engine.call("template_inspect", service, engine.api.inspect_container,
                                                 sorted(listed, key=order)[0]["Id"])
        return inspected
    except docker.errors.NotFound:
        raise Unusable("template", service, f"the container of compose service {name!r} went away; try again") from None


def _check_replicable(service: str, info: dict[str, Any]) -> None:
    name = str(info.get("Name") or "").lstrip("/")
    host = info.get("HostConfig") or {}
    labels = (info.get("Config") or {}).get("Labels") or {}
    mode = str(host.get("NetworkMode") or "")
    where = f"template container {name!r}"
    if labels.get(LABEL_MANAGED) == "true":
        raise Unusable("template", service, f"{where} is a container of this daemon's, not one of yours")
    if mode == "host":
        raise Unusable("template", service, f"{where} uses network_mode host: every replica would bind the same "
                       "ports of the host; put it on a network (clients reach the replicas through the load balancer)")
    if mode.startswith("container:") or mode.startswith("service:"):
        raise Unusable("template", service, f"{where} shares the network stack of {mode.split(':', 1)[1]!r}: "
                       "replicas cannot each have their own address that way")
    if mode == "none":
        raise Unusable("template", service, f"{where} has no network (network_mode none)")
    project, compose_service, number = labels.get(COMPOSE_PROJECT), labels.get(COMPOSE_SERVICE), labels.get(COMPOSE_NUMBER)
    if project and compose_service and number and name not in (
        f"{project}_{compose_service}_{number}", f"{project}-{compose_service}-{number}"
    ):
        raise Unusable("template", service, f"{where} has a container_name: other containers reach it by that name, "
                       "which only one container can have, so its replicas would get none of that traffic; remove "
                       "container_name from the compose service (clients come through the load balancer)")


def read_template(engine: DockerEngine, service: str, container: str | None, compose: tuple[str, str] | None
                  ) -> ContainerTemplate:
    """The template container's configuration, replicable. Raises Unusable (the config or the
    template must change) or BackendError (the engine did not answer)."""
    info = _find(engine, service, container, compose)
    _check_replicable(service, info)
    name = str(info.get("Name") or "").lstrip("/")
    source = f"compose service {compose[1]!r} of project {compose[0]!r} (container {name!r})" if compose \
        else f"container {name!r}"
    config_in = info.get("Config") or {}
    config = {key: copy.deepcopy(config_in[key]) for key in _CONFIG_KEYS if config_in.get(key) is not None}
    config["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items()
                        if not k.startswith("com.docker.compose.") and not k.startswith("autoscaler.")}
    host_config = {k: copy.deepcopy(v) for k, v in (info.get("HostConfig") or {}).items() if k not in _HOST_CONFIG_DROPPED}
    # compose keeps a service's anonymous volumes across re-creation by binding them by id:
    # shared, they would be one volume for every replica. Each replica gets its own instead.
    host_config["Binds"] = [b for b in host_config.get("Binds") or [] if not _ANONYMOUS_VOLUME_RE.match(b.split(":", 1)[0])]
    short_id = str(info.get("Id") or "")[:12]
    networks: dict[str, tuple[str, ...]] = {}
    for network, endpoint in ((info.get("NetworkSettings") or {}).get("Networks") or {}).items():
        aliases = [a for a in (endpoint or {}).get("Aliases") or [] if a not in (short_id, name)]
        networks[network] = tuple(dict.fromkeys(aliases))
    image = str(info.get("Image") or config_in.get("Image") or "")
    version = hashlib.sha256(json.dumps([image, config, host_config, sorted(networks.items())], sort_keys=True,
                                        default=str).encode()).hexdigest()[:12]
    return ContainerTemplate(source, image, config, host_config, networks, version)


def _env_list(base: list[str], overrides: dict[str, str]) -> list[str]:
    merged: dict[str, str] = {}
    for entry in base:
        key, _, value = entry.partition("=")
        merged[key] = value
    merged.update(overrides)
    return [f"{k}={v}" for k, v in merged.items()]


def _nanoseconds(seconds: float) -> int:
    return int(round(seconds * 1e9))


def healthcheck_body(check: HealthcheckSpec) -> dict[str, Any]:
    """A HEALTHCHECK in the engine's API structure (a container's Config, a Swarm task's
    ContainerSpec)."""
    return {"Test": list(check.test), "Interval": _nanoseconds(check.interval_seconds),
            "Timeout": _nanoseconds(check.timeout_seconds), "Retries": check.retries,
            "StartPeriod": _nanoseconds(check.start_period_seconds)}


def create_body(spec: ReplicaSpec) -> tuple[dict[str, Any], list[tuple[str, tuple[str, ...]]]]:
    """(the create body, the networks to connect after the create with their aliases). The
    service's own network comes first: the engine's API (1.41) takes one network at create."""
    template = spec.template
    body: dict[str, Any] = copy.deepcopy(template.config) if template is not None else {}
    host: dict[str, Any] = copy.deepcopy(template.host_config) if template is not None else {}
    networks: dict[str, tuple[str, ...]] = dict(template.networks) if template is not None else {}
    fields = spec.fields
    body["Image"] = spec.image
    if spec.command:
        body["Cmd"] = list(spec.command)
    if spec.env or "Env" in body:
        body["Env"] = _env_list(list(body.get("Env") or []), spec.env)
    if fields.user is not None:
        body["User"] = fields.user
    if fields.stop_signal is not None:
        body["StopSignal"] = fields.stop_signal
    if spec.healthcheck is not None:
        body["Healthcheck"] = healthcheck_body(spec.healthcheck)
    labels = dict(body.get("Labels") or {})
    labels.update(dict(fields.labels))
    labels.update(owner_labels(spec.service, ROLE_REPLICA))
    if spec.port is not None:
        labels[LABEL_PORT] = str(spec.port)
    labels[LABEL_VERSION] = spec.version
    body["Labels"] = labels
    # compose's fields, on top of the template's.
    binds = list(host.get("Binds") or [])
    volumes = dict(body.get("Volumes") or {})
    for text in fields.volumes:
        source, target, mode = parse_volume(text)
        if source is None:
            volumes[target] = {}
        else:
            binds = [b for b in binds if b.split(":")[1:2] != [target]] + [f"{source}:{target}:{mode}"]
    if binds:
        host["Binds"] = binds
    if volumes:
        body["Volumes"] = volumes
    if fields.read_only:
        host["ReadonlyRootfs"] = True
    if fields.tmpfs:
        tmpfs = dict(host.get("Tmpfs") or {})
        for entry in fields.tmpfs:
            path, _, options = entry.partition(":")
            tmpfs[path] = options
        host["Tmpfs"] = tmpfs
    for key, values in (("CapAdd", fields.cap_add), ("CapDrop", fields.cap_drop), ("ExtraHosts", fields.extra_hosts)):
        if values:
            host[key] = list(dict.fromkeys([*(host.get(key) or []), *values]))
    if fields.log_driver is not None:
        host["LogConfig"] = {"Type": fields.log_driver, "Config": dict(fields.log_options)}
    # What the daemon owns: limits (its percentages are relative to them), the network it finds
    # the replica on, an init (stops in 0.1 s, zombies reaped), no restarts of its own.
    host.update({"NanoCpus": int(spec.cpu_limit_cores * 1e9), "CpuPeriod": 0, "CpuQuota": 0,
                 "Memory": spec.memory_limit_bytes, "MemorySwap": 0, "Init": True, "NetworkMode": spec.network,
                 "RestartPolicy": {"Name": "no"}, "AutoRemove": False})
    if template is not None and (template.host_config.get("MemorySwap") or 0) < 0:
        host["MemorySwap"] = -1  # the template allowed unlimited swap: so do its replicas
    for network, aliases in fields.networks:
        networks[network] = tuple(dict.fromkeys([*networks.get(network, ()), *aliases]))
    first_aliases = networks.pop(spec.network, ())
    endpoint: dict[str, Any] = {"Aliases": list(first_aliases)} if first_aliases else {}
    body["HostConfig"] = host
    body["NetworkingConfig"] = {"EndpointsConfig": {spec.network: endpoint}}
    return body, list(networks.items())
