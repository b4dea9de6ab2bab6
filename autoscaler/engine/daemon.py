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

from apscheduler.jobstores.base import JobLookupError
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler

from autoscaler import __version__
from autoscaler.config import ConfigError, Settings, load_config
from autoscaler.docker.backend import DockerBackend
from autoscaler.docker.lease import Lease
from autoscaler.engine import backoff as bo
from autoscaler.engine import wiring
from autoscaler.engine.controller import PROGRESS_SECONDS, ServiceController, TargetFactory
from autoscaler.engine.operations import Operations
from autoscaler.engine.ports import (
    BackendError,
    LoadBalancer,
    LoadBalancerAPI,
    LoadBalancerHost,
    MembershipError,
    MetricsSource,
    Networks,
    Unusable,
)
from autoscaler.engine.reload import changes as reload_changes
from autoscaler.engine.reload import describe, restart_reason
from autoscaler.lb.haproxy import HAProxyRuntime
from autoscaler.logs import setup_logging
from autoscaler.swarm.backend import SwarmBackend
from autoscaler.telemetry import MetricsServer, Telemetry, json_route

log = logging.getLogger("autoscaler.daemon")


class StartupError(Exception):
    """The daemon cannot start; the message says what to do. Nothing was left half-made."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # 2 when the config names something that does not exist


class ProgressLoop:
    """Runs one service's progress step every PROGRESS_SECONDS, or at once when woken (a start
    finished). Its own thread rather than a scheduler job: a step that takes longer (200
    replicas registered at once) simply delays the next one instead of being "skipped"."""

    def __init__(self, name: str, step: Callable[[str], None], stop: threading.Event) -> None:
        self._name = name
        self._step = step
        self._stop = stop
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._woken.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._woken.wait(PROGRESS_SECONDS)
            self._woken.clear()
            self._step(self._name)


class _SkippedRunFilter(logging.Filter):
    """APScheduler warns at every interval a pass is still running; OverrunLog says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in str(record.msg)


