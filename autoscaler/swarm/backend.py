"""The Docker Swarm backend: the same engine drives a replicated Swarm service.

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
from autoscaler.docker.engine import DockerEngine, docker_epoch
from autoscaler.docker.labels import (
    LABEL_LB_SPEC,
    LABEL_MANAGED,
    LABEL_PORT,
    LABEL_VERSION,
    LABEL_PUBLISH,
    LABEL_ROLE,
    LABEL_SERVICE,
    ROLE_LOAD_BALANCER,
    ROLE_REPLICA,
    is_owned,
)
from autoscaler.docker.loadbalancer import LB_ADMIN_DIR, LB_CLIENT_PORT, LB_METRICS_PORT, AdminMount, lb_environment, lb_name
from autoscaler.docker.networks import DockerNetworks
from autoscaler.docker.template import healthcheck_body
from autoscaler.engine.ports import (
    BackendError,
    ExitReport,
    LoadBalancer,
    LoadBalancerContainer,
    LoadBalancerSpec,
    Replica,
    ReplicaSpec,
    StatsReading,
    Unusable,
)
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
# Between two tasks of a rolling update. Swarm stops an old task as soon as its replacement
# runs, before the load balancer has checked it; without a pause the next old task would go
# too, and for a moment no server would serve. This is more than a registration and the check
# (inter 1 s, rise 2) take.
SWARM_UPDATE_DELAY_SECONDS = 5


class SwarmBusy(BackendError):
    """The service is being updated, paused or rolled back: its count is not ours to set now."""


def swarm_service_name(service: str, adopted: str | None) -> str:
    return adopted or f"autoscaler-{service}"


class Swarm:
    """The manager the daemon talks to: its node, the nodes' addresses, and the services'
    names on the swarm. Shared by the Swarm parts."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self._node_id: str | None = None
        self.names: dict[str, str] = {}  # our service name -> Swarm service name

    def check_manager(self) -> None:
        """Refuses an engine that is not a swarm manager, in one sentence saying what to do."""
        engine = self.engine
        info = engine.call("info", None, engine.api.info)
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

    def name(self, service: str) -> str:
        return self.names.get(service, f"autoscaler-{service}")

    def inspect_service(self, service: str, name: str) -> dict[str, Any] | None:
        engine = self.engine
        try:
            info: dict[str, Any] = engine.call("service_inspect", service, engine.api.inspect_service, name)
            return info
        except docker.errors.NotFound:
            return None


class SwarmAgents:
    """`autoscaler agent` as a global service, published with mode=host on every node."""

    def __init__(self, swarm: Swarm, port: int = 9101, image: str = "autoscaler:latest") -> None:
        self._swarm = swarm
        self.port = port
        self.image = image

    def service(self) -> str | None:
        """The agents' service: ours, or one a stack deployed (found by its label, whatever its name)."""
        engine = self._swarm.engine
        found = engine.call("service_list", None, engine.api.services, filters={"label": f"{LABEL_ROLE}={ROLE_AGENT}"})
        return str(found[0]["Spec"]["Name"]) if found else None

    def ensure(self) -> None:
        if self.service() is not None:
            return
        template = TaskTemplate(
            container_spec=ContainerSpec(
                self.image, args=["agent", "--listen", f"0.0.0.0:{self.port}"],
                user="0",  # reads the node's Docker socket and cgroup files, as cAdvisor does
                labels={LABEL_MANAGED: "true", LABEL_ROLE: ROLE_AGENT},
                mounts=[Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind", read_only=True),
                        Mount("/host/sys/fs/cgroup", "/sys/fs/cgroup", type="bind", read_only=True)],
            ),
            restart_policy=RestartPolicy(condition="any", delay=int(5e9)),
        )
        log.info("creating the agents: global service %s on port %d", AGENT_SERVICE, self.port)
        engine = self._swarm.engine
        engine.call(
            "service_create", None, engine.change_api.create_service, template, name=AGENT_SERVICE,
            labels={LABEL_MANAGED: "true", LABEL_ROLE: ROLE_AGENT}, mode=ServiceMode("global"),
            endpoint_spec=EndpointSpec(mode="dnsrr", ports={self.port: (self.port, "tcp", "host")}),
        )

    def endpoints(self) -> list[tuple[str, str]]:
        """(node id, base URL) for every ready node: its address and the agents' published port.

        Every ready node, not only those whose agent task runs: the agents are a global service,
        so a node without a running one has lost it, and that must show (logged, a metric)
        rather than its tasks silently having no readings.
        """
        engine = self._swarm.engine
        nodes = engine.call("node_list", None, engine.api.nodes)
        addresses = {n["ID"]: (n.get("Status") or {}).get("Addr", "") for n in nodes}
        return sorted(
            (node["ID"], f"http://{addresses[node['ID']]}:{self.port}")
            for node in nodes
            if (node.get("Status") or {}).get("State") == "ready" and addresses.get(node["ID"])
        )


