"""Benchmark: scale-out 1 -> 20 with the real daemon, engine and HAProxy: how long from the
decision until the first and the last new replica serve, each replica measured on its own.

The daemon runs as a process (interval 1 s) with min_replicas 1; a SIGHUP raises min_replicas
to 20. The decision time is the `at` of the daemon's first decision with desired 20 (/status,
polled every 20 ms); a replica serves from the moment HAProxy reports its server UP (the admin
socket, polled every 20 ms). Goals (issue "Fast at 200 replicas"): the first new replica serving
< 2 s and all 20 < 3 s after the decision. The baseline in the same run: the same containers
created and started at once with no daemon and no load balancer, until each answers /healthz
itself (what the engine and the replicas' own start-up cost).

    .venv/bin/python tests/benchmarks/bench_scaleout.py [--replicas 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from autoscaler.lb.haproxy import HAProxyRuntime
from benchkit import remove_all

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(service: str, lb_port: int, metrics_port: int, minimum: int, maximum: int) -> str:
    return f"""
[daemon]
interval_seconds = 1
metrics_listen = "127.0.0.1:{metrics_port}"
admin_socket_dir = "/run/autoscaler"

[services.{service}]
image = "autoscaler-demo-app:latest"
port = 8000
cpu_limit = 0.25
memory_limit = "64MiB"
min_replicas = {minimum}
max_replicas = {maximum}

[services.{service}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service}.policy]
initialization_seconds = 0
scale_down_stabilization_seconds = 600
"""


def status(port: int, service: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.load(r)["services"][service]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(count: int) -> tuple[float, float, int, float]:
    client = docker.from_env()
    service = f"bso{uuid.uuid4().hex[:6]}"
    lb_port, metrics_port = free_port(), free_port()
    workdir = Path(f"/tmp/{service}")
    workdir.mkdir()
    config = workdir / "config.toml"
    config.write_text(config_text(service, lb_port, metrics_port, 1, count + 5))
    log = (workdir / "daemon.log").open("wb")
    daemon = subprocess.Popen([sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 60
        while True:
            try:
                if status(metrics_port, service)["replicas"]["ready"] == 1:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the daemon did not start a replica")
            time.sleep(0.2)
        runtime = HAProxyRuntime(f"/run/autoscaler/autoscaler-{service}-lb.sock")
        before = set(runtime.servers())
        config.write_text(config_text(service, lb_port, metrics_port, count, count + 5))
        cpu_before = cpu_seconds(daemon.pid)
        daemon.send_signal(signal.SIGHUP)
        decided_at = None
        up_at: dict[str, float] = {}
        deadline = time.time() + 60
        while len(up_at) < count - 1 and time.time() < deadline:
            now = time.time()
            for name, server in runtime.servers().items():
                if name not in before and name not in up_at and server.serving:
                    up_at[name] = now
            if decided_at is None:
                decision = status(metrics_port, service)["last_decision"]
                if decision and decision["desired"] == count:
                    decided_at = decision["at"]
            time.sleep(0.02)
        daemon_cpu = cpu_seconds(daemon.pid) - cpu_before
        assert decided_at is not None and len(up_at) == count - 1, (decided_at, len(up_at))
        times = sorted(t - decided_at for t in up_at.values())
        created = [c.attrs["Created"] for c in client.containers.list(
            filters={"label": [f"autoscaler.service={service}", "autoscaler.role=replica"]})]
        return times[0], times[-1], len(created), daemon_cpu
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        remove_all(client, service)


def engine_floor(count: int) -> tuple[float, float]:
    """The same containers with no daemon and no load balancer: created and started all at
    once, each timed until it answers /healthz itself. (first, last) seconds."""
    client = docker.from_env(max_pool_size=64)
    api = client.api
    service = f"bsf{uuid.uuid4().hex[:6]}"
    network = client.networks.create(f"autoscaler-{service}", labels={"autoscaler.service": service})
    answered: list[float] = []
    start = time.perf_counter()

    def one(index: int) -> None:
        created = api.create_container(
            "autoscaler-demo-app:latest", name=f"{service}-{index}", labels={"autoscaler.service": service},
            host_config=api.create_host_config(network_mode=network.name, nano_cpus=250_000_000,
                                               mem_limit=64 * 1024 * 1024, init=True))
        api.start(created["Id"])
        ip = api.inspect_container(created["Id"])["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        while True:
            try:
                with urllib.request.urlopen(f"http://{ip}:8000/healthz", timeout=1):
                    answered.append(time.perf_counter() - start)
                    return
            except OSError:
                time.sleep(0.02)

    try:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(one, range(count)))
        return min(answered), max(answered)
    finally:
        remove_all(client, service)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    new = args.replicas - 1
    print(f"scale-out 1 -> {args.replicas} (demo app, real engine and HAProxy), seconds after the decision")
    firsts, lasts, floors = [], [], []
    for run in range(args.runs):
        first, last, total, daemon_cpu = one_run(args.replicas)
        floor_first, floor_last = engine_floor(new)
        firsts.append(first)
        lasts.append(last)
        floors.append(floor_last)
        print(f"run {run + 1}: first new replica serving {first:.2f} s, all {new} new ones {last:.2f} s "
              f"({total} replicas running; the daemon used {daemon_cpu:.2f} s of CPU meanwhile); baseline, the same "
              f"{new} containers started at once and answering by themselves: first {floor_first:.2f} s, "
              f"all {floor_last:.2f} s; ratio {last / floor_last:.2f}x")
    # Runs alternate with their baselines, so a busier moment of the shared machine hits both.
    print(f"median of {args.runs} runs: first {statistics.median(firsts):.2f} s (goal < 2 s), all {new} "
          f"{statistics.median(lasts):.2f} s (goal < 3 s; under it in {sum(t < 3 for t in lasts)} of {args.runs}); "
          f"baseline all {statistics.median(floors):.2f} s; ratio {statistics.median(lasts) / statistics.median(floors):.2f}x")

if __name__ == "__main__":
    main()
