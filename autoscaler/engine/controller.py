"""One service's reconciler: each pass reads the world, decides, and takes small steps toward
the decided count. Nothing waits inside a pass.

A pass (`run_cycle`, every interval), one module per part:
  observe   the service's replicas (ReplicaBackend) and the load balancer (loadbalancer.py:
            its stats, or one repair step within its own backoff when it does not answer).
  repair    membership.py: register running replicas the load balancer lacks, promote those
            whose check passed, take paused or failing ones out of rotation, report and remove
            replicas that exited or never became healthy, finish drains.
  measure   sampling.py: readings and counters into the policy's snapshot.
  decide    the pure policy (autoscaler.policy.evaluate).
  act       acting.py: start replicas up to the decided count (limited by the start backoff)
            or retire the surplus; on an orchestrator, set its count. Starts and removals run
            as operations in other threads; the next step collects their outcomes.
Between passes a short `progress` step (every PROGRESS_SECONDS, and at once when a start
finishes) registers freshly started replicas, promotes each as soon as its own check passes
and finishes drains, so a replica joins the moment it is healthy and leaves the moment it is
idle.

What a replica is doing is read back from the world (docker state, the load balancer's server
state), so a restarted daemon resumes where the last one stopped. What only this process knows
(when it first saw a replica, whether it was ever ready, the start backoff) is in memory and
starts afresh: timeouts then count from adoption, never less.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
from autoscaler.docker.stats import StatsReading
from autoscaler.engine import backoff as bo
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.loadbalancer import LB_STARTUP_GRACE_SECONDS, LoadBalancerKeeper
from autoscaler.engine.acting import Acting
from autoscaler.engine.membership import Membership
from autoscaler.engine.operations import Operations
from autoscaler.engine.replicas import (
    Observation,
    ReplicaView,
    Tracked,
    in_transition,
)
from autoscaler.engine.sampling import SOURCE_NAMES, Sampler
from autoscaler.lb.haproxy import BackendStat, HAProxyError, ServerStat
from autoscaler.model import (
    Bounds,
    Decision,
    History,
    ServiceSnapshot,
)
from autoscaler.policy.evaluate import evaluate, seed_history
from autoscaler.policy.schedule import ScheduledBounds
from autoscaler.telemetry import Telemetry

log = logging.getLogger("autoscaler.engine")

# How often the progress step looks at starting and draining replicas (one `show stat`, ~1 ms,
# and only while some are); a finished start also wakes it at once.
PROGRESS_SECONDS = 0.1


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


class ServiceController(Membership, Acting):
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
        self._telemetry = telemetry
        self._clock = clock
        self._wall_clock = wall_clock
        self._lease = lease
        self._ops = operations or Operations(name)
        self._lock = threading.RLock()
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
        self._sampler = Sampler(name)
        self._set_up = False
        self.health = ServiceHealth()
        self._keeper = LoadBalancerKeeper(name, backend, lb_factory, telemetry, self.health, clock, wall_clock,
                                          sleep, dry_run)
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

    @property
    def load_balancer(self) -> LoadBalancer | None:
        return self._keeper.info

    @property
    def _lb(self) -> LoadBalancerAPI | None:
        return self._keeper.api

    def _extra(self, **fields: object) -> dict[str, object]:
        return {"service": self.name, **fields}

    def _once(self, topic: str, level: int, message: str, *args: object, **extra: object) -> None:
        self.health.once(log, topic, level, message, *args, extra=self._extra(**extra))

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
        self._keeper.use(lb)
        if wait_seconds > 0:
            try:
                self._keeper.wait(wait_seconds)
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
        backend_stat, servers, renewed = self._keeper.state(config, self.lb_spec(config), now)
        if renewed:
            # A new HAProxy has no members: every replica is registered again.
            for tracked in self._tracked.values():
                tracked.registered_at = None
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

    # --- repair (membership.py) and act (acting.py) ---------------------------------------

    # --- measure --------------------------------------------------------------------------

    def _observation(self, views: list[ReplicaView], backend_stat: BackendStat | None) -> Observation:
        in_flight = self._in_flight_starts()
        active = len([v for v in views if v.state != "draining"])
        pending = max(0, (self._spec or 0) - active - in_flight) if not self.dry_run else 0
        return Observation(tuple(views), backend_stat, in_flight, pending)

    def snapshot(self, observation: Observation, config: ServiceConfig | None = None) -> ServiceSnapshot:
        """Reads CPU and memory of the active replicas and samples them for the policy."""
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
                log.info("CPU and memory now come from %s", SOURCE_NAMES.get(source, source), extra=self._extra())
            self.health.stats_source = source
            self._telemetry.record_stats_source(self.name, source)
        sample = self._sampler.sample(config, observation, readings, stats_error, self.health.stats_source,
                                      self._clock(), self._wall_clock())
        self._telemetry.record_replica_samples(self.name, sample.replicas)
        self._telemetry.record_load_balancer(self.name, sample.requests_per_second,
                                             sample.snapshot.queue_current, sample.response_time_ms)
        return sample.snapshot

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


