"""Replicas that fail: crash loops, checks that never pass, an image that vanished, a pause, an
OOM kill, a kill. Decisions go on every interval; starts back off; every failure is reported
with its cause; nothing runs away."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from faultkit import (
    DaemonFactory,
    check_backoff,
    check_decisions_go_on,
    creations,
    replicas_created,
    running_replicas,
    wait_until,
    watch_decisions,
)
from helpers import Traffic

pytestmark = pytest.mark.docker


def fetch(port: int, path: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.load(r)


def test_a_crash_looping_replica_backs_off_is_reported_and_decisions_go_on(docker_client, daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    config = daemons.config(service_keys="""
min_replicas = 1
max_replicas = 3
command = ["sh", "-c", "echo starting up; echo 'fatal: no config file' >&2; exit 3"]
""")
    since = time.time()
    daemon = daemons.start(config)
    decisions = watch_decisions(daemon, 45)
    end = time.time()

    attempts = [at for at, _ in creations(docker_client, daemons.service, since)]
    status = daemon.status()
    log = daemon.log()
    assert daemon.stop() == 0
    # Each attempt fails at once; 1 s doubling: attempts at ~0, 1, 3, 7, 15, 31 s, each noticed
    # within an interval. Without a backoff it was one a second: 45 here.
    created = check_backoff(attempts, end, fail_seconds=0)
    check_decisions_go_on(decisions, attempts, end)
    assert "exit code 3" in log and "OOM killed: no" in log and "fatal: no config file" in log, log[-3000:]
    assert status["start_backoff"]["failures"] >= 3
    assert any("start backoff" in w for w in status["warnings"]), status["warnings"]
    assert "Traceback" not in log
    fault_results("replica exits at once (crash loop), 45 s", "n/a (backs off)", "-",
                  f"{created} (was 45)", "reason logged with exit code and output")


def test_a_replica_that_never_passes_its_check_backs_off(docker_client, daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    config = daemons.config(service_keys="""
min_replicas = 1
max_replicas = 2
health_path = "/no-such-path"
startup_timeout_seconds = 4
""")
    since = time.time()
    daemon = daemons.start(config)
    decisions = watch_decisions(daemon, 40)
    end = time.time()
    attempts = [at for at, _ in creations(docker_client, daemons.service, since)]
    log = daemon.log()
    assert daemon.stop() == 0
    # Each attempt takes its 4 s timeout, then 1, 2, 4, 8 s of backoff: 5 or so, not 10.
    created = check_backoff(attempts, end, fail_seconds=4)
    check_decisions_go_on(decisions, attempts, end)
    assert "not healthy for 4s (check L7STS)" in log, log[-3000:]
    assert "Traceback" not in log
    fault_results("replica never passes its check (timeout 4 s), 40 s", "n/a (backs off)", "-",
                  f"{created} (was 10)")


def test_an_image_that_vanished_does_not_stop_decisions_and_recovery_follows_its_return(docker_client, daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    image = f"autoscaler-fault-{daemons.service}:latest"
    docker_client.images.get("autoscaler-demo-app:latest").tag(image)
    try:
        config = daemons.config(service_keys=f'image = "{image}"\nmin_replicas = 1\nmax_replicas = 2')
        daemon = daemons.start(config)
        wait_until(lambda: daemon.status()["replicas"]["ready"] == 1, 60, "1 ready replica")

        docker_client.images.remove(image)  # untags; the running replica keeps its image
        (replica,) = running_replicas(docker_client, daemons.service)
        replica.kill()
        killed = time.time()
        decisions = watch_decisions(daemon, 12)
        status = daemon.status()
        assert daemon.metric("autoscaler_replica_start_failures_total", reason="create_failed") >= 2
        # Creates fail at once (no create event): decisions went on, after the kill and until now.
        check_decisions_go_on(decisions, [killed], time.time())
        assert status["start_backoff"]["failures"] >= 2
        assert "No such image" in daemon.log() or "not found" in daemon.log()

        docker_client.images.get("autoscaler-demo-app:latest").tag(image)
        back = time.monotonic()
        wait_until(lambda: daemon.status()["replicas"]["ready"] == 1, 40, "a replica from the returned image")
        recovery = time.monotonic() - back
        assert fetch(daemons.lb_port, "/healthz")["status"] == "ok"
        assert daemon.stop() == 0
        assert "Traceback" not in daemon.log()
        fault_results("image removed, replica killed, image back", f"{recovery:.1f} s after the image returned",
                      "- (no replica to serve)", "1", "creates failed with backoff meanwhile")
    finally:
        try:
            docker_client.images.remove(image)
        except Exception:
            pass


def test_a_paused_replica_leaves_rotation_returns_on_unpause_and_is_replaced_if_it_stays_paused(docker_client, daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    config = daemons.config(service_keys="min_replicas = 2\nmax_replicas = 2\nstartup_timeout_seconds = 8")
    daemon = daemons.start(config)
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 60, "2 ready replicas")
    first, second = running_replicas(docker_client, daemons.service)

    second.pause()
    paused_at = time.monotonic()
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 1, 10, "the paused replica out of rotation")
    out_of_rotation = time.monotonic() - paused_at
    hosts = {fetch(daemons.lb_port, "/healthz")["hostname"] for _ in range(20)}
    assert hosts == {first.id[:12]}, "no request goes to the paused replica"
    second.reload()
    assert second.status == "paused", "not destroyed on sight"

    second.unpause()
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 15, "the unpaused replica back in rotation")
    assert {c.id for c in running_replicas(docker_client, daemons.service)} == {first.id, second.id}

    since = time.time()
    second.pause()
    wait_until(lambda: second.id not in {c.id for c in docker_client.containers.list(all=True, filters={"label": f"autoscaler.service={daemons.service}"})},
               30, "the replica paused too long to be replaced")
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 30, "2 ready replicas again")
    created = replicas_created(docker_client, daemons.service, since)
    assert len(created) == 1
    assert "is paused" in daemon.log() and "not healthy for 8s (paused)" in daemon.log(), daemon.log()[-3000:]
    assert daemon.stop() == 0
    fault_results("replica paused (docker pause)", f"out of rotation in {out_of_rotation:.1f} s; back on unpause",
                  "0 of 20 after", "0 (1 when paused > startup_timeout)")


def test_an_oom_killed_replica_is_reported_and_replaced(docker_client, daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    config = daemons.config(service_keys='min_replicas = 1\nmax_replicas = 1\nmemory_limit = "48MiB"')
    daemon = daemons.start(config)
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 1, 60, "1 ready replica")
    (victim,) = running_replicas(docker_client, daemons.service)
    since = time.time()

    with pytest.raises((urllib.error.URLError, OSError)):
        fetch(daemons.lb_port, "/alloc?mb=400")  # the kernel kills it mid-request
    killed = time.monotonic()
    wait_until(lambda: "OOM killed: yes" in daemon.log(), 15, "the OOM kill reported")
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 1 and
               {c.id for c in running_replicas(docker_client, daemons.service)} != {victim.id}, 30, "a replacement")
    recovery = time.monotonic() - killed
    assert daemon.metric("autoscaler_replica_failures_total", reason="oom_killed") == 1
    assert len(replicas_created(docker_client, daemons.service, since)) == 1
    assert daemon.stop() == 0
    fault_results("replica OOM-killed", f"{recovery:.1f} s", "1 (the request that allocated)", "1",
                  "logged with OOM flag and exit code")


def test_a_killed_replica_is_replaced_without_failed_requests(docker_client, daemons: DaemonFactory, fault_results) -> None:  # type: ignore[no-untyped-def]
    config = daemons.config(service_keys="min_replicas = 2\nmax_replicas = 2")
    daemon = daemons.start(config)
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 60, "2 ready replicas")
    traffic = Traffic(daemons.lb_port)
    clients = 6
    traffic.start(workers=clients, cpu_ms=1, pause_seconds=0.05)
    try:
        time.sleep(1)
        since = time.time()
        victim = running_replicas(docker_client, daemons.service)[0]
        victim.kill()
        killed = time.monotonic()
        wait_until(lambda: len(replicas_created(docker_client, daemons.service, since)) == 1, 30, "a replacement created")
        wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 30, "the replacement serving")
        replaced = time.monotonic()
        time.sleep(1)
    finally:
        traffic.stop_all()
    created = replicas_created(docker_client, daemons.service, since)
    assert daemon.stop() == 0
    assert len(created) == 1
    # The clients send ~80 a second here (a 0.05 s pause each) for >= 2 s. A request sent to the
    # killed replica waits until HAProxy's retry reaches a live one (~1 s), so every client
    # has one in flight inside the window or sends one there: at least `clients` of them.
    windows = {"from the kill to the replacement": (killed, replaced, clients)}
    fault_results("replica killed (docker kill)", f"{replaced - killed:.1f} s", traffic.counts(windows), "1")
    traffic.assert_served(at_least=40, windows=windows)
