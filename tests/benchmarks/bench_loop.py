"""Benchmark: the control loop at scale, on the real engine and HAProxy with tiny busybox replicas.

  interval  the daemon as a process, interval_seconds = 1, with N = 50 and 200 replicas it
            started itself: over a steady 60 s window, how many passes ran against how many
            were due, how many runs the scheduler skipped, the passes' p50/p99 duration, and the
            daemon's CPU use (utime + stime from /proc, % of one core). Goals: every pass on
            time at 200, < 5 % of one core at 50.
  soak      the controller in this process, passes back to back (each followed by a progress
            step) at 50 replicas for 10,000 passes, its clock moving 1 s per pass (as at
            interval 1 s): RSS after a 1,000-pass warm-up and at the end, and the growth per
            1,000 passes. Goal: < 5 MiB growth after warm-up.

    .venv/bin/python tests/benchmarks/bench_loop.py interval [N ...]
    .venv/bin/python tests/benchmarks/bench_loop.py soak [--passes 10000] [--replicas 50]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import docker
from prometheus_client import CollectorRegistry

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import DockerBackend
from autoscaler.engine import wiring
from autoscaler.engine.controller import ServiceController
from autoscaler.engine.operations import Operations
from autoscaler.lb.haproxy import HAProxyRuntime
from autoscaler.telemetry import Telemetry
from benchkit import IMAGE, ensure_image, remove_all, remove_image

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_table(service: str, replicas: int, lb_port: int) -> str:
    return f"""
[services.{service}]
image = "{IMAGE}"
port = 8000
cpu_limit = 0.05
memory_limit = "16MiB"
min_replicas = {replicas}
max_replicas = {replicas}
startup_timeout_seconds = 120

