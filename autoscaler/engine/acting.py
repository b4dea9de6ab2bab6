"""Acting: the decided count becomes the count to keep, and each pass takes small steps toward
it. Containers: start replicas as operations in other threads (limited by the start backoff),
retire the surplus (drain first). An orchestrator (Swarm): set its count, and drain the tasks it
marks for removal. Outcomes of operations are collected by the next step.
"""

from __future__ import annotations

import logging
from bisect import insort

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import BackendError, Replica
from autoscaler.engine import backoff as bo
from autoscaler.engine.operations import Outcome
from autoscaler.engine.state import ReconcilerState
from autoscaler.engine.replicas import ReplicaView, Tracked, choose_victims
from autoscaler.lb.haproxy import ServerStat
from autoscaler.model import Decision, History, TimedValue
from autoscaler.policy.evaluate import record_scale

log = logging.getLogger("autoscaler.engine")


def uncount_scale_up(history: History, decided_at: float) -> History:
    """A scale-up start that failed or will not happen: take it back out of the rate rules'
    history, at the time it was counted, so it leaves their periods with its decision."""
    events = list(history.scale_up_events)
    insort(events, TimedValue(decided_at, -1), key=lambda e: e.at_seconds)
    return history._replace(scale_up_events=tuple(events))


class Acting(ReconcilerState):
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

    def _start_failed(self, config: ServiceConfig, name: str, counted_at: float | None, exc: Exception, now: float) -> None:
        if counted_at is not None:
            self._history = uncount_scale_up(self._history, counted_at)
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

    def _apply_decision(self, decision: Decision, now: float) -> None:
        """The decided count becomes the count to keep; the rate rules' history learns what
        is started (now, corrected if a start fails) and what is drained (when it is)."""
        change = decision.desired - decision.current
        if change > 0 and not self._backend.orchestrated:
            self._counted.extend([now] * change)
        if change > 0 or self._backend.orchestrated:
            # An orchestrator removes what it picks as soon as it is told: that is the scale-in.
            self._history = record_scale(self._history, now, decision.current, decision.desired)
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
                    self._history = record_scale(self._history, now, len(victims), 0)
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
            self._history = uncount_scale_up(self._history, self._counted.pop())

    def _submit_start(self, config: ServiceConfig, counted_at: float | None, now: float) -> None:
        spec = self.replica_spec(config)
        name = self._backend.new_replica_name(self.name)
        self._expected_starts.add(name)
        self._ops.submit(
            "start", name, lambda: self._backend.start_replica(spec, name),
            counted_at=counted_at, submitted_at=now,
        )

    def _submit_removal(self, config: ServiceConfig, name: str, container_id: str, force: bool) -> None:
        self._removing[name] = container_id
        stop_timeout = config.stop_timeout_seconds
        self._ops.submit(
            "remove", name,
            lambda: self._backend.remove_replica(self.name, container_id, stop_timeout, force=force),
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
