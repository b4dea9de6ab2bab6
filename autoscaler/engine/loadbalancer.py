"""The service's load balancer: adopted or created at set-up, looked at by every pass, and
brought back (created, started or replaced) within its own backoff when it stops answering.
Never waits, except for the bounded wait for a new one's API at start-up."""

from __future__ import annotations

import logging
from collections.abc import Callable

from autoscaler.config import ServiceConfig
from autoscaler.engine import backoff as bo
from autoscaler.engine.ports import BackendError, BackendStat, LoadBalancer, LoadBalancerAPI, LoadBalancerHost
from autoscaler.engine.ports import LoadBalancerSpec, MembershipError, ServerStat
from autoscaler.engine.state import Context

log = logging.getLogger("autoscaler.engine")

LB_POLL_SECONDS = 0.2  # while set-up waits for a new load balancer's API
LB_STARTUP_GRACE_SECONDS = 15.0  # a running load balancer whose API is silent longer is broken


class LoadBalancerKeeper:
    def __init__(self, ctx: Context, host: LoadBalancerHost, lb_factory: Callable[[LoadBalancer], LoadBalancerAPI],
                 sleep: Callable[[float], None]) -> None:
        self._ctx, self._host, self._lb_factory, self._sleep = ctx, host, lb_factory, sleep
        self.api: LoadBalancerAPI | None = None
        self.info: LoadBalancer | None = None
        self.backoff = bo.Backoff()

    def use(self, lb: LoadBalancer) -> None:
        self.info = lb
        self.api = self._lb_factory(lb)

    def wait(self, timeout_seconds: float) -> None:
        """At set-up only: until a new load balancer's runtime API answers."""
        assert self.api is not None
        deadline = self._ctx.clock() + timeout_seconds
        while True:
            try:
                self.api.servers()
                return
            except MembershipError:
                if self._ctx.clock() > deadline:
                    raise
                self._sleep(LB_POLL_SECONDS)

    def state(
        self, config: ServiceConfig, spec: LoadBalancerSpec, now: float
    ) -> tuple[BackendStat | None, dict[str, ServerStat] | None, bool]:
        """The load balancer's stats, or (None, None) while it is down; then one non-blocking
        repair step (create, start or replace it, within its own backoff). The last value says
        whether the load balancer is a new one (no members yet)."""
        if self.api is not None:
            try:
                backend_stat, servers = self.api.snapshot()
            except MembershipError as exc:
                error = str(exc)
            else:
                if self._ctx.health.lb_down_since is not None:
                    log.warning("load balancer answering again after %.0fs",
                                self._ctx.wall_clock() - self._ctx.health.lb_down_since, extra=self._ctx.extra())
                    self._ctx.health.lb_down_since = None
                    for topic in ("lb-repair", "lb-error"):
                        self._ctx.health.notes.pop(topic, None)
                self.backoff = bo.maybe_reset(bo.after_ready(self.backoff, now, now), now, config.backoff_max_seconds)
                self._ctx.telemetry.lb_up.labels(self._ctx.name).set(1)
                return backend_stat, servers, False
        else:
            error = "no load balancer yet"
        if self._ctx.health.lb_down_since is None:
            self._ctx.health.lb_down_since = self._ctx.wall_clock()
        self._ctx.health.lb_error = error
        self._ctx.telemetry.lb_up.labels(self._ctx.name).set(0)
        renewed = False if self._ctx.dry_run else self._repair(config, spec, now, error)
        return None, None, renewed

    def _repair(self, config: ServiceConfig, spec: LoadBalancerSpec, now: float, error: str) -> bool:
        try:
            container = self._host.load_balancer_container(self._ctx.name)
            if container is not None and container.state in ("removing", "dead"):
                self._ctx.once("lb-repair", logging.INFO, "load balancer %s is being removed: waiting", container.name)
                return False
            if container is not None and container.state == "running":
                started = container.started_at_seconds or 0.0
                if self._ctx.wall_clock() - started < LB_STARTUP_GRACE_SECONDS:
                    self._ctx.once("lb-repair", logging.INFO, "load balancer %s is starting", container.name)
                    if self.info is None or self.info.id != container.id:
                        self.use(self._host.load_balancer_info(self._ctx.name, container.id))
                    return False
            if now < self.backoff.retry_at:
                return False
            self._ctx.fence()
            if container is None:
                self._ctx.once("lb-repair", logging.WARNING, "load balancer missing (%s): creating it", error)
                container_id = self._host.create_load_balancer(spec)
            elif container.state == "running":
                self._ctx.once("lb-repair", logging.WARNING,
                           "load balancer %s runs but its API has not answered for %.0fs (%s): replacing it",
                           container.name, LB_STARTUP_GRACE_SECONDS, error)
                self._host.remove_load_balancer(self._ctx.name, container.id)
                container_id = self._host.create_load_balancer(spec)
            elif container.state == "restarting":
                report = self._host.load_balancer_report(self._ctx.name, container.id)
                self._ctx.once("lb-repair", logging.WARNING, "load balancer %s keeps restarting (%s)",
                           container.name, report.describe())
                self.backoff = bo.after_failure(self.backoff, now, report.describe(),
                                                    config.backoff_initial_seconds, config.backoff_max_seconds)
                self._ctx.telemetry.lb_restarts.labels(self._ctx.name).inc()
                return False
            else:
                report = self._host.load_balancer_report(self._ctx.name, container.id)
                self._ctx.once("lb-repair", logging.WARNING, "load balancer %s is %s (%s): starting it",
                           container.name, container.state, report.describe())
                self._host.start_load_balancer(self._ctx.name, container.id)
                container_id = container.id
            self.backoff = bo.after_failure(self.backoff, now, error,
                                                config.backoff_initial_seconds, config.backoff_max_seconds)
            self._ctx.telemetry.lb_restarts.labels(self._ctx.name).inc()
            self.use(self._host.load_balancer_info(self._ctx.name, container_id))
            return True
        except BackendError as exc:
            if exc.unreachable:
                return False  # the engine's trouble, not the load balancer's: no backoff
            self.backoff = bo.after_failure(self.backoff, now, str(exc),
                                                config.backoff_initial_seconds, config.backoff_max_seconds)
            self._ctx.once("lb-error", logging.ERROR, "cannot bring the load balancer back: %s (next try in %.0fs)",
                       exc, bo.seconds_until_retry(self.backoff, now))
            return False
