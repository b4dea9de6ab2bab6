"""Benchmark: workers and external metrics on the real engine, Redis and Prometheus.

1. Wake from zero: a worker service at 0 replicas (the real daemon as a process, interval 1 s,
   a Redis list metric); one job is pushed onto the empty queue; how long until that job is
   done by a replica the daemon started. The floor, in the same run: one interval (the most a
   push may wait for the next pass) plus a container start, measured as the same worker
   started directly (docker SDK, no daemon) with a job already waiting, until it is done.
   Ratio = wake / floor. A push lands at a random moment of the interval, so a run may beat
   the floor (it waited less than a whole interval); the mean over runs is what to read.

2. One pass with 10 external metrics (5 Redis lists, 5 Prometheus queries): the daemon's read
   of all of them (ExternalMetrics, side by side) and evaluate() with 10 external targets,
   against the best alternative, reading the same 10 sources one after another, in the same run.

    .venv/bin/python tests/benchmarks/bench_external.py [--runs 5] [--passes 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import redis

from autoscaler.config import ExternalMetric, PolicyConfig, ServiceConfig
from autoscaler.engine.external import ExternalMetrics
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.state import Context
from autoscaler.engine.wiring import external_source
from autoscaler.model import Bounds, ExternalReading, History, ReplicaSample, ServiceSnapshot
from autoscaler.policy.evaluate import evaluate
from autoscaler.telemetry import Telemetry
from benchkit import remove_all

REDIS_IMAGE = "autoscaler-redis:latest"
WORKER_IMAGE = "autoscaler-demo-app:latest"
INTERVAL_SECONDS = 1.0
JOB_CPU_MS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout_seconds: float, what: str, poll_seconds: float = 0.005) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(poll_seconds)
    raise SystemExit(f"bench_external: timed out after {timeout_seconds}s waiting for {what}")


def worker_env(redis_name: str, jobs: str) -> dict[str, str]:
    return {"REDIS_URL": f"redis://{redis_name}:6379/0", "JOB_LIST": jobs, "JOB_CPU_MS": str(JOB_CPU_MS)}


def daemon_config(service: str, metrics_port: int, redis_name: str, redis_port: int, network: str, jobs: str) -> str:
    env = ", ".join(f'{k} = "{v}"' for k, v in worker_env(redis_name, jobs).items())
    return f"""
[daemon]
interval_seconds = {INTERVAL_SECONDS}
metrics_listen = "127.0.0.1:{metrics_port}"

[services.{service}]
image = "{WORKER_IMAGE}"
command = ["python3", "/app/worker.py"]
env = {{ {env} }}
network = "{network}"
cpu_limit = 0.5
memory_limit = "64MiB"
min_replicas = 0
max_replicas = 2
stop_timeout_seconds = 5

[services.{service}.policy]
scale_to_zero_after_seconds = 2
scale_down_stabilization_seconds = 0

