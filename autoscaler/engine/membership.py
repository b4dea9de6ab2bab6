"""Membership repair: each replica one step along starting -> ready -> draining -> removed
(or failed), and the load balancer's servers in line with the replicas that run.

Every step is one or two runtime-API calls (about a millisecond each) or an operation handed
to another thread; nothing here waits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import BackendError, ExitReport, Replica
from autoscaler.engine import backoff as bo
from autoscaler.engine.acting import uncount_scale_up
from autoscaler.engine.state import ReconcilerState
from autoscaler.engine.replicas import ReplicaView, Tracked, classify_exit
from autoscaler.lb.haproxy import HAProxyError, ServerBusy, ServerStat

log = logging.getLogger("autoscaler.engine")


class Membership(ReconcilerState):
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
            self._history = uncount_scale_up(self._history, tracked.counted_at)
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
