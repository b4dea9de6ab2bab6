"""One service's control loop: observe -> decide -> act -> record.

observe: list the service's containers (by label) and the load balancer's servers, and repair
         membership: register running replicas the load balancer lacks (adoption, or after an
         HAProxy restart), promote replicas whose health check passed, forget dead ones.
decide:  the pure policy (autoscaler.policy.evaluate) on a snapshot.
act:     converge the live replicas to the desired count, safely: new replicas get traffic only
         once healthy; removed replicas are drained first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import (
    BackendError,
    LoadBalancer,
    LoadBalancerSpec,
    Replica,
    ReplicaSpec,
)
from autoscaler.docker.stats import StatsReading, cpu_percent, memory_percent
from autoscaler.lb.haproxy import BackendStat, HAProxyError, ServerStat
from autoscaler.model import Bounds, Decision, History, ReplicaSample, ServiceSnapshot
from autoscaler.policy.evaluate import evaluate, record_scale
from autoscaler.policy.schedule import ScheduledBounds
from autoscaler.telemetry import ReplicaMetrics, Telemetry

log = logging.getLogger("autoscaler.engine")

HEALTH_POLL_SECONDS = 0.2


class ReplicaBackend(Protocol):
    def ensure_network(self, service: str, name: str) -> None: ...
    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> tuple[LoadBalancer, bool]: ...
    def existing_load_balancer(self, service: str) -> LoadBalancer | None: ...
    def list_replicas(self, service: str, network: str) -> list[Replica]: ...
    def start_replica(self, spec: ReplicaSpec) -> Replica: ...
    def remove_replica(self, service: str, container_id: str, stop_timeout_seconds: int) -> None: ...
    def read_stats(self, service: str, container_ids: list[str]) -> dict[str, StatsReading | None]: ...


class LoadBalancerAPI(Protocol):
    def snapshot(self) -> tuple[BackendStat, dict[str, ServerStat]]: ...
    def servers(self) -> dict[str, ServerStat]: ...
    def add_server(self, name: str, address: str, port: int) -> None: ...
    def enable_health(self, name: str) -> None: ...
    def set_ready(self, name: str) -> None: ...
    def set_drain(self, name: str) -> None: ...
    def delete_server(self, name: str) -> None: ...


@dataclass(frozen=True)
class ReplicaView:
    replica: Replica
    state: str  # ready | starting | draining
    server: ServerStat | None


@dataclass(frozen=True)
class Observation:
    views: tuple[ReplicaView, ...]
    backend: BackendStat | None

    def in_state(self, state: str) -> list[ReplicaView]:
        return [v for v in self.views if v.state == state]

    @property
    def active(self) -> list[ReplicaView]:
        """Replicas that count toward the current size: everything not on its way out."""
        return [v for v in self.views if v.state != "draining"]

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for view in self.views:
            result[view.state] = result.get(view.state, 0) + 1
        return result


def replica_state(server: ServerStat | None) -> str:
    if server is None or server.maintenance:
        return "starting"
    if server.draining:
        return "draining"
    if server.serving:
        return "ready"
    return "starting"  # DOWN: health checks failing, no traffic: not ready


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
    ) -> None:
        self.name = name
        self.config = config
        self._schedule = ScheduledBounds(config)
        self.network = network
        self.dry_run = dry_run
        self._backend = backend
        self._lb_factory = lb_factory
        self._telemetry = telemetry
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._lb: LoadBalancerAPI | None = None
        self.load_balancer: LoadBalancer | None = None
        self._history = History()
        self._spec: int | None = None  # the count last decided; lost replicas are replaced up to it
        self._previous_stats: dict[str, StatsReading] = {}
        self._previous_requests: dict[str, tuple[float, int]] = {}
        # When this controller (re)registered each replica, on `clock`: the startup timeout
        # runs from there, not from container creation (see _startup_expired).
        self._registered_at: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(8, thread_name_prefix=f"scale-{name}")
        self.last_decision: Decision | None = None
        self.last_decision_at: float | None = None  # wall clock
        self.last_observation: Observation | None = None
        self.last_snapshot: ServiceSnapshot | None = None
        telemetry.register_service(name)

    def _extra(self, **fields: object) -> dict[str, object]:
        return {"service": self.name, **fields}

    # --- set-up ---------------------------------------------------------------------------

    def replica_spec(self) -> ReplicaSpec:
        c = self.config
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

    def lb_spec(self) -> LoadBalancerSpec:
        host, port = self.config.load_balancer.publish_host_port
        return LoadBalancerSpec(
            service=self.name,
            image=self.config.load_balancer.image,
            network=self.network,
            publish_host=host,
            publish_port=port,
            health_path=self.config.health_path,
            algorithm=self.config.load_balancer.algorithm,
        )

    def update_config(self, config: ServiceConfig) -> None:
        """Hot reload: new limits and policy apply from the next cycle; history is kept."""
        self.config = config
        self._schedule = ScheduledBounds(config)

    def setup(self) -> None:
        """Creates what is missing (network, load balancer) and adopts what exists.

        In a dry run nothing is created: the service must already have a running load balancer.
        """
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
            self._backend.ensure_network(self.name, self.network)
            lb, fresh = self._backend.ensure_load_balancer(self.lb_spec())
        self.load_balancer = lb
        self._lb = self._lb_factory(lb)
        self._wait_for_lb()
        replicas = [r for r in self._backend.list_replicas(self.name, self.network) if r.running]
        log.info(
            "ready: load balancer %s (admin 127.0.0.1:%d), %d running replica(s) adopted%s",
            lb.name, lb.admin_port, len(replicas), ", load balancer is new" if fresh else "",
            extra=self._extra(),
        )

    def _wait_for_lb(self, timeout_seconds: float = 15.0) -> None:
        assert self._lb is not None
        deadline = self._clock() + timeout_seconds
        while True:
            try:
                self._lb.servers()
                return
            except HAProxyError:
                if self._clock() > deadline:
                    raise
                self._sleep(HEALTH_POLL_SECONDS)

    # --- observe --------------------------------------------------------------------------

    def observe(self, repair: bool = True) -> Observation:
        """Lists replicas and servers and repairs membership so that the two agree.

        With repair=False, and always in a dry run, it only looks and changes nothing.
        """
        assert self._lb is not None
        repair = repair and not self.dry_run
        replicas = self._backend.list_replicas(self.name, self.network)
        try:
            backend_stat, servers = self._lb.snapshot()
        except HAProxyError:
            if not repair:
                raise
            # The load balancer restarted or was removed: bring it back; a new one has no members.
            log.warning("load balancer not answering: re-creating or restarting it", extra=self._extra())
            lb, _ = self._backend.ensure_load_balancer(self.lb_spec())
            self.load_balancer = lb
            self._lb = self._lb_factory(lb)
            self._wait_for_lb()
            backend_stat, servers = self._lb.snapshot()

        running = {r.name: r for r in replicas if r.running}
        for replica in replicas:
            if not replica.running:
                self._repair(repair, "replica %s is %s: removing it", replica.name, replica.state)
                if repair:
                    if servers.pop(replica.name, None) is not None:
                        self._lb.delete_server(replica.name)
                    self._backend.remove_replica(self.name, replica.id, self.config.stop_timeout_seconds)
        for name in [n for n in servers if n not in running]:
            self._repair(repair, "server %s has no running replica: removing it from the load balancer", name)
            if repair:
                self._lb.delete_server(name)
                servers.pop(name)

        views = []
        for replica in running.values():
            server = servers.get(replica.name)
            if replica.ip is None:
                log.warning("replica %s has no address on %s", replica.name, self.network,
                            extra=self._extra(replica=replica.name))
                continue
            expected = f"{replica.ip}:{self.config.port}"
            state = replica_state(server)
            if server is None or server.address != expected:
                self._repair(repair, "replica %s is not in the load balancer: registering it", replica.name)
                if repair:
                    if server is not None:
                        self._lb.delete_server(replica.name)
                    self._register(replica)
                    server = None
                state = "starting"
            elif server.maintenance and not server.check_passed and repair and self._startup_expired(replica):
                log.warning(
                    "replica %s failed its health check for %.0fs (%s): removing it",
                    replica.name, self.config.startup_timeout_seconds, server.check_status or "no check",
                    extra=self._extra(replica=replica.name),
                )
                self._lb.delete_server(replica.name)
                self._backend.remove_replica(self.name, replica.id, self.config.stop_timeout_seconds)
                continue
            elif server.maintenance and server.check_passed:
                self._repair(repair, "replica %s passed its health check: now serving", replica.name)
                if repair:
                    self._lb.set_ready(replica.name)
                    state = "ready"
            views.append(ReplicaView(replica, state, server))
        self._registered_at = {n: t for n, t in self._registered_at.items() if n in running}
        observation = Observation(tuple(views), backend_stat)
        self.last_observation = observation
        return observation

    def _repair(self, repair: bool, message: str, *args: object) -> None:
        replica = args[0] if args else None
        if repair:
            log.info(message, *args, extra=self._extra(replica=replica))
        else:
            log.debug("[dry run] would do: " + message, *args, extra=self._extra(replica=replica))

    def _startup_expired(self, replica: Replica) -> bool:
        """Whether a replica still failing its check has had startup_timeout_seconds to pass it.

        Counted from creation and from registration: after an HAProxy restart, or on adoption by
        a fresh load balancer, old replicas are re-registered and must get a fresh chance rather
        than be removed all at once. A server registered by an earlier run of the daemon counts
        from when this controller first saw it.
        """
        timeout = self.config.startup_timeout_seconds
        registered_at = self._registered_at.setdefault(replica.name, self._clock())
        return (
            self._wall_clock() - replica.created_at_seconds > timeout
            and self._clock() - registered_at > timeout
        )

    def _register(self, replica: Replica) -> None:
        """Adds a replica in maintenance with health checks on; it serves once they pass."""
        assert self._lb is not None and replica.ip is not None
        self._lb.add_server(replica.name, replica.ip, self.config.port)
        self._lb.enable_health(replica.name)
        self._registered_at[replica.name] = self._clock()
        log.info("registered replica %s (%s) in the load balancer; waiting for health",
                 replica.name, replica.ip, extra=self._extra(replica=replica.name))

    # --- measure --------------------------------------------------------------------------

    def snapshot(self, observation: Observation) -> ServiceSnapshot:
        active = observation.active
        readings = self._backend.read_stats(self.name, [v.replica.id for v in active])
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
                    cpu = cpu_percent(before, reading, self.config.cpu_limit)
                mem = memory_percent(reading, self.config.memory_limit)
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
        # Keep only live replicas' readings: no unbounded growth as replicas come and go.
        self._previous_stats = previous_stats
        self._previous_requests = previous_requests
        metrics_error = None
        # The backend answers None per replica it could not read, so "failed as a whole" means
        # no reading at all, not an empty answer.
        if active and all(readings.get(v.replica.id) is None for v in active):
            metrics_error = "no stats from the Docker engine"
        backend = observation.backend
        queue = float(backend.queue_current) if backend else None
        self._telemetry.record_replica_samples(self.name, replica_metrics)
        rates = [r.requests_per_second for r in samples if r.requests_per_second is not None]
        self._telemetry.record_load_balancer(
            self.name, sum(rates) if rates else None, queue, backend.response_time_ms if backend else None
        )
        return ServiceSnapshot(self.name, tuple(samples), queue, metrics_error)

    # --- the cycle ------------------------------------------------------------------------

    @property
    def consecutive_failures(self) -> int:
        return self._history.consecutive_failures

    def bounds(self) -> Bounds:
        return self._schedule.at_timestamp(self._wall_clock())

    def run_cycle(self) -> Decision:
        start = self._clock()
        observation = self.observe()
        if not self.dry_run:
            if observation.in_state("draining"):
                self.finish_draining(observation)
                observation = self.observe()
            lost = (self._spec or 0) - len(observation.active)
            if lost > 0:
                # Like a ReplicaSet: what died is replaced before the policy looks at the load.
                log.warning("replacing %d replica(s) that died or vanished", lost, extra=self._extra())
                self.scale_out(lost)
                observation = self.observe()
        snapshot = self.snapshot(observation)
        now = self._clock()
        bounds = self.bounds()
        decision, self._history = evaluate(snapshot, self.config.policy, bounds, self._history, now)
        previous, self.last_decision = self.last_decision, decision
        self.last_decision_at = self._wall_clock()
        self.last_snapshot = snapshot
        self._log_decision(decision, previous)
        self._telemetry.record_evaluation(
            decision, snapshot, bounds, self.config.policy, self._history.consecutive_failures, self.dry_run
        )
        self._telemetry.record_replicas(self.name, observation.counts())
        if not self.dry_run:
            self._spec = decision.desired
        if decision.desired != decision.current and not self.dry_run:
            self._converge(observation, decision.desired)
            self._history = record_scale(self._history, now, decision.current, decision.desired)
            self._telemetry.record_scale(self.name, str(decision.direction), decision.reason)
            # Report what the action left, not what the cycle started from.
            self._telemetry.record_replicas(self.name, self.observe(repair=False).counts())
        self._telemetry.loop_duration.labels(self.name).observe(self._clock() - start)
        return decision

    def _log_decision(self, decision: Decision, previous: Decision | None) -> None:
        # Every change and every new reason is logged at info; the same "no change" again and
        # again (one per interval) only at debug, so the log reads as a history of decisions.
        repeated = previous is not None and previous.reason == decision.reason
        level = logging.DEBUG if decision.desired == decision.current and repeated else logging.INFO
        if decision.reason in ("metrics_unavailable", "fallback"):
            level = logging.WARNING
        prefix = "[dry run] " if self.dry_run else ""
        log.log(
            level, "%s%s", prefix, decision.message,
            extra=self._extra(
                current=decision.current, desired=decision.desired, reason=decision.reason,
                dry_run=self.dry_run,
            ),
        )

    # --- act ------------------------------------------------------------------------------

    def _converge(self, observation: Observation, desired: int) -> None:
        active = observation.active
        if desired > len(active):
            self.scale_out(desired - len(active))
        elif desired < len(active):
            self.scale_in(choose_victims(active, len(active) - desired))

    def scale_out(self, count: int) -> list[Replica]:
        """Starts `count` replicas side by side, registers them, and waits until they serve."""
        spec = self.replica_spec()
        started = list(self._pool.map(lambda _: self._backend.start_replica(spec), range(count)))
        for replica in started:
            log.info("started replica %s", replica.name, extra=self._extra(replica=replica.name))
            self._register(replica)
        self.wait_serving([r.name for r in started], self.config.startup_timeout_seconds)
        return started

    def wait_serving(self, names: Sequence[str], timeout_seconds: float) -> list[str]:
        """Promotes each replica to ready once its check passed; returns those still waiting."""
        assert self._lb is not None
        waiting = set(names)
        deadline = self._clock() + timeout_seconds
        while waiting:
            servers = self._lb.servers()
            for name in sorted(waiting):
                server = servers.get(name)
                if server is None:
                    waiting.discard(name)
                elif server.check_passed:
                    if server.maintenance:
                        self._lb.set_ready(name)
                    log.info("replica %s passed its health check: now serving", name,
                             extra=self._extra(replica=name))
                    waiting.discard(name)
            if not waiting or self._clock() > deadline:
                break
            self._sleep(HEALTH_POLL_SECONDS)
        for name in sorted(waiting):
            log.warning("replica %s not healthy after %.0fs; will keep checking", name, timeout_seconds,
                        extra=self._extra(replica=name))
        return sorted(waiting)

    def scale_in(self, victims: Sequence[ReplicaView]) -> None:
        """Drains each victim, waits for its sessions to end (bounded), then removes it."""
        assert self._lb is not None
        lb = self._lb
        if self.last_observation is not None:
            # While the drain runs (up to drain_timeout_seconds) the gauge shows it.
            counts = self.last_observation.counts()
            for view in victims:
                counts[view.state] = counts.get(view.state, 0) - 1
                counts["draining"] = counts.get("draining", 0) + 1
            self._telemetry.record_replicas(self.name, counts)
        for view in victims:
            lb.set_drain(view.replica.name)
            log.info("draining replica %s (%d session(s))", view.replica.name,
                     view.server.sessions_current if view.server else 0,
                     extra=self._extra(replica=view.replica.name))
        pending = {v.replica.name for v in victims}
        deadline = self._clock() + self.config.policy.drain_timeout_seconds
        while pending:
            servers = lb.servers()
            for name in sorted(pending):
                server = servers.get(name)
                if server is None or server.sessions_current == 0:
                    pending.discard(name)
            if not pending:
                break
            if self._clock() > deadline:
                log.warning("drain timeout (%.0fs) for %s: closing remaining sessions",
                            self.config.policy.drain_timeout_seconds, ", ".join(sorted(pending)),
                            extra=self._extra())
                break
            self._sleep(HEALTH_POLL_SECONDS)

        def remove(view: ReplicaView) -> None:
            lb.delete_server(view.replica.name)
            self._backend.remove_replica(self.name, view.replica.id, self.config.stop_timeout_seconds)
            log.info("removed replica %s", view.replica.name, extra=self._extra(replica=view.replica.name))

        list(self._pool.map(remove, victims))

    def finish_draining(self, observation: Observation) -> None:
        """A drain a previous run left behind (e.g. the daemon was killed mid-drain)."""
        leftovers = observation.in_state("draining")
        if leftovers and not self.dry_run:
            self.scale_in(leftovers)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def choose_victims(active: Sequence[ReplicaView], count: int) -> list[ReplicaView]:
    """Fewest current sessions first; ties go to the newest replica (least warmed up)."""
    def key(view: ReplicaView) -> tuple[int, float]:
        sessions = view.server.sessions_current if view.server else 0
        return sessions, -view.replica.created_at_seconds

    return sorted(active, key=key)[:count]