[[services.{service}.policy.metrics]]
name = "jobs_waiting"
redis = {{ url = "redis://127.0.0.1:{redis_port}/0", list = "{jobs}" }}
target_average_value = 5
"""


def replicas_running(client: docker.DockerClient, service: str) -> int:
    return len(client.containers.list(filters={"label": [f"autoscaler.service={service}", "autoscaler.role=replica"]}))


def wake_from_zero(client: docker.DockerClient, service: str, queue: redis.Redis, redis_name: str, redis_port: int,
                   network: str, runs: int, tmp: Path) -> tuple[list[float], list[float]]:
    """(daemon wake times, direct container-start times), one of each per run, interleaved."""
    metrics_port = free_port()
    config = tmp / "daemon.toml"
    config.write_text(daemon_config(service, metrics_port, redis_name, redis_port, network, "wake"))
    log = (tmp / "daemon.log").open("ab")
    daemon = subprocess.Popen([sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wakes: list[float] = []
    starts: list[float] = []
    try:
        def evaluated() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/status", timeout=2) as r:
                    return json.load(r)["services"][service]["desired_replicas"] == 0
            except OSError:
                return False

        wait_until(evaluated, 60, "the daemon's first decision (0 replicas)", 0.1)
        for run in range(runs):
            wait_until(lambda: replicas_running(client, service) == 0, 60, "the worker at 0 again", 0.1)
            time.sleep(0.37 * (run + 1) % 1.0)  # spread the pushes over the interval's phase
            done_before = int(queue.get("wake:done_count") or 0)
            pushed = time.monotonic()
            queue.lpush("wake", f"wake-{run}")
            done = wait_until(lambda: int(queue.get("wake:done_count") or 0) > done_before, 60, "the job to be done")
            wakes.append(done - pushed)
            starts.append(direct_start(client, service, queue, redis_name, network, run))
    finally:
        daemon.terminate()
        daemon.wait(60)
    return wakes, starts


def direct_start(client: docker.DockerClient, service: str, queue: redis.Redis, redis_name: str, network: str,
                 run: int) -> float:
    """A worker container created and started with a job already waiting, until it is done."""
    done_before = int(queue.get("direct:done_count") or 0)
    queue.lpush("direct", f"direct-{run}")
    started = time.monotonic()
    container = client.containers.run(
        WORKER_IMAGE, ["python3", "/app/worker.py"], detach=True, init=True, network=network,
        environment=worker_env(redis_name, "direct"), nano_cpus=int(0.5e9), mem_limit=64 * 1024**2,
        labels={"autoscaler.service": service, "autoscaler.bench": "direct"},
    )
    try:
        done = wait_until(lambda: int(queue.get("direct:done_count") or 0) > done_before, 60, "the direct job")
    finally:
        container.remove(force=True)
    return done - started


def prometheus_up(tmp: Path, target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("bench_external: prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: redis-host\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
    )
    process = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_until(ready, 60, "Prometheus", 0.1)
    return process, port


def ten_metrics(redis_port: int, prometheus_port: int) -> list[ExternalMetric]:
    metrics = []
    for i in range(5):
        metrics.append(ExternalMetric.model_validate({
            "name": f"queue_{i}", "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "list": f"q{i}"},
            "target_average_value": 5}))
        metrics.append(ExternalMetric.model_validate({
            "name": f"query_{i}", "prometheus": {"url": f"http://127.0.0.1:{prometheus_port}", "query": f"vector({i + 1})"},
            "target_value": 10}))
    return metrics


def pass_cost(metrics: list[ExternalMetric], passes: int) -> None:
    policy = PolicyConfig.model_validate({"metrics": [m.model_dump(mode="json") for m in metrics]})
    service = ServiceConfig.model_validate({"image": "x:1", "cpu_limit": 0.5, "memory_limit": "64MiB",
                                            "policy": policy.model_dump(mode="json")})
    ctx = Context("bench", "bridge", Telemetry(), ServiceHealth(), time.monotonic, time.time, False)
    parallel = ExternalMetrics(ctx, Telemetry(), external_source)
    sources = [external_source(m) for m in metrics]
    parallel.read(service)  # connections made
    for source in sources:
        source.read()

    def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(passes):
            fn()
        return (time.perf_counter() - wall) / passes * 1000, (time.process_time() - cpu) / passes * 1000

    readings: tuple[ExternalReading, ...] = parallel.read(service)
    assert all(r.value is not None for r in readings), readings
    for _ in range(2):  # alternate, so that neither side gets the quieter moment
        side_by_side = timed(lambda: parallel.read(service))
        one_after_another = timed(lambda: [s.read() for s in sources])
    snapshot = ServiceSnapshot("bench", tuple(ReplicaSample(f"r{i}", True, 60.0, 40.0, 30.0) for i in range(4)),
                               external=readings)
    cpu_only = ServiceSnapshot("bench", snapshot.replicas)
    plain = PolicyConfig()
    bounds = Bounds(1, 10)
    history = History()

    def decide(snap: ServiceSnapshot, pol: PolicyConfig) -> float:
        start = time.perf_counter()
        for i in range(passes * 10):
            evaluate(snap, pol, bounds, history, float(i))
        return (time.perf_counter() - start) / (passes * 10) * 1e6

    with_externals, without = decide(snapshot, policy), decide(cpu_only, plain)
    parallel.close()
    for source in sources:
        source.close()
    print(f"one pass, 10 external metrics (5 Redis lists, 5 Prometheus queries), mean of {passes}:")
    print(f"  read side by side (the daemon):  {side_by_side[0]:7.2f} ms wall, {side_by_side[1]:6.2f} ms CPU")
    print(f"  read one after another (baseline): {one_after_another[0]:7.2f} ms wall, {one_after_another[1]:6.2f} ms CPU"
          f"   -> wall ratio {side_by_side[0] / one_after_another[0]:.2f}x")
    print(f"  evaluate() with 10 external targets: {with_externals:6.1f} us vs CPU only {without:6.1f} us "
          f"({with_externals / without:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="wake-from-zero runs (default 5)")
    parser.add_argument("--passes", type=int, default=200, help="passes averaged for the pass cost (default 200)")
    args = parser.parse_args()
    client = docker.from_env()
    service = f"bx{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-external-"))
    labels = {"autoscaler.service": service}
    network = client.networks.create(f"{service}-jobs", labels=labels)
    redis_port = free_port()
    redis_name = f"{service}-redis"
    client.containers.run(REDIS_IMAGE, name=redis_name, detach=True, network=network.name, labels=labels,
                          ports={"6379/tcp": ("127.0.0.1", redis_port)})
    queue = redis.Redis(port=redis_port)
    prometheus = None
    try:
        wait_until(lambda: _pings(queue), 30, "Redis", 0.1)
        wakes, starts = wake_from_zero(client, service, queue, redis_name, redis_port, network.name, args.runs, tmp)
        floors = [INTERVAL_SECONDS + s for s in starts]
        print(f"wake from zero: first job pushed onto an empty queue -> done by a replica started from 0 "
              f"({args.runs} runs, interval {INTERVAL_SECONDS:g} s)")
        for wake, start, floor in zip(wakes, starts, floors):
            print(f"  wake {wake:5.2f} s   floor {floor:5.2f} s (interval + direct start {start:4.2f} s)   "
                  f"ratio {wake / floor:.2f}x")
        print(f"  mean: wake {statistics.mean(wakes):.2f} s, floor {statistics.mean(floors):.2f} s, "
              f"ratio {statistics.mean(wakes) / statistics.mean(floors):.2f}x")
        prometheus, prometheus_port = prometheus_up(tmp, redis_port)
        pass_cost(ten_metrics(redis_port, prometheus_port), args.passes)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        remove_all(client, service)
        shutil.rmtree(tmp, ignore_errors=True)


def _pings(queue: redis.Redis) -> bool:
    try:
        return bool(queue.ping())
    except redis.exceptions.RedisError:
        return False


if __name__ == "__main__":
    main()
