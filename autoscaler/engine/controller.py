"""One service's reconciler: each pass reads the world, decides, and takes small steps toward
the decided count. Nothing waits inside a pass.

The controller owns one explicit state (`ServiceState`, state.py) and composes parts that each
get it, or what they need of it, in their constructor:
  target    the scale target (target.py): `ContainerSet` (containers.py), containers the engine
            starts and stops, or `OrchestratedCount` (orchestrated.py), a count Swarm keeps.
  gate      how a replica comes to serve and leaves (membership.py): `Membership`, the load
            balancer (register, check, ready, drain, delete), or `DirectGate` with none.
  sampler   readings and counters into the policy's snapshot (sampling.py).
  external  the external metrics' sources, read side by side each pass (external.py).
  policy    the pure decision (autoscaler.policy.evaluate).

A pass (`run_cycle`, every interval):
  observe   the replicas (target) and the load balancer (gate: its stats, or one repair step
            within its own backoff when it does not answer).
  repair    each replica one step: the target reports and replaces what exited; the gate
            registers, promotes, takes out of rotation, drains; what timed out goes back to
            the target.
  measure   CPU and memory of the active replicas (MetricsSource) into the snapshot.
  decide    evaluate(snapshot, policy, bounds, history, now).
  act       the decided count becomes the count to keep; the target starts what is missing
            (or sets the orchestrator's count) and hands back the surplus, which the gate
            drains or the target stops.
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

from autoscaler.config import ExternalMetric, ServiceConfig
from autoscaler.engine import backoff as bo
from autoscaler.engine.external import ExternalMetrics, SourceFactory
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.loadbalancer import LB_STARTUP_GRACE_SECONDS
from autoscaler.engine.membership import DirectGate, Gate, Look
from autoscaler.engine.operations import Operations
from autoscaler.engine.ports import (
    BackendError,
    BackendStat,
    ContainerTemplate,
    ExternalSource,
    LeaseHolder,
    LoadBalancer,
    MembershipError,
    MetricsSource,
    Networks,
    Replica,
)
from autoscaler.engine.replicas import Observation, ReplicaView, Unhealthy, in_transition
from autoscaler.engine.sampling import SOURCE_NAMES, Sampler
from autoscaler.engine.state import Context, LeaseLost, ServiceState
from autoscaler.engine.target import Release, ScaleTarget, replica_spec
from autoscaler.model import Bounds, Decision, ServiceSnapshot
from autoscaler.policy.evaluate import evaluate, record_scale, seed_history
from autoscaler.policy.schedule import ScheduledBounds
from autoscaler.telemetry import Telemetry

log = logging.getLogger("autoscaler.engine")

# How often a pass reads a service's template container again (a `docker compose up -d` that
# recreated it with a new config is then rolled out): one list and one inspect.
TEMPLATE_REFRESH_SECONDS = 10.0

# How often the progress step looks at starting and draining replicas (one `show stat`, ~1 ms,
# and only while some are); a finished start also wakes it at once.
PROGRESS_SECONDS = 0.1

TargetFactory = Callable[[Context, ServiceState, Release], ScaleTarget]
GateFactory = Callable[[Context, ServiceState], Gate]


class ServiceController:
    def __init__(
        self,
        name: str,
        config: ServiceConfig,
        network: str,
        *,
        target: TargetFactory,
        metrics: MetricsSource,
        networks: Networks,
        telemetry: Telemetry,
        gate: GateFactory | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        lease: LeaseHolder | None = None,
        operations: Operations | None = None,
        external: SourceFactory | None = None,
        request_pass: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.network = network
        self.dry_run = dry_run
        # Config and its schedule are swapped together by a reload; a pass reads them once.
        self._configured: tuple[ServiceConfig, ScheduledBounds] = (config, ScheduledBounds(config))
        self.health = ServiceHealth()
        self.ctx = Context(name, network, telemetry, self.health, clock, wall_clock, dry_run, fence=self._fence)
        self.state = ServiceState(started_at=clock())
        self.gate: Gate = gate(self.ctx, self.state) if gate is not None else DirectGate(self.ctx, self.state)
        self.target = target(self.ctx, self.state, self.gate.release)
        self._metrics = metrics
        self._networks = networks
        self._telemetry = telemetry
        self._lease = lease
        self._ops = operations or Operations(name)
        self._lock = threading.RLock()
        self._pass_started_at: float | None = None  # clock, while a pass runs
        self._sampler = Sampler(name)
        self.external = ExternalMetrics(self.ctx, telemetry, external or _no_external_sources)
        # Asks for the next pass now instead of at the next interval (a rollout's next step).
        self._request_pass = request_pass
        self._set_up = False
        self._template_read_at = -float("inf")
        self.last_decision: Decision | None = None
        self.last_decision_at: float | None = None  # wall clock
        self.last_observation: Observation | None = None
        self.last_snapshot: ServiceSnapshot | None = None
        self._last_logged: tuple[str, int, int] | None = None
        self.replica_counts: dict[str, int] = {"ready": 0, "starting": 0, "draining": 0}
        self.replica_versions: dict[str, int] = {}
        telemetry.register_service(name)

    @property
    def config(self) -> ServiceConfig:
        return self._configured[0]

    @property
    def load_balancer(self) -> LoadBalancer | None:
        return self.gate.load_balancer

    @property
    def consecutive_failures(self) -> int:
        return self.state.history.consecutive_failures

    @property
    def start_backoff(self) -> bo.Backoff:
        return self.state.backoff

    def source_errors(self) -> dict[str, str]:
        """Metrics sources that fail (Swarm agents by node), for `status`."""
        return self._metrics.source_errors(self.name)

    def bounds(self) -> Bounds:
        return self._configured[1].at_timestamp(self.ctx.wall_clock())

    def update_config(self, config: ServiceConfig, template: ContainerTemplate | None = None) -> None:
        """Hot reload: the next pass uses the new config (and the template read again for it);
        history and replicas are kept."""
        self._configured = (config, ScheduledBounds(config))
        self.state.template = template

    # --- set-up -----------------------------------------------------------------------------

    def acquire_lease(self) -> str | None:
        """None when this daemon may act on the service, else who holds it (stand by)."""
        if self._lease is None or self.dry_run:
            return None
        if self._lease.held():
            self._lease.renew()
            return None
        # Not held (first pass, lost with an engine restart, or standing by): whoever held it
        # may have changed things, so set up again once it is ours.
        self._set_up = False
        holder = self._lease.try_acquire()
        self.health.standby_holder = holder
        self._telemetry.lease_held.labels(self.name).set(0 if holder else 1)
        if holder is not None:
            self.ctx.once("lease", logging.WARNING,
                          "another daemon holds this service (%s): standing by, will take over when it exits", holder)
        else:
            self.health.notes.pop("lease", None)
        return holder

    def setup(self, wait_seconds: float = LB_STARTUP_GRACE_SECONDS) -> list[str]:
        """Creates what is missing (network, the orchestrator's service, load balancer) and
        adopts what exists; waits up to wait_seconds for the load balancer's API. Returns what
        it created, so that a failed start can remove it again (remove_created).

        In a dry run nothing is created: a load balancer must already run.
        """
        created: list[str] = []
        config = self.config
        try:
            # The container the replicas copy, read now: a start never waits for it.
            self.state.template = self.target.resolve_template(config)
            self._template_read_at = self.ctx.clock()
            if self.state.template is not None:
                log.info("replicas are made from %s (version %s)", self.state.template.source,
                         self.state.template.version, extra=self.ctx.extra())
            if not self.dry_run:
                if self._networks.ensure_network(self.name, self.network):
                    created.append("network")
                if self.target.prepare(config, replica_spec(self.name, self.network, config, self.state.template)):
                    created.append("service")
            if self.gate.attach(config, wait_seconds):
                created.append("load-balancer")
            if self._lease is not None and not self.dry_run:
                self._lease.renew()  # the wait for a new load balancer's API may have been long
        except (BackendError, MembershipError):
            self.remove_created(created)
            raise
        self._set_up = True
        return created

    def remove_created(self, created: list[str]) -> None:
        """Removes what setup() created (a start that failed leaves nothing half-made)."""
        try:
            if "load-balancer" in created:
                self.gate.remove_created()
            if "service" in created:
                self.target.remove_created()
            if "network" in created:
                self._networks.remove_network(self.name, self.network)
        except BackendError as exc:
            log.warning("could not remove what the failed start created: %s", exc, extra=self.ctx.extra())

    # --- the pass ---------------------------------------------------------------------------

    def run_cycle(self) -> Decision | None:
        """One pass. Returns the decision, or None when there was nothing to decide on (standing
        by, or the Docker engine is unreachable)."""
        with self._lock:
            self._pass_started_at = self.ctx.clock()
            try:
                return self._cycle()
            except LeaseLost:
                self._lease_lost()
                return None
            finally:
                self._pass_started_at = None

    def _cycle(self) -> Decision | None:
        config, schedule = self._configured
        start = now = self.ctx.clock()
        try:
            # The pass's first look decides whether the engine is reachable (and only it: while
            # dockerd shuts down, pooled connections still answer as new ones fail). Looking is
            # harmless without the lease.
            replicas = self.target.list_replicas()
        except BackendError as exc:
            self._engine_unreachable(exc)
            return None
        self._engine_reachable()
        try:
            if self.acquire_lease() is not None:
                return None
        except BackendError as exc:
            self.ctx.once("lease", logging.WARNING, "cannot take the lease: %s (trying again)", exc)
            return None
        if not self._set_up:
            try:
                self.setup(wait_seconds=0)
            except (BackendError, MembershipError) as exc:
                self.ctx.once("setup", logging.ERROR, "cannot set up the service: %s (trying again)", exc)
                return None
            self.health.notes.pop("setup", None)  # set up: a later failure to set up is news again
        self._refresh_template(config, now)
        started = self.target.collect(config, now)
        look = self.gate.look(config, now)
        for replica, tracked in started:
            self.gate.started(config, replica, tracked, now)
        views = self._reconcile(config, replicas, look, now)
        self.target.read_count(config)
        state = self.state
        if state.count_to_keep is None:
            # First sight: keep what runs (or what the orchestrator holds), and seed the window
            # with it, as the HPA does, so that a restarted daemon does not scale 6 -> 2 on its
            # first look at a quiet service.
            state.count_to_keep = self.target.first_count(len([v for v in views if v.state != "draining"]))
            state.history = seed_history(state.count_to_keep, now)
        if not self.dry_run:
            # Like a ReplicaSet: what died is replaced before the policy looks at the load.
            views = self._converge(config, views, look, now)
        observation = self._observation(views, look.backend)
        snapshot = self.snapshot(observation, config)
        bounds = schedule.at_timestamp(self.ctx.wall_clock())
        decision, state.history = evaluate(snapshot, config.policy, bounds, state.history, now)
        previous, self.last_decision = self.last_decision, decision
        self.last_decision_at = self.ctx.wall_clock()
        self.last_snapshot = snapshot
        self._log_decision(decision, previous)
        self._telemetry.record_evaluation(
            decision, snapshot, bounds, config.policy, state.history.consecutive_failures, self.dry_run
        )
        if decision.desired != decision.current and not self.dry_run:
            self.target.apply(decision, now)
            self._telemetry.record_scale(self.name, str(decision.direction), decision.reason)
            views = self._converge(config, views, look, now)
            observation = self._observation(views, look.backend)
        self.last_observation = observation
        self._record_state(now)
        self._telemetry.loop_duration.labels(self.name).observe(self.ctx.clock() - start)
        return decision

    def _reconcile(self, config: ServiceConfig, replicas: list[Replica], look: Look, now: float) -> list[ReplicaView]:
        """Brings each replica one step along starting -> ready -> draining -> removed (or
        failed), and the gate's membership in line with the running replicas."""
        repair = not self.dry_run and look.up
        state = self.state
        in_flight = state.in_flight
        views: list[ReplicaView] = []
        first_failure = True
        for replica in replicas:
            name = replica.name
            if in_flight.starting(name) or replica.state == "removing":
                continue
            if in_flight.removing(name):
                if not self.dry_run:
                    self.target.retry_removal(config, replica)
                continue
            if replica.terminated and self.dry_run:
                continue  # a dry run reports what it sees and removes nothing
            tracked = state.track(replica, now)
            triage, counted = self.target.triage(config, replica, tracked, now, first_failure)
            first_failure = first_failure and not counted
            if triage == "gone":
                continue
            if triage == "starting":
                views.append(ReplicaView(replica, "starting", look.server(name)))
                continue
            step = self.gate.step(config, replica, tracked, look, now, repair)
            if step == "drained":
                self.target.drained(config, name, tracked)
            elif isinstance(step, Unhealthy):
                view = self.target.unhealthy(config, replica, tracked, look.server(name), now, step.why)
                if view is not None:
                    views.append(view)
            elif isinstance(step, ReplicaView):
                views.append(step)
        listed = {r.name for r in replicas}
        if repair:
            self.gate.sweep(config, look, listed, now)
        state.forget(listed)
        return views

    def _converge(self, config: ServiceConfig, views: list[ReplicaView], look: Look, now: float) -> list[ReplicaView]:
        """Toward the count to keep: the target starts (or sets the count); the surplus it hands
        back leaves through the gate (drained) or is stopped by the target. Never waits."""
        victims = self.target.converge(config, views, look.up, now)
        if not victims:
            return views
        for view in victims:
            tracked = self.state.tracked[view.replica.name]
            if not self.gate.drain(config, view, tracked, now):
                self.target.remove(config, view, tracked, force=self.gate.stop_at_once(view))
        # A scale-in counts for the rate rules when it is carried out.
        self.state.history = record_scale(self.state.history, now, len(victims), 0)
        retired = {v.replica.name for v in victims}
        return [
            ReplicaView(v.replica, "draining", v.server) if v.replica.name in retired else v
            for v in views
            if not (v.replica.name in retired and v.state == "starting")
        ]

    def progress(self) -> None:
        """The short step between passes: renews the lease, registers finished starts, promotes
        replicas whose check passed, finishes drains. Skipped if a pass is running (it does the
        same)."""
        if not self._lock.acquire(blocking=False):
            self._renew_during_pass()
            return
        try:
            if self._lease is not None and not self.dry_run and self._set_up:
                if not self._lease.held():
                    self._lease_lost()
                    return
                self._lease.renew()
            if not self._set_up or self.dry_run or self.health.engine_down_since is not None:
                return
            config = self.config
            now = self.ctx.clock()
            moving = any(in_transition(t) for t in self.state.tracked.values())
            started = self.target.collect(config, now)
            for replica, tracked in started:
                self.gate.started(config, replica, tracked, now)
            # Only during a rolling update: whether this step made a replica ready.
            rollout = self.state.rollout
            rolling = rollout is not None and rollout.in_progress and self._request_pass is not None
            ready_before = self._ready_count() if rolling else 0
            drained_names = self.gate.progress(config, now, self.target.watch(now))
            for name in drained_names:
                drained = self.state.tracked.get(name)
                if drained is not None:
                    self.target.drained(config, name, drained)
            if rolling and self._request_pass is not None and self._ready_count() > ready_before:
                # A new replica is ready in the middle of a rolling update: an old one may drain
                # and the next start, now rather than at the next interval (as a Deployment
                # controller reacts to a pod becoming ready).
                self._request_pass()
            if moving or started or drained_names:
                self._record_state(now)  # every 0.1 s: only when a replica moved, as the pass does the rest
        except LeaseLost:
            self._lease_lost()
        finally:
            self._lock.release()

    def _refresh_template(self, config: ServiceConfig, now: float) -> None:
        """Reads the template container again now and then: recreated with a new config, it is
        a new version, which the target rolls out. Gone or unreadable, the replicas keep being
        made from what was read last (one line, once)."""
        if config.template is None or now - self._template_read_at < TEMPLATE_REFRESH_SECONDS:
            return
        self._template_read_at = now
        try:
            template = self.target.resolve_template(config)
        except BackendError as exc:
            self.ctx.once("template", logging.WARNING,
                          "cannot read the template again: %s (replicas are made from what was read last)", exc)
            return
        self.health.notes.pop("template", None)
        current = self.state.template
        if template is not None and (current is None or template.version != current.version):
            log.info("the template changed: %s is now version %s", template.source, template.version,
                     extra=self.ctx.extra())
            self.state.template = template

    def _ready_count(self) -> int:
        return sum(1 for t in self.state.tracked.values() if t.ready_since is not None)

    def _renew_during_pass(self) -> None:
        """While a pass runs, the lease is renewed for it only until the renew deadline: a pass
        that hangs (a deadlock, a call that never returns) lets the lease expire, so that a
        daemon standing by takes over."""
        started = self._pass_started_at
        lease = self._lease
        if lease is not None and started is not None and self.ctx.clock() - started < lease.renew_deadline_seconds:
            lease.renew()

    def _fence(self) -> None:
        if self._lease is not None and not self.dry_run and not self._lease.held():
            raise LeaseLost(f"the lease of {self.name} is no longer held by this daemon")

    def _lease_lost(self) -> None:
        """Stop acting: whoever holds the lease now may change things; set up again once ours."""
        if self._set_up:
            log.warning("lost the lease: acting on nothing until it is ours again", extra=self.ctx.extra())
        self._set_up = False
        self._telemetry.lease_held.labels(self.name).set(0)

    # --- observe: the engine ----------------------------------------------------------------

    def _engine_unreachable(self, exc: BackendError) -> None:
        """One line when the engine goes away, one when it is back; nothing in between."""
        health = self.health
        health.engine_error = str(exc)
        self._telemetry.engine_up.labels(self.name).set(0)
        if health.engine_down_since is None:
            # From when the call that found it began: a frozen engine took the call's timeout.
            health.engine_down_since = self.ctx.wall_clock() - exc.waited_seconds
            self._telemetry.engine_outages.labels(self.name).inc()
            log.warning("Docker engine not reachable (%s): holding, retrying every interval", exc,
                        extra=self.ctx.extra())

    def _engine_reachable(self) -> None:
        down_since = self.health.engine_down_since
        self._telemetry.engine_up.labels(self.name).set(1)
        if down_since is not None:
            self.health.engine_down_since = None
            log.warning("Docker engine reachable again after %.0fs", self.ctx.wall_clock() - down_since,
                        extra=self.ctx.extra())

    # --- measure ----------------------------------------------------------------------------

    def _observation(self, views: list[ReplicaView], backend_stat: BackendStat | None) -> Observation:
        in_flight = self.state.in_flight.starts
        active = len([v for v in views if v.state != "draining"])
        keep = self.state.count_to_keep or 0
        pending = max(0, keep - active - in_flight) if not self.dry_run else 0
        return Observation(tuple(views), backend_stat, in_flight, pending)

    def snapshot(self, observation: Observation, config: ServiceConfig | None = None) -> ServiceSnapshot:
        """Reads CPU and memory of the active replicas and samples them for the policy."""
        config = config or self.config
        active = observation.active
        stats_error = None
        try:
            readings = self._metrics.read_stats(self.name, [v.replica.id for v in active]) if active else {}
        except BackendError as exc:
            readings, stats_error = {}, str(exc)
        source = self._metrics.stats_source(self.name)
        if source is not None and source != self.health.stats_source:
            if self.health.stats_source is not None or source != "cgroup":
                log.info("CPU and memory now come from %s", SOURCE_NAMES.get(source, source), extra=self.ctx.extra())
            self.health.stats_source = source
            self._telemetry.record_stats_source(self.name, source)
        sample = self._sampler.sample(config, observation, readings, stats_error, self.health.stats_source,
                                      self.ctx.clock(), self.ctx.wall_clock())
        self._telemetry.record_replica_samples(self.name, sample.replicas)
        self._telemetry.record_load_balancer(self.name, sample.requests_per_second,
                                             sample.snapshot.queue_current, sample.response_time_ms)
        external = self.external.read(config)
        return sample.snapshot._replace(external=external) if external else sample.snapshot

    def _record_state(self, now: float) -> None:
        """Replica counts and backoff as they are now, for the gauges and `status`."""
        state = self.state
        counts = {"ready": 0, "starting": state.in_flight.starts, "draining": 0}
        versions: dict[str, int] = {}  # of the live replicas (not draining)
        for name, tracked in state.tracked.items():
            if tracked.failed or state.in_flight.removing(name):
                continue
            if tracked.drain_deadline is not None:
                counts["draining"] += 1
                continue
            if tracked.ready_since is not None and tracked.unhealthy_since is None:
                counts["ready"] += 1
            else:
                counts["starting"] += 1
            version = tracked.version or "unknown"
            versions[version] = versions.get(version, 0) + 1
        self.replica_counts = counts
        self._telemetry.record_replicas(self.name, counts)
        self.replica_versions = versions
        rollout = state.rollout
        self._telemetry.record_versions(self.name, versions, rollout is not None and rollout.in_progress)
        self._telemetry.start_backoff.labels(self.name).set(bo.seconds_until_retry(state.backoff, now))
        self._telemetry.start_backoff_failures.labels(self.name).set(state.backoff.failures)

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
        if self.state.history.consecutive_failures > 0 and not repeated:  # metrics failing, fallback or not
            level = logging.WARNING
        prefix = "[dry run] " if self.dry_run else ""
        log.log(
            level, "%s%s", prefix, decision.message,
            extra=self.ctx.extra(
                current=decision.current, desired=decision.desired, reason=decision.reason, dry_run=self.dry_run,
            ),
        )

    # --- shutdown ---------------------------------------------------------------------------

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
                self.target.collect(self.config, self.ctx.clock())  # log what finished in time
            self._ops.close()
            self.external.close()
            if self._lease is not None:
                self._lease.release()
        finally:
            if got_lock:
                self._lock.release()
        return abandoned


def _no_external_sources(metric: ExternalMetric) -> ExternalSource:
    raise BackendError("setup", None, f"no source for the external metric {metric.name!r} was wired in")
