"""Things that hang instead of failing: a daemon that holds the lease and is stopped (SIGSTOP),
and a Docker engine that freezes (dockerd SIGSTOPped). Outcomes and order are asserted; how
long things took goes to the results table, never into an assertion (a loaded machine is slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from autoscaler.lb.haproxy import HAProxyRuntime
from faultkit import DaemonFactory, replicas_created, running_replicas, unavailable, wait_until
from helpers import Traffic

pytestmark = pytest.mark.docker

# Short lease numbers so that the scenario takes seconds: the same code as the defaults 15/10/2.
LEASE = {"AUTOSCALER_DAEMON__LEASE_DURATION_SECONDS": "6", "AUTOSCALER_DAEMON__LEASE_RENEW_DEADLINE_SECONDS": "4",
         "AUTOSCALER_DAEMON__LEASE_RETRY_PERIOD_SECONDS": "1"}
ACTIONS = ("started replica", "draining replica", "removing replica", "registering it", "creating", "replica count")


def test_a_holder_that_hangs_loses_the_lease_and_acts_on_nothing_when_it_resumes(
    docker_client, daemons: DaemonFactory, fault_results, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    for key, value in LEASE.items():
        monkeypatch.setenv(key, value)
    config = daemons.config(service_keys="min_replicas = 1\nmax_replicas = 3")
    first = daemons.start(config, name="first")
    wait_until(lambda: first.status()["replicas"]["ready"] == 1, 60, "1 ready replica")
    second = daemons.start(config, name="second")
    wait_until(lambda: second.status()["state"] == "standby", 30, "the second daemon standing by")

    first.process.send_signal(signal.SIGSTOP)  # alive, holding the lease's connection, doing nothing
    stopped = time.monotonic()
    try:
        wait_until(lambda: second.status()["state"] == "active", 60, "the standby taking over")
        takeover = time.monotonic() - stopped
        # The new holder acts: the service needs 2 now (a reload only the running daemon reads).
        config.write_text(config.read_text().replace("min_replicas = 1", "min_replicas = 2"))
        second.process.send_signal(signal.SIGHUP)
        wait_until(lambda: second.status()["replicas"]["ready"] == 2, 60, "the new holder scaling out")
        before = {c.id for c in running_replicas(docker_client, daemons.service)}
        resumed_log_at = len(first.log())
        since = time.time()
    finally:
        first.process.send_signal(signal.SIGCONT)
    # The old holder finds it lost the lease and stands by; it changes nothing.
    wait_until(lambda: first.status()["state"] == "standby", 30, "the resumed daemon standing by")
    time.sleep(3)  # several of its passes and progress steps
    after_resume = first.log()[resumed_log_at:]
    assert "lost" in after_resume, after_resume
    assert not [line for line in after_resume.splitlines() if any(a in line for a in ACTIONS)], after_resume
    assert {c.id for c in running_replicas(docker_client, daemons.service)} == before
    assert replicas_created(docker_client, daemons.service, since) == []
    assert second.status()["state"] == "active"
    assert "Traceback" not in first.log() + second.log()
    assert second.stop() == 0 and first.stop() == 0
    fault_results("lease holder SIGSTOPped (lease 6 s, renew deadline 4 s), resumed later",
                  f"takeover in {takeover:.1f} s", "-", "0 by the resumed holder",
                  "the resumed holder logs the loss and stands by")


def dockerd_pid() -> int | None:
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if len(found) == 1 and os.geteuid() == 0 else None


def test_a_frozen_engine_is_one_line_each_way_timed_from_its_start_and_the_service_keeps_serving(
    daemons: DaemonFactory, fault_results  # type: ignore[no-untyped-def]
) -> None:
    pid = dockerd_pid()
    if pid is None:
        unavailable("needs root and one dockerd to stop (SIGSTOP) and continue")
    frozen_seconds = 25
    config = daemons.config(service_keys="min_replicas = 2\nmax_replicas = 2")
    daemon = daemons.start(config)
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 60, "2 ready replicas")
    traffic = Traffic(daemons.lb_port, timeout_seconds=10)
    traffic.start(workers=2, cpu_ms=1, pause_seconds=0.05)
    time.sleep(1)
    os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        noticed = wait_until(lambda: "Docker engine not reachable" in daemon.log() and time.monotonic(),
                             frozen_seconds - 5, "the daemon saying the engine does not answer, while it is frozen")
        time.sleep(max(0.0, frozen_seconds - (time.monotonic() - frozen_at)))
    finally:
        os.kill(pid, signal.SIGCONT)
    thawed = time.monotonic()
    wait_until(lambda: "Docker engine reachable again" in daemon.log(), 60, "the engine back")
    time.sleep(1)
    traffic.stop_all()
    log = daemon.log()
    assert daemon.process.poll() is None, "the daemon stays up"
    assert log.count("Docker engine not reachable") == 1, log[-3000:]
    assert log.count("Docker engine reachable again") == 1
    again = next(line for line in log.splitlines() if "reachable again after" in line)
    outage_seconds = float(again.split("reachable again after ")[1].split("s")[0])
    assert outage_seconds >= frozen_seconds - 2, f"timed from when the engine stopped answering: {again}"
    assert "did not answer within" in log, "says how long it waited"
    assert "maximum number of running instances" not in log
    assert log.count("still running after") <= 1, "one line for the whole episode of passes that overran"
    # Two clients with 50 ms pauses send hundreds while the engine is frozen: 40 is far below.
    counts = traffic.assert_served(100, {"while the engine was frozen": (frozen_at, thawed, 40)})
    assert "Traceback" not in log
    assert daemon.stop() == 0
    fault_results(f"dockerd frozen (SIGSTOP) {frozen_seconds} s", f"noticed after {noticed - frozen_at:.1f} s",
                  counts, "0", f"outage logged as {outage_seconds:.0f} s")


def test_a_replica_whose_network_vanishes_mid_request_costs_a_retry_with_a_per_try_timeout(
    docker_client, daemons: DaemonFactory, fault_results, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    """load_balancer.per_try_timeout_seconds: requests in flight on a replica that loses its
    network get no answer; after the per-try timeout HAProxy sends them to another replica."""
    monkeypatch.setenv(f"AUTOSCALER_SERVICES__{daemons.service}__LOAD_BALANCER__PER_TRY_TIMEOUT_SECONDS", "3")
    config = daemons.config(service_keys="min_replicas = 2\nmax_replicas = 2\ncpu_limit = 1.0\nstartup_timeout_seconds = 8")
    daemon = daemons.start(config)
    wait_until(lambda: daemon.status()["replicas"]["ready"] == 2, 60, "2 ready replicas")
    runtime = HAProxyRuntime(f"/run/autoscaler/autoscaler-{daemons.service}-lb.sock")
    victim, survivor = running_replicas(docker_client, daemons.service)
    slow = Traffic(daemons.lb_port, timeout_seconds=60)
    probe = Traffic(daemons.lb_port, timeout_seconds=60)
    probe.start(workers=1, cpu_ms=1, pause_seconds=0.05)
    slow.start(workers=3, cpu_ms=300, pause_seconds=0)  # well under the 3 s per try, all three on one replica too
    try:
        in_flight = wait_until(lambda: runtime.servers()[victim.name].sessions_current, 20,
                               "a request in flight on the victim")
        docker_client.api.disconnect_container_from_network(victim.id, f"autoscaler-{daemons.service}", force=True)
        cut = time.monotonic()
        wait_until(lambda: not runtime.servers().get(victim.name, None) or not runtime.servers()[victim.name].serving,
                   30, "the victim out of rotation")
        out_at = time.monotonic()
        wait_until(lambda: daemon.status()["replicas"]["ready"] == 2
                   and victim.id not in {c.id for c in running_replicas(docker_client, daemons.service)}, 60,
                   "the victim replaced")
        replaced_at = time.monotonic()
        time.sleep(1)
    finally:
        slow.stop_all()
        probe.stop_all()
    log = daemon.log()
    assert daemon.stop() == 0
    assert in_flight >= 1, "a request was in flight on the replica when its network went"
    slow_counts = slow.assert_served(10, {"cut -> out of rotation": (cut, out_at, 2)})
    probe_counts = probe.assert_served(20, {"cut -> replaced": (cut, replaced_at, 5)})
    assert "Traceback" not in log
    fault_results("replica's network removed mid-request (per_try_timeout_seconds = 3)",
                  f"out of rotation {out_at - cut:.1f} s after the cut", f"slow {slow_counts}; probe {probe_counts}",
                  "1", f"{in_flight} request(s) in flight on it, retried on the other replica")