class OverrunLog:
    """One line when a service's passes start overrunning their interval (the next ones are
    skipped), one when a pass fits its interval again, with how long the episode lasted and how
    many passes were skipped: not one line per skipped interval. Passes that each hang on a
    frozen engine are one episode."""

    def __init__(self, interval_seconds: Callable[[], float], clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_seconds = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}  # job id -> when its current pass began
        self._overran: dict[str, bool] = {}  # job id -> its current pass had a run skipped
        self._episodes: dict[str, tuple[float, int]] = {}  # job id -> (episode start, runs skipped)

    def submitted(self, event: JobSubmissionEvent) -> None:
        with self._lock:
            self._started[event.job_id] = self._clock()
            self._overran[event.job_id] = False

    def skipped(self, event: JobSubmissionEvent) -> None:
        job = event.job_id
        with self._lock:
            self._overran[job] = True
            began, count = self._episodes.get(job, (self._started.get(job, self._clock()), 0))
            self._episodes[job] = (began, count + 1)
        if count == 0:
            log.warning("the pass is still running after %.0fs (interval %gs): skipping passes until one fits",
                        self._clock() - began, self._interval_seconds(), extra={"service": job})

    def finished(self, event: JobExecutionEvent) -> None:
        job = event.job_id
        with self._lock:
            if job not in self._episodes or self._overran.get(job, False):
                return
            began, count = self._episodes.pop(job)
        log.warning("passes fit their interval again after %.0fs of overrunning; %d pass(es) skipped",
                    self._clock() - began, count, extra={"service": job})

    def attach(self, scheduler: BackgroundScheduler) -> None:
        logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRunFilter())
        scheduler.add_listener(self.submitted, EVENT_JOB_SUBMITTED)
        scheduler.add_listener(self.skipped, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_listener(self.finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)


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
        daemon = settings.daemon
        self._backend_factory = backend_factory or (
            lambda t: DockerBackend.from_env(
                observer=t, access=daemon.load_balancer_access, admin_socket_dir=daemon.admin_socket_dir
            )
        )
        self.backend: DockerBackend | None = None
        self.swarm: SwarmBackend | None = None  # for services with backend = "swarm"
        self.controllers: dict[str, ServiceController] = {}
        self.scheduler: BackgroundScheduler | None = None
        self.metrics_server: MetricsServer | None = None
        self.should_exit = threading.Event()
        self.reload_requested = threading.Event()
        self.progress_loops: dict[str, ProgressLoop] = {}

    # --- startup --------------------------------------------------------------------------

    def startup(self) -> None:
        try:
            self.backend = self._backend_factory(self.telemetry)
        except BackendError as exc:
            raise StartupError(str(exc)) from exc
        self._check_engine(self.backend)
        self._check_swarm(self.backend)
        host, port = self.settings.daemon.metrics_host_port
        self.metrics_server = self._metrics_server(host, port)
        created: list[tuple[ServiceController, list[str]]] = []
        try:
            for name in self.settings.services:
                if self.should_exit.is_set():
                    raise StartupError("stopped during start-up", exit_code=0)
                controller = self._make_controller(name)
                self.controllers[name] = controller
                try:
                    if controller.acquire_lease() is not None:
                        continue  # standing by: a pass takes the lease and sets up when it is free
                    created.append((controller, controller.setup()))
                except (BackendError, MembershipError) as exc:
                    raise StartupError(f"service {name!r}: {exc}", exit_code=2 if isinstance(exc, Unusable) else 1) from exc
        except StartupError:
            # Leave nothing half-made: what this start created goes again, leases are released.
            for controller, made in reversed(created):
                controller.remove_created(made)
            for controller in self.controllers.values():
                controller.close(0)
            self.controllers.clear()
            raise
        self.metrics_server.start()
        self.scheduler = BackgroundScheduler(
            executors={"default": SchedulerPool(max(4, len(self.controllers)))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        OverrunLog(lambda: self.settings.daemon.interval_seconds).attach(self.scheduler)
        for name in self.controllers:
            self._schedule(name)
            self.progress_loops[name] = ProgressLoop(name, self._progress, self.should_exit)
        self.scheduler.start()
        for loop in self.progress_loops.values():
            loop.start()
        log.info(
            "autoscaler %s running: %d service(s), every %gs, metrics on http://%s:%d/metrics%s",
            __version__, len(self.controllers), self.settings.daemon.interval_seconds, host,
            self.metrics_server.port, " (dry run: nothing will be changed)" if self.dry_run else "",
        )

    def _check_engine(self, backend: DockerBackend) -> None:
        """Refuses what the engine cannot run before anything is created (exit 2, key named)."""
        services = self.settings.services
        try:
            cpus, memory_bytes = backend.engine.capacity()
            absent = backend.engine.missing_images(
                [s.image for s in services.values() if s.image is not None] + [s.lease_image for s in services.values()]
            )
        except BackendError as exc:
            raise StartupError(str(exc)) from exc
        # An image the service may pull is fetched by its first start (a failed pull is a failed
        # start, backed off); only what nothing pulls must be here now: a service's image with
        # pull = "never" (or on a Swarm, whose manager creates the service from it) and the load
        # balancers' images.
        required = {s.image for s in services.values() if s.backend == "swarm" or s.pull == "never"}
        required |= {s.lease_image for s in services.values()}
        missing = [image for image in absent if image in required]
        for image in absent:
            if image not in required:
                log.info("image %s is not on the Docker engine: the first replica pulls it", image)
        problems = []
        for name, service in services.items():
            if service.backend == "swarm":
                continue  # its tasks run on other nodes, with their own CPUs and memory
            if cpus and service.cpu_limit > cpus:
                problems.append(f"services.{name}.cpu_limit: {service.cpu_limit:g} cores, but the Docker engine has {cpus} CPUs")
            if memory_bytes and service.memory_limit > memory_bytes:
                problems.append(
                    f"services.{name}.memory_limit: {service.memory_limit} bytes, but the Docker engine has {memory_bytes}"
                )
        if missing:
            never = list(dict.fromkeys(s.image for s in services.values() if s.image in missing and s.pull == "never"))
            problems.append(
                f"image(s) not found on the Docker engine: {', '.join(missing)}; "
                "build them with deploy/build-images.sh (or fix the image names in the config)"
                + (f'; or let the daemon pull {", ".join(never)}: pull = "missing"' if never else "")
            )
        if problems:
            raise StartupError("; ".join(problems), exit_code=2)

    def _check_swarm(self, backend: DockerBackend) -> None:
        """A swarm service needs a swarm manager: refused in one sentence otherwise (exit 2)."""
        swarm_services = {n: s for n, s in self.settings.services.items() if s.backend == "swarm"}
        if not swarm_services:
            return
        daemon = self.settings.daemon
        self.swarm = SwarmBackend(backend.engine, backend.admin, observer=self.telemetry,
                                  agent_port=daemon.swarm_agent_port, agent_image=daemon.swarm_agent_image,
                                  on_agent=self.telemetry.record_agent)
        try:
            self.swarm.check_manager()
        except BackendError as exc:
            raise StartupError(str(exc).removeprefix("docker swarm: "), exit_code=2) from exc
        for name, service in swarm_services.items():
            self.swarm.register(name, service.swarm_service, service.effective_metrics_source, service.prometheus)

    def _metrics_server(self, host: str, port: int) -> MetricsServer:
        try:
            return MetricsServer(
                self.telemetry, host, port,
                routes={
                    "/status": json_route(self.status),
                    "/readyz": self.readiness,
                    "/sd/load-balancers": json_route(self.load_balancer_targets),
                },
            )
        except OSError as exc:
            raise StartupError(f"daemon.metrics_listen {host}:{port}: cannot listen ({exc})") from exc

    def _make_controller(self, name: str) -> ServiceController:
        """The one place that chooses each service's parts: its scale target, its load balancer's
        host, its metrics source and network, from the service's `backend`."""
        assert self.backend is not None
        telemetry = self.telemetry
        service = self.settings.services[name]
        docker = self.backend
        # A finished start is registered right away, not at the next progress step.
        operations = Operations(name, notify=lambda: self._wake_progress(name))
        target: TargetFactory
        host: LoadBalancerHost
        metrics: MetricsSource
        networks: Networks
        if service.backend == "swarm":
            assert self.swarm is not None
            swarm = self.swarm
            target = wiring.orchestrated(swarm.services)
            host, metrics, networks = swarm.load_balancers, swarm.metrics, swarm.networks
        else:
            target = wiring.containers(docker.containers, operations)
            host, metrics, networks = docker.load_balancers, docker.metrics, docker.networks

        def lb_factory(lb: LoadBalancer) -> LoadBalancerAPI:
            return HAProxyRuntime(lb.admin_socket, observer=telemetry)

        lease = None
        if not self.dry_run:
            # The lease container runs a shell loop in the load balancer's image, which must exist anyway.
            daemon = self.settings.daemon
            lease = Lease(docker.client, name, service.lease_image, observer=telemetry,
                          duration_seconds=daemon.lease_duration_seconds,
                          renew_deadline_seconds=daemon.lease_renew_deadline_seconds,
                          retry_period_seconds=daemon.lease_retry_period_seconds)
        return ServiceController(
            name, service, self.settings.network_for(name),
            target=target,
            # A worker has no load balancer: the controller's default gate (DirectGate).
            gate=wiring.load_balancer(host, lb_factory) if service.load_balancer is not None else None,
            metrics=metrics, networks=networks, telemetry=telemetry,
            dry_run=self.dry_run, lease=lease, operations=operations, external=wiring.external_source,
            request_pass=lambda: self._pass_now(name),
        )

    def _pass_now(self, name: str) -> None:
        """The service's next pass now (its interval then counts from there)."""
        scheduler = self.scheduler
        if scheduler is not None and scheduler.running:
            try:
                scheduler.modify_job(name, next_run_time=_now())
            except JobLookupError:
                pass  # shutting down: the job is gone

    def _wake_progress(self, name: str) -> None:
        loop = self.progress_loops.get(name)
        if loop is not None:
            loop.wake()

    def _schedule(self, name: str) -> None:
        assert self.scheduler is not None
        self.scheduler.add_job(
            self._cycle, "interval", args=[name], id=name, name=f"evaluate {name}",
            seconds=self.settings.daemon.interval_seconds, next_run_time=_now(),
            replace_existing=True,
        )

    def _cycle(self, name: str) -> None:
        self._run(name, "cycle", ServiceController.run_cycle)

    def _progress(self, name: str) -> None:
        self._run(name, "progress step", ServiceController.progress)

    def _run(self, name: str, what: str, step: Callable[[ServiceController], object]) -> None:
        controller = self.controllers.get(name)
        if controller is None or self.should_exit.is_set():
            return
        try:
            step(controller)
        except Exception:
            # The loop boundary: one bad pass is logged and counted, the next one runs.
            self.telemetry.loop_errors.labels(name).inc()
            log.exception("%s failed", what, extra={"service": name})

    # --- reload ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-reads the config and applies every changed key, or refuses the whole reload
        naming each key that needs a restart. A bad file is rejected with validate's messages."""
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
        changed = reload_changes(self.settings, settings)
        blocked = [(key, why) for key, _, _ in changed if (why := restart_reason(key)) is not None]
        if blocked:
            for key, why in blocked:
                log.error("config reload rejected: %s changed, which needs a restart (%s)", key, why)
            log.error("keeping the config in force: nothing was applied")
            self.telemetry.record_reload(False)
            return False
        old = self.settings.daemon
        new = settings.daemon
        if new.metrics_listen != old.metrics_listen and self.metrics_server is not None:
            host, port = new.metrics_host_port
            try:
                server = self._metrics_server(host, port)
            except StartupError as exc:
                log.error("config reload rejected: %s; keeping the config in force", exc)
                self.telemetry.record_reload(False)
                return False
            self.metrics_server.stop()
            self.metrics_server = server
            server.start()
        if (new.log_format, new.log_level) != (old.log_format, old.log_level):
            setup_logging(new.log_format, new.log_level)
        self.settings = settings
        # Templates are read again (a container the user recreated): all of them first, so that
        # a template that is gone refuses the whole reload and the config in force stays.
        templates = {}
        for name, controller in self.controllers.items():
            try:
                templates[name] = controller.target.resolve_template(settings.services[name])
            except BackendError as exc:
                log.error("config reload rejected: services.%s.template: %s; keeping the config in force", name, exc)
                self.telemetry.record_reload(False)
                return False
        for name, controller in self.controllers.items():
            controller.update_config(settings.services[name], templates[name])
        if self.scheduler is not None and new.interval_seconds != old.interval_seconds:
            for name in self.controllers:
                self.scheduler.reschedule_job(name, trigger="interval", seconds=new.interval_seconds)
        applied = ", ".join(f"{key} {describe(a)} -> {describe(b)}" for key, a, b in changed) or "nothing changed"
        log.info("config reloaded from %s: %s", self.config_path, applied)
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
        stale_after = stale_after_seconds(self.settings.daemon.interval_seconds)
        now = time.time()
        for name, controller in self.controllers.items():
            health = getattr(controller, "health", None)
            if health is not None and health.standby_holder is not None:
                problems.append(f"{name}: standing by (the service is held by {health.standby_holder})")
                continue
            if health is not None and health.lb_down_since is not None:
                problems.append(f"{name}: load balancer not answering for {now - health.lb_down_since:.0f}s")
            at = controller.last_decision_at
            if at is None:
                problems.append(f"{name}: not evaluated yet")
            elif now - at > stale_after:
                problems.append(f"{name}: last evaluation {now - at:.0f}s ago")
        if self.backend is None or not self.backend.engine.ping():
            problems.append("docker: engine not reachable")
        if problems:
            return 503, "text/plain; charset=utf-8", ("not ready\n" + "\n".join(problems) + "\n").encode()
        return 200, "text/plain; charset=utf-8", b"ready\n"

    def load_balancer_targets(self) -> list[dict[str, Any]]:
        """Prometheus HTTP service discovery: every load balancer's built-in exporter."""
        targets = []
        for name, controller in self.controllers.items():
            lb = controller.load_balancer
            if lb is not None and lb.metrics_port:
                targets.append(
                    {"targets": [f"{lb.metrics_host}:{lb.metrics_port}"], "labels": {"service": name, "load_balancer": lb.name}}
                )
        return targets

    # --- main loop and shutdown -----------------------------------------------------------

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        if self.should_exit.is_set():
            os._exit(1)  # asked twice: the user does not want to wait for the step to end
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
        """Stops taking new steps, gives the ones in progress shutdown_timeout_seconds, then
        abandons the rest (a restarted daemon adopts what they left) and releases the leases."""
        timeout = self.settings.daemon.shutdown_timeout_seconds
        deadline = time.monotonic() + timeout
        if self.scheduler is not None:
            log.info("stopping: finishing the steps in progress for up to %gs "
                     "(replicas and load balancers keep serving)", timeout)
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
        for controller in self.controllers.values():
            abandoned = controller.close(max(0.0, deadline - time.monotonic()))
            if abandoned:
                log.warning("shutdown timeout: abandoned %s (the next daemon adopts what they leave)",
                            ", ".join(abandoned), extra={"service": controller.name})
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
            try:
                self.startup()
            except StartupError as exc:
                if exc.exit_code == 0:
                    return
                raise
            self.main_loop()
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGHUP, previous_hup)


def stale_after_seconds(interval_seconds: float) -> float:
    # A pass never waits on a health check or a drain; three intervals and a margin is "stale".
    return 3 * interval_seconds + 10


def _now() -> datetime:
    return datetime.now(timezone.utc)


def service_status(controller: ServiceController, now: float, interval_seconds: float) -> dict[str, Any]:
    decision = controller.last_decision
    snapshot = controller.last_snapshot
    bounds = controller.bounds()
    policy = controller.config.policy
    health = controller.health
    counts = controller.replica_counts
    utilization: dict[str, Any] = {}
    if decision is not None:
        for proposal in decision.proposals:
            utilization[str(proposal.metric)] = {
                "value": proposal.utilization,
                "target": None if proposal.target != proposal.target else proposal.target,  # NaN: step
                "proposal": proposal.proposal,
                "reason": proposal.reason,
            }
    warnings = []
    if health.standby_holder is not None:
        warnings.append(f"standing by: the service is held by {health.standby_holder}")
    if health.engine_down_since is not None:
        warnings.append(f"Docker engine not reachable for {now - health.engine_down_since:.0f}s ({health.engine_error})")
    if health.lb_down_since is not None:
        warnings.append(f"load balancer not answering for {now - health.lb_down_since:.0f}s ({health.lb_error})")
    backoff = controller.start_backoff
    monotonic_now = time.monotonic()
    if backoff.active:
        warnings.append(
            f"start backoff: {backoff.failures} failure(s) in a row, next start in "
            f"{bo.seconds_until_retry(backoff, monotonic_now):.0f}s ({backoff.reason})"
        )
    failures = controller.consecutive_failures
    if failures:
        warnings.append(f"metrics failed {failures} cycle(s) in a row")
    for node, error in controller.source_errors().items():
        warnings.append(f"agent on node {node} not answering ({error}): its tasks have no readings")
    if decision is not None and decision.desired >= bounds.max_replicas and (decision.recommendation or 0) > bounds.max_replicas:
        warnings.append(f"pinned at max_replicas {bounds.max_replicas} (the policy wants {decision.recommendation})")
    age = None if controller.last_decision_at is None else now - controller.last_decision_at
    if age is not None and age > stale_after_seconds(interval_seconds):
        warnings.append(f"last evaluation {age:.0f}s ago")
    lb = controller.load_balancer
    # The external metrics as configured now, each with the last reading of its source (value,
    # or None and the source's own sentence); a metric added by a reload has no reading yet.
    readings = {reading.name: reading for reading in controller.external.last}
    external_metrics = []
    for metric in policy.metrics:
        reading = readings.get(metric.name)
        external_metrics.append({
            "name": metric.name,
            "source": metric.describe_source(),
            "kind": "average" if metric.per_replica else "value",
            "target": metric.target,
            "activation": metric.activation,
            "value": None if reading is None else reading.value,
            "error": None if reading is None else reading.error,
        })
    return {
        "state": "standby" if health.standby_holder is not None else (
            "engine_unreachable" if health.engine_down_since is not None else "active"),
        # A worker has no load balancer: "load_balancer" is null, its replicas take work from a queue.
        "worker": controller.config.is_worker,
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
        "external_metrics": external_metrics,
        "queue_current": None if snapshot is None else snapshot.queue_current,
        "consecutive_metric_failures": failures,
        "stats_source": health.stats_source,
        "start_backoff": {
            "failures": backoff.failures,
            "retry_in_seconds": bo.seconds_until_retry(backoff, monotonic_now),
            "reason": backoff.reason or None,
        },
        "last_failure": None if health.last_failure_at is None else {
            "message": health.last_failure, "at": health.last_failure_at,
        },
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
            "up": health.lb_down_since is None,
        },
        "versions": dict(controller.replica_versions),
        "rollout": _rollout_status(controller),
        "warnings": warnings,
    }


def _rollout_status(controller: ServiceController) -> dict[str, Any] | None:
    """The version new replicas are made from and, during a rolling update, what it replaces."""
    rollout = controller.state.rollout
    if rollout is None:
        return None
    return {
        "version": rollout.spec.version,
        "in_progress": rollout.in_progress,
        "replacing": None if rollout.previous is None else rollout.previous.version,
        "failures": rollout.failures,
        "rolled_back": sorted(rollout.rolled_back),
    }
