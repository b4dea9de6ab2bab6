"""The Docker engine and the load balancer going away: dockerd stopped and started again, the
HAProxy container killed, a load balancer that cannot start."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import docker
import pytest

from faultkit import (
    DaemonFactory,
    check_backoff,
    check_decisions_go_on,
    creations,
    dockerd_command,
    running_replicas,
    start_dockerd,
    stop_dockerd,
    unavailable,
    wait_until,
    watch_decisions,
)
from helpers import Traffic

pytestmark = pytest.mark.docker


def fetch(port: int, path: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.load(r)


def load_balancers(client, service: str) -> list:  # type: ignore[no-untyped-def]
    return client.containers.list(all=True, filters={"label": [f"autoscaler.service={service}", "autoscaler.role=load-balancer"]})


def test_the_engine_stopped_and_started_again(daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    command = dockerd_command()
    if command is None:
        unavailable("needs root and a dockerd started from a shell (as .ci/run does) to stop and start it")
    interval = 2
    config = daemons.config(interval_seconds=interval, service_keys="min_replicas = 2\nmax_replicas = 2")
    daemon = daemons.start(config)
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 60, "2 ready replicas")
    try:
        stop_dockerd()
        wait_until(lambda: daemon.status()["state"] == "engine_unreachable", 3 * interval + 5, "the outage noticed")
        code, body = daemon.get("/readyz")
        assert code == 503 and "docker: engine not reachable" in body, body
        assert daemon.metric("autoscaler_docker_engine_up") == 0
        assert daemon.metric("autoscaler_docker_engine_outages_total") == 1
        time.sleep(2 * interval)
        assert daemon.process.poll() is None, "the daemon keeps running"
    finally:
        start_dockerd(command)
    back = time.monotonic()
    wait_until(lambda: fetch(daemons.lb_port, "/healthz")["status"] == "ok"
               and daemon.status()["replicas"]["ready"] == 2, 60, "serving again")
    recovery = time.monotonic() - back
    client = docker.from_env()
    try:
        assert len(running_replicas(client, daemons.service)) == 2, "no duplicates"
        assert len(load_balancers(client, daemons.service)) == 1
    finally:
        client.close()
    log = daemon.log()
    assert log.count("Docker engine not reachable") == 1, log[-3000:]
    assert log.count("Docker engine reachable again") == 1
    assert "Traceback" not in log
    assert daemon.stop() == 0
    fault_results(f"dockerd stopped, started again (interval {interval} s)",
                  f"{recovery:.1f} s after the engine answered", "all while the engine is down", "2 (the engine stopped them)")


def test_a_killed_load_balancer_comes_back_with_its_members(docker_client, daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    config = daemons.config(service_keys="min_replicas = 2\nmax_replicas = 2")
    daemon = daemons.start(config)
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 60, "2 ready replicas")
    traffic = Traffic(daemons.lb_port)
    traffic.start(workers=1, cpu_ms=1, pause_seconds=0.1)
    try:
        time.sleep(1)
        (lb,) = load_balancers(docker_client, daemons.service)
        lb.kill()
        killed = time.monotonic()
        wait_until(lambda: fetch(daemons.lb_port, "/healthz")["status"] == "ok"
                   and daemon.status()["load_balancer"]["up"] and daemon.status()["replicas"]["ready"] == 2,
                   30, "the load balancer back with both replicas")
        back = time.monotonic()
        time.sleep(1)
    finally:
        traffic.stop_all()
    assert len(load_balancers(docker_client, daemons.service)) == 1
    assert "Traceback" not in daemon.log()
    assert daemon.stop() == 0
    failed = traffic.counts({"from the kill to its return": (killed, back, 0)})
    fault_results("load balancer killed (docker kill)", f"{back - killed:.1f} s", failed,
                  "0 replicas", "clients have one address: requests fail while it is down")
    # Requests fail only while it is down: every one sent after it came back was served.
    assert not [o for o in traffic.outcomes if o.sent_at > back and o.error], traffic.failures


def test_a_load_balancer_that_cannot_start_backs_off_and_recovers(docker_client, daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    config = daemons.config(service_keys="min_replicas = 1\nmax_replicas = 1")
    daemon = daemons.start(config)
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 1, 60, "1 ready replica")
    (lb,) = load_balancers(docker_client, daemons.service)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lb.remove(force=True)
    since = time.time()
    blocker.bind(("127.0.0.1", daemons.lb_port))  # someone else took the address meanwhile
    blocker.listen()
    try:
        decisions = watch_decisions(daemon, 20)
        end = time.time()
        attempts = [at for at, _ in creations(docker_client, daemons.service, since, role="load-balancer")]
        assert not daemon.status()["load_balancer"]["up"]
    finally:
        blocker.close()
    freed = time.monotonic()
    wait_until(lambda: fetch(daemons.lb_port, "/healthz")["status"] == "ok", 40, "the load balancer created")
    recovery = time.monotonic() - freed
    log = daemon.log()
    assert daemon.stop() == 0
    # Each attempt fails at once; 1 s doubling: ~0, 1, 3, 7, 15 s: 5 or so, not 20.
    tried = check_backoff(attempts, end, fail_seconds=0)
    check_decisions_go_on(decisions, attempts, end)
    assert log.count("cannot bring the load balancer back") <= 2, "logged when the reason changes, not each try"
    assert "Traceback" not in log
    fault_results("load balancer cannot start (address taken), 20 s", f"{recovery:.1f} s after the address was freed",
                  "all while it is down", f"load balancer attempts: {tried}")
