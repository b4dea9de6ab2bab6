"""One service's reconciler: each pass reads the world, decides, and takes small steps toward
the decided count. Nothing waits inside a pass.

A pass (`run_cycle`, every interval):
  observe   list the service's containers and the load balancer's servers (no waiting).
  repair    membership (`_reconcile`): register running replicas the load balancer lacks,
            promote those whose check passed, take paused or failing ones out of rotation,
            report and remove replicas that exited or never became healthy, finish drains.
  decide    the pure policy (autoscaler.policy.evaluate) on a snapshot.
  act       (`_converge`): start replicas up to the decided count (limited by the start
            backoff), drain the surplus. Starts and removals run as operations in other
            threads; their outcomes are collected by the next step.
Between passes a short `progress` step (every PROGRESS_SECONDS, and at once when a start
finishes) registers freshly started
replicas, promotes them as soon as their own check passes and finishes drains, so a replica
joins the moment it is healthy and leaves the moment it is idle.

What a replica is doing is read back from the world (docker state, the load balancer's server
state), so a restarted daemon resumes where the last one stopped. What only this process knows
(when it first saw a replica, whether it was ever ready, the start backoff) is in memory and
starts afresh: timeouts then count from adoption, never less.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from bisect import insort
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import (
    BackendError,
    ExitReport,
    LoadBalancer,
    LoadBalancerContainer,
    LoadBalancerSpec,
    Replica,
    ReplicaSpec,
)
from autoscaler.docker.stats import StatsReading, cpu_percent, memory_percent
from autoscaler.engine import backoff as bo
from autoscaler.engine.operations import Operations, Outcome
from autoscaler.engine.replicas import (
    Observation,
    ReplicaView,
    Tracked,
    choose_victims,
    classify_exit,
    in_transition,
)
from autoscaler.lb.haproxy import BackendStat, HAProxyError, ServerBusy, ServerStat
from autoscaler.model import Bounds, Decision, History, ReplicaSample, ServiceSnapshot, TimedValue
from autoscaler.policy.evaluate import evaluate, seed_history
from autoscaler.policy.schedule import ScheduledBounds
from autoscaler.telemetry import ReplicaMetrics, Telemetry

log = logging.getLogger("autoscaler.engine")

# How often the progress step looks at starting and draining replicas (one `show stat`, ~1 ms,
# and only while some are); a finished start also wakes it at once.
PROGRESS_SECONDS = 0.1
SOURCE_NAMES = {
    "cgroup": "the cgroup files", "docker_api": "the Docker API", "mixed": "the cgroup files or the Docker API",
    "agent": "the agents", "prometheus": "Prometheus",
}
LB_POLL_SECONDS = 0.2  # while set-up waits for a new load balancer's API
LB_STARTUP_GRACE_SECONDS = 15.0  # a running load balancer whose API is silent longer is broken


class ReplicaBackend(Protocol):
    # False: the controller starts and removes each replica (containers on one engine).
    # True: an orchestrator does (Swarm): the controller sets the count and keeps membership.
    orchestrated: bool

    def prepare(self, spec: ReplicaSpec, initial_replicas: int, drain_timeout_seconds: float, adopt: bool) -> bool: ...
    def remove_service(self, service: str) -> None: ...
    def desired_count(self, service: str) -> int | None: ...
    def scale(self, service: str, replicas: int) -> None: ...
    def ensure_network(self, service: str, name: str) -> bool: ...
    def remove_network(self, service: str, name: str) -> None: ...
    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> tuple[LoadBalancer, bool]: ...
    def existing_load_balancer(self, service: str) -> LoadBalancer | None: ...
    def load_balancer_container(self, service: str) -> LoadBalancerContainer | None: ...
    def create_load_balancer(self, spec: LoadBalancerSpec) -> str: ...
    def start_load_balancer(self, service: str, container_id: str) -> None: ...
    def remove_load_balancer(self, service: str, container_id: str) -> None: ...
    def load_balancer_info(self, service: str, container_id: str) -> LoadBalancer: ...
    def list_replicas(self, service: str, network: str) -> list[Replica]: ...
    def new_replica_name(self, service: str) -> str: ...
    def start_replica(self, spec: ReplicaSpec, name: str | None = None) -> Replica: ...
    def remove_replica(self, service: str, container_id: str, stop_timeout_seconds: int, force: bool = False) -> None: ...
    def exit_report(self, service: str, container_id: str) -> ExitReport: ...
    def read_stats(self, service: str, container_ids: list[str]) -> dict[str, StatsReading | None]: ...
    def stats_source(self, service: str) -> str | None: ...


class LoadBalancerAPI(Protocol):
    def snapshot(self) -> tuple[BackendStat, dict[str, ServerStat]]: ...
    def servers(self) -> dict[str, ServerStat]: ...
    def add_server(self, name: str, address: str, port: int) -> None: ...
    def enable_health(self, name: str) -> None: ...
    def set_ready(self, name: str) -> None: ...
    def set_drain(self, name: str) -> None: ...
    def set_health_down(self, name: str) -> None: ...
    def delete_server(self, name: str, force: bool = False) -> None: ...


class LeaseHolder(Protocol):
    def try_acquire(self) -> str | None: ...
    def held(self) -> bool: ...
    def release(self) -> None: ...


@dataclass
class ServiceHealth:
    """Conditions shown by `status`, each logged once when it changes."""

    engine_down_since: float | None = None  # wall clock
    engine_error: str = ""
    lb_down_since: float | None = None
    lb_error: str = ""
    standby_holder: str | None = None
    last_failure: str = ""
    last_failure_at: float | None = None  # wall clock
    stats_source: str | None = None  # cgroup | docker_api | mixed
    notes: dict[str, str] = field(default_factory=dict)  # last message per topic, for once-per-change logs


class ServiceController:
    def __init__(
        self,
        name: str,
        config: ServiceConfig,
        network: str,
        backend: ReplicaBackend,
        lb_factory: Callable[[LoadBalancer], LoadBalancerAPI],
        telemetry: Telemetry,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        lease: LeaseHolder | None = None,
        operations: Operations | None = None,
    ) -> None:
        self.name = name
        # Config and its schedule are swapped together by a reload; a pass reads them once.
        self._configured: tuple[ServiceConfig, ScheduledBounds] = (config, ScheduledBounds(config))
        self.network = network
        self.dry_run = dry_run
        self._backend = backend
        self._lb_factory = lb_factory
        self._telemetry = telemetry
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._lease = lease
        self._ops = operations or Operations(name)
        self._lock = threading.RLock()
        self._lb: LoadBalancerAPI | None = None
        self.load_balancer: LoadBalancer | None = None
        self._lb_backoff = bo.Backoff()
        self._history = History()
        self._spec: int | None = None  # the count to keep; lost replicas are replaced up to it
        self._counted: list[float] = []  # decided scale-up starts not submitted yet (decision times)
        self._tracked: dict[str, Tracked] = {}
        self._removing: dict[str, str] = {}  # name -> container id, until the container is gone
        # Starts submitted and not collected yet (ReplicaSet "expectations"): counted as replicas
        # from the moment they are asked for, so that no pass starts the same replica twice.
        self._expected_starts: set[str] = set()
        self._deleting: dict[str, float] = {}  # server name -> first try, while connections remain
        self._started_at = clock()
        # Orchestrated backends: the count the orchestrator holds (read each pass), and until
        # when the progress step watches for tasks it marks for removal after a scale-in.
        self._orchestrated_count: int | None = None
        self._watch_leaving_until = 0.0
        self._backoff = bo.Backoff()
        self._previous_stats: dict[str, StatsReading] = {}
        self._previous_requests: dict[str, tuple[float, int]] = {}
        self._set_up = False
        self.health = ServiceHealth()
        self.last_decision: Decision | None = None
        self.last_decision_at: float | None = None  # wall clock
        self.last_observation: Observation | None = None
        self.last_snapshot: ServiceSnapshot | None = None
        self._last_logged: tuple[str, int, int] | None = None
        self.replica_counts: dict[str, int] = {"ready": 0, "starting": 0, "draining": 0}
        telemetry.register_service(name)

    @property
    def config(self) -> ServiceConfig:
        return self._configured[0]

    def _extra(self, **fields: object) -> dict[str, object]:
        return {"service": self.name, **fields}

    def _once(self, topic: str, level: int, message: str, *args: object, **extra: object) -> None:
        """Logs a condition once per change, not once per pass. A change is a different text
        once numbers and ids are set aside ("next try in 4s" and "in 8s" are the same news)."""
        text = message % args if args else message
        key = _VARYING.sub("#", text)
        if self.health.notes.get(topic) != key:
            self.health.notes[topic] = key
            log.log(level, "%s", text, extra=self._extra(**extra))

    # --- set-up ---------------------------------------------------------------------------

    def replica_spec(self, config: ServiceConfig | None = None) -> ReplicaSpec:
        c = config or self.config
        return ReplicaSpec(
            service=self.name,
            image=c.image,
            port=c.port,
            network=self.network,
            cpu_limit_cores=c.cpu_limit,
            memory_limit_bytes=c.memory_limit,
            command=tuple(c.command),
            env=dict(c.env),
        )

    def lb_spec(self, config: ServiceConfig | None = None) -> LoadBalancerSpec:
        c = config or self.config
        host, port = c.load_balancer.publish_host_port
        return LoadBalancerSpec(
            service=self.name,
            image=c.load_balancer.image,
            network=self.network,
            publish_host=host,
            publish_port=port,
            health_path=c.health_path,
            algorithm=c.load_balancer.algorithm,
            node=c.load_balancer.node,
        )

    def update_config(self, config: ServiceConfig) -> None:
        """Hot reload: the next pass uses the new config; history and replicas are kept."""
        self._configured = (config, ScheduledBounds(config))

    def acquire_lease(self) -> str | None:
        """None when this daemon may act on the service, else who holds it (stand by)."""
        if self._lease is None or self.dry_run:
            return None
        if self._lease.held():
            return None
        # Not held (first pass, lost with an engine restart, or standing by): whoever held it
        # may have changed things, so set up again once it is ours.
        self._set_up = False
        holder = self._lease.try_acquire()
        self.health.standby_holder = holder
        self._telemetry.lease_held.labels(self.name).set(0 if holder else 1)
        if holder is not None:
            self._once("lease", logging.WARNING,
                       "another daemon holds this service (%s): standing by, will take over when it exits",
                       holder)
        else:
            self.health.notes.pop("lease", None)
        return holder

    def setup(self, wait_seconds: float = LB_STARTUP_GRACE_SECONDS) -> list[str]:
        """Creates what is missing (network, load balancer) and adopts what exists; waits up to
        wait_seconds for the load balancer's API. Returns what it created ("network",
        "load-balancer"), so a failed start can remove it again.

        In a dry run nothing is created: the service must already have a running load balancer.
        """
        created: list[str] = []
        if self.dry_run:
            found = self._backend.existing_load_balancer(self.name)
            if found is None:
                raise BackendError(
                    "setup", self.name,
                    "a dry run changes nothing, and this service has no running load balancer "
                    "yet; run once without --dry-run to create it",
                )
            lb, fresh = found, False
        else:
            if self._backend.ensure_network(self.name, self.network):
                created.append("network")
            config = self.config
            try:
                if self._backend.prepare(self.replica_spec(config), config.min_replicas,
                                         config.policy.drain_timeout_seconds, adopt=config.swarm_service is not None):
                    created.append("service")
                lb, fresh = self._backend.ensure_load_balancer(self.lb_spec())
            except BackendError:
                self.remove_created(created)
                raise
            if fresh:
                created.append("load-balancer")
        self._use_load_balancer(lb)
        if wait_seconds > 0:
            try:
                self._wait_for_lb(wait_seconds)
            except HAProxyError:
                self.remove_created(created)
                raise
        self._set_up = True
        log.info("ready: load balancer %s%s", lb.name, " (new)" if fresh else " (adopted)", extra=self._extra())
        return created

    def remove_created(self, created: list[str]) -> None:
        """Removes what setup() created (a start that failed leaves nothing half-made)."""
        try:
            if "load-balancer" in created and self.load_balancer is not None:
                self._backend.remove_load_balancer(self.name, self.load_balancer.id)
            if "service" in created:
                self._backend.remove_service(self.name)
            if "network" in created:
                self._backend.remove_network(self.name, self.network)
        except BackendError as exc:
            log.warning("could not remove what the failed start created: %s", exc, extra=self._extra())

    def _use_load_balancer(self, lb: LoadBalancer) -> None:
        self.load_balancer = lb
        self._lb = self._lb_factory(lb)

    def _wait_for_lb(self, timeout_seconds: float) -> None:
        assert self._lb is not None
        deadline = self._clock() + timeout_seconds
        while True:
            try:
                self._lb.servers()
                return
            except HAProxyError:
                if self._clock() > deadline:
                    raise
                self._sleep(LB_POLL_SECONDS)

    # --- the pass -------------------------------------------------------------------------

    @property
    def consecutive_failures(self) -> int:
        return self._history.consecutive_failures

    @property
    def start_backoff(self) -> bo.Backoff:
        return self._backoff

    def source_errors(self) -> dict[str, str]:
        """Metrics sources that fail (Swarm agents by node), for `status`."""
        errors = getattr(self._backend, "agent_errors", None)
        return errors() if callable(errors) and self.health.stats_source == "agent" else {}

    def bounds(self) -> Bounds:
        return self._configured[1].at_timestamp(self._wall_clock())

    def run_cycle(self) -> Decision | None:
        """One pass. Returns the decision, or None when there was nothing to decide on (standing
        by, or the Docker engine is unreachable)."""
        with self._lock:
            return self._cycle()

    def _cycle(self) -> Decision | None:
        config, schedule = self._configured
        start = now = self._clock()
        try:
            # The pass's first look decides whether the engine is reachable (and only it: while
            # dockerd shuts down, pooled connections still answer as new ones fail). Looking is
            # harmless without the lease.
            replicas = self._backend.list_replicas(self.name, self.network)
        except BackendError as exc:
            self._engine_unreachable(exc)
            return None
        self._engine_reachable()
        try:
            if self.acquire_lease() is not None:
                return None
        except BackendError as exc:
            self._once("lease", logging.WARNING, "cannot take the lease: %s (trying again)", exc)
            return None
        if not self._set_up:
            try:
                self.setup(wait_seconds=0)
            except (BackendError, HAProxyError) as exc:
                self._once("setup", logging.ERROR, "cannot set up the service: %s (trying again)", exc)
                return None
        self._collect(config, now)
        backend_stat, servers = self._load_balancer_state(config, now)
        views = self._reconcile(config, replicas, servers, now)
        if self._backend.orchestrated:
            try:
                self._orchestrated_count = self._backend.desired_count(self.name)
            except BackendError as exc:
                self._once("scale", logging.WARNING, "cannot read the service's replica count: %s", exc)
        if self._spec is None:
            # First sight: keep what runs (or what the orchestrator holds), and seed the window
            # with it, as the HPA does, so a restarted daemon does not scale 6 -> 2 on its first
            # look at a quiet service.
            counted = len([v for v in views if v.state != "draining"]) + self._in_flight_starts()
            self._spec = self._orchestrated_count if self._orchestrated_count is not None else counted
            self._history = seed_history(self._spec, now)
        if not self.dry_run:
            # Like a ReplicaSet: what died is replaced before the policy looks at the load.
            views = self._converge(config, views, servers is not None, now)
        observation = self._observation(views, backend_stat)
        snapshot = self.snapshot(observation, config)
        bounds = schedule.at_timestamp(self._wall_clock())
        decision, self._history = evaluate(snapshot, config.policy, bounds, self._history, now)
        previous, self.last_decision = self.last_decision, decision
        self.last_decision_at = self._wall_clock()
        self.last_snapshot = snapshot
        self._log_decision(decision, previous)
        self._telemetry.record_evaluation(
            decision, snapshot, bounds, config.policy, self._history.consecutive_failures, self.dry_run
        )
        if decision.desired != decision.current and not self.dry_run:
            self._apply_decision(decision, now)
            self._telemetry.record_scale(self.name, str(decision.direction), decision.reason)
            views = self._converge(config, views, servers is not None, now)
            observation = self._observation(views, backend_stat)
        self.last_observation = observation
        self._record_state(now)
        self._telemetry.loop_duration.labels(self.name).observe(self._clock() - start)
        return decision

    def progress(self) -> None:
        """The short step between passes: registers finished starts, promotes replicas whose
        check passed, finishes drains. Skipped if a pass is running (it does the same)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self._set_up or self.dry_run or self.health.engine_down_since is not None:
                return
            config = self.config
            now = self._clock()
            self._collect(config, now)
            watching = self._backend.orchestrated and now < self._watch_leaving_until
            if self._lb is None or not (watching or any(
                in_transition(t) for n, t in self._tracked.items() if n not in self._removing
            )):
                return
            try:
                servers = self._lb.servers()
            except HAProxyError:
                return  # the next pass looks into it
            if watching:
                self._drain_leaving(config, servers, now)
                servers = {n: s for n, s in servers.items()}
            for name, tracked in list(self._tracked.items()):
                server = servers.get(name)
                if server is None or name in self._removing:
                    continue
                if tracked.drain_deadline is not None:
                    if server.sessions_current == 0 or now >= tracked.drain_deadline:
                        self._finish_drain(config, name, tracked, server, now)
                elif in_transition(tracked) and server.maintenance and server.check_passed:
                    self._promote(name, tracked, now)
            self._record_state(now)
        finally:
            self._lock.release()

    # --- observe: engine and load balancer ------------------------------------------------

    def _engine_unreachable(self, exc: BackendError) -> None:
        """One line when the engine goes away, one when it is back; nothing in between."""
        self.health.engine_error = str(exc)
        self._telemetry.engine_up.labels(self.name).set(0)
        if self.health.engine_down_since is None:
            self.health.engine_down_since = self._wall_clock()
            self._telemetry.engine_outages.labels(self.name).inc()
            log.warning("Docker engine not reachable (%s): holding, retrying every interval", exc,
                        extra=self._extra())

    def _engine_reachable(self) -> None:
        down_since = self.health.engine_down_since
        self._telemetry.engine_up.labels(self.name).set(1)
        if down_since is not None:
            self.health.engine_down_since = None
            log.warning("Docker engine reachable again after %.0fs", self._wall_clock() - down_since,
                        extra=self._extra())

    def _load_balancer_state(
        self, config: ServiceConfig, now: float
    ) -> tuple[BackendStat | None, dict[str, ServerStat] | None]:
        """The load balancer's stats, or (None, None) while it is down; then one non-blocking
        repair step (create, start or replace it, within its own backoff)."""
        if self._lb is not None:
            try:
                backend_stat, servers = self._lb.snapshot()
            except HAProxyError as exc:
                error = str(exc)
            else:
                if self.health.lb_down_since is not None:
                    log.warning("load balancer answering again after %.0fs",
                                self._wall_clock() - self.health.lb_down_since, extra=self._extra())
                    self.health.lb_down_since = None
                    for topic in ("lb-repair", "lb-error"):
                        self.health.notes.pop(topic, None)
                self._lb_backoff = bo.maybe_reset(
                    bo.after_ready(self._lb_backoff, now, now), now, config.backoff_max_seconds
                )
                self._telemetry.lb_up.labels(self.name).set(1)
                return backend_stat, servers
        else:
            error = "no load balancer yet"
        if self.health.lb_down_since is None:
            self.health.lb_down_since = self._wall_clock()
        self.health.lb_error = error
        self._telemetry.lb_up.labels(self.name).set(0)
        if not self.dry_run:
            self._repair_load_balancer(config, now, error)
        return None, None

    def _repair_load_balancer(self, config: ServiceConfig, now: float, error: str) -> None:
        try:
            container = self._backend.load_balancer_container(self.name)
            if container is not None and container.state in ("removing", "dead"):
                self._once("lb-repair", logging.INFO, "load balancer %s is being removed: waiting", container.name)
                return
            if container is not None and container.state == "running":
                started = container.started_at_seconds or 0.0
                if self._wall_clock() - started < LB_STARTUP_GRACE_SECONDS:
                    self._once("lb-repair", logging.INFO, "load balancer %s is starting", container.name)
                    if self.load_balancer is None or self.load_balancer.id != container.id:
                        self._use_load_balancer(self._backend.load_balancer_info(self.name, container.id))
                    return
            if now < self._lb_backoff.retry_at:
                return
            if container is None:
                self._once("lb-repair", logging.WARNING, "load balancer missing (%s): creating it", error)
                container_id = self._backend.create_load_balancer(self.lb_spec(config))
            elif container.state == "running":
                self._once("lb-repair", logging.WARNING,
                           "load balancer %s runs but its API has not answered for %.0fs (%s): replacing it",
                           container.name, LB_STARTUP_GRACE_SECONDS, error)
                self._backend.remove_load_balancer(self.name, container.id)
                container_id = self._backend.create_load_balancer(self.lb_spec(config))
            elif container.state == "restarting":
                report = self._backend.exit_report(self.name, container.id)
                self._once("lb-repair", logging.WARNING, "load balancer %s keeps restarting (%s)",
                           container.name, report.describe())
                self._lb_backoff = bo.after_failure(self._lb_backoff, now, report.describe(),
                                                    config.backoff_initial_seconds, config.backoff_max_seconds)
                self._telemetry.lb_restarts.labels(self.name).inc()
                return
            else:
                report = self._backend.exit_report(self.name, container.id)
                self._once("lb-repair", logging.WARNING, "load balancer %s is %s (%s): starting it",
                           container.name, container.state, report.describe())
                self._backend.start_load_balancer(self.name, container.id)
                container_id = container.id
            self._lb_backoff = bo.after_failure(self._lb_backoff, now, error,
                                                config.backoff_initial_seconds, config.backoff_max_seconds)
            self._telemetry.lb_restarts.labels(self.name).inc()
            self._use_load_balancer(self._backend.load_balancer_info(self.name, container_id))
            # A new HAProxy has no members: every replica is registered again.
            for tracked in self._tracked.values():
                tracked.registered_at = None
        except BackendError as exc:
            if exc.unreachable:
                return  # the engine's trouble, not the load balancer's: no backoff
            self._lb_backoff = bo.after_failure(self._lb_backoff, now, str(exc),
                                                config.backoff_initial_seconds, config.backoff_max_seconds)
            self._once("lb-error", logging.ERROR, "cannot bring the load balancer back: %s (next try in %.0fs)",
                       exc, bo.seconds_until_retry(self._lb_backoff, now))

    # --- repair: one replica at a time ----------------------------------------------------

    def _reconcile(
        self, config: ServiceConfig, replicas: list[Replica], servers: dict[str, ServerStat] | None, now: float
    ) -> list[ReplicaView]:
        """Brings each replica one step along starting -> ready -> draining -> removed (or
        failed), and the load balancer's membership in line with the running replicas."""
        repair = not self.dry_run and servers is not None
        starting_names = self._expected_starts
        listed = {r.name for r in replicas}
        views: list[ReplicaView] = []
        failures_this_pass = 0
        for replica in replicas:
            if replica.name in starting_names or replica.state == "removing":
                continue
            if replica.name in self._removing:
                if replica.name not in self._ops.in_flight("remove") and not self.dry_run:
                    self._submit_removal(config, replica.name, replica.id, force=True)  # an earlier try failed
                continue
            if replica.terminated and self.dry_run:
                continue  # a dry run reports what it sees and removes nothing
            tracked = self._tracked.get(replica.name)
            if tracked is None:
                tracked = self._tracked[replica.name] = Tracked(replica.id, now, replica.created_at_seconds)
            server = servers.get(replica.name) if servers is not None else None
            if replica.orchestrated and tracked.failed and not replica.terminated:
                continue  # drained (or failed): the orchestrator is stopping it; it counts no more
            if replica.orchestrated and (replica.terminated or replica.state == "created"):
                if replica.terminated:
                    self._task_ended(config, replica, tracked, server, now, repair)
                    continue
                views.append(ReplicaView(replica, "starting", server))  # Swarm is starting it
                continue
            never_started = replica.state == "created" and now - tracked.first_seen_at > config.startup_timeout_seconds
            if (replica.terminated or never_started) and not self.dry_run:
                failures_this_pass += self._fail_exited(config, replica, tracked, server, now, failures_this_pass)
                continue
            view = self._step(config, replica, tracked, server, servers, now, repair)
            if view is not None:
                views.append(view)
        if repair:
            assert servers is not None
            for name in [n for n in servers if n not in listed and n not in starting_names]:
                if name not in self._deleting:
                    self._note("server %s has no replica: removing it from the load balancer", name)
                self._delete_server(config, name, now)
            self._deleting = {n: t for n, t in self._deleting.items() if n in servers}
        # Forget what is gone, so memory stays bounded as replicas come and go.
        for name in [n for n in self._tracked if n not in listed and n not in starting_names]:
            del self._tracked[name]
        for name in [n for n in self._removing if n not in listed]:
            del self._removing[name]
        return views

    def _step(
        self,
        config: ServiceConfig,
        replica: Replica,
        tracked: Tracked,
        server: ServerStat | None,
        servers: dict[str, ServerStat] | None,
        now: float,
        repair: bool,
    ) -> ReplicaView | None:
        name = replica.name
        if servers is None:
            # No load balancer: nobody is served. Keep what we last knew of each replica.
            state = "draining" if tracked.drain_deadline is not None else (
                "ready" if tracked.ready_since is not None and tracked.unhealthy_since is None else "starting")
            return ReplicaView(replica, state, None)
        assert self._lb is not None
        if replica.leaving and tracked.drain_deadline is None and server is not None and repair:
            self._start_drain(config, name, tracked, server, now, "marked for removal by the orchestrator")
        if tracked.drain_deadline is not None or (server is not None and server.draining):
            if not repair:
                return ReplicaView(replica, "draining", server)
            if tracked.drain_deadline is None:  # a drain an earlier run left behind
                tracked.drain_deadline = now + config.policy.drain_timeout_seconds
            if server is None or server.sessions_current == 0 or now >= tracked.drain_deadline:
                self._finish_drain(config, name, tracked, server, now)
                return None
            return ReplicaView(replica, "draining", server)
        port = replica.port or config.port
        expected = f"{replica.ip}:{port}" if replica.ip else None
        if expected is not None and (server is None or server.address != expected):
            if repair:
                self._note("replica %s is not in the load balancer: registering it", name)
                if server is None or self._delete_server(config, name, now, force=True):
                    self._register(name, tracked, replica.ip, port, now)  # type: ignore[arg-type]
            return ReplicaView(replica, "starting", None)
        if server is not None and replica.state == "paused" and server.serving:
            # Frozen: it accepts connections and answers none. Out of rotation now, not after
            # the next failed checks; its checks go on, so it comes back by itself once unpaused.
            if repair:
                self._note("replica %s is paused: out of rotation until it passes its check again", name)
                self._lb_call(self._lb.set_health_down, name)
            tracked.unhealthy_since = tracked.unhealthy_since or now
            return ReplicaView(replica, "starting", server)
        if server is not None and server.serving:
            if tracked.ready_since is None:
                tracked.ready_since = now
            if tracked.unhealthy_since is not None:
                tracked.unhealthy_since = None
                self._note("replica %s passes its check again: serving", name)
            return ReplicaView(replica, "ready", server)
        if server is not None and server.maintenance and server.check_passed and replica.state == "running":
            if repair:
                self._promote(name, tracked, now)
                return ReplicaView(replica, "ready", server)
            return ReplicaView(replica, "starting", server)
        # Not serving: still starting, failing its check, paused, or without an address.
        if tracked.ready_since is not None and tracked.unhealthy_since is None:
            tracked.unhealthy_since = now
        if repair and self._timed_out(config, tracked, now):
            check = server.check_status if server is not None else "no address on the network"
            why = "paused" if replica.state == "paused" else f"check {check or 'not run'}"
            if replica.orchestrated:
                # Swarm decides what happens to its tasks; out of rotation it serves nobody.
                self._once(f"unhealthy-{name}", logging.WARNING,
                           "replica %s not healthy for %gs (%s): out of rotation, left to the orchestrator",
                           name, config.startup_timeout_seconds, why)
                return ReplicaView(replica, "starting", server)
            self._fail(config, name, tracked, server, now, "unhealthy",
                       f"not healthy for {config.startup_timeout_seconds:g}s ({why})", counts=True)
            return None
        return ReplicaView(replica, "starting", server)

    def _start_drain(self, config: ServiceConfig, name: str, tracked: Tracked, server: ServerStat, now: float,
                     why: str) -> None:
        assert self._lb is not None
        if self._lb_call(self._lb.set_drain, name):
            tracked.drain_deadline = now + config.policy.drain_timeout_seconds
            log.info("draining replica %s (%s; %d session(s))", name, why, server.sessions_current,
                     extra=self._extra(replica=name))

    def _task_ended(self, config: ServiceConfig, replica: Replica, tracked: Tracked, server: ServerStat | None,
                    now: float, repair: bool) -> None:
        """An orchestrated task that ended: out of the load balancer; a failure is reported
        once (the orchestrator restarts it with its own policy, so no backoff of ours)."""
        if server is not None and repair:
            self._delete_server(config, replica.name, now)
        if tracked.failed:
            return
        tracked.failed = True
        if replica.state != "dead" or replica.created_at_seconds < self._wall_clock() - (self._clock() - self._started_at) - 1:
            return  # a task that was stopped (scale-in, update), or history from before us
        try:
            report = self._backend.exit_report(self.name, replica.id)
        except BackendError as exc:
            report = ExitReport(None, False, f"unreadable: {exc}", ())
        reason = "oom_killed" if report.oom_killed else "task_failed"
        (self._telemetry.replica_failures if tracked.ready_since is not None else self._telemetry.start_failures
         ).labels(self.name, reason).inc()
        message = f"replica {replica.name} failed ({reason}): {report.describe()}; the orchestrator restarts it"
        self.health.last_failure = message
        self.health.last_failure_at = self._wall_clock()
        level = logging.INFO if self.health.notes.get("failure-reason") == reason else logging.WARNING
        self.health.notes["failure-reason"] = reason
        log.log(level, "%s", message, extra=self._extra(replica=replica.name, reason=reason))

    def _timed_out(self, config: ServiceConfig, tracked: Tracked, now: float) -> bool:
        """Whether a replica out of rotation has had startup_timeout_seconds to get healthy.

        A starting one counts from its creation and from when this controller first saw it (an
        adopted replica gets a fresh chance); one that served counts from when it stopped.
        """
        timeout = config.startup_timeout_seconds
        if tracked.unhealthy_since is not None:
            return now - tracked.unhealthy_since > timeout
        seen = tracked.registered_at if tracked.registered_at is not None else tracked.first_seen_at
        return now - tracked.first_seen_at > timeout and now - seen > timeout and (
            self._wall_clock() - tracked.created_at_wall > timeout
        )

    def _register(self, name: str, tracked: Tracked, ip: str, port: int, now: float) -> None:
        """Adds a replica in maintenance with health checks on; it serves once they pass."""
        assert self._lb is not None
        if self._lb_call(self._lb.add_server, name, ip, port) and self._lb_call(self._lb.enable_health, name):
            tracked.registered_at = now
            if tracked.ready_since is not None and tracked.unhealthy_since is None:
                tracked.unhealthy_since = now  # it served before (e.g. a new HAProxy): not now
            log.debug("registered replica %s (%s:%d); waiting for its check", name, ip, port,
                      extra=self._extra(replica=name))

    def _promote(self, name: str, tracked: Tracked, now: float) -> None:
        assert self._lb is not None
        if not self._lb_call(self._lb.set_ready, name):
            return
        tracked.ready_since = now
        tracked.unhealthy_since = None
        was_backing_off = self._backoff.active and self._backoff.recovered_at is None
        self._backoff = bo.after_ready(self._backoff, now, tracked.first_seen_at)
        waited = now - (tracked.first_seen_at if tracked.started_by_us else tracked.registered_at or now)
        log.info("replica %s passed its health check: serving%s", name,
                 f" ({waited:.1f}s after its start)" if tracked.started_by_us else "",
                 extra=self._extra(replica=name))
        if was_backing_off and self._backoff.recovered_at is not None:
            self._note("a replica started after the last failure is ready: starting in batches again")

    def _finish_drain(
        self, config: ServiceConfig, name: str, tracked: Tracked, server: ServerStat | None, now: float
    ) -> None:
        left = server.sessions_current if server is not None else 0
        if left:
            log.warning("drain timeout (%gs) for %s: closing %d session(s)",
                        config.policy.drain_timeout_seconds, name, left, extra=self._extra(replica=name))
        if server is not None and not self._delete_server(config, name, now, force=left > 0):
            return  # try again at the next step
        if self._backend.orchestrated:
            tracked.failed = True  # done with: the orchestrator stops it
            log.info("removed replica %s from the load balancer (drained)", name, extra=self._extra(replica=name))
            return
        self._submit_removal(config, name, tracked.container_id, force=False)
        log.info("removed replica %s from the load balancer (drained); stopping it", name,
                 extra=self._extra(replica=name))

    def _delete_server(self, config: ServiceConfig, name: str, now: float, force: bool = False) -> bool:
        """Takes a server out of the load balancer; True when it is gone.

        Connections still attached (HAProxy retrying a dead replica's requests elsewhere, idle
        keep-alive connections) make it wait for a later step rather than cut them, up to
        drain_timeout_seconds.
        """
        assert self._lb is not None
        first = self._deleting.setdefault(name, now)
        force = force or now - first >= config.policy.drain_timeout_seconds
        try:
            self._lb.delete_server(name, force=force)
        except ServerBusy:
            return False
        except HAProxyError as exc:
            log.warning("%s", exc, extra=self._extra(replica=name))
            return False
        self._deleting.pop(name, None)
        return True

    def _submit_removal(self, config: ServiceConfig, name: str, container_id: str, force: bool) -> None:
        self._removing[name] = container_id
        stop_timeout = config.stop_timeout_seconds
        self._ops.submit(
            "remove", name,
            lambda: self._backend.remove_replica(self.name, container_id, stop_timeout, force=force),
        )

    # --- failures -------------------------------------------------------------------------

    def _fail_exited(
        self, config: ServiceConfig, replica: Replica, tracked: Tracked, server: ServerStat | None,
        now: float, failures_this_pass: int,
    ) -> int:
        """Reports a replica that stopped (exit code, OOM, last output) and removes it.
        Returns 1 if it counted toward the backoff."""
        try:
            report = self._backend.exit_report(self.name, replica.id)
        except BackendError as exc:
            report = ExitReport(None, False, f"unreadable: {exc}", ())
        if replica.state == "created":
            reason, counts = "never_started", True
            detail = f"created but never started for {config.startup_timeout_seconds:g}s"
        else:
            reason, counts = classify_exit(report, tracked.ready_since is not None)
            detail = f"{replica.state}: {report.describe()}"
        # Many replicas found dead in one pass (an engine restart) are one failure, not many.
        self._fail(config, replica.name, tracked, server, now, reason, detail,
                   counts=counts and failures_this_pass == 0)
        return 1 if counts else 0

    def _fail(
        self, config: ServiceConfig, name: str, tracked: Tracked, server: ServerStat | None,
        now: float, reason: str, detail: str, counts: bool,
    ) -> None:
        if server is not None and self._lb is not None:
            self._delete_server(config, name, now)  # if sessions remain, a later pass finishes it
        self._submit_removal(config, name, tracked.container_id, force=True)
        tracked.failed = True
        never_ready = tracked.ready_since is None
        if never_ready:
            self._telemetry.start_failures.labels(self.name, reason).inc()
        else:
            self._telemetry.replica_failures.labels(self.name, reason).inc()
        if tracked.counted_at is not None and never_ready:
            # A scale-out that did not happen: the rate rules must not count it, and the
            # count to keep drops back to what really started.
            self._history = _uncount_scale_up(self._history, tracked.counted_at)
            if self._spec is not None:
                self._spec -= 1
        what = "failed to start" if never_ready else "failed"
        message = f"replica {name} {what} ({reason}): {detail}"
        self.health.last_failure = message
        self.health.last_failure_at = self._wall_clock()
        if counts:
            self._backoff = bo.after_failure(self._backoff, now, message,
                                             config.backoff_initial_seconds, config.backoff_max_seconds)
            message += f"; next start in {bo.seconds_until_retry(self._backoff, now):g}s" \
                       f" (failure {self._backoff.failures} in a row)"
        else:
            message += "; replacing it"
        level = logging.WARNING
        if self.health.notes.get("failure-reason") == reason:
            level = logging.INFO  # the same failure again: the first one said it all
        self.health.notes["failure-reason"] = reason
        log.log(level, "%s", message, extra=self._extra(replica=name, reason=reason))

    def _start_failed(self, config: ServiceConfig, name: str, counted_at: float | None, exc: Exception, now: float) -> None:
        if counted_at is not None:
            self._history = _uncount_scale_up(self._history, counted_at)
            if self._spec is not None:
                self._spec -= 1
        if isinstance(exc, BackendError) and exc.unreachable:
            # The engine went away, not the replica: the next pass that reaches it starts it.
            log.debug("replica %s not started: %s", name, exc, extra=self._extra(replica=name))
            return
        reason = "create_failed"
        message = f"replica {name} could not be started: {exc}"
        self._telemetry.start_failures.labels(self.name, reason).inc()
        self._backoff = bo.after_failure(self._backoff, now, message,
                                         config.backoff_initial_seconds, config.backoff_max_seconds)
        self.health.last_failure = message
        self.health.last_failure_at = self._wall_clock()
        level = logging.INFO if self.health.notes.get("failure-reason") == str(exc) else logging.WARNING
        self.health.notes["failure-reason"] = str(exc)
        log.log(level, "%s; next start in %gs (failure %d in a row)", message,
                bo.seconds_until_retry(self._backoff, now), self._backoff.failures,
                extra=self._extra(replica=name, reason=reason))

    # --- act ------------------------------------------------------------------------------

    def _collect(self, config: ServiceConfig, now: float) -> None:
        """Takes in the outcomes of finished starts and removals."""
        for outcome in self._ops.completed():
            if outcome.kind == "start":
                self._expected_starts.discard(outcome.key)
                self._started(config, outcome, now)
            elif outcome.kind == "remove" and outcome.error is not None:
                unreachable = isinstance(outcome.error, BackendError) and outcome.error.unreachable
                log.log(logging.DEBUG if unreachable else logging.WARNING,
                        "could not remove replica %s: %s (trying again)", outcome.key, outcome.error,
                        extra=self._extra(replica=outcome.key))

    def _started(self, config: ServiceConfig, outcome: Outcome, now: float) -> None:
        counted_at = outcome.context.get("counted_at")
        submitted_at = outcome.context.get("submitted_at", now)
        if outcome.error is not None:
            self._start_failed(config, outcome.key, counted_at, outcome.error, now)
            return
        replica: Replica = outcome.value
        tracked = self._tracked[replica.name] = Tracked(
            replica.id, submitted_at, replica.created_at_seconds, started_by_us=True, counted_at=counted_at
        )
        log.info("started replica %s (%.2fs)", replica.name, now - submitted_at, extra=self._extra(replica=replica.name))
        if replica.running and replica.ip and self._lb is not None and self.health.lb_down_since is None:
            self._register(replica.name, tracked, replica.ip, replica.port or config.port, now)
        # An exit right away is found by the next pass, with its exit code and output.

    def _apply_decision(self, decision: Decision, now: float) -> None:
        """The decided count becomes the count to keep; the rate rules' history learns what
        is started (now, corrected if a start fails) and what is drained (when it is)."""
        change = decision.desired - decision.current
        if change > 0:
            if not self._backend.orchestrated:
                self._counted.extend([now] * change)
            self._history = self._history._replace(
                scale_up_events=self._history.scale_up_events + (TimedValue(now, change),)
            )
        elif change < 0 and self._backend.orchestrated:
            # The orchestrator removes what it picks as soon as it is told: this is the scale-in.
            self._history = self._history._replace(
                scale_down_events=self._history.scale_down_events + (TimedValue(now, -change),)
            )
        self._spec = decision.desired

    def _in_flight_starts(self) -> int:
        return len(self._expected_starts)

    def _converge(
        self, config: ServiceConfig, views: list[ReplicaView], lb_up: bool, now: float
    ) -> list[ReplicaView]:
        """Starts replicas up to the count to keep, or drains the surplus. Never waits."""
        assert self._spec is not None
        if self._backend.orchestrated:
            self._converge_count(now)
            return views
        active = [v for v in views if v.state != "draining"]
        in_flight = self._in_flight_starts()
        count = len(active) + in_flight
        # Decided starts beyond what is still missing will not happen: the count went down first.
        self._drop_counted(len(self._counted) - max(0, self._spec - count))
        if count < self._spec:
            wanted = self._spec - count
            starting = in_flight + sum(
                1 for v in active if v.state == "starting" and self._tracked[v.replica.name].started_by_us
                and self._tracked[v.replica.name].ready_since is None
            )
            allowed = bo.starts_allowed(self._backoff, now, wanted, starting)
            for _ in range(allowed):
                self._submit_start(config, self._counted.pop(0) if self._counted else None, now)
            if allowed < wanted and self._backoff.active:
                self._once("backoff", logging.INFO,
                           "start backoff: %d replica(s) wanted, next start in %.0fs (%d failure(s): %s)",
                           wanted - allowed, max(bo.seconds_until_retry(self._backoff, now), 0),
                           self._backoff.failures, self._backoff.reason)
        elif count > self._spec:
            if lb_up:
                victims = choose_victims(active, count - self._spec - in_flight)
                for view in victims:
                    self._retire(config, view, now)
                if victims:
                    self._history = self._history._replace(
                        scale_down_events=self._history.scale_down_events + (TimedValue(now, len(victims)),)
                    )
                    retired = {v.replica.name for v in victims}
                    views = [
                        ReplicaView(v.replica, "draining", v.server) if v.replica.name in retired else v
                        for v in views if not (v.replica.name in retired and v.state == "starting")
                    ]
        if not self._backoff.active or self._backoff.recovered_at is not None:
            self.health.notes.pop("backoff", None)
        previous = self._backoff
        self._backoff = bo.maybe_reset(self._backoff, now, config.backoff_max_seconds)
        if previous.active and not self._backoff.active:
            self._note("healthy for %gs since the last failure: start backoff reset", config.backoff_max_seconds)
        return views

    def _converge_count(self, now: float) -> None:
        """Orchestrated: the count to keep is the orchestrator's; it picks, starts and stops."""
        assert self._spec is not None
        held = self._orchestrated_count
        if held is None or held == self._spec:
            self.health.notes.pop("scale", None)
            return
        try:
            self._backend.scale(self.name, self._spec)
        except BackendError as exc:
            # Being updated, paused or rolled back by someone else: hold, and say why (once).
            self._once("scale", logging.WARNING, "not setting the replica count to %d: %s", self._spec, exc)
            return
        self.health.notes.pop("scale", None)
        log.info("replica count of the swarm service set %d -> %d", held, self._spec, extra=self._extra())
        if self._spec < held:
            # Swarm now marks the tasks it picked; the progress step drains each one at once,
            # before Swarm sends its stop signal (2 s after taking it out of DNS).
            self._watch_leaving_until = now + 15.0
        self._orchestrated_count = self._spec

    def _drain_leaving(self, config: ServiceConfig, servers: dict[str, ServerStat], now: float) -> None:
        """Tasks the orchestrator marked for removal since the last look: drain them now."""
        try:
            replicas = self._backend.list_replicas(self.name, self.network)
        except BackendError:
            return
        for replica in replicas:
            server = servers.get(replica.name)
            tracked = self._tracked.get(replica.name)
            if replica.leaving and tracked is not None and tracked.drain_deadline is None and server is not None \
                    and (server.serving or server.maintenance):
                self._start_drain(config, replica.name, tracked, server, now, "marked for removal by the orchestrator")

    def _drop_counted(self, count: int) -> None:
        for _ in range(max(0, min(count, len(self._counted)))):
            self._history = _uncount_scale_up(self._history, self._counted.pop())

    def _submit_start(self, config: ServiceConfig, counted_at: float | None, now: float) -> None:
        spec = self.replica_spec(config)
        name = self._backend.new_replica_name(self.name)
        self._expected_starts.add(name)
        self._ops.submit(
            "start", name, lambda: self._backend.start_replica(spec, name),
            counted_at=counted_at, submitted_at=now,
        )

    def _retire(self, config: ServiceConfig, view: ReplicaView, now: float) -> None:
        """Scale-in of one replica: a serving one drains first; one that serves nobody goes now."""
        assert self._lb is not None
        name = view.replica.name
        tracked = self._tracked[name]
        if view.state == "starting":
            if view.server is not None:
                self._delete_server(config, name, now)
            self._submit_removal(config, name, tracked.container_id, force=True)
            log.info("removing replica %s (not serving yet)", name, extra=self._extra(replica=name))
            return
        if self._lb_call(self._lb.set_drain, name):
            tracked.drain_deadline = now + config.policy.drain_timeout_seconds
            sessions = view.server.sessions_current if view.server is not None else 0
            log.info("draining replica %s (%d session(s))", name, sessions, extra=self._extra(replica=name))

    def _lb_call(self, fn: Callable[..., None], *args: object) -> bool:
        """One membership change; a failure is logged and retried by the next pass."""
        try:
            fn(*args)
            return True
        except HAProxyError as exc:
            log.warning("%s", exc, extra=self._extra())
            return False

    def _note(self, message: str, *args: object) -> None:
        replica = args[0] if args else None
        if self.dry_run:
            log.debug("[dry run] would do: " + message, *args, extra=self._extra(replica=replica))
        else:
            log.info(message, *args, extra=self._extra(replica=replica))

    # --- measure --------------------------------------------------------------------------

    def _observation(self, views: list[ReplicaView], backend_stat: BackendStat | None) -> Observation:
        in_flight = self._in_flight_starts()
        active = len([v for v in views if v.state != "draining"])
        pending = max(0, (self._spec or 0) - active - in_flight) if not self.dry_run else 0
        return Observation(tuple(views), backend_stat, in_flight, pending)

    def snapshot(self, observation: Observation, config: ServiceConfig | None = None) -> ServiceSnapshot:
        config = config or self.config
        active = observation.active
        stats_error = None
        try:
            readings = self._backend.read_stats(self.name, [v.replica.id for v in active]) if active else {}
        except BackendError as exc:
            readings, stats_error = {}, str(exc)
        source = self._backend.stats_source(self.name)
        if source is not None and source != self.health.stats_source:
            if self.health.stats_source is not None or source != "cgroup":
                log.info("CPU and memory now come from %s", source.replace("_", " "), extra=self._extra())
            self.health.stats_source = source
            self._telemetry.record_stats_source(self.name, source)
        now_wall = self._wall_clock()
        now = self._clock()
        samples = []
        replica_metrics = []
        previous_stats: dict[str, StatsReading] = {}
        previous_requests: dict[str, tuple[float, int]] = {}
        for view in active:
            replica = view.replica
            reading = readings.get(replica.id)
            cpu = mem = None
            if reading is not None:
                before = self._previous_stats.get(replica.id)
                if before is not None:
                    cpu = cpu_percent(before, reading, config.cpu_limit)
                mem = memory_percent(reading, config.memory_limit)
                previous_stats[replica.id] = reading
            rps = rt = None
            if view.server is not None:
                total = view.server.sessions_total
                before_req = self._previous_requests.get(replica.id)
                if before_req is not None and now > before_req[0] and total >= before_req[1]:
                    rps = (total - before_req[1]) / (now - before_req[0])
                previous_requests[replica.id] = (now, total)
                rt = view.server.response_time_ms
            samples.append(
                ReplicaSample(
                    name=replica.name,
                    ready=view.state == "ready",
                    age_seconds=max(0.0, now_wall - replica.created_at_seconds),
                    cpu_percent=cpu,
                    memory_percent=mem,
                    requests_per_second=rps,
                    response_time_ms=rt,
                )
            )
            replica_metrics.append(
                ReplicaMetrics(
                    replica.name, view.state == "ready", cpu, mem,
                    reading.memory_used_bytes if reading is not None else None,
                )
            )
        # Replicas on their way (starting, or held back by the backoff) count toward the size,
        # with no reading: missing, as the HPA treats a pod that has no metrics yet.
        for index in range(observation.in_flight + observation.pending):
            samples.append(ReplicaSample(name=f"(pending {index + 1})", ready=False, age_seconds=0.0))
        # Keep only live replicas' readings: no unbounded growth as replicas come and go.
        self._previous_stats = previous_stats
        self._previous_requests = previous_requests
        metrics_error = None
        # The backend answers None per replica it could not read, so "failed as a whole" means
        # no reading at all, not an empty answer.
        if stats_error is not None:
            metrics_error = stats_error
        elif active and all(readings.get(v.replica.id) is None for v in active):
            metrics_error = f"no stats from {SOURCE_NAMES.get(self.health.stats_source or '', 'the Docker engine')}"
        elif not active:
            metrics_error = "no replica running"
        backend = observation.backend
        queue = float(backend.queue_current) if backend else None
        self._telemetry.record_replica_samples(self.name, replica_metrics)
        rates = [r.requests_per_second for r in samples if r.requests_per_second is not None]
        self._telemetry.record_load_balancer(
            self.name, sum(rates) if rates else None, queue, backend.response_time_ms if backend else None
        )
        return ServiceSnapshot(self.name, tuple(samples), queue, metrics_error)

    def _record_state(self, now: float) -> None:
        """Replica counts and backoff as they are now, for the gauges and `status`."""
        starting = self._in_flight_starts()
        counts = {"ready": 0, "starting": starting, "draining": 0}
        for name, tracked in self._tracked.items():
            if tracked.failed or name in self._removing:
                continue
            if tracked.drain_deadline is not None:
                counts["draining"] += 1
            elif tracked.ready_since is not None and tracked.unhealthy_since is None:
                counts["ready"] += 1
            else:
                counts["starting"] += 1
        self.replica_counts = counts
        self._telemetry.record_replicas(self.name, counts)
        self._telemetry.start_backoff.labels(self.name).set(bo.seconds_until_retry(self._backoff, now))
        self._telemetry.start_backoff_failures.labels(self.name).set(self._backoff.failures)

    def _log_decision(self, decision: Decision, previous: Decision | None) -> None:
        # Every change and every new reason is logged at info; the same decision again (one per
        # interval, e.g. "hold", or a scale-out the backoff holds back) only at debug, so the
        # log reads as a history of decisions.
        key = (decision.reason, decision.current, decision.desired)
        repeated = previous is not None and previous.reason == decision.reason and (
            decision.desired == decision.current or key == self._last_logged
        )
        self._last_logged = key
        level = logging.DEBUG if repeated else logging.INFO
        if self._history.consecutive_failures > 0 and not repeated:  # metrics failing, fallback or not
            level = logging.WARNING
        prefix = "[dry run] " if self.dry_run else ""
        log.log(
            level, "%s%s", prefix, decision.message,
            extra=self._extra(
                current=decision.current, desired=decision.desired, reason=decision.reason,
                dry_run=self.dry_run,
            ),
        )

    # --- shutdown -------------------------------------------------------------------------

    def close(self, timeout_seconds: float = 10.0) -> list[str]:
        """Waits up to timeout_seconds for the pass and the operations in progress; returns
        what it abandoned. Releases the lease either way."""
        deadline = time.monotonic() + timeout_seconds
        abandoned: list[str] = []
        got_lock = self._lock.acquire(timeout=max(0.0, timeout_seconds))
        try:
            if not got_lock:
                abandoned.append("a pass in progress")
            if not self._ops.wait_idle(max(0.0, deadline - time.monotonic())):
                abandoned += [f"{kind} of {name}" for kind in ("start", "remove") for name in self._ops.in_flight(kind)]
            if got_lock:
                self._collect(self.config, self._clock())  # log what finished in time
            self._ops.close()
            if self._lease is not None:
                self._lease.release()
        finally:
            if got_lock:
                self._lock.release()
        return abandoned


_VARYING = re.compile(r"\b[0-9a-f]{12,64}\b|\d+(?:\.\d+)?")


def _uncount_scale_up(history: History, decided_at: float) -> History:
    """A scale-up start that failed or will not happen: take it back out of the rate rules'
    history, at the time it was counted, so it leaves their periods with its decision."""
    events = list(history.scale_up_events)
    insort(events, TimedValue(decided_at, -1), key=lambda e: e.at_seconds)
    return history._replace(scale_up_events=tuple(events))
