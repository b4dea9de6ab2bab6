"""Prometheus metrics on an injected registry, and the HTTP endpoint that serves them.

The control loop reports through `Telemetry`; tests pass a fresh CollectorRegistry and read
values back with registry.get_sample_value().
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from autoscaler.model import Decision

REPLICA_STATES = ("ready", "starting", "draining")


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.replicas = Gauge(
            "autoscaler_replicas", "Replicas by state.", ["service", "state"], registry=r
        )
        self.desired_replicas = Gauge(
            "autoscaler_desired_replicas", "Replicas the last decision asked for.", ["service"], registry=r
        )
        self.scale_events = Counter(
            "autoscaler_scale_events", "Scale actions taken.", ["service", "direction", "reason"], registry=r
        )
        self.service_cpu_percent = Gauge(
            "autoscaler_service_cpu_percent",
            "Mean CPU use of the ready replicas, percent of each replica's CPU limit.",
            ["service"], registry=r,
        )
        self.service_memory_percent = Gauge(
            "autoscaler_service_memory_percent",
            "Mean memory use of the ready replicas, percent of each replica's memory limit.",
            ["service"], registry=r,
        )
        self.loop_duration = Histogram(
            "autoscaler_loop_duration_seconds", "Duration of one control-loop cycle.", ["service"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=r,
        )
        self.loop_errors = Counter(
            "autoscaler_loop_errors", "Control-loop cycles that failed.", ["service"], registry=r
        )
        self.last_evaluation = Gauge(
            "autoscaler_last_evaluation_timestamp_seconds",
            "Unix time of the last successful evaluation.", ["service"], registry=r,
        )
        self.call_duration = Histogram(
            "autoscaler_external_call_duration_seconds", "Latency of Docker and HAProxy API calls.",
            ["component", "operation"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r,
        )
        self.call_errors = Counter(
            "autoscaler_external_call_errors", "Docker and HAProxy API calls that failed.",
            ["component", "operation"], registry=r,
        )

    # CallObserver
    @contextlib.contextmanager
    def call(self, component: str, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.call_errors.labels(component, operation).inc()
            raise
        finally:
            self.call_duration.labels(component, operation).observe(time.perf_counter() - start)

    def record_replicas(self, service: str, counts: dict[str, int]) -> None:
        for state in REPLICA_STATES:
            self.replicas.labels(service, state).set(counts.get(state, 0))

    def record_decision(self, decision: Decision, cpu_percent: float | None, memory_percent: float | None) -> None:
        service = decision.service
        self.desired_replicas.labels(service).set(decision.desired)
        # NaN, not 0: a missing reading must not look like an idle service on a dashboard.
        self.service_cpu_percent.labels(service).set(cpu_percent if cpu_percent is not None else float("nan"))
        self.service_memory_percent.labels(service).set(
            memory_percent if memory_percent is not None else float("nan")
        )
        self.last_evaluation.labels(service).set(time.time())

    def record_scale(self, service: str, direction: str, reason: str) -> None:
        self.scale_events.labels(service, direction, reason).inc()


class MetricsServer:
    """/metrics (Prometheus text), /healthz (process alive), /status (JSON from a callback)."""

    def __init__(
        self,
        telemetry: Telemetry,
        host: str,
        port: int,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        registry = telemetry.registry
        status_fn = status or (lambda: {})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/healthz":
                    self._send(200, "text/plain; charset=utf-8", b"ok\n")
                elif path == "/status":
                    body = json.dumps(status_fn(), indent=2, default=str).encode()
                    self._send(200, "application/json", body)
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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
        self._server.shutdown()
        self._server.server_close()
