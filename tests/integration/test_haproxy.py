"""The HAProxy driver against a real HAProxy container and real replicas."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import urllib.request
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import DockerBackend
from autoscaler.engine import wiring
from autoscaler.engine.controller import ServiceController
from autoscaler.engine.operations import Operations
from autoscaler.engine.ports import LoadBalancerSpec, ReplicaSpec
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
    backend.networks.ensure_network(service_name, network)
    port = free_port()
    lb, fresh = backend.load_balancers.ensure_load_balancer(
        LoadBalancerSpec(service_name, "autoscaler-haproxy:latest", network, "127.0.0.1", port, "/healthz")
    )
    assert fresh
    runtime = HAProxyRuntime(lb.admin_socket)
    wait_until(runtime.ping, what="HAProxy runtime API")
    spec = ReplicaSpec(service_name, "autoscaler-demo-app:latest", 8000, network, 0.5, 128 * 1024 * 1024)
    replicas = [backend.containers.start_replica(spec, backend.containers.new_replica_name(service_name))
                for _ in range(2)]
    yield backend, runtime, lb, port, replicas, network
    backend.metrics.close()


def frontend_status(runtime: HAProxyRuntime, name: str) -> str:
    """The `status` column of a frontend in `show stat` (CSV whose header starts with "# ")."""
    rows = csv.DictReader(io.StringIO(runtime.command("show stat").removeprefix("# ")))
    (row,) = [r for r in rows if r["pxname"] == name and r["svname"] == "FRONTEND"]
    return row["status"]


def register(runtime: HAProxyRuntime, name: str, ip: str) -> None:
    runtime.add_server(name, ip, 8000)
    assert runtime.servers()[name].maintenance  # no traffic before the check passes
    runtime.enable_health(name)
    wait_until(lambda: runtime.servers()[name].check_passed, what=f"{name} health check")
    runtime.set_ready(name)
    assert runtime.servers()[name].serving


def test_only_the_exporter_is_published_and_only_on_loopback(stack, docker_client) -> None:  # type: ignore[no-untyped-def]
    _, _, lb, _, _, _ = stack
    ports = docker_client.api.inspect_container(lb.id)["NetworkSettings"]["Ports"]
    assert [b["HostIp"] for b in ports["8405/tcp"]] == ["127.0.0.1"]
    assert set(ports) == {"8080/tcp", "8405/tcp"}, "no admin port at all"


def test_a_replica_cannot_reach_the_admin_api(stack, docker_client) -> None:  # type: ignore[no-untyped-def]
    """The admin API is full control of the load balancer: a replica on the service network
    (here: any process in one) must not be able to send it a single command."""
    _, runtime, lb, _, replicas, network = stack
    lb_ip = docker_client.api.inspect_container(lb.id)["NetworkSettings"]["Networks"][network]["IPAddress"]
    probe = (
        "import socket, os\n"
        "results = []\n"
        "for port in (9999, 9998, 8080, 8405):\n"
        "    s = socket.socket()\n"
        "    s.settimeout(2)\n"
        "    try:\n"
        "        s.connect((%r, port))\n"
        "        s.sendall(b'disable frontend clients\\n')\n"
        "        results.append(f'{port}:' + s.recv(200).decode(errors='replace')[:40].replace(chr(10), ' '))\n"
        "    except OSError as e:\n"
        "        results.append(f'{port}:{type(e).__name__}')\n"
        "results.append('socketdir:' + str(os.path.exists('/run/autoscaler')))\n"
        "print(';'.join(results))\n"
    ) % lb_ip
    exec_id = docker_client.api.exec_create(replicas[0].id, ["python3", "-c", probe])
    output = docker_client.api.exec_start(exec_id).decode()
    assert "9999:ConnectionRefusedError" in output, output
    assert "9998:ConnectionRefusedError" in output, output
    # The client and exporter ports speak HTTP only: a CLI command is a bad request there.
    assert "8080:HTTP/1.1 400" in output and "8405:HTTP/1.1 400" in output, output
    assert "socketdir:False" in output, output
    # And the command did nothing: the clients' frontend is still open ("disable frontend"
    # makes it PAUSED).
    assert frontend_status(runtime, "clients") == "OPEN"


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
        "min_replicas": 2, "max_replicas": 2, "startup_timeout_seconds": 20,
        "load_balancer": {"publish": f"127.0.0.1:{port}"},
    })
    controller = ServiceController(
        service_name, config, network,
        target=wiring.containers(backend.containers, Operations(service_name)),
        gate=wiring.load_balancer(backend.load_balancers, lambda info: HAProxyRuntime(info.admin_socket)),
        metrics=backend.metrics, networks=backend.networks, telemetry=Telemetry(CollectorRegistry()),
    )
    controller.setup()  # adopts the existing load balancer and replicas

    def serving() -> bool:
        controller.run_cycle()
        controller.progress()
        return controller.replica_counts.get("ready") == 2

    wait_until(serving, 20, "both replicas registered and serving")
    assert {get(port, "/healthz")["hostname"] for _ in range(6)} == {r.id[:12] for r in replicas}

    # A restart drops every dynamic server: the next passes re-register the replicas.
    docker_client.api.restart(lb.id, timeout=5)
    wait_until(lambda: (controller.run_cycle(), controller.progress(), controller.replica_counts.get("ready") == 2
                        and controller.health.lb_down_since is None)[-1], 30, "membership rebuilt")
    assert {get(port, "/healthz")["hostname"] for _ in range(6)} == {r.id[:12] for r in replicas}
    assert len(backend.containers.list_replicas(service_name, network)) == 2, "nothing started twice"
    controller.close()
