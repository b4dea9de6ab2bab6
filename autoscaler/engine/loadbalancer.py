"""The service's load balancer: adopted or created at set-up, looked at by every pass, and
brought back (created, started or replaced) within its own backoff when it stops answering.
Never waits, except for the bounded wait for a new one's API at start-up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import BackendError, LoadBalancer, LoadBalancerSpec
from autoscaler.engine import backoff as bo
from autoscaler.engine.health import ServiceHealth
from autoscaler.lb.haproxy import BackendStat, HAProxyError, ServerStat
from autoscaler.telemetry import Telemetry

if TYPE_CHECKING:
    from autoscaler.engine.controller import LoadBalancerAPI, ReplicaBackend

log = logging.getLogger("autoscaler.engine")

LB_POLL_SECONDS = 0.2  # while set-up waits for a new load balancer's API
LB_STARTUP_GRACE_SECONDS = 15.0  # a running load balancer whose API is silent longer is broken


class LoadBalancerKeeper:
    def __init__(
        self,
        name: str,
        backend: "ReplicaBackend",
        lb_factory: Callable[[LoadBalancer], "LoadBalancerAPI"],
        telemetry: Telemetry,
        health: ServiceHealth,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        sleep: Callable[[float], None],
        dry_run: bool,
    ) -> None:
        self.name = name
        self._backend = backend
        self._lb_factory = lb_factory
        self._telemetry = telemetry
        self.health = health
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self.dry_run = dry_run
        self.api: LoadBalancerAPI | None = None
        self.info: LoadBalancer | None = None
        self.backoff = bo.Backoff()

    def _extra(self) -> dict[str, object]:
        return {"service": self.name}

    def _once(self, topic: str, level: int, message: str, *args: object) -> None:
        self.health.once(log, topic, level, message, *args, extra=self._extra())

    def use(self, lb: LoadBalancer) -> None:
        self.info = lb
        self.api = self._lb_factory(lb)

    def wait(self, timeout_seconds: float) -> None:
        """At set-up only: until a new load balancer's runtime API answers."""
        assert self.api is not None
        deadline = self._clock() + timeout_seconds
        while True:
            try:
                self.api.servers()
                return
            except HAProxyError:
                if self._clock() > deadline:
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
            except HAProxyError as exc:
                error = str(exc)
            else:
                if self.health.lb_down_since is not None:
                    log.warning("load balancer answering again after %.0fs",
                                self._wall_clock() - self.health.lb_down_since, extra=self._extra())
                    self.health.lb_down_since = None
                    for topic in ("lb-repair", "lb-error"):
                        self.health.notes.pop(topic, None)
                self.backoff = bo.maybe_reset(bo.after_ready(self.backoff, now, now), now, config.backoff_max_seconds)
                self._telemetry.lb_up.labels(self.name).set(1)
                return backend_stat, servers, False
        else:
            error = "no load balancer yet"
        if self.health.lb_down_since is None:
            self.health.lb_down_since = self._wall_clock()
        self.health.lb_error = error
        self._telemetry.lb_up.labels(self.name).set(0)
        renewed = False if self.dry_run else self._repair(config, spec, now, error)
        return None, None, renewed

    def _repair(self, config: ServiceConfig, spec: LoadBalancerSpec, now: float, error: str) -> bool:
        try:
            container = self._backend.load_balancer_container(self.name)
            if container is not None and container.state in ("removing", "dead"):
                self._once("lb-repair", logging.INFO, "load balancer %s is being removed: waiting", container.name)
                return False
            if container is not None and container.state == "running":
                started = container.started_at_seconds or 0.0
                if self._wall_clock() - started < LB_STARTUP_GRACE_SECONDS:
                    self._once("lb-repair", logging.INFO, "load balancer %s is starting", container.name)
                    if self.info is None or self.info.id != container.id:
                        self.use(self._backend.load_balancer_info(self.name, container.id))
                    return False
            if now < self.backoff.retry_at:
                return False
            if container is None:
                self._once("lb-repair", logging.WARNING, "load balancer missing (%s): creating it", error)
                container_id = self._backend.create_load_balancer(spec)
            elif container.state == "running":
                self._once("lb-repair", logging.WARNING,
                           "load balancer %s runs but its API has not answered for %.0fs (%s): replacing it",
                           container.name, LB_STARTUP_GRACE_SECONDS, error)
                self._backend.remove_load_balancer(self.name, container.id)
                container_id = self._backend.create_load_balancer(spec)
            elif container.state == "restarting":
                report = self._backend.exit_report(self.name, container.id)
                self._once("lb-repair", logging.WARNING, "load balancer %s keeps restarting (%s)",
                           container.name, report.describe())
                self.backoff = bo.after_failure(self.backoff, now, report.describe(),
                                                    config.backoff_initial_seconds, config.backoff_max_seconds)
                self._telemetry.lb_restarts.labels(self.name).inc()
                return False
            else:
                report = self._backend.exit_report(self.name, container.id)
                self._once("lb-repair", logging.WARNING, "load balancer %s is %s (%s): starting it",
                           container.name, container.state, report.describe())
                self._backend.start_load_balancer(self.name, container.id)
                container_id = container.id
            self.backoff = bo.after_failure(self.backoff, now, error,
                                                config.backoff_initial_seconds, config.backoff_max_seconds)
            self._telemetry.lb_restarts.labels(self.name).inc()
            self.use(self._backend.load_balancer_info(self.name, container_id))
            return True
        except BackendError as exc:
            if exc.unreachable:
                return False  # the engine's trouble, not the load balancer's: no backoff
            self.backoff = bo.after_failure(self.backoff, now, str(exc),
                                                config.backoff_initial_seconds, config.backoff_max_seconds)
            self._once("lb-error", logging.ERROR, "cannot bring the load balancer back: %s (next try in %.0fs)",
                       exc, bo.seconds_until_retry(self.backoff, now))
            return False
