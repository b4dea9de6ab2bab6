"""The Docker Swarm backend: the same controller drives a replicated Swarm service.

Swarm places, starts, restarts and reschedules tasks; the daemon only sets the replica count
(`scale`) and keeps the load balancer's membership right. What the controller calls a replica
is a task: its overlay address, its node, and whether Swarm has marked it for removal
(`leaving`: desired state shutdown while it still runs), which is when its server drains.
Swarm picks which task goes on a scale-in; nothing in its API lets us choose, so we do not.

The load balancer is HAProxy as a Swarm service on the service's attachable overlay network,
published with mode=host on one node (this kernel has no IPVS: no routing mesh, no VIP), pinned
by a placement constraint to the node whose engine the daemon talks to, so that its admin socket
is in a directory the daemon shares (as on one host). Membership goes through the runtime API,
with task addresses from the manager: the same register / check / ready / drain / delete steps
as on one host, and a task marked for removal drains at once (DNS discovery would only notice
it when its record is gone).

CPU and memory come from `autoscaler agent` on every node (a global service this backend keeps
running) or from Prometheus: a manager cannot read the stats of tasks on other nodes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import (
    ContainerSpec,
    EndpointSpec,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)

from autoscaler.config import PrometheusSourceConfig
from autoscaler.docker.backend import (
    LABEL_LB_SPEC,
    LABEL_MANAGED,
    LABEL_PORT,
    LABEL_PUBLISH,
    LABEL_ROLE,
    LABEL_SERVICE,
    LB_ADMIN_DIR,
    LB_CLIENT_PORT,
    LB_METRICS_PORT,
    ROLE_LOAD_BALANCER,
    ROLE_REPLICA,
    BackendError,
    DockerBackend,
    ExitReport,
    LoadBalancer,
    LoadBalancerContainer,
    LoadBalancerSpec,
    Replica,
    ReplicaSpec,
    Unusable,
    _epoch,
    is_owned,
)
from autoscaler.docker.stats import StatsReading
from autoscaler.instrument import NULL_OBSERVER, CallObserver
from autoscaler.swarm.sources import AgentSource, PrometheusSource, SourceError

log = logging.getLogger("autoscaler.swarm")

ROLE_AGENT = "agent"
AGENT_SERVICE = "autoscaler-agent"
# Swarm's task states: where a task is on its way to running, and where it ended.
STARTING_STATES = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
ENDED_STATES = {"complete", "shutdown", "failed", "rejected", "orphaned", "remove"}
# A service in one of these is being changed by someone else: hold, and say why.
BUSY_UPDATE_STATES = {"updating", "paused", "rollback_started", "rollback_paused"}
# Swarm removes a task's DNS record, waits 2 s, then sends the stop signal: the task must be
# given time to finish its drained requests after that.
SWARM_STOP_DELAY_SECONDS = 2


class SwarmBusy(BackendError):
    """The service is being updated, paused or rolled back: its count is not ours to set now."""


def swarm_service_name(service: str, adopted: str | None) -> str:
    return adopted or f"autoscaler-{service}"


class SwarmBackend:
    """ReplicaBackend for services whose replicas are Swarm tasks (`orchestrated`)."""

    orchestrated = True

    def __init__(
        self,
        docker_backend: DockerBackend,
        observer: CallObserver = NULL_OBSERVER,
        agent_port: int = 9101,
        agent_image: str = "autoscaler:latest",
        on_agent: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._docker = docker_backend  # the manager's engine: networks, lease, admin mount
        self._client: docker.DockerClient = docker_backend.client
        self._observer = observer
        self.agent_port = agent_port
        self.agent_image = agent_image
        self._services: dict[str, str] = {}  # our service name -> Swarm service name
        self._sources: dict[str, AgentSource | PrometheusSource] = {}
        self._source_names: dict[str, str] = {}
        self._agent_source = AgentSource(self.agent_endpoints, on_agent=on_agent)
        self._node_id: str | None = None
        self._nodes: dict[str, str] = {}  # node id -> address, refreshed with the agents

    def _call(self, operation: str, service: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # The one wrapper of every Docker call (latency, errors, unreachable or refused).
        return self._docker._call(operation, service, fn, *args, **kwargs)

    # --- checks -----------------------------------------------------------------------------

    def check_manager(self) -> None:
        """Refuses an engine that is not a swarm manager, in one sentence saying what to do."""
        info = self._call("info", None, self._client.api.info)
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            where = os.environ.get("DOCKER_HOST", "the local socket")
            raise BackendError(
                "swarm", None,
                f'backend = "swarm" needs a swarm manager, but the Docker engine at {where} is not one: '
                "run `docker swarm init` there, or point DOCKER_HOST at a manager",
            )
        self._node_id = swarm.get("NodeID")

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            self.check_manager()
        assert self._node_id is not None
        return self._node_id

    # --- the workload: create or adopt the replicated service -------------------------------

    def register(self, service: str, adopted: str | None, source: str,
                 prometheus: PrometheusSourceConfig | None = None) -> None:
        """Tells the backend how a service is named on the swarm and where its stats come from."""
        self._services[service] = swarm_service_name(service, adopted)
        self._source_names[service] = source
        if source == "prometheus":
            assert prometheus is not None
            self._sources[service] = PrometheusSource(prometheus, self._services[service])
        else:
            self._sources[service] = self._agent_source

    def swarm_name(self, service: str) -> str:
        return self._services.get(service, f"autoscaler-{service}")

    def prepare(self, spec: ReplicaSpec, initial_replicas: int, drain_timeout_seconds: float,
                adopt: bool) -> bool:
        """Creates the replicated service (or checks the adopted one), and the agents when they
        are the metrics source. Returns whether it created the service."""
        name = self.swarm_name(spec.service)
        existing = self._inspect_service(spec.service, name)
        created = False
        if existing is None:
            if adopt:
                raise Unusable("swarm", spec.service, f"swarm_service {name!r} does not exist on this swarm")
            self._create_service(spec, name, initial_replicas, drain_timeout_seconds)
            created = True
        else:
            self._check_adoptable(spec.service, name, existing)
        if self._source_names.get(spec.service, "agent") == "agent":
            self.ensure_agents()
        return created

    def _inspect_service(self, service: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("service_inspect", service, self._client.api.inspect_service, name)
        except docker.errors.NotFound:
            return None

    def _check_adoptable(self, service: str, name: str, info: dict[str, Any]) -> None:
        spec = info.get("Spec") or {}
        if "Replicated" not in (spec.get("Mode") or {}):
            raise Unusable("swarm", service, f"swarm service {name!r} is global: only a replicated service can be scaled")
        labels = spec.get("Labels") or {}
        if labels.get(LABEL_SERVICE) != service:
            raise Unusable(
                "swarm", service,
                f"swarm service {name!r} does not carry the label {LABEL_SERVICE}={service}: "
                "the daemon only scales services that say they are its own",
            )

    def _create_service(self, spec: ReplicaSpec, name: str, replicas: int, drain_timeout_seconds: float) -> None:
        labels = {LABEL_MANAGED: "true", LABEL_SERVICE: spec.service, LABEL_ROLE: ROLE_REPLICA,
                  LABEL_PORT: str(spec.port)}
        # The task keeps serving its drained requests after Swarm's stop signal (sent 2 s after
        # its DNS record is gone): the grace period covers the whole drain.
        grace_ns = int((drain_timeout_seconds + SWARM_STOP_DELAY_SECONDS + 5) * 1e9)
        template = TaskTemplate(
            container_spec=ContainerSpec(
                spec.image, command=list(spec.command) or None, env=dict(spec.env), labels=labels,
                stop_grace_period=grace_ns, init=True,
            ),
            resources=Resources(cpu_limit=int(spec.cpu_limit_cores * 1e9), mem_limit=spec.memory_limit_bytes),
            restart_policy=RestartPolicy(condition="any", delay=int(5e9)),
            networks=[spec.network],
        )
        log.info("creating swarm service %s (%d replicas)", name, replicas, extra={"service": spec.service})
        self._call(
            "service_create", spec.service, self._client.api.create_service, template, name=name,
            labels=labels, mode=ServiceMode("replicated", replicas=replicas),
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            # A rolling update (a new image, `docker service update`) starts each new task
            # before stopping the old one, which the daemon drains: no moment without a server.
            update_config=UpdateConfig(parallelism=1, order="start-first", failure_action="rollback"),
        )

    def desired_count(self, service: str) -> int | None:
        info = self._inspect_service(service, self.swarm_name(service))
        if info is None:
            return None
        return int(((info["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0))

    def scale(self, service: str, replicas: int) -> None:
        """Sets the service's replica count. Reloads the spec and retries on a version
        conflict; raises SwarmBusy while someone else updates, pauses or rolls it back."""
        name = self.swarm_name(service)
        for _ in range(5):
            info = self._inspect_service(service, name)
            if info is None:
                raise BackendError("service_update", service, f"swarm service {name!r} is gone")
            state = (info.get("UpdateStatus") or {}).get("State")
            if state in BUSY_UPDATE_STATES:
                raise SwarmBusy("service_update", service, f"swarm service {name!r} is {state.replace('_', ' ')}: holding")
            # The spec exactly as Swarm has it, with only the count changed: any other difference
            # (as a client library may introduce re-sending the task template) would start a
            # rolling update that replaces every task.
            spec = info["Spec"]
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}
            try:
                self._call("service_update", service, self._update_spec, info["ID"], info["Version"]["Index"], spec)
                return
            except BackendError as exc:
                if "out of sequence" not in str(exc) and "version" not in str(exc).lower():
                    raise
                time.sleep(0.05)  # someone else updated it in between: read it again
        raise BackendError("service_update", service, f"swarm service {name!r} kept changing under us")

    def _update_spec(self, service_id: str, version: int, spec: dict[str, Any]) -> None:
        api = self._client.api
        response = api._post_json(api._url("/services/{0}/update", service_id), data=spec, params={"version": version})
        api._raise_for_status(response)

    # --- agents --------------------------------------------------------------------------

    def _agent_service(self) -> str | None:
        """The agents' service: ours, or one a stack deployed (found by its label, whatever its name)."""
        found = self._call("service_list", None, self._client.api.services,
                           filters={"label": f"{LABEL_ROLE}={ROLE_AGENT}"})
        return str(found[0]["Spec"]["Name"]) if found else None

    def ensure_agents(self) -> None:
        """`autoscaler agent` as a global service, published with mode=host on every node."""
        if self._agent_service() is not None:
            return
        template = TaskTemplate(
            container_spec=ContainerSpec(
                self.agent_image, args=["agent", "--listen", f"0.0.0.0:{self.agent_port}"],
                user="0",  # reads the node's Docker socket and cgroup files, as cAdvisor does
                labels={LABEL_MANAGED: "true", LABEL_ROLE: ROLE_AGENT},
                mounts=[Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind", read_only=True),
                        Mount("/host/sys/fs/cgroup", "/sys/fs/cgroup", type="bind", read_only=True)],
            ),
            restart_policy=RestartPolicy(condition="any", delay=int(5e9)),
        )
        log.info("creating the agents: global service %s on port %d", AGENT_SERVICE, self.agent_port)
        self._call(
            "service_create", None, self._client.api.create_service, template, name=AGENT_SERVICE,
            labels={LABEL_MANAGED: "true", LABEL_ROLE: ROLE_AGENT}, mode=ServiceMode("global"),
            endpoint_spec=EndpointSpec(mode="dnsrr", ports={self.agent_port: (self.agent_port, "tcp", "host")}),
        )

    def agent_endpoints(self) -> list[tuple[str, str]]:
        """(node id, base URL) for every ready node: its address and the agents' published port.

        Every ready node, not only those whose agent task runs: the agents are a global service,
        so a node without a running one has lost it, and that must show (logged, a metric)
        rather than its tasks silently having no readings.
        """
        nodes = self._call("node_list", None, self._client.api.nodes)
        self._nodes = {n["ID"]: (n.get("Status") or {}).get("Addr", "") for n in nodes}
        return sorted(
            (node["ID"], f"http://{self._nodes[node['ID']]}:{self.agent_port}")
            for node in nodes
            if (node.get("Status") or {}).get("State") == "ready" and self._nodes.get(node["ID"])
        )

    # --- network ---------------------------------------------------------------------------

    def ensure_network(self, service: str, name: str) -> bool:
        found = self._call("network_list", service, self._client.api.networks, names=[name])
        if any(n.get("Name") == name for n in found):
            return False
        log.info("creating attachable overlay network %s", name, extra={"service": service})
        self._call("network_create", service, self._client.api.create_network, name, driver="overlay",
                   attachable=True, check_duplicate=True, labels={LABEL_MANAGED: "true", LABEL_SERVICE: service})
        return True

    def remove_network(self, service: str, name: str) -> None:
        self._docker.remove_network(service, name)

    # --- replicas: the service's tasks ------------------------------------------------------

    def list_replicas(self, service: str, network: str) -> list[Replica]:
        name = self.swarm_name(service)
        tasks = self._call("task_list", service, self._client.api.tasks, filters={"service": name})
        replicas = []
        for task in tasks:
            status = task.get("Status") or {}
            state = status.get("State", "")
            desired = task.get("DesiredState", "")
            if state in ENDED_STATES and desired != "running":
                # History Swarm keeps (TaskHistoryRetentionLimit): reported once by the
                # controller while it is listed, then gone.
                docker_state = "exited"
            elif state == "running":
                docker_state = "running"
            elif state in ENDED_STATES:
                docker_state = "exited"
            else:
                docker_state = "created"
            replicas.append(Replica(
                id=task["ID"],
                name=f"{name}.{task.get('Slot') or task.get('NodeID', '')[:8]}.{task['ID']}",
                service=service,
                state=docker_state,
                ip=_address_on(task, network),
                created_at_seconds=_epoch(task.get("CreatedAt")) or time.time(),
                port=None,
                leaving=desired in ("shutdown", "remove") and state == "running",
                node=task.get("NodeID"),
                orchestrated=True,
            ))
        return sorted(replicas, key=lambda r: (r.created_at_seconds, r.name))

    def exit_report(self, service: str, replica_id: str) -> ExitReport:
        try:
            task = self._call("task_inspect", service, self._client.api.inspect_task, replica_id)
        except docker.errors.NotFound:
            return ExitReport(None, False, "task vanished", ())
        status = task.get("Status") or {}
        container = status.get("ContainerStatus") or {}
        error = status.get("Err") or status.get("Message") or ""
        return ExitReport(container.get("ExitCode"), "OOM" in error.upper() and "kill" in error.lower(),
                          str(error), self._task_log_tail(service, replica_id))

    def _task_log_tail(self, service: str, task_id: str) -> tuple[str, ...]:
        api = self._client.api
        try:
            response = api._get(api._url("/tasks/{0}/logs", task_id),
                                params={"stdout": 1, "stderr": 1, "tail": 20}, stream=False)
            api._raise_for_status(response)
            text = b"".join(api._multiplexed_buffer_helper(response)).decode(errors="replace")
        except (docker.errors.DockerException, requests.exceptions.RequestException, ValueError):
            return ()
        return tuple(line.strip()[:200] for line in text.splitlines() if line.strip())[-5:]

    def new_replica_name(self, service: str) -> str:
        raise NotImplementedError("Swarm starts the tasks")

    def start_replica(self, spec: ReplicaSpec, name: str | None = None) -> Replica:
        raise NotImplementedError("Swarm starts the tasks")

    def remove_replica(self, service: str, container_id: str, stop_timeout_seconds: int, force: bool = False) -> None:
        raise NotImplementedError("Swarm removes the tasks")

    # --- stats ------------------------------------------------------------------------------

    def read_stats(self, service: str, container_ids: list[str]) -> dict[str, StatsReading | None]:
        source = self._sources.get(service, self._agent_source)
        try:
            return source.read(container_ids)
        except SourceError as exc:
            raise BackendError("stats", service, str(exc)) from exc

    def stats_source(self, service: str) -> str | None:
        return self._source_names.get(service, "agent")

    def agent_errors(self) -> dict[str, str]:
        return dict(self._agent_source.last_errors)

    # --- the load balancer: a Swarm service on the daemon's node ----------------------------

    def _lb_name(self, service: str) -> str:
        return f"autoscaler-{service}-lb"

    def load_balancer_container(self, service: str) -> LoadBalancerContainer | None:
        name = self._lb_name(service)
        info = self._inspect_service(service, name)
        if info is None:
            return None
        labels = info["Spec"].get("Labels") or {}
        tasks = self._call("task_list", service, self._client.api.tasks, filters={"service": name})
        running = [t for t in tasks if (t.get("Status") or {}).get("State") == "running"
                   and t.get("DesiredState") == "running"]
        if running:
            state, started = "running", _epoch((running[0].get("Status") or {}).get("Timestamp"))
        elif any(t.get("DesiredState") == "running" for t in tasks):
            state, started = "restarting", None
        else:
            state, started = "exited", None
        return LoadBalancerContainer(info["ID"], name, state, labels.get(LABEL_LB_SPEC, ""),
                                     labels.get(LABEL_PUBLISH, ""), started)

    def existing_load_balancer(self, service: str) -> LoadBalancer | None:
        found = self.load_balancer_container(service)
        return self.load_balancer_info(service, found.id) if found is not None and found.state == "running" else None

    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> tuple[LoadBalancer, bool]:
        existing = self.load_balancer_container(spec.service)
        if existing is not None and existing.fingerprint != spec.fingerprint():
            log.warning("load balancer %s was created from another config: re-creating it; clients see a short "
                        "interruption", existing.name, extra={"service": spec.service})
            self.remove_load_balancer(spec.service, existing.id)
            existing = None
        if existing is None:
            return self.load_balancer_info(spec.service, self.create_load_balancer(spec)), True
        return self.load_balancer_info(spec.service, existing.id), existing.state != "running"

    def create_load_balancer(self, spec: LoadBalancerSpec, node: str | None = None) -> str:
        name = self._lb_name(spec.service)
        mount_type, source = self._docker.admin_mount()
        if mount_type == "bind":
            os.makedirs(self._docker.admin_socket_dir, mode=0o700, exist_ok=True)
        constraint = f"node.id=={self.node_id}" if node is None else (
            f"node.id=={node}" if len(node) == 25 and node.isalnum() else f"node.hostname=={node}")
        labels = {LABEL_MANAGED: "true", LABEL_SERVICE: spec.service, LABEL_ROLE: ROLE_LOAD_BALANCER,
                  LABEL_PUBLISH: f"{spec.publish_host}:{spec.publish_port}", LABEL_LB_SPEC: spec.fingerprint()}
        template = TaskTemplate(
            container_spec=ContainerSpec(
                spec.image, labels=labels,
                env={"HEALTH_PATH": spec.health_path, "BALANCE": spec.algorithm,
                     "ADMIN_SOCKET": f"{LB_ADMIN_DIR}/{name}.sock", "ADMIN_UID": str(os.geteuid())},
                mounts=[Mount(LB_ADMIN_DIR, source, type=mount_type)],
                stop_signal="SIGUSR1",
            ),
            restart_policy=RestartPolicy(condition="any", delay=int(2e9)),
            placement=Placement(constraints=[constraint]),
            networks=[spec.network],
        )
        log.info("creating load balancer service %s, published on %s:%d (mode=host)", name,
                 spec.publish_host, spec.publish_port, extra={"service": spec.service})
        created = self._call(
            "service_create", spec.service, self._client.api.create_service, template, name=name, labels=labels,
            mode=ServiceMode("replicated", replicas=1),
            endpoint_spec=EndpointSpec(mode="dnsrr", ports={spec.publish_port: (LB_CLIENT_PORT, "tcp", "host")}),
        )
        return str(created["ID"])

    def start_load_balancer(self, service: str, container_id: str) -> None:
        info = self._call("service_inspect", service, self._client.api.inspect_service, container_id)
        self._call("service_update", service, self._client.api.update_service, info["ID"], info["Version"]["Index"],
                   force_update=True, fetch_current_spec=True)

    def remove_load_balancer(self, service: str, container_id: str) -> None:
        info = self._call("service_inspect", service, self._client.api.inspect_service, container_id)
        if not is_owned(info["Spec"].get("Labels"), service):
            raise BackendError("service_remove", service, f"refusing to touch {container_id[:12]}: not ours")
        self._call("service_remove", service, self._client.api.remove_service, info["ID"])

    def load_balancer_info(self, service: str, container_id: str) -> LoadBalancer:
        name = self._lb_name(service)
        try:
            info = self._call("service_inspect", service, self._client.api.inspect_service, container_id)
            publish = (info["Spec"].get("Labels") or {}).get(LABEL_PUBLISH, "")
        except docker.errors.NotFound:
            publish = ""
        return LoadBalancer(
            id=container_id,
            name=name,
            admin_socket=f"{self._docker.admin_socket_dir}/{name}.sock",
            # The exporter is on the overlay: Prometheus in the stack reaches it by name.
            metrics_host=name,
            metrics_port=LB_METRICS_PORT,
            publish=publish,
        )

    def remove_service(self, service: str) -> None:
        """Removes the replicated service this daemon created (a failed start leaves nothing)."""
        name = self.swarm_name(service)
        try:
            info = self._call("service_inspect", service, self._client.api.inspect_service, name)
        except docker.errors.NotFound:
            return
        if is_owned(info["Spec"].get("Labels"), service):
            self._call("service_remove", service, self._client.api.remove_service, info["ID"])


def _address_on(task: dict[str, Any], network: str) -> str | None:
    for attachment in task.get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
            for address in attachment.get("Addresses") or []:
                return str(address).split("/", 1)[0]
    return None
