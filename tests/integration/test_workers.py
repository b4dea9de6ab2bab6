"""Workers and external metrics on the real engine: a queue worker with no load balancer
scaled 0 -> N -> 0 by a real Redis list's length with every job done exactly once (also those
in hand at scale-in), a Redis outage held and recovered, and an HTTP service scaled by a query
of a real Prometheus scraping an exporter of the test's own, through a Prometheus outage."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from externals import Exporter, RedisServer, prometheus_server, redis_server, wait_scraped
from helpers import DaemonProcess, Traffic, free_port, wait_for

pytestmark = pytest.mark.docker


def worker_config(service: str, metrics_port: int, redis: RedisServer, *, min_replicas: int, max_replicas: int,
                  job_cpu_ms: int, extra_service: str = "", policy: str = "", stabilization_seconds: int = 3) -> str:
    return f"""
[daemon]
interval_seconds = 1
metrics_listen = "127.0.0.1:{metrics_port}"

[services.{service}]
image = "autoscaler-demo-app:latest"
command = ["python3", "/app/worker.py"]
env = {{ REDIS_URL = "{redis.inner_url}", JOB_LIST = "jobs", JOB_CPU_MS = "{job_cpu_ms}" }}
network = "{redis.network}"
cpu_limit = 0.5
memory_limit = "64MiB"
min_replicas = {min_replicas}
max_replicas = {max_replicas}
stop_timeout_seconds = 30
{extra_service}

[services.{service}.policy]
initialization_seconds = 0
scale_down_stabilization_seconds = {stabilization_seconds}
{policy}

