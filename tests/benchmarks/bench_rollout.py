"""Benchmark: a rolling update of n replicas with the real daemon, engine and HAProxy, under
steady load: how long from the SIGHUP that changes the spec until every replica is of the new
version, and how many requests failed (goal 0).

The floor, from the same run: a rollout replaces n replicas max_surge at a time, each new one
started and passing its check before an old one drains, so it cannot take less than
n / max_surge x (start + check) + one drain. start + check is what the daemon logged for each
new replica ("passed its health check ... N s after its start"), the drain what it logged from
"draining replica" to "removed replica" (idle sessions: about one progress step).

    .venv/bin/python tests/benchmarks/bench_rollout.py [--replicas 4 16] [--surge 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import docker

from benchkit import remove_all


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(service: str, lb_port: int, metrics_port: int, count: int, surge: int, version: int) -> str:
    return f"""
[daemon]
interval_seconds = 1
metrics_listen = "127.0.0.1:{metrics_port}"

[services.{service}]
image = "autoscaler-demo-app:latest"
port = 8000
network = "autoscaler-{service}"
cpu_limit = 0.1
memory_limit = "64MiB"
min_replicas = {count}
max_replicas = {count}
stop_timeout_seconds = 5
env = {{ APP_VERSION = "{version}" }}
rollout = {{ max_surge = {surge} }}

[services.{service}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service}.policy]
drain_timeout_seconds = 10
"""


def status(port: int, service: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.load(r)["services"][service]


class Load:
    """Closed-loop clients through the load balancer; counts sent and failed."""

    def __init__(self, port: int, workers: int = 4) -> None:
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(port,), daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def _run(self, port: int) -> None:
        while not self._stop.is_set():
            ok, error = True, ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/work?cpu_ms=1", timeout=30) as r:
                    json.load(r)["hostname"]
            except (OSError, ValueError, KeyError) as exc:
                ok, error = False, repr(exc)
            with self._lock:
                self.sent += 1
                if not ok:
                    self.failed += 1
                    self.errors.append(error)
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)


def wait(predicate, timeout_seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench_rollout: timed out after {timeout_seconds}s waiting for {what}")


_STAMP = re.compile(r"^(\S+) ")


def _at(line: str) -> float:
    match = _STAMP.match(line)
    return datetime.fromisoformat(match.group(1)).timestamp() if match else 0.0


def one_rollout(count: int, surge: int) -> tuple[float, float, int, int, list[str]]:
    """(rollout seconds, floor seconds, requests sent, failed, first errors)."""
    client = docker.from_env()
    service = f"br{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    lb_port, metrics_port = free_port(), free_port()
    config = tmp / "config.toml"
    config.write_text(config_text(service, lb_port, metrics_port, count, surge, 1))
    log_path = tmp / "daemon.log"
    daemon = subprocess.Popen([sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
                              stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    load = None
    try:
        wait(lambda: status(metrics_port, service)["replicas"]["ready"] == count, 300, f"{count} ready replicas")
        old = status(metrics_port, service)["rollout"]["version"]
        load = Load(lb_port)
        time.sleep(2)
        mark = len(log_path.read_text().splitlines())
        config.write_text(config_text(service, lb_port, metrics_port, count, surge, 2))
        started = time.monotonic()
        daemon.send_signal(signal.SIGHUP)

        def done() -> bool:
            s = status(metrics_port, service)
            return (s["rollout"]["version"] != old and not s["rollout"]["in_progress"]
                    and s["versions"] == {s["rollout"]["version"]: count}
                    and s["replicas"] == {"ready": count, "starting": 0, "draining": 0})

        wait(done, 900, "the rollout")
        seconds = time.monotonic() - started
        time.sleep(1)
        load.stop()
        lines = log_path.read_text().splitlines()[mark:]
        checks = [float(m.group(1)) for line in lines
                  if (m := re.search(r"passed its health check: serving \(([0-9.]+)s after its start\)", line))]
        drains: list[float] = []
        draining_at: dict[str, float] = {}
        for line in lines:
            if (m := re.search(r"draining replica (\S+)", line)):
                draining_at[m.group(1)] = _at(line)
            elif (m := re.search(r"removed replica (\S+) from the load balancer", line)) and m.group(1) in draining_at:
                drains.append(_at(line) - draining_at[m.group(1)])
        start_and_check = statistics.mean(checks) if checks else float("nan")
        floor = count / surge * start_and_check + (statistics.mean(drains) if drains else 0.0)
        return seconds, floor, load.sent, load.failed, load.errors[:3]
    finally:
        if load is not None:
            load.stop()
        daemon.terminate()
        daemon.wait(60)
        remove_all(client, service)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--surge", type=int, default=1)
    args = parser.parse_args()
    print(f"rolling update under load (max_surge {args.surge}, max_unavailable 0), the real daemon, engine and HAProxy")
    for count in args.replicas:
        seconds, floor, sent, failed, errors = one_rollout(count, args.surge)
        print(f"  {count:3d} replicas: {seconds:6.1f} s   floor {floor:6.1f} s (n/surge x (start+check) + drain)   "
              f"ratio {seconds / floor:.2f}x   requests failed {failed} of {sent}"
              + (f"   e.g. {errors}" if errors else ""))


if __name__ == "__main__":
    main()
