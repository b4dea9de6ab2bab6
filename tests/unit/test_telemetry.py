"""Telemetry on a fresh registry: values read back with get_sample_value."""

from __future__ import annotations

import math
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.config import PolicyConfig
from autoscaler.model import Bounds, Decision, Metric, MetricProposal, ReplicaSample, ServiceSnapshot
from autoscaler.telemetry import MetricsServer, ReplicaMetrics, Telemetry, json_route


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry(CollectorRegistry())


def value(t: Telemetry, name: str, **labels: str) -> float | None:
    return t.registry.get_sample_value(name, labels)


def test_replica_series_disappear_with_the_replica(telemetry: Telemetry) -> None:
    telemetry.record_replica_samples("web", [
        ReplicaMetrics("a", True, 50.0, 10.0, 1e6), ReplicaMetrics("b", False, None, None, None),
    ])
    assert value(telemetry, "autoscaler_replica_cpu_percent", service="web", replica="a") == 50.0
    assert math.isnan(value(telemetry, "autoscaler_replica_cpu_percent", service="web", replica="b"))
    assert value(telemetry, "autoscaler_replica_ready", service="web", replica="b") == 0
    telemetry.record_replica_samples("web", [ReplicaMetrics("b", True, 20.0, 5.0, 2e6)])
    for name in ("autoscaler_replica_cpu_percent", "autoscaler_replica_memory_percent",
                 "autoscaler_replica_memory_bytes", "autoscaler_replica_ready"):
        assert value(telemetry, name, service="web", replica="a") is None, name
    assert value(telemetry, "autoscaler_replica_memory_bytes", service="web", replica="b") == 2e6


def test_evaluation_exports_bounds_targets_proposals_and_means(telemetry: Telemetry) -> None:
    telemetry.register_service("web")
    assert math.isnan(value(telemetry, "autoscaler_seconds_since_last_evaluation", service="web"))
    assert value(telemetry, "autoscaler_loop_errors_total", service="web") == 0
    snapshot = ServiceSnapshot("web", (
        ReplicaSample("a", True, 100, 80.0, 40.0), ReplicaSample("b", True, 100, 60.0, 20.0),
        ReplicaSample("c", False, 1, None, None),
    ))
    decision = Decision("web", 3, 4, "scale_up", "m", (
        MetricProposal(Metric.CPU, 70.0, 60.0, 4, "cpu"), MetricProposal(Metric.MEMORY, 30.0, 80.0, 3, "mem"),
    ))
    policy = PolicyConfig(target_cpu_percent=60, target_memory_percent=80, target_response_time_ms=250)
    telemetry.record_evaluation(decision, snapshot, Bounds(2, 9, "schedule x"), policy, 1, dry_run=True)
    assert value(telemetry, "autoscaler_desired_replicas", service="web") == 4
    assert value(telemetry, "autoscaler_dry_run_desired_replicas", service="web") == 4
    assert value(telemetry, "autoscaler_min_replicas", service="web") == 2
    assert value(telemetry, "autoscaler_max_replicas", service="web") == 9
    assert value(telemetry, "autoscaler_service_cpu_percent", service="web") == 70.0  # ready replicas only
    assert value(telemetry, "autoscaler_service_memory_percent", service="web") == 30.0
    assert value(telemetry, "autoscaler_target_cpu_percent", service="web") == 60
    assert value(telemetry, "autoscaler_target_response_time_seconds", service="web") == 0.25
    assert value(telemetry, "autoscaler_target_requests_per_second_per_replica", service="web") is None
    assert value(telemetry, "autoscaler_metric_proposal_replicas", service="web", metric="memory") == 3
    assert value(telemetry, "autoscaler_consecutive_metric_failures", service="web") == 1
    assert 0 <= value(telemetry, "autoscaler_seconds_since_last_evaluation", service="web") < 5


def test_external_calls_record_latency_and_errors(telemetry: Telemetry) -> None:
    with telemetry.call("docker", "container_list"):
        pass
    with pytest.raises(RuntimeError):
        with telemetry.call("haproxy", "add_server"):
            raise RuntimeError("refused")
    assert value(telemetry, "autoscaler_external_call_errors_total", component="docker", operation="container_list") == 0
    assert value(telemetry, "autoscaler_external_call_errors_total", component="haproxy", operation="add_server") == 1
    assert value(telemetry, "autoscaler_external_call_duration_seconds_count", component="haproxy", operation="add_server") == 1


def test_scale_and_reload_counters(telemetry: Telemetry) -> None:
    telemetry.record_scale("web", "up", "scale_up")
    telemetry.record_reload(True)
    assert value(telemetry, "autoscaler_scale_events_total", service="web", direction="up", reason="scale_up") == 1
    assert value(telemetry, "autoscaler_last_scale_timestamp_seconds", service="web", direction="up", reason="scale_up") > 0
    assert value(telemetry, "autoscaler_config_reloads_total", result="success") == 1
    assert value(telemetry, "autoscaler_config_reloads_total", result="failure") == 0
    assert value(telemetry, "autoscaler_build_info", version="0.1.0", python_version=__import__("platform").python_version()) == 1


def test_http_endpoint_serves_metrics_health_and_routes(telemetry: Telemetry) -> None:
    def broken() -> dict:
        raise RuntimeError("boom")

    server = MetricsServer(telemetry, "127.0.0.1", 0, routes={"/status": json_route(lambda: {"ok": 1}), "/broken": json_route(broken)})
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert b"autoscaler_build_info" in urllib.request.urlopen(base + "/metrics").read()
        assert urllib.request.urlopen(base + "/healthz").read() == b"ok\n"
        assert urllib.request.urlopen(base + "/status").read().strip() == b'{\n  "ok": 1\n}'
        for path, code in (("/nope", 404), ("/broken", 500)):
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(base + path)
            assert error.value.code == code
    finally:
        server.stop()


def test_a_client_that_gives_up_before_the_answer_leaves_no_traceback(telemetry: Telemetry, capfd) -> None:  # type: ignore[no-untyped-def]
    import socket
    import threading

    answering = threading.Event()
    release = threading.Event()

    def slow() -> dict:
        answering.set()
        release.wait(10)
        return {"big": "x" * 1_000_000}  # more than the socket buffers: the write meets the closed socket

    server = MetricsServer(telemetry, "127.0.0.1", 0, routes={"/status": json_route(slow)})
    server.start()
    try:
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answering.wait(10)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # as a client whose own timeout ran out: reset, not a clean close
        release.set()
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10).read() == b"ok\n"
    finally:
        release.set()
        server.stop()
    assert "Traceback" not in capfd.readouterr().err