class SwarmServices:
    """The scale target of a replicated Swarm service (OrchestratedService): Swarm places,
    starts, restarts and stops the tasks; we read them and set the count."""

    def __init__(self, swarm: Swarm, agents: SwarmAgents, uses_agents: Callable[[str], bool]) -> None:
        self._swarm = swarm
        self._agents = agents
        self._uses_agents = uses_agents

    def prepare(self, spec: ReplicaSpec, initial_replicas: int, stop_grace_seconds: float, adopt: bool) -> bool:
        """Creates the replicated service (or checks the adopted one), and the agents when they
        are the metrics source. Returns whether it created the service."""
        name = self._swarm.name(spec.service)
        existing = self._swarm.inspect_service(spec.service, name)
        created = False
        if existing is None:
            if adopt:
                raise Unusable("swarm", spec.service, f"swarm_service {name!r} does not exist on this swarm")
            self._create_service(spec, name, initial_replicas, stop_grace_seconds)
            created = True
        else:
            self._check_adoptable(spec.service, name, existing)
        if self._uses_agents(spec.service):
            self._agents.ensure()
        return created

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

    def _create_service(self, spec: ReplicaSpec, name: str, replicas: int, stop_grace_seconds: float) -> None:
        labels = {LABEL_MANAGED: "true", LABEL_SERVICE: spec.service, LABEL_ROLE: ROLE_REPLICA,
                  LABEL_VERSION: spec.version}
        if spec.port is not None:
            labels[LABEL_PORT] = str(spec.port)
        healthcheck = None if spec.healthcheck is None else healthcheck_body(spec.healthcheck)
        # The task keeps serving its drained requests after Swarm's stop signal (sent 2 s after
        # its DNS record is gone): the grace period covers the whole drain.
        grace_ns = int((stop_grace_seconds + SWARM_STOP_DELAY_SECONDS + 5) * 1e9)
        template = TaskTemplate(
            container_spec=ContainerSpec(
                spec.image, command=list(spec.command) or None, env=dict(spec.env), labels=labels,
                stop_grace_period=grace_ns, init=True, healthcheck=healthcheck,
            ),
            resources=Resources(cpu_limit=int(spec.cpu_limit_cores * 1e9), mem_limit=spec.memory_limit_bytes),
            restart_policy=RestartPolicy(condition="any", delay=int(5e9)),
            networks=[spec.network],
        )
        log.info("creating swarm service %s (%d replicas)", name, replicas, extra={"service": spec.service})
        engine = self._swarm.engine
        engine.call(
            "service_create", spec.service, engine.change_api.create_service, template, name=name,
            labels=labels, mode=ServiceMode("replicated", replicas=replicas),
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            # A rolling update (a new image, `docker service update`) starts each new task
            # before stopping the old one, which the daemon drains: no moment without a server.
            update_config=UpdateConfig(parallelism=1, order="start-first", failure_action="rollback",
                                       delay=int(SWARM_UPDATE_DELAY_SECONDS * 1e9)),
        )

    def remove_service(self, service: str) -> None:
        """Removes the replicated service this daemon created (a failed start leaves nothing)."""
        info = self._swarm.inspect_service(service, self._swarm.name(service))
        if info is not None and is_owned(info["Spec"].get("Labels"), service):
            engine = self._swarm.engine
            engine.call("service_remove", service, engine.change_api.remove_service, info["ID"])

    def desired_count(self, service: str) -> int | None:
        info = self._swarm.inspect_service(service, self._swarm.name(service))
        if info is None:
            return None
        return int(((info["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0))

    def scale(self, service: str, replicas: int) -> None:
        """Sets the service's replica count. Reloads the spec and retries on a version
        conflict; raises SwarmBusy while someone else updates, pauses or rolls it back."""
        name = self._swarm.name(service)
        for _ in range(5):
            info = self._swarm.inspect_service(service, name)
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
                self._swarm.engine.call("service_update", service, self._update_spec, info["ID"],
                                        info["Version"]["Index"], spec)
                return
            except BackendError as exc:
                if "out of sequence" not in str(exc) and "version" not in str(exc).lower():
                    raise
                time.sleep(0.05)  # someone else updated it in between: read it again
        raise BackendError("service_update", service, f"swarm service {name!r} kept changing under us")

    def version_of(self, service: str) -> str | None:
        """The version (ReplicaSpec.version) the service's tasks are made from, from its task
        template's labels; None for a service the daemon did not create (or from before)."""
        info = self._swarm.inspect_service(service, self._swarm.name(service))
        if info is None:
            return None
        container = ((info["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {})
        labels = container.get("Labels") or {}
        version = labels.get(LABEL_VERSION)
        return str(version) if version is not None else None

    def roll_out(self, spec: ReplicaSpec) -> None:
        """A new version through Swarm's own rolling update (`docker service update`): the
        task template's image, command, env, limits, check and version label change; Swarm
        replaces the tasks one at a time, start-first, and rolls back on failure (the service's
        UpdateConfig). Raises SwarmBusy while an update runs."""
        name = self._swarm.name(spec.service)
        for _ in range(5):
            info = self._swarm.inspect_service(spec.service, name)
            if info is None:
                raise BackendError("service_update", spec.service, f"swarm service {name!r} is gone")
            state = (info.get("UpdateStatus") or {}).get("State")
            if state in BUSY_UPDATE_STATES:
                raise SwarmBusy("service_update", spec.service, f"swarm service {name!r} is {state.replace('_', ' ')}: holding")
            service_spec = info["Spec"]
            task = service_spec.setdefault("TaskTemplate", {})
            container = task.setdefault("ContainerSpec", {})
            container["Image"] = spec.image
            if spec.command:
                container["Args"] = list(spec.command)
            else:
                container.pop("Args", None)
            container["Env"] = [f"{k}={v}" for k, v in spec.env.items()]
            container["Labels"] = {**(container.get("Labels") or {}), LABEL_VERSION: spec.version}
            if spec.healthcheck is not None:
                container["Healthcheck"] = healthcheck_body(spec.healthcheck)
            else:
                container.pop("Healthcheck", None)
            update = service_spec.setdefault("UpdateConfig", {})
            update.update({"Parallelism": 1, "Order": "start-first", "FailureAction": "rollback"})
            update["Delay"] = max(int(update.get("Delay") or 0), int(SWARM_UPDATE_DELAY_SECONDS * 1e9))
            limits = task.setdefault("Resources", {}).setdefault("Limits", {})
            limits["NanoCPUs"] = int(spec.cpu_limit_cores * 1e9)
            limits["MemoryBytes"] = spec.memory_limit_bytes
            try:
                self._swarm.engine.call("service_update", spec.service, self._update_spec, info["ID"],
                                        info["Version"]["Index"], service_spec)
                log.info("swarm service %s: rolling update to version %s started (Swarm's own: start-first, "
                         "rollback on failure)", name, spec.version, extra={"service": spec.service})
                return
            except BackendError as exc:
                if "out of sequence" not in str(exc) and "version" not in str(exc).lower():
                    raise
                time.sleep(0.05)
        raise BackendError("service_update", spec.service, f"swarm service {name!r} kept changing under us")

    def _update_spec(self, service_id: str, version: int, spec: dict[str, Any]) -> None:
        api = self._swarm.engine.change_api
        response = api._post_json(api._url("/services/{0}/update", service_id), data=spec, params={"version": version})
        api._raise_for_status(response)

    def list_replicas(self, service: str, network: str) -> list[Replica]:
        name = self._swarm.name(service)
        engine = self._swarm.engine
        tasks = engine.call("task_list", service, engine.api.tasks, filters={"service": name})
        replicas = []
        for task in tasks:
            status = task.get("Status") or {}
            state = status.get("State", "")
            desired = task.get("DesiredState", "")
            if state in ENDED_STATES:
                # Ended, or history Swarm keeps (TaskHistoryRetentionLimit): reported once by
                # the engine while it is listed, then gone.
                docker_state = "exited"
            elif state == "running":
                docker_state = "running"
            else:
                docker_state = "created"
            replicas.append(Replica(
                id=task["ID"],
                name=f"{name}.{task.get('Slot') or task.get('NodeID', '')[:8]}.{task['ID']}",
                service=service,
                state=docker_state,
                ip=_address_on(task, network),
                created_at_seconds=docker_epoch(task.get("CreatedAt")) or time.time(),
                port=None,
                leaving=desired in ("shutdown", "remove") and state == "running",
                node=task.get("NodeID"),
                version=(((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}).get(LABEL_VERSION),
            ))
        return sorted(replicas, key=lambda r: (r.created_at_seconds, r.name))

    def exit_report(self, service: str, replica_id: str) -> ExitReport:
        engine = self._swarm.engine
        try:
            task = engine.call("task_inspect", service, engine.api.inspect_task, replica_id)
        except docker.errors.NotFound:
            return ExitReport(None, False, "task vanished", ())
        status = task.get("Status") or {}
        container = status.get("ContainerStatus") or {}
        error = status.get("Err") or status.get("Message") or ""
        return ExitReport(container.get("ExitCode"), "OOM" in error.upper() and "kill" in error.lower(),
                          str(error), _task_log_tail(engine, replica_id))


class SwarmMetrics:
    """CPU and memory of tasks on any node (MetricsSource): from the agents, or Prometheus."""

    def __init__(self, swarm: Swarm, agents: SwarmAgents, on_agent: Callable[[str, bool], None] | None = None) -> None:
        self._swarm = swarm
        self._agent_source = AgentSource(agents.endpoints, on_agent=on_agent)
        self._sources: dict[str, AgentSource | PrometheusSource] = {}
        self._source_names: dict[str, str] = {}

    def register(self, service: str, source: str, prometheus: PrometheusSourceConfig | None = None) -> None:
        self._source_names[service] = source
        if source == "prometheus":
            assert prometheus is not None
            self._sources[service] = PrometheusSource(prometheus, self._swarm.name(service))
        else:
            self._sources[service] = self._agent_source

    def uses_agents(self, service: str) -> bool:
        return self._source_names.get(service, "agent") == "agent"

    def read_stats(self, service: str, replica_ids: list[str]) -> dict[str, StatsReading | None]:
        source = self._sources.get(service, self._agent_source)
        try:
            return source.read(replica_ids)
        except SourceError as exc:
            raise BackendError("stats", service, str(exc)) from exc

    def stats_source(self, service: str) -> str | None:
        return self._source_names.get(service, "agent")

    def source_errors(self, service: str) -> dict[str, str]:
        """Agents that do not answer, by node (a Prometheus source fails as a whole instead)."""
        return dict(self._agent_source.last_errors) if self.uses_agents(service) else {}


class SwarmLoadBalancers:
    """The load balancer as a Swarm service pinned to the daemon's node (LoadBalancerHost)."""

    def __init__(self, swarm: Swarm, admin: AdminMount) -> None:
        self._swarm = swarm
        self._admin = admin

    def load_balancer_container(self, service: str) -> LoadBalancerContainer | None:
        name = lb_name(service)
        info = self._swarm.inspect_service(service, name)
        if info is None:
            return None
        labels = info["Spec"].get("Labels") or {}
        tasks = self._tasks(service, name)
        running = [t for t in tasks if (t.get("Status") or {}).get("State") == "running"
                   and t.get("DesiredState") == "running"]
        if running:
            state, started = "running", docker_epoch((running[0].get("Status") or {}).get("Timestamp"))
        elif any(t.get("DesiredState") == "running" for t in tasks):
            state, started = "restarting", None
        else:
            state, started = "exited", None
        return LoadBalancerContainer(info["ID"], name, state, labels.get(LABEL_LB_SPEC, ""),
                                     labels.get(LABEL_PUBLISH, ""), started)

    def _tasks(self, service: str, name: str) -> list[dict[str, Any]]:
        engine = self._swarm.engine
        tasks: list[dict[str, Any]] = engine.call("task_list", service, engine.api.tasks, filters={"service": name})
        return tasks

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

    def create_load_balancer(self, spec: LoadBalancerSpec) -> str:
        name = lb_name(spec.service)
        mount_type, source = self._admin.source()
        node = spec.node
        constraint = f"node.id=={self._swarm.node_id}" if node is None else (
            f"node.id=={node}" if len(node) == 25 and node.isalnum() else f"node.hostname=={node}")
        labels = {LABEL_MANAGED: "true", LABEL_SERVICE: spec.service, LABEL_ROLE: ROLE_LOAD_BALANCER,
                  LABEL_PUBLISH: f"{spec.publish_host}:{spec.publish_port}", LABEL_LB_SPEC: spec.fingerprint()}
        template = TaskTemplate(
            container_spec=ContainerSpec(
                spec.image, labels=labels, env=lb_environment(spec, name),
                mounts=[Mount(LB_ADMIN_DIR, source, type=mount_type)],
                stop_signal="SIGUSR1",
            ),
            restart_policy=RestartPolicy(condition="any", delay=int(2e9)),
            placement=Placement(constraints=[constraint]),
            networks=[spec.network],
        )
        log.info("creating load balancer service %s, published on %s:%d (mode=host)", name,
                 spec.publish_host, spec.publish_port, extra={"service": spec.service})
        engine = self._swarm.engine
        created = engine.call(
            "service_create", spec.service, engine.change_api.create_service, template, name=name, labels=labels,
            mode=ServiceMode("replicated", replicas=1),
            endpoint_spec=EndpointSpec(mode="dnsrr", ports={spec.publish_port: (LB_CLIENT_PORT, "tcp", "host")}),
        )
        return str(created["ID"])

    def start_load_balancer(self, service: str, lb_id: str) -> None:
        engine = self._swarm.engine
        info = engine.call("service_inspect", service, engine.api.inspect_service, lb_id)
        engine.call("service_update", service, engine.change_api.update_service, info["ID"], info["Version"]["Index"],
                    force_update=True, fetch_current_spec=True)

    def remove_load_balancer(self, service: str, lb_id: str) -> None:
        engine = self._swarm.engine
        info = engine.call("service_inspect", service, engine.api.inspect_service, lb_id)
        if not is_owned(info["Spec"].get("Labels"), service):
            raise BackendError("service_remove", service, f"refusing to touch {lb_id[:12]}: not ours")
        engine.call("service_remove", service, engine.change_api.remove_service, info["ID"])

    def load_balancer_report(self, service: str, lb_id: str) -> ExitReport:
        """Why the load balancer's latest task ended."""
        tasks = sorted(self._tasks(service, lb_name(service)), key=lambda t: t.get("CreatedAt", ""))
        if not tasks:
            return ExitReport(None, False, "no task", ())
        status = tasks[-1].get("Status") or {}
        container = status.get("ContainerStatus") or {}
        return ExitReport(container.get("ExitCode"), False, str(status.get("Err") or status.get("Message") or ""),
                          _task_log_tail(self._swarm.engine, tasks[-1]["ID"]))

    def load_balancer_info(self, service: str, lb_id: str) -> LoadBalancer:
        name = lb_name(service)
        engine = self._swarm.engine
        try:
            info = engine.call("service_inspect", service, engine.api.inspect_service, lb_id)
            publish = (info["Spec"].get("Labels") or {}).get(LABEL_PUBLISH, "")
        except docker.errors.NotFound:
            publish = ""
        # The exporter is on the overlay: Prometheus in the stack reaches it by name.
        return LoadBalancer(lb_id, name, self._admin.socket_path(name), name, LB_METRICS_PORT, publish)


class SwarmBackend:
    """A swarm manager's parts, made from one connection: the services' tasks, the load
    balancers, the overlay networks and the agents' (or Prometheus') metrics."""

    def __init__(
        self,
        engine: DockerEngine,
        admin: AdminMount,
        observer: CallObserver = NULL_OBSERVER,
        agent_port: int = 9101,
        agent_image: str = "autoscaler:latest",
        on_agent: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.swarm = Swarm(engine)
        self.agents = SwarmAgents(self.swarm, agent_port, agent_image)
        self.metrics = SwarmMetrics(self.swarm, self.agents, on_agent)
        self.services = SwarmServices(self.swarm, self.agents, self.metrics.uses_agents)
        self.load_balancers = SwarmLoadBalancers(self.swarm, admin)
        self.networks = DockerNetworks(engine, driver="overlay", attachable=True)

    def check_manager(self) -> None:
        self.swarm.check_manager()

    def register(self, service: str, adopted: str | None, source: str,
                 prometheus: PrometheusSourceConfig | None = None) -> None:
        """Tells the backend how a service is named on the swarm and where its stats come from."""
        self.swarm.names[service] = swarm_service_name(service, adopted)
        self.metrics.register(service, source, prometheus)


def _task_log_tail(engine: DockerEngine, task_id: str) -> tuple[str, ...]:
    api = engine.api
    try:
        response = api._get(api._url("/tasks/{0}/logs", task_id),
                            params={"stdout": 1, "stderr": 1, "tail": 20}, stream=False)
        api._raise_for_status(response)
        text = b"".join(api._multiplexed_buffer_helper(response)).decode(errors="replace")
    except (docker.errors.DockerException, requests.exceptions.RequestException, ValueError):
        return ()
    return tuple(line.strip()[:200] for line in text.splitlines() if line.strip())[-5:]


def _address_on(task: dict[str, Any], network: str) -> str | None:
    for attachment in task.get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
            for address in attachment.get("Addresses") or []:
                return str(address).split("/", 1)[0]
    return None
