"""Rolling updates on the real engine and HAProxy: a new version rolled out under steady load
with no failed request and never more than max_surge extra replicas, and a broken version
stopped by the circuit breaker and rolled back while the old replicas serve throughout."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from helpers import DaemonProcess, Traffic, free_port, wait_for

pytestmark = pytest.mark.docker


def config_text(service: str, lb_port: int, metrics_port: int, count: int, extra: str = "") -> str:
    return f"""
[daemon]
interval_seconds = 1
metrics_listen = "127.0.0.1:{metrics_port}"

[services.{service}]
image = "autoscaler-demo-app:latest"
port = 8000
network = "autoscaler-{service}"
cpu_limit = 0.25
memory_limit = "128MiB"
min_replicas = {count}
max_replicas = {count}
stop_timeout_seconds = 5
startup_timeout_seconds = 20
backoff_initial_seconds = 0.5
{extra}

[services.{service}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service}.policy]
drain_timeout_seconds = 10
"""


class Sampler:
    """/status every 0.1 s: (ready, starting) counts and the versions seen."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.samples: list[tuple[int, int, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(daemon,), daemon=True)
        self._thread.start()

    def _run(self, daemon: DaemonProcess) -> None:
        while not self._stop.wait(0.1):
            try:
                status = daemon.status()
            except (OSError, ValueError, KeyError):
                continue
            self.samples.append((status["replicas"]["ready"], status["replicas"]["starting"], status["versions"]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_new_version_rolled_out_under_load_with_no_failed_request(
    service_name: str, run_daemon, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    lb_port, metrics_port = free_port(), free_port()
    daemon = run_daemon(config_text(service_name, lb_port, metrics_port, 4, 'env = { APP_VERSION = "1" }'), metrics_port)
    config = tmp_path / "config.toml"
    wait_for(lambda: daemon.status()["replicas"]["ready"] == 4, 90, "4 ready replicas")
    old_version = daemon.status()["rollout"]["version"]
    traffic = Traffic(lb_port)
    traffic.start(workers=3, cpu_ms=2, pause_seconds=0.01)
    sampler = Sampler(daemon)
    try:
        time.sleep(1)
        config.write_text(config_text(service_name, lb_port, metrics_port, 4, 'env = { APP_VERSION = "2" }'))
        rollout_started = time.monotonic()
        daemon.process.send_signal(signal.SIGHUP)

        def rolled_out() -> bool:
            status = daemon.status()
            versions = status["versions"]
            return (status["rollout"]["version"] != old_version and not status["rollout"]["in_progress"]
                    and list(versions.values()) == [4] and old_version not in versions
                    and status["replicas"] == {"ready": 4, "starting": 0, "draining": 0})

        wait_for(rolled_out, 180, "every replica on the new version")
        rollout_seconds = time.monotonic() - rollout_started
        time.sleep(1)
    finally:
        sampler.stop()
        traffic.stop_all()
    counts = traffic.assert_served(at_least=200)
    during = [(ready, starting) for ready, starting, _ in sampler.samples]
    assert max(ready + starting for ready, starting in during) <= 5, "never more than max_surge (1) extra"
    assert min(ready for ready, _ in during) >= 4, "max_unavailable 0: never fewer than 4 serving"
    assert any(len(versions) == 2 for _, _, versions in sampler.samples), "both versions ran side by side"
    log = daemon.log()
    assert "rolling out version" in log and "from " + old_version in log and "rollout of version" in log
    print(f"\nrollout of 4 replicas under load: {rollout_seconds:.1f} s, requests {counts}")


def test_a_broken_version_is_rolled_back_and_the_old_replicas_serve_throughout(
    docker_client, service_name: str, run_daemon, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    lb_port, metrics_port = free_port(), free_port()
    daemon = run_daemon(config_text(service_name, lb_port, metrics_port, 3), metrics_port)
    config = tmp_path / "config.toml"
    wait_for(lambda: daemon.status()["replicas"]["ready"] == 3, 90, "3 ready replicas")
    good = daemon.status()["rollout"]["version"]
    old_ids = sorted(c.id for c in docker_client.containers.list(
        filters={"label": [f"autoscaler.service={service_name}", "autoscaler.role=replica"]}))
    traffic = Traffic(lb_port)
    traffic.start(workers=2, cpu_ms=2, pause_seconds=0.02)
    try:
        # The new version exits at once: it never passes its check.
        config.write_text(config_text(service_name, lb_port, metrics_port, 3,
                                      'command = ["python3", "-c", "import sys; sys.exit(3)"]'))
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "rolling back to " + good in daemon.log(), 120, "the circuit breaker")

        def back() -> bool:
            status = daemon.status()
            return (status["rollout"]["version"] == good and not status["rollout"]["in_progress"]
                    and status["versions"] == {good: 3})

        wait_for(back, 120, "the rollback to finish")
        time.sleep(3)  # the failed version is not started again
    finally:
        traffic.stop_all()
    traffic.assert_served(at_least=100)
    now_ids = sorted(c.id for c in docker_client.containers.list(
        filters={"label": [f"autoscaler.service={service_name}", "autoscaler.role=replica"]}))
    assert now_ids == old_ids, "the old replicas were never touched"
    status = daemon.status()
    assert len(status["rollout"]["rolled_back"]) == 1
    log = daemon.log()
    assert "exit code 3" in log and "rollout of version" in log and "stopped after 2 failed replica(s)" in log
    assert daemon.metric("autoscaler_rollbacks_total") == 1.0
