"""End to end: the daemon (a real process) scales the demo app behind HAProxy under load.

It must scale out to >= 3 replicas, spread requests over >= 3 of them, come back to 1 when the
load stops, survive its own stop and restart (adopting, not duplicating), and every request
sent during the whole run must succeed.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from helpers import Traffic, demo_config, free_port, start_daemon, status, stop_daemon, wait_for

pytestmark = pytest.mark.docker


def served_by(docker_client, service: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The load balancer and replicas (not the daemon's lease, which each daemon takes anew)."""
    return {
        c.id for c in docker_client.containers.list(filters={"label": f"autoscaler.service={service}"})
        if c.labels.get("autoscaler.role") in ("replica", "load-balancer")
    }


def test_scales_out_and_back_in_with_no_failed_request(docker_client, service_name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lb_port, metrics_port = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(demo_config(service_name, lb_port, metrics_port, max_replicas=4, policy="""
target_cpu_percent = 50
initialization_seconds = 0
scale_down_stabilization_seconds = 8
drain_timeout_seconds = 10
"""))
    log_path = tmp_path / "daemon.log"
    daemon = start_daemon(config, log_path)
    traffic = Traffic(lb_port)
    try:
        wait_for(lambda: status(metrics_port, service_name)["replicas"].get("ready") == 1, 60, "1 ready replica")
        # A light probe runs for the whole test, through scale-in and daemon restarts.
        traffic.start(workers=1, cpu_ms=1, pause_seconds=0.1)

        load_started = time.monotonic()
        heavy = traffic.start(workers=4, cpu_ms=20, pause_seconds=0)
        wait_for(lambda: status(metrics_port, service_name)["replicas"].get("ready", 0) >= 3, 90, ">= 3 ready replicas")
        scaled_out_seconds = time.monotonic() - load_started
        spread_from = time.monotonic()
        wait_for(lambda: len(traffic.hosts_since(spread_from)) >= 3, 30, "requests reaching 3 distinct replicas")
        heavy.set()

        load_stopped = time.monotonic()
        wait_for(
            lambda: status(metrics_port, service_name)["replicas"] == {"ready": 1, "starting": 0, "draining": 0},
            120, "back to 1 replica",
        )
        scaled_in = time.monotonic()
        scaled_in_seconds = scaled_in - load_stopped

        # Stopping the daemon is not an outage, and a restart adopts instead of duplicating.
        stopping = time.monotonic()
        assert stop_daemon(daemon) == 0
        before = served_by(docker_client, service_name)
        time.sleep(1.5)
        daemon = start_daemon(config, log_path)
        wait_for(lambda: status(metrics_port, service_name)["last_decision"], 30, "a decision after restart")
        time.sleep(3)
        restarted = time.monotonic()
        after = served_by(docker_client, service_name)
        assert after == before, "the restarted daemon adopted the same load balancer and replica"

        # SIGHUP: a valid config applies at the next cycle; an invalid one is refused.
        valid = config.read_text()
        config.write_text(valid.replace("max_replicas = 4", "max_replicas = 2"))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: status(metrics_port, service_name)["max_replicas"] == 2, 15, "the reloaded max_replicas")
        config.write_text(valid.replace("max_replicas = 4", "max_replicas = 0"))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reload rejected" in log_path.read_text(), 15, "the bad config to be rejected")
        assert status(metrics_port, service_name)["max_replicas"] == 2
        assert stop_daemon(daemon) == 0
    finally:
        traffic.stop_all()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    log_text = log_path.read_text()
    print(f"\ne2e: load start -> 3 ready in {scaled_out_seconds:.1f}s; load stop -> 1 in {scaled_in_seconds:.1f}s; "
          f"{traffic.sent} requests, {len(traffic.failures)} failed")
    # The probe alone sends ~8 a second (0.1 s pause): the scale-in takes >= 8 s of stabilization
    # and the restart >= 4.5 s; the minimums are a fifth of that, the whole run's a tenth.
    print("e2e: failed requests " + traffic.assert_served(at_least=100, windows={
        "load stop -> back to 1": (load_stopped, scaled_in, 12),
        "daemon stop -> restarted": (stopping, restarted, 7),
    }))
    assert "Traceback" not in log_text, log_text[-3000:]
    assert "reason=scale_up" in log_text or "reason=too_many_replicas" in log_text
    assert "reason=scale_down" in log_text
