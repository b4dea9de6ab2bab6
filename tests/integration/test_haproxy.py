"""The HAProxy driver against a real HAProxy container and real replicas."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import DockerBackend, LoadBalancerSpec, ReplicaSpec
from autoscaler.engine.controller import ServiceController
from autoscaler.lb.haproxy import HAProxyError, HAProxyRuntime
from autoscaler.telemetry import Telemetry
from helpers import free_port

pytestmark = pytest.mark.docker


def get(port: int, path: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        assert response.status == 200
        return json.load(response)


def wait_until(predicate, timeout_seconds: float = 15, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_seconds}s waiting for {what}")


@pytest.fixture
def stack(docker_client, service_name: str):  # type: ignore[no-untyped-def]
    """A load balancer and two replicas, not yet registered."""
    backend = DockerBackend(docker_client)
    network = f"autoscaler-{service_name}"
    backend.ensure_network(service_name, network)
    port = free_port()
    lb, fresh = backend.ensure_load_balancer(
        LoadBalancerSpec(service_name, "autoscaler-haproxy:latest", network, "127.0.0.1", port, "/healthz")
    )
    assert fresh
    runtime = HAProxyRuntime(lb.admin_host, lb.admin_port)
    wait_until(runtime.ping, what="HAProxy runtime API")
    spec = ReplicaSpec(service_name, "autoscaler-demo-app:latest", 8000, network, 0.5, 128 * 1024 * 1024)
    replicas = [backend.start_replica(spec) for _ in range(2)]
    yield backend, runtime, lb, port, replicas, network
    backend._stats_pool.shutdown(wait=True)


def register(runtime: HAProxyRuntime, name: str, ip: str) -> None:
    runtime.add_server(name, ip, 8000)
    assert runtime.servers()[name].maintenance  # no traffic before the check passes
    runtime.enable_health(name)
    wait_until(lambda: runtime.servers()[name].check_passed, what=f"{name} health check")
    runtime.set_ready(name)
    assert runtime.servers()[name].serving


def test_admin_and_exporter_ports_are_published_on_loopback_only(stack, docker_client) -> None:  # type: ignore[no-untyped-def]
    _, _, lb, _, _, _ = stack
    ports = docker_client.api.inspect_container(lb.id)["NetworkSettings"]["Ports"]
    assert [b["HostIp"] for b in ports["9999/tcp"]] == ["127.0.0.1"]
    assert [b["HostIp"] for b in ports["8405/tcp"]] == ["127.0.0.1"]


def test_add_health_ready_then_traffic(stack) -> None:  # type: ignore[no-untyped-def]
    _, runtime, _, port, replicas, _ = stack
    for replica in replicas:
        register(runtime, replica.name, replica.ip)
    hosts = Counter(get(port, "/work?cpu_ms=1")["hostname"] for _ in range(20))
    assert set(hosts) == {r.id[:12] for r in replicas}
    with pytest.raises(HAProxyError):
        runtime.add_server(replicas[0].name, replicas[0].ip, 8000)  # duplicate name is refused


def test_drain_keeps_in_flight_requests_and_sends_new_ones_elsewhere(stack) -> None:  # type: ignore[no-untyped-def]
    _, runtime, _, port, replicas, _ = stack
    victim, survivor = replicas
    register(runtime, victim.name, victim.ip)
    # Only the victim serves while the slow request starts, so it must land there.
    slow: dict = {}
    thread = threading.Thread(target=lambda: slow.update(get(port, "/work?cpu_ms=1500", timeout=30)))
    thread.start()
    wait_until(lambda: runtime.servers()[victim.name].sessions_current >= 1, what="slow request in flight")
    register(runtime, survivor.name, survivor.ip)

    runtime.set_drain(victim.name)
    assert runtime.servers()[victim.name].draining
    during = Counter(get(port, "/work?cpu_ms=1")["hostname"] for _ in range(10))
    assert set(during) == {survivor.id[:12]}, "a draining server gets no new requests"
    assert runtime.servers()[victim.name].sessions_current >= 1

    thread.join(30)
    assert slow["hostname"] == victim.id[:12], "the in-flight request finished on the drained replica"
    wait_until(lambda: runtime.servers()[victim.name].sessions_current == 0, what="sessions to end")
    runtime.delete_server(victim.name)
    assert victim.name not in runtime.servers()
    assert get(port, "/healthz")["hostname"] == survivor.id[:12]


def test_backend_snapshot_reports_rates_and_response_time(stack) -> None:  # type: ignore[no-untyped-def]
    _, runtime, _, port, replicas, _ = stack
    register(runtime, replicas[0].name, replicas[0].ip)
    for _ in range(5):
        get(port, "/work?cpu_ms=20")
    backend_stat, servers = runtime.snapshot()
    server = servers[replicas[0].name]
    assert server.sessions_total >= 5
    assert server.response_time_ms is not None and server.response_time_ms >= 0
    assert backend_stat.queue_current == 0


def test_membership_is_rebuilt_after_haproxy_restarts(stack, docker_client, service_name: str) -> None:  # type: ignore[no-untyped-def]
    backend, _, lb, port, replicas, network = stack
    config = ServiceConfig.model_validate({
        "image": "autoscaler-demo-app:latest", "port": 8000, "cpu_limit": 0.5, "memory_limit": "128MiB",
        "min_replicas": 1, "max_replicas": 4, "startup_timeout_seconds": 20,
        "load_balancer": {"publish": f"127.0.0.1:{port}"},
    })
    controller = ServiceController(
        service_name, config, network, backend,
        lambda info: HAProxyRuntime(info.admin_host, info.admin_port),
        Telemetry(CollectorRegistry()),
    )
    controller.setup()  # adopts the existing load balancer and replicas
    controller.observe()  # registers both replicas
    assert controller.wait_serving([r.name for r in replicas], 20) == []
    assert {get(port, "/healthz")["hostname"] for _ in range(6)} == {r.id[:12] for r in replicas}

    # A restart drops every dynamic server, and the engine may publish the admin API on a new
    # loopback port: observe() must find the load balancer again and re-register the replicas.
    docker_client.api.restart(lb.id, timeout=5)
    observation = controller.observe()
    assert {v.replica.name for v in observation.views} == {r.name for r in replicas}
    assert controller.wait_serving([r.name for r in replicas], 20) == []
    assert {get(port, "/healthz")["hostname"] for _ in range(6)} == {r.id[:12] for r in replicas}
    controller.close()

