"""The scale target of an orchestrator that keeps the count itself (over OrchestratedService):
a Swarm service. The decided count is set on the orchestrator; it picks, starts, restarts and
stops the replicas. What it marks for removal drains first (the gate does it); a replica that
ends is reported once, and the orchestrator's own restart policy replaces it (no backoff here).
"""

from __future__ import annotations

import logging

from autoscaler.config import ServiceConfig
from autoscaler.engine.ports import (
    BackendError,
    ContainerTemplate,
    ExitReport,
    OrchestratedService,
    Replica,
    ReplicaSpec,
    ServerStat,
)
from autoscaler.engine.replicas import ReplicaView, Tracked
from autoscaler.engine.state import Context, Failure, Rollout, ServiceState, record_failure
from autoscaler.engine.target import Release, Triage, replica_spec
from autoscaler.model import Decision
from autoscaler.policy.evaluate import record_scale

log = logging.getLogger("autoscaler.engine")

# After a scale-in, how long the progress step looks for the tasks the orchestrator marks for
# removal (Swarm marks them at once and sends their stop signal 2 s after their DNS record goes).
WATCH_LEAVING_SECONDS = 15.0


class OrchestratedCount:
    def __init__(self, ctx: Context, state: ServiceState, service: OrchestratedService, release: Release) -> None:
        self._ctx, self._state, self._service = ctx, state, service
        self._release = release  # takes an ended task out of the gate (the load balancer)
        self._held: int | None = None  # the count the orchestrator holds, read each pass
        self._watch_until = 0.0
        self._rolled_for: ServiceConfig | None = None  # the config whose spec is in force

    def resolve_template(self, config: ServiceConfig) -> ContainerTemplate | None:
        return None  # a Swarm service is its own template (config validation refuses one here)

    def prepare(self, config: ServiceConfig, spec: ReplicaSpec) -> bool:
        # A task's grace after its stop signal covers a drain (it serves the drained requests)
        # and the stop timeout (a worker finishing its job).
        grace_seconds = max(config.policy.drain_timeout_seconds, float(config.stop_timeout_seconds))
        return self._service.prepare(spec, config.min_replicas, grace_seconds, adopt=config.swarm_service is not None)

    def remove_created(self) -> None:
        self._service.remove_service(self._ctx.name)

    def list_replicas(self) -> list[Replica]:
        return self._service.list_replicas(self._ctx.name, self._ctx.network)

    def collect(self, config: ServiceConfig, now: float) -> list[tuple[Replica, Tracked]]:
        return []  # nothing runs in our threads: the orchestrator starts and stops

    def read_count(self, config: ServiceConfig) -> None:
        try:
            self._held = self._service.desired_count(self._ctx.name)
        except BackendError as exc:
            # A topic of its own: "scale" is cleared by every pass that finds the count kept,
            # which would say this again each pass of one outage.
            self._ctx.once("count", logging.WARNING, "cannot read the service's replica count: %s", exc)
        else:
            self._ctx.health.notes.pop("count", None)  # readable again: a next outage is news
        self._roll_out(config)

    def _roll_out(self, config: ServiceConfig) -> None:
        """A changed spec (a reload) of a service the daemon created goes out through the
        orchestrator's own rolling update, not a reimplementation. An adopted service is the
        user's: its updates are the user's (`docker service update`)."""
        if config.swarm_service is not None or self._ctx.dry_run or config is self._rolled_for:
            return  # the same config as the last pass that handled it: nothing to hash again
        spec = replica_spec(self._ctx.name, self._ctx.network, config)
        state = self._state
        if state.rollout is not None and state.rollout.spec.version == spec.version:
            self._rolled_for = config
            return
        try:
            running = self._service.version_of(self._ctx.name)
            if running is not None and running != spec.version:
                self._ctx.fence()
                self._service.roll_out(spec)
            state.rollout = Rollout(spec)
            self._rolled_for = config
            # Gone out: a later update that cannot start is news again.
            self._ctx.health.notes.pop("rollout", None)
        except BackendError as exc:
            self._ctx.once("rollout", logging.WARNING, "cannot roll out version %s yet: %s (trying again)",
                           spec.version, exc)

    def first_count(self, active: int) -> int:
        return self._held if self._held is not None else active

    def watch(self, now: float) -> list[Replica]:
        """While the orchestrator may be marking tasks for removal: the tasks, to drain those."""
        if now >= self._watch_until:
            return []
        try:
            return self.list_replicas()
        except BackendError:
            return []

    # --- repair -----------------------------------------------------------------------------

    def triage(self, config: ServiceConfig, replica: Replica, tracked: Tracked, now: float, first_failure: bool
               ) -> tuple[Triage, bool]:
        if tracked.failed and not replica.terminated:
            return "gone", False  # drained (or failed): the orchestrator is stopping it; it counts no more
        if replica.terminated:
            self._task_ended(config, replica, tracked, now)
            return "gone", False
        if replica.state == "created":
            return "starting", False  # the orchestrator is starting it
        return "alive", False

    def _task_ended(self, config: ServiceConfig, replica: Replica, tracked: Tracked, now: float) -> None:
        """Out of the load balancer; a failure is reported once."""
        if not self._ctx.dry_run:
            self._release(config, replica.name, now)
        if tracked.failed:
            return
        tracked.failed = True
        since_start = self._ctx.clock() - self._state.started_at
        if replica.state != "dead" or replica.created_at_seconds < self._ctx.wall_clock() - since_start - 1:
            return  # a task that was stopped (scale-in, update), or history from before us
        try:
            report = self._service.exit_report(self._ctx.name, replica.id)
        except BackendError as exc:
            report = ExitReport(None, False, f"unreadable: {exc}", ())
        reason = "oom_killed" if report.oom_killed else "task_failed"
        failure = Failure(replica.name, reason, f"replica {replica.name} failed ({reason}): {report.describe()}",
                          never_ready=tracked.ready_since is None, counts=False,
                          then="the orchestrator restarts it")
        record_failure(self._ctx, self._state, failure, now, config.backoff_initial_seconds, config.backoff_max_seconds)

    def retry_removal(self, config: ServiceConfig, replica: Replica) -> None:
        pass  # never asked: the orchestrator removes its tasks

    def unhealthy(self, config: ServiceConfig, replica: Replica, tracked: Tracked, server: ServerStat | None,
                  now: float, why: str) -> ReplicaView | None:
        # The orchestrator decides what happens to its tasks; out of rotation it serves nobody.
        self._ctx.once(f"unhealthy-{replica.name}", logging.WARNING,
                       "replica %s not healthy for %gs (%s): out of rotation, left to the orchestrator",
                       replica.name, config.startup_timeout_seconds, why)
        return ReplicaView(replica, "starting", server)

    def drained(self, config: ServiceConfig, name: str, tracked: Tracked) -> None:
        tracked.failed = True  # done with: the orchestrator stops it
        log.info("removed replica %s from the load balancer (drained)", name, extra=self._ctx.extra(replica=name))

    # --- act --------------------------------------------------------------------------------

    def apply(self, decision: Decision, now: float) -> None:
        # The orchestrator removes what it picks as soon as it is told: that is the scale-in.
        self._state.history = record_scale(self._state.history, now, decision.current, decision.desired)
        self._state.count_to_keep = decision.desired

    def converge(self, config: ServiceConfig, views: list[ReplicaView], can_retire: bool, now: float
                 ) -> list[ReplicaView]:
        """Sets the orchestrator's count to the count to keep; it picks, starts and stops."""
        keep = self._state.count_to_keep
        assert keep is not None
        if self._held is None or self._held == keep:
            self._ctx.health.notes.pop("scale", None)
            return []
        self._ctx.fence()
        try:
            self._service.scale(self._ctx.name, keep)
        except BackendError as exc:
            # Being updated, paused or rolled back by someone else: hold, and say why (once).
            self._ctx.once("scale", logging.WARNING, "not setting the replica count to %d: %s", keep, exc)
            return []
        self._ctx.health.notes.pop("scale", None)
        log.info("replica count of the swarm service set %d -> %d", self._held, keep, extra=self._ctx.extra())
        if keep < self._held:
            # The orchestrator now marks the tasks it picked; the progress step drains each one
            # at once, before Swarm sends its stop signal.
            self._watch_until = now + WATCH_LEAVING_SECONDS
        self._held = keep
        return []

    def remove(self, config: ServiceConfig, view: ReplicaView, tracked: Tracked, force: bool) -> None:
        pass  # never asked: converge() retires nothing, the orchestrator picks