[services.{service}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service}.policy]
initialization_seconds = 0
"""


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def histogram(text: str, name: str, service: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and f'service="{service}"' in line:
            key = line.split("{")[0] + (re.search(r'le="([^"]+)"', line).group(1) if 'le="' in line else "")  # type: ignore[union-attr]
            values[key] = float(line.rsplit(" ", 1)[1])
    return values


def quantile(buckets: dict[str, float], name: str, q: float) -> float:
    """The upper bound of the bucket holding quantile q (the histogram's resolution)."""
    bounds = sorted((float(k[len(name + "_bucket"):]), v) for k, v in buckets.items() if k.startswith(name + "_bucket"))
    total = bounds[-1][1]
    for bound, count in bounds:
        if count >= q * total:
            return bound
    return float("inf")


def interval_run(count: int, window_seconds: int = 60) -> None:
    client = docker.from_env()
    service = f"bl{uuid.uuid4().hex[:6]}"
    workdir = Path(f"/tmp/{service}")
    workdir.mkdir()
    metrics_port, lb_port = free_port(), free_port()
    config = workdir / "config.toml"
    config.write_text(f'[daemon]\ninterval_seconds = 1\nmetrics_listen = "127.0.0.1:{metrics_port}"\n'
                      + service_table(service, count, lb_port))
    log_path = workdir / "daemon.log"
    daemon = subprocess.Popen([sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
                              stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 600
        while True:
            try:
                ready = json.loads(get(f"http://127.0.0.1:{metrics_port}/status"))["services"][service]["replicas"]["ready"]
            except OSError:
                ready = 0
            if ready == count:
                break
            if time.time() > deadline or daemon.poll() is not None:
                raise RuntimeError(f"{ready} of {count} replicas ready; see {log_path}")
            time.sleep(1)
        time.sleep(5)  # settle
        name = "autoscaler_loop_duration_seconds"
        before = histogram(get(f"http://127.0.0.1:{metrics_port}/metrics"), name, service)
        skipped_before = log_path.read_text().count("skipped: maximum number of running instances")
        cpu_before, wall_before, rss_before = cpu_seconds(daemon.pid), time.monotonic(), process_rss(daemon.pid)
        time.sleep(window_seconds)
        cpu_after, wall_after, rss_after = cpu_seconds(daemon.pid), time.monotonic(), process_rss(daemon.pid)
        after = histogram(get(f"http://127.0.0.1:{metrics_port}/metrics"), name, service)
        skipped = log_path.read_text().count("skipped: maximum number of running instances") - skipped_before
        delta = {k: after[k] - before.get(k, 0.0) for k in after}
        passes = delta[name + "_count"]
        due = wall_after - wall_before
        cpu_percent = (cpu_after - cpu_before) / (wall_after - wall_before) * 100
        print(f"{count:>4} replicas: {passes:.0f} passes in {due:.1f} s (due: {int(due)}), {skipped} skipped; "
              f"pass p50 <= {quantile(delta, name, 0.5) * 1000:.0f} ms, p99 <= {quantile(delta, name, 0.99) * 1000:.0f} ms, "
              f"mean {delta[name + '_sum'] / passes * 1000:.1f} ms; daemon CPU {cpu_percent:.1f} % of one core, "
              f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        remove_all(client, service)


def rss_bytes() -> int:
    return process_rss("self")


def process_rss(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def soak(passes: int, count: int) -> None:
    client = docker.from_env(max_pool_size=256)
    service = f"bs{uuid.uuid4().hex[:6]}"
    lb_port = free_port()
    config = ServiceConfig.model_validate({
        "image": IMAGE, "port": 8000, "cpu_limit": 0.05, "memory_limit": "16MiB",
        "min_replicas": count, "max_replicas": count, "startup_timeout_seconds": 120,
        "load_balancer": {"publish": f"127.0.0.1:{lb_port}"}, "policy": {"initialization_seconds": 0},
    })
    backend = DockerBackend(client)
    telemetry = Telemetry(CollectorRegistry())
    # Passes run back to back, but the policy's windows are in seconds: its clock moves one
    # interval (1 s) per pass, so its history is pruned as in a daemon at interval 1 s.
    simulated = [time.monotonic()]
    controller = ServiceController(
        service, config, f"autoscaler-{service}",
        target=wiring.containers(backend.containers, Operations(service)),
        gate=wiring.load_balancer(backend.load_balancers, lambda lb: HAProxyRuntime(lb.admin_socket)),
        metrics=backend.metrics, networks=backend.networks, telemetry=telemetry, clock=lambda: simulated[0])
    try:
        controller.setup()
        deadline = time.time() + 600
        while controller.replica_counts.get("ready", 0) < count:
            controller.run_cycle()
            for _ in range(10):
                controller.progress()
                time.sleep(0.1)
                simulated[0] += 0.1
            if time.time() > deadline:
                raise RuntimeError("replicas did not get ready")
        warm_up = min(1000, passes // 10)
        samples: list[tuple[int, int]] = []
        start = time.perf_counter()
        for index in range(1, passes + 1):
            simulated[0] += 1.0
            controller.run_cycle()
            controller.progress()
            if index == warm_up or index % 1000 == 0:
                gc.collect()
                samples.append((index, rss_bytes()))
        took = time.perf_counter() - start
        base_index, base = samples[0]
        end_index, end = samples[-1]
        growth = end - base
        print(f"soak: {passes} passes at {count} replicas in {took:.0f} s ({took / passes * 1000:.1f} ms a pass); "
              f"RSS {base / 2**20:.1f} MiB after {base_index} passes, {end / 2**20:.1f} MiB after {end_index}: "
              f"growth {growth / 2**20:+.2f} MiB ({growth / 2**20 / ((end_index - base_index) / 1000):+.3f} MiB per 1,000 passes)")
        print("  RSS by pass: " + ", ".join(f"{i}: {r / 2**20:.1f}" for i, r in samples))
    finally:
        controller.close(5)
        remove_all(client, service)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["interval", "soak"])
    parser.add_argument("counts", nargs="*", type=int)
    parser.add_argument("--passes", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--window", type=int, default=60)
    args = parser.parse_args()
    client = docker.from_env()
    ensure_image(client)
    try:
        if args.mode == "interval":
            for count in args.counts or [50, 200]:
                interval_run(count, args.window)
        else:
            soak(args.passes, args.replicas)
    finally:
        remove_image(client)


if __name__ == "__main__":
    main()
