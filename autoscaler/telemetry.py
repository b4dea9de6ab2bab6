"""Prometheus metrics on an injected registry, and the HTTP endpoint that serves them.

The control loop reports through `Telemetry`; tests pass a fresh CollectorRegistry and read
values back with registry.get_sample_value().
"""

from __future__ import annotations

import contextlib
import json
import platform
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from autoscaler import __version__
from autoscaler.config import PolicyConfig
from autoscaler.model import Bounds, Decision, Metric, ServiceSnapshot
from autoscaler.policy.target import pooled_value

REPLICA_STATES = ("ready", "starting", "draining")
STATS_SOURCES = ("cgroup", "docker_api", "mixed")
NAN = float("nan")


def _or_nan(value: float | None) -> float:
    # NaN, not 0: a missing reading must not look like an idle service on a dashboard.
    return NAN if value is None else value


class Telemetry:
    """Every metric the daemon exports. Names use base units and Prometheus suffixes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        s = ["service"]
        # --- per service -------------------------------------------------------------------
        self.replicas = Gauge("autoscaler_replicas", "Replicas by state (ready, starting, draining).", ["service", "state"], registry=r)
        self.desired_replicas = Gauge("autoscaler_desired_replicas", "Replicas the last decision asked for.", s, registry=r)
        self.min_replicas = Gauge("autoscaler_min_replicas", "Lower bound in force (after schedules).", s, registry=r)
        self.max_replicas = Gauge("autoscaler_max_replicas", "Upper bound in force (after schedules).", s, registry=r)
        self.service_cpu_percent = Gauge(
            "autoscaler_service_cpu_percent", "Mean CPU use of the ready replicas, percent of each replica's CPU limit.", s, registry=r
        )
        self.service_memory_percent = Gauge(
            "autoscaler_service_memory_percent", "Mean memory use of the ready replicas, percent of each replica's memory limit.", s, registry=r
        )
        self.target_cpu_percent = Gauge("autoscaler_target_cpu_percent", "CPU target, percent of the CPU limit.", s, registry=r)
        self.target_memory_percent = Gauge("autoscaler_target_memory_percent", "Memory target, percent of the memory limit.", s, registry=r)
        self.target_requests = Gauge(
            "autoscaler_target_requests_per_second_per_replica", "Request-rate target per replica.", s, registry=r
        )
        self.target_response_time = Gauge("autoscaler_target_response_time_seconds", "Response-time target.", s, registry=r)
        self.metric_proposal = Gauge(
            "autoscaler_metric_proposal_replicas", "Replicas each metric asked for in the last evaluation.", ["service", "metric"], registry=r
        )
        self.lb_requests = Gauge(
            "autoscaler_lb_requests_per_second", "Requests per second through the load balancer (all replicas).", s, registry=r
        )
        self.lb_queue = Gauge("autoscaler_lb_queued_requests", "Requests waiting in the load balancer's queue.", s, registry=r)
        self.lb_response_time = Gauge(
            "autoscaler_lb_response_time_seconds", "Mean response time of the last 1024 requests (HAProxy rtime).", s, registry=r
        )
        self.scale_events = Counter(
            "autoscaler_scale_events", "Scale actions taken.", ["service", "direction", "reason"], registry=r
        )
        self.last_scale = Gauge(
            "autoscaler_last_scale_timestamp_seconds", "Unix time of the last scale action, by direction and reason.",
            ["service", "direction", "reason"], registry=r,
        )
        self.last_evaluation = Gauge(
            "autoscaler_last_evaluation_timestamp_seconds", "Unix time of the last successful evaluation.", s, registry=r
        )
        self.since_evaluation = Gauge(
            "autoscaler_seconds_since_last_evaluation", "Seconds since the last successful evaluation (at scrape time).", s, registry=r
        )
        self.metric_failures = Gauge(
            "autoscaler_consecutive_metric_failures", "Evaluations in a row whose metrics failed as a whole.", s, registry=r
        )
        self.dry_run_desired = Gauge(
            "autoscaler_dry_run_desired_replicas", "In a dry run: the replicas the daemon would have scaled to.", s, registry=r
        )
        # --- per replica (series are removed with the replica) -------------------------------
        rs = ["service", "replica"]
        self.replica_cpu_percent = Gauge("autoscaler_replica_cpu_percent", "CPU use, percent of the replica's CPU limit.", rs, registry=r)
        self.replica_memory_percent = Gauge(
            "autoscaler_replica_memory_percent", "Memory use, percent of the replica's memory limit.", rs, registry=r
        )
        self.replica_memory_bytes = Gauge(
            "autoscaler_replica_memory_bytes", "Memory use without inactive page cache, as docker stats shows it.", rs, registry=r
        )
        self.replica_ready = Gauge("autoscaler_replica_ready", "1 when the replica serves traffic, else 0.", rs, registry=r)
        self._replicas_exported: dict[str, set[str]] = {}
        # --- faults: failed replicas, backoff, the engine and the load balancer going away ---
        self.start_failures = Counter(
            "autoscaler_replica_start_failures",
            "Replicas that never became ready: create failed, exited, OOM-killed, never healthy.",
            ["service", "reason"], registry=r,
        )
        self.replica_failures = Counter(
            "autoscaler_replica_failures", "Replicas that served and then failed (crashed, OOM, unhealthy, stopped).",
            ["service", "reason"], registry=r,
        )
        self.start_backoff = Gauge(
            "autoscaler_start_backoff_seconds", "Seconds until the next replica start is allowed (0: no backoff).", s, registry=r
        )
        self.start_backoff_failures = Gauge(
            "autoscaler_start_backoff_failures", "Failures in a row behind the start backoff (0: none).", s, registry=r
        )
        self.engine_up = Gauge("autoscaler_docker_engine_up", "1 when the last pass reached the Docker engine.", s, registry=r)
        self.engine_outages = Counter(
            "autoscaler_docker_engine_outages", "Times the Docker engine stopped answering.", s, registry=r
        )
        self.lb_up = Gauge("autoscaler_load_balancer_up", "1 when the load balancer's runtime API answers.", s, registry=r)
        self.lb_restarts = Counter(
            "autoscaler_load_balancer_repairs", "Load balancer (re)creations and restarts by the daemon.", s, registry=r
        )
        self.stats_source = Gauge(
            "autoscaler_stats_source", "Where CPU and memory readings come from: 1 for the source in use.",
            ["service", "source"], registry=r,
        )
        self.agent_up = Gauge(
            "autoscaler_agent_up", "1 when the Swarm node's agent answered the last scrape.", ["node"], registry=r
        )
        # --- external metrics (a query's result, a queue's length) -----------------------------
        sm = ["service", "metric"]
        self.external_value = Gauge(
            "autoscaler_external_metric_value", "Last value read from each external metric's source (NaN: it failed).", sm, registry=r
        )
        self.external_target = Gauge(
            "autoscaler_external_metric_target", "Each external metric's target: per replica (kind average) or the value (kind value).",
            ["service", "metric", "kind"], registry=r,
        )
        self.external_activation = Gauge(
            "autoscaler_external_metric_activation", "Each external metric's activation value (scale from and to zero).", sm, registry=r
        )
        self.external_up = Gauge(
            "autoscaler_external_metric_source_up", "1 when the external metric's source answered the last read.", sm, registry=r
        )
        self.external_errors = Counter(
            "autoscaler_external_metric_errors", "Reads of an external metric's source that failed.", sm, registry=r
        )
        self._externals_exported: dict[str, set[str]] = {}
        # --- rolling updates -------------------------------------------------------------------
        self.replica_versions = Gauge(
            "autoscaler_replica_versions", "Live replicas by the version they were made from (a hash of the spec).",
            ["service", "version"], registry=r,
        )
        self.rollout_in_progress = Gauge(
            "autoscaler_rollout_in_progress", "1 while replicas of another version than the current one run.", s, registry=r,
        )
        self.rollbacks = Counter("autoscaler_rollbacks", "Rollouts stopped and rolled back by the circuit breaker.", s, registry=r)
        self._versions_exported: dict[str, set[str]] = {}
        self.lease_held = Gauge(
            "autoscaler_lease_held", "1 when this daemon holds the service's lease (0: standing by).", s, registry=r
        )
        # --- daemon --------------------------------------------------------------------------
        self.loop_duration = Histogram(
            "autoscaler_loop_duration_seconds", "Duration of one control-loop cycle.", s,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=r,
        )
        self.loop_errors = Counter("autoscaler_loop_errors", "Control-loop cycles that failed.", s, registry=r)
        self.call_duration = Histogram(
            "autoscaler_external_call_duration_seconds", "Latency of Docker and HAProxy API calls.",
            ["component", "operation"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r,
        )
        self.call_errors = Counter(
            "autoscaler_external_call_errors", "Docker and HAProxy API calls that failed.", ["component", "operation"], registry=r
        )
        self.config_reloads = Counter("autoscaler_config_reloads", "Config reloads (SIGHUP) by result.", ["result"], registry=r)
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        build = Info("autoscaler_build", "Version of the running daemon.", registry=r)
        build.info({"version": __version__, "python_version": platform.python_version()})
        self._evaluated_at: dict[str, float] = {}

    # CallObserver
    @contextlib.contextmanager
    def call(self, component: str, operation: str) -> Iterator[None]:
        # Touch the error series so that a rate() over it is 0, not "no data", before any error.
        errors = self.call_errors.labels(component, operation)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            errors.inc()
            raise
        finally:
            self.call_duration.labels(component, operation).observe(time.perf_counter() - start)

    def register_service(self, service: str) -> None:
        """Creates the series that must exist before the first event (0, not missing)."""
        self.loop_errors.labels(service)
        self.metric_failures.labels(service).set(0)
        self.start_backoff.labels(service).set(0)
        self.start_backoff_failures.labels(service).set(0)
        self.engine_outages.labels(service)
        self.lb_restarts.labels(service)
        self.rollbacks.labels(service)
        self.since_evaluation.labels(service).set_function(
            lambda: time.time() - self._evaluated_at[service] if service in self._evaluated_at else NAN
        )

    def record_replicas(self, service: str, counts: dict[str, int]) -> None:
        for state in REPLICA_STATES:
            self.replicas.labels(service, state).set(counts.get(state, 0))

    def record_evaluation(
        self,
        decision: Decision,
        snapshot: ServiceSnapshot,
        bounds: Bounds,
        policy: PolicyConfig,
        consecutive_failures: int,
        dry_run: bool,
    ) -> None:
        service = decision.service
        now = time.time()
        self._evaluated_at[service] = now
        self.last_evaluation.labels(service).set(now)
        self.desired_replicas.labels(service).set(decision.desired)
        if dry_run:
            self.dry_run_desired.labels(service).set(decision.desired)
        self.min_replicas.labels(service).set(bounds.min_replicas)
        self.max_replicas.labels(service).set(bounds.max_replicas)
        self.service_cpu_percent.labels(service).set(_or_nan(pooled_value(Metric.CPU, snapshot.replicas)))
        self.service_memory_percent.labels(service).set(_or_nan(pooled_value(Metric.MEMORY, snapshot.replicas)))
        for gauge, target, scale in (
            (self.target_cpu_percent, policy.target_cpu_percent, 1.0),
            (self.target_memory_percent, policy.target_memory_percent, 1.0),
            (self.target_requests, policy.target_requests_per_second_per_replica, 1.0),
            (self.target_response_time, policy.target_response_time_ms, 0.001),
        ):
            if target is not None:
                gauge.labels(service).set(target * scale)
            else:
                _remove(gauge, service)
        for proposal in decision.proposals:
            self.metric_proposal.labels(service, str(proposal.metric)).set(_or_nan(proposal.proposal))
        self.metric_failures.labels(service).set(consecutive_failures)

    def record_load_balancer(
        self, service: str, requests_per_second: float | None, queued: float | None, response_time_ms: float | None
    ) -> None:
        self.lb_requests.labels(service).set(_or_nan(requests_per_second))
        self.lb_queue.labels(service).set(_or_nan(queued))
        self.lb_response_time.labels(service).set(NAN if response_time_ms is None else response_time_ms / 1000)

    def record_replica_samples(self, service: str, samples: list[ReplicaMetrics]) -> None:
        """Per-replica gauges; series of replicas that are gone are removed (bounded series)."""
        names = {m.name for m in samples}
        for gone in self._replicas_exported.get(service, set()) - names:
            for gauge in (self.replica_cpu_percent, self.replica_memory_percent, self.replica_memory_bytes, self.replica_ready):
                _remove(gauge, service, gone)
        self._replicas_exported[service] = names
        for m in samples:
            self.replica_cpu_percent.labels(service, m.name).set(_or_nan(m.cpu_percent))
            self.replica_memory_percent.labels(service, m.name).set(_or_nan(m.memory_percent))
            self.replica_memory_bytes.labels(service, m.name).set(_or_nan(m.memory_bytes))
            self.replica_ready.labels(service, m.name).set(1 if m.ready else 0)

    def record_external(self, service: str, readings: list[tuple[str, str, float, float, float | None]]) -> None:
        """(metric, kind, target, activation, value or None) per external metric; the series of
        metrics no longer configured are removed."""
        names = {name for name, *_ in readings}
        for gone in self._externals_exported.get(service, set()) - names:
            for gauge in (self.external_value, self.external_activation, self.external_up):
                _remove(gauge, service, gone)
            for kind in ("average", "value"):
                _remove(self.external_target, service, gone, kind)
            _remove(self.external_errors, service, gone)
        self._externals_exported[service] = names
        for name, kind, target, activation, value in readings:
            self.external_value.labels(service, name).set(_or_nan(value))
            _remove(self.external_target, service, name, "value" if kind == "average" else "average")
            self.external_target.labels(service, name, kind).set(target)
            self.external_activation.labels(service, name).set(activation)
            self.external_up.labels(service, name).set(0 if value is None else 1)
            errors = self.external_errors.labels(service, name)
            if value is None:
                errors.inc()

    def record_versions(self, service: str, counts: dict[str, int], in_progress: bool) -> None:
        for gone in self._versions_exported.get(service, set()) - set(counts):
            _remove(self.replica_versions, service, gone)
        self._versions_exported[service] = set(counts)
        for version, count in counts.items():
            self.replica_versions.labels(service, version).set(count)
        self.rollout_in_progress.labels(service).set(1 if in_progress else 0)

    def record_agent(self, node: str, up: bool) -> None:
        self.agent_up.labels(node).set(1 if up else 0)

    def record_stats_source(self, service: str, source: str) -> None:
        for name in STATS_SOURCES:
            self.stats_source.labels(service, name).set(1 if name == source else 0)

    def record_scale(self, service: str, direction: str, reason: str) -> None:
        self.scale_events.labels(service, direction, reason).inc()
        self.last_scale.labels(service, direction, reason).set(time.time())

    def record_reload(self, ok: bool) -> None:
        self.config_reloads.labels("success" if ok else "failure").inc()


class ReplicaMetrics(NamedTuple):
    name: str
    ready: bool
    cpu_percent: float | None
    memory_percent: float | None
    memory_bytes: float | None


def _remove(gauge: Gauge | Counter, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


Route = Callable[[], tuple[int, str, bytes]]


def json_route(fn: Callable[[], Any]) -> Route:
    return lambda: (200, "application/json", json.dumps(fn(), indent=2, default=str).encode())


class MetricsServer:
    """/metrics (Prometheus text) and /healthz (process alive), plus the routes the daemon adds
    (/readyz, /status, /sd/load-balancers)."""

    def __init__(self, telemetry: Telemetry, host: str, port: int, routes: dict[str, Route] | None = None) -> None:
        registry = telemetry.registry
        table: dict[str, Route] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
            "/healthz": lambda: (200, "text/plain; charset=utf-8", b"ok\n"),
            **(routes or {}),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                route = table.get(self.path.split("?", 1)[0])
                if route is None:
                    code, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
                else:
                    try:
                        code, content_type, body = route()
                    except Exception as exc:  # a broken route must not kill the endpoint
                        code, content_type, body = 500, "text/plain; charset=utf-8", f"error: {exc}\n".encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up before the answer (its own timeout): nothing to report

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # shutdown() waits for serve_forever() to return: it would hang if that never started.
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
