"""Wiring: settings -> backend, load balancers, controllers, scheduler, metrics endpoint.

Daemon.serve() = startup -> main loop (wait for signals) -> shutdown, as uvicorn's Server does.
Signals only set flags; the main thread acts on them. A second SIGINT/SIGTERM forces exit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler

from autoscaler import __version__
from autoscaler.config import ConfigError, Settings, load_config
from autoscaler.docker.backend import BackendError, DockerBackend, LoadBalancer
from autoscaler.engine.controller import LoadBalancerAPI, ServiceController
from autoscaler.lb.haproxy import HAProxyError, HAProxyRuntime
from autoscaler.telemetry import MetricsServer, Telemetry, json_route

log = logging.getLogger("autoscaler.daemon")


class StartupError(Exception):
    """The daemon cannot start; the message says what to do. Nothing was left half-made."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # 2 when the config names something that does not exist


class Daemon:
    def __init__(
        self,
        settings: Settings,
        config_path: str | os.PathLike[str] | None = None,
        dry_run: bool = False,
        telemetry: Telemetry | None = None,
        backend_factory: Callable[[Telemetry], DockerBackend] | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = Path(config_path) if config_path else None
        self.dry_run = dry_run or settings.daemon.dry_run
        self.telemetry = telemetry or Telemetry()
        access = settings.daemon.load_balancer_access
        self._backend_factory = backend_factory or (lambda t: DockerBackend.from_env(observer=t, access=access))
        self.backend: DockerBackend | None = None
        self.controllers: dict[str, ServiceController] = {}
        self.scheduler: BackgroundScheduler | None = None
        self.metrics_server: MetricsServer | None = None
        self.should_exit = threading.Event()
        self.reload_requested = threading.Event()

    # --- startup --------------------------------------------------------------------------

    def startup(self) -> None:
        try:
            self.backend = self._backend_factory(self.telemetry)
        except BackendError as exc:
            raise StartupError(str(exc)) from exc
        images = [s.image for s in self.settings.services.values()] + [
            s.load_balancer.image for s in self.settings.services.values()
        ]
        try:
            missing = self.backend.missing_images(images)
        except BackendError as exc:
            raise StartupError(str(exc)) from exc
        if missing:
            raise StartupError(
                f"image(s) not found on the Docker engine: {', '.join(missing)}; "
                "build them with deploy/build-images.sh (or fix the image names in the config)",
                exit_code=2,
            )
        host, port = self.settings.daemon.metrics_host_port
        try:
            self.metrics_server = MetricsServer(
                self.telemetry, host, port,
                routes={
                    "/status": json_route(self.status),
                    "/readyz": self.readiness,
                    "/sd/load-balancers": json_route(self.load_balancer_targets),
                },
            )
        except OSError as exc:
            raise StartupError(f"daemon.metrics_listen {host}:{port}: cannot listen ({exc})") from exc
        for name, service in self.settings.services.items():
            controller = self._make_controller(name)
            try:
                controller.setup()
            except (BackendError, HAProxyError) as exc:
                raise StartupError(f"service {name!r}: {exc}") from exc
            self.controllers[name] = controller
        self.metrics_server.start()
        self.scheduler = BackgroundScheduler(
            executors={"default": SchedulerPool(max(4, len(self.controllers)))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        for name in self.controllers:
            self._schedule(name)
        self.scheduler.start()
        log.info(
            "autoscaler %s running: %d service(s), every %gs, metrics on http://%s:%d/metrics%s",
            __version__, len(self.controllers), self.settings.daemon.interval_seconds, host,
            self.metrics_server.port, " (dry run: nothing will be changed)" if self.dry_run else "",
        )

    def _make_controller(self, name: str) -> ServiceController:
        assert self.backend is not None
        telemetry = self.telemetry

        def lb_factory(lb: LoadBalancer) -> LoadBalancerAPI:
            return HAProxyRuntime(lb.admin_host, lb.admin_port, observer=telemetry)

        return ServiceController(
            name,
            self.settings.services[name],
            self.settings.network_for(name),
            self.backend,
            lb_factory,
            self.telemetry,
            dry_run=self.dry_run,
        )

    def _schedule(self, name: str) -> None:
        assert self.scheduler is not None
        self.scheduler.add_job(
            self._cycle, "interval", args=[name], id=name, name=f"evaluate {name}",
            seconds=self.settings.daemon.interval_seconds, next_run_time=_now(),
            replace_existing=True,
        )

    def _cycle(self, name: str) -> None:
        controller = self.controllers.get(name)
        if controller is None or self.should_exit.is_set():
            return
        try:
            controller.run_cycle()
        except Exception:
            # The loop boundary: one bad cycle is logged and counted, the next one runs.
            self.telemetry.loop_errors.labels(name).inc()
            log.exception("cycle failed", extra={"service": name})

    # --- reload ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-reads the config. A bad one is rejected with validate's messages; nothing changes."""
        if self.config_path is None:
            log.warning("reload requested but the daemon has no config file")
            return False
        try:
            settings = load_config(self.config_path)
        except ConfigError as exc:
            for line in exc.messages:
                log.error("config reload rejected: %s", line)
            log.error("keeping the config in force")
            self.telemetry.record_reload(False)
            return False
        if set(settings.services) != set(self.settings.services) or any(
            settings.network_for(n) != self.settings.network_for(n)
            or settings.services[n].load_balancer != self.settings.services[n].load_balancer
            for n in settings.services
        ):
            log.error(
                "config reload rejected: adding or removing services, or changing a network or "
                "load balancer, needs a restart; keeping the config in force"
            )
            self.telemetry.record_reload(False)
            return False
        self.settings = settings
        for name, controller in self.controllers.items():
            controller.update_config(settings.services[name])
        if self.scheduler is not None:
            for name in self.controllers:
                self.scheduler.reschedule_job(
                    name, trigger="interval", seconds=settings.daemon.interval_seconds
                )
        log.info("config reloaded from %s", self.config_path)
        self.telemetry.record_reload(True)
        return True

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The document behind /status and `autoscaler status`."""
        now = time.time()
        services: dict[str, Any] = {}
        for name, controller in self.controllers.items():
            services[name] = service_status(controller, now, self.settings.daemon.interval_seconds)
        return {
            "version": __version__,
            "dry_run": self.dry_run,
            "interval_seconds": self.settings.daemon.interval_seconds,
            "generated_at": now,
            "services": services,
        }

    def readiness(self) -> tuple[int, str, bytes]:
        """/readyz: 200 when every service was evaluated recently and Docker answers."""
        problems = []
        # A cycle may take a drain or a health wait; three intervals plus a margin is "recent".
        stale_after = 3 * self.settings.daemon.interval_seconds + 30
        now = time.time()
        for name, controller in self.controllers.items():
            at = controller.last_decision_at
            if at is None:
                problems.append(f"{name}: not evaluated yet")
            elif now - at > stale_after:
                problems.append(f"{name}: last evaluation {now - at:.0f}s ago")
        if self.backend is None or not self.backend.ping():
            problems.append("docker: engine not reachable")
        if problems:
            return 503, "text/plain; charset=utf-8", ("not ready\n" + "\n".join(problems) + "\n").encode()
        return 200, "text/plain; charset=utf-8", b"ready\n"

    def load_balancer_targets(self) -> list[dict[str, Any]]:
        """Prometheus HTTP service discovery: every load balancer's built-in exporter."""
        targets = []
        for name, controller in self.controllers.items():
            lb = controller.load_balancer
            if lb is not None:
                targets.append(
                    {"targets": [f"{lb.metrics_host}:{lb.metrics_port}"], "labels": {"service": name, "load_balancer": lb.name}}
                )
        return targets

    # --- main loop and shutdown -----------------------------------------------------------

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        if self.should_exit.is_set() and signum == signal.SIGINT:
            os._exit(1)  # a second Ctrl-C: the user does not want to wait for the step to end
        self.should_exit.set()

    def handle_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested.set()

    def main_loop(self) -> None:
        while not self.should_exit.is_set():
            self.should_exit.wait(0.2)
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()

    def shutdown(self) -> None:
        if self.scheduler is not None:
            log.info("stopping: finishing the step in progress (replicas and load balancers keep serving)")
        if self.scheduler is not None and self.scheduler.running:
            # wait=True: a scale-out or drain in progress runs to completion.
            self.scheduler.shutdown(wait=True)
        for controller in self.controllers.values():
            controller.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.backend is not None:
            self.backend.close()
        if self.scheduler is not None:
            log.info("stopped")

    def serve(self) -> None:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        previous_hup = signal.signal(signal.SIGHUP, self.handle_reload)
        try:
            self.startup()
            self.main_loop()
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGHUP, previous_hup)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def service_status(controller: ServiceController, now: float, interval_seconds: float) -> dict[str, Any]:
    decision = controller.last_decision
    observation = controller.last_observation
    snapshot = controller.last_snapshot
    bounds = controller.bounds()
    policy = controller.config.policy
    counts = observation.counts() if observation else {}
    utilization: dict[str, Any] = {}
    if decision is not None:
        for proposal in decision.proposals:
            utilization[str(proposal.metric)] = {
                "value": proposal.utilization,
                "target": None if proposal.target != proposal.target else proposal.target,  # NaN: step
                "proposal": proposal.proposal,
            }
    warnings = []
    failures = controller.consecutive_failures
    if failures:
        warnings.append(f"metrics failed {failures} cycle(s) in a row")
    if decision is not None and decision.desired >= bounds.max_replicas and (decision.recommendation or 0) > bounds.max_replicas:
        warnings.append(f"pinned at max_replicas {bounds.max_replicas} (the policy wants {decision.recommendation})")
    age = None if controller.last_decision_at is None else now - controller.last_decision_at
    if age is not None and age > 3 * interval_seconds + 30:
        warnings.append(f"last evaluation {age:.0f}s ago")
    lb = controller.load_balancer
    return {
        "replicas": {state: counts.get(state, 0) for state in ("ready", "starting", "draining")},
        "desired_replicas": None if decision is None else decision.desired,
        "min_replicas": bounds.min_replicas,
        "max_replicas": bounds.max_replicas,
        "bounds_source": bounds.source,
        "targets": {
            "cpu_percent": policy.target_cpu_percent,
            "memory_percent": policy.target_memory_percent,
            "requests_per_second_per_replica": policy.target_requests_per_second_per_replica,
            "response_time_ms": policy.target_response_time_ms,
        },
        "utilization": utilization,
        "queue_current": None if snapshot is None else snapshot.queue_current,
        "consecutive_metric_failures": failures,
        "last_decision": None if decision is None else {
            "current": decision.current,
            "desired": decision.desired,
            "reason": decision.reason,
            "message": decision.message,
            "at": controller.last_decision_at,
            "age_seconds": age,
        },
        "load_balancer": None if lb is None else {
            "name": lb.name, "publish": lb.publish, "metrics": f"{lb.metrics_host}:{lb.metrics_port}",
        },
        "warnings": warnings,
    }