[[services.{service}.policy.metrics]]
name = "jobs_waiting"
redis = {{ url = "{redis.url}", list = "jobs", timeout_seconds = 2 }}
target_average_value = 4
"""


@pytest.fixture
def redis_box(docker_client, service_name: str) -> Iterator[RedisServer]:  # type: ignore[no-untyped-def]
    with redis_server(docker_client, service_name) as server:
        yield server


class ReplicaWatch:
    """Samples the worker's replica counts from /status in the background."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, ready, starting)
        self._stop = threading.Event()
        self._daemon = daemon
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                replicas = self._daemon.status()["replicas"]
            except (OSError, KeyError, ValueError):
                continue
            self.samples.append((time.monotonic(), replicas["ready"], replicas["starting"]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def most_ready(self) -> int:
        return max((ready for _, ready, _ in self.samples), default=0)


def worker_containers(docker_client, service: str) -> list[Any]:  # type: ignore[no-untyped-def]
    return docker_client.containers.list(all=True, filters={"label": [f"autoscaler.service={service}",
                                                                       "autoscaler.role=replica"]})


def test_worker_goes_0_to_n_to_0_on_a_redis_list_with_every_job_done_once(
    docker_client, service_name: str, redis_box: RedisServer, run_daemon  # type: ignore[no-untyped-def]
) -> None:
    metrics_port = free_port()
    # A Docker HEALTHCHECK on the workers: a replica counts as ready only once Docker says healthy.
    daemon = run_daemon(worker_config(
        service_name, metrics_port, redis_box, min_replicas=0, max_replicas=4, job_cpu_ms=1500,
        extra_service='healthcheck = { test = "test -e /app/worker.py", interval_seconds = 0.5, timeout_seconds = 2 }',
        policy="scale_to_zero_after_seconds = 4",
    ), metrics_port)
    assert daemon.status()["replicas"] == {"ready": 0, "starting": 0, "draining": 0}
    assert worker_containers(docker_client, service_name) == []  # at 0 nothing runs

    jobs = [f"job-{i:03d}" for i in range(40)]
    client = redis_box.client()
    watch = ReplicaWatch(daemon)
    try:
        client.lpush("jobs", *jobs)
        # 40 jobs, 4 per replica: the most it may have, 4 replicas, while the queue is long.
        wait_for(lambda: daemon.status()["replicas"]["ready"] >= 3, 60, "the workers to scale out")
        wait_for(lambda: int(client.get("jobs:done_count") or 0) == len(jobs), 180, "every job to be done")
        wait_for(lambda: worker_containers(docker_client, service_name) == [], 90,
                 "the workers to go back to 0 and their containers to be removed")
    finally:
        watch.stop()
    done = {k.decode(): int(v) for k, v in client.hgetall("jobs:done").items()}
    assert done == {job: 1 for job in jobs}, "every job done exactly once"
    assert int(client.get("jobs:done_count") or 0) == len(jobs)
    assert client.llen("jobs") == 0 and client.keys("jobs:processing:*") == [], "no job left in a worker's hands"
    assert watch.most_ready >= 3
    log = daemon.log()
    assert "reason=activation" in log and "jobs_waiting 40 > activation 0 -> 0 -> 1" in log
    assert "reason=scale_to_zero" in log
    assert "is healthy: ready" in log  # readiness came from Docker's health check
    assert daemon.status()["replicas"] == {"ready": 0, "starting": 0, "draining": 0}
    assert daemon.metric("autoscaler_external_metric_value", metric="jobs_waiting") == 0.0
    assert daemon.metric("autoscaler_external_metric_source_up", metric="jobs_waiting") == 1.0


def test_worker_scaled_in_mid_job_finishes_it(
    docker_client, service_name: str, redis_box: RedisServer, run_daemon, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """Long jobs, and a scale-in while every worker holds one (max_replicas lowered by a
    reload): the workers that go get their stop signal with a job in hand, finish it within
    stop_timeout_seconds, and no job is lost or done twice."""
    metrics_port = free_port()
    text = worker_config(service_name, metrics_port, redis_box, min_replicas=1, max_replicas=4, job_cpu_ms=3000)
    daemon = run_daemon(text, metrics_port, "scale-in")
    client = redis_box.client()
    jobs = [f"long-{i:02d}" for i in range(16)]
    client.lpush("jobs", *jobs)
    wait_for(lambda: daemon.status()["replicas"]["ready"] == 4, 60, "4 workers")
    wait_for(lambda: len([k for k in client.keys("jobs:processing:*") if client.llen(k) == 1]) == 4, 60,
             "every worker holding a job")
    (tmp_path / "scale-in.toml").write_text(text.replace("max_replicas = 4", "max_replicas = 1"))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: int(client.get("jobs:done_count") or 0) == len(jobs), 240, "every job to be done")
    wait_for(lambda: len(worker_containers(docker_client, service_name)) == 1, 90, "the scale-in to 1")
    done = {k.decode(): int(v) for k, v in client.hgetall("jobs:done").items()}
    assert done == {job: 1 for job in jobs}, "every job done exactly once"
    interrupted = int(client.get("jobs:finished_after_stop_signal") or 0)
    assert interrupted >= 1, "a worker was scaled in while it held a job (else this test proves nothing)"
    assert "reason=above_max" in daemon.log()


def test_redis_outage_is_held_logged_once_and_recovered(
    docker_client, service_name: str, redis_box: RedisServer, run_daemon  # type: ignore[no-untyped-def]
) -> None:
    metrics_port = free_port()
    daemon = run_daemon(worker_config(
        service_name, metrics_port, redis_box, min_replicas=0, max_replicas=3, job_cpu_ms=5000,
        policy="scale_to_zero_after_seconds = 2",
    ), metrics_port)
    client = redis_box.client()
    client.lpush("jobs", *[f"j{i}" for i in range(6)])  # long jobs: still waiting when Redis goes
    wait_for(lambda: daemon.status()["replicas"]["ready"] >= 1, 60, "a worker")
    assert client.llen("jobs") > 0
    redis_box.stop()
    outage_started = time.monotonic()
    wait_for(lambda: daemon.metric("autoscaler_external_metric_source_up", metric="jobs_waiting") == 0.0, 30,
             "the source to be seen down")
    # Longer than scale_to_zero_after_seconds: a metric that cannot be read is not "idle".
    while time.monotonic() - outage_started < 8:
        assert daemon.status()["replicas"]["ready"] >= 1, "held through the outage, not scaled to 0"
        time.sleep(0.5)
    redis_box.start()  # empty: the queue restarted
    wait_for(lambda: daemon.metric("autoscaler_external_metric_source_up", metric="jobs_waiting") == 1.0, 30,
             "the source to answer again")
    wait_for(lambda: worker_containers(docker_client, service_name) == [], 60, "0 workers once the queue is idle")
    log = daemon.log()
    assert log.count("cannot reach Redis") == 1, "one line per outage, not one per pass"
    assert log.count("its source answers again") == 1
    assert daemon.metric("autoscaler_external_metric_errors_total", metric="jobs_waiting") >= 3


def test_http_service_scaled_by_a_prometheus_query_through_an_outage(
    docker_client, service_name: str, run_daemon, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    exporter = Exporter()
    exporter.values = {"test_backlog": 35.0}
    metrics_port, lb_port = free_port(), free_port()
    try:
        with prometheus_server(tmp_path / "prometheus", [f"127.0.0.1:{exporter.port}"]) as prometheus:
            wait_scraped(prometheus, "test_backlog")
            daemon = run_daemon(f"""
[daemon]
interval_seconds = 1
metrics_listen = "127.0.0.1:{metrics_port}"

[services.{service_name}]
image = "autoscaler-demo-app:latest"
port = 8000
network = "autoscaler-{service_name}"
cpu_limit = 0.25
memory_limit = "128MiB"
min_replicas = 1
max_replicas = 5
stop_timeout_seconds = 5

[services.{service_name}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service_name}.policy]
initialization_seconds = 0
scale_down_stabilization_seconds = 2
drain_timeout_seconds = 5

[[services.{service_name}.policy.metrics]]
name = "backlog"
prometheus = {{ url = "{prometheus.url}", query = "sum(test_backlog)", timeout_seconds = 2 }}
target_average_value = 10
""", metrics_port)
            wait_for(lambda: daemon.status()["replicas"]["ready"] >= 1, 60, "a ready replica before any traffic")
            traffic = Traffic(lb_port)
            traffic.start(workers=2, cpu_ms=1, pause_seconds=0.05)
            try:
                # 35 / 10 per replica: 4 replicas, whatever the (idle) CPU says.
                wait_for(lambda: daemon.status()["replicas"]["ready"] == 4, 90, "4 replicas for a backlog of 35")
                prometheus.stop()
                wait_for(lambda: daemon.metric("autoscaler_external_metric_source_up", metric="backlog") == 0.0, 30,
                         "the outage to be seen")
                exporter.values["test_backlog"] = 5.0  # unseen while Prometheus is down
                held_since = time.monotonic()
                while time.monotonic() - held_since < 6:
                    assert daemon.status()["replicas"]["ready"] == 4, "no scale-in on a partial view"
                    time.sleep(0.5)
                prometheus.start()
                wait_scraped(prometheus, "test_backlog == 5")
                wait_for(lambda: daemon.status()["replicas"]["ready"] == 1 and daemon.status()["replicas"]["draining"] == 0,
                         90, "the scale-in to 1 for a backlog of 5")
            finally:
                traffic.stop_all()
            log = daemon.log()
            assert log.count("cannot reach http://127.0.0.1") == 1
            assert "not scaling down while backlog has no reading" in log or "missing_metrics_hold" in log
            traffic.assert_served(at_least=100)  # the scale-in drained: no request failed
    finally:
        exporter.close()


def test_a_restarted_daemon_adopts_its_workers_and_a_dry_run_changes_nothing(
    docker_client, service_name: str, redis_box: RedisServer, run_daemon  # type: ignore[no-untyped-def]
) -> None:
    metrics_port = free_port()
    config = worker_config(service_name, metrics_port, redis_box, min_replicas=2, max_replicas=3, job_cpu_ms=100)
    first = run_daemon(config, metrics_port, "first")
    wait_for(lambda: first.status()["replicas"]["ready"] == 2, 60, "2 workers")
    workers = sorted(c.id for c in worker_containers(docker_client, service_name))
    assert first.stop() == 0
    assert sorted(c.id for c in worker_containers(docker_client, service_name)) == workers, "workers outlive the daemon"

    dry_run = run_daemon(config, metrics_port, "dry-run", "--dry-run")
    wait_for(lambda: dry_run.status()["replicas"]["ready"] == 2, 60, "the dry run to see the 2 workers")
    client = redis_box.client()
    client.lpush("jobs", *[f"d{i}" for i in range(40)])  # 10 per worker wanted: 3, the max
    wait_for(lambda: dry_run.metric("autoscaler_dry_run_desired_replicas") == 3.0, 30, "the dry run's decision")
    time.sleep(2)
    assert sorted(c.id for c in worker_containers(docker_client, service_name)) == workers, "a dry run starts nothing"
    assert dry_run.stop() == 0
    client.delete("jobs")

    second = run_daemon(config, metrics_port, "second")
    wait_for(lambda: second.status()["replicas"]["ready"] == 2, 60, "the 2 workers adopted")
    time.sleep(3)  # a few passes: nothing started or removed on top of what was adopted
    assert sorted(c.id for c in worker_containers(docker_client, service_name)) == workers
    assert "started replica" not in second.log()
