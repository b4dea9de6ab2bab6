"""Helpers shared by the integration tests."""

from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors


def remove_service_objects(client, service: str) -> None:  # type: ignore[no-untyped-def]
    """Removes every container and network labelled with this service name."""
    # The low-level list: containers.list() inspects each container it lists, which fails for
    # one removed in between (a lease container removes itself).
    for container in client.api.containers(all=True, filters={"label": f"autoscaler.service={service}"}):
        try:
            # v: the daemon image's anonymous admin volume too
            client.api.remove_container(container["Id"], force=True, v=True)
        except docker.errors.APIError as exc:
            # Gone meanwhile, or already being removed (a lease container removes itself).
            if exc.status_code not in (404, 409):
                raise
    for network in client.networks.list(filters={"label": f"autoscaler.service={service}"}):
        network.remove()
    for volume in client.volumes.list(filters={"label": f"autoscaler.service={service}"}):
        volume.remove(force=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Faults' windows for Traffic: name -> (start, end, the fewest requests in flight or sent inside
# it that make a claim about it mean something); times are time.monotonic().
Windows = dict[str, tuple[float, float, int]]


@dataclass(frozen=True)
class Outcome:
    """One request: when it was sent and answered (monotonic), and who answered or why it failed."""

    sent_at: float
    done_at: float
    host: str | None
    error: str | None


class Traffic:
    """Closed-loop clients through the load balancer, recording every request with its times.

    A request counts as failed unless it gets a 200 with a JSON object naming the replica that
    answered: a malformed reply is a failure, never a client thread that dies unseen.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout_seconds: float = 30) -> None:
        self.port = port
        self.host = host
        self.timeout_seconds = timeout_seconds
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._stops: list[threading.Event] = []
        self._threads: list[threading.Thread] = []

    def _one(self, cpu_ms: int) -> None:
        sent_at = time.monotonic()
        host: str | None = None
        error: str | None = None
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/work?cpu_ms={cpu_ms}",
                                        timeout=self.timeout_seconds) as r:
                status_code = r.status
                body = json.load(r)
            if status_code != 200:
                error = f"status {status_code}"
            elif not isinstance(body, dict) or not isinstance(body.get("hostname"), str):
                error = f"malformed reply {str(body)[:80]!r}"
            else:
                host = body["hostname"]
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong, the request failed
            error = repr(exc)
        with self.lock:
            self.outcomes.append(Outcome(sent_at, time.monotonic(), host, error))

    def start(self, workers: int, cpu_ms: int, pause_seconds: float) -> threading.Event:
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                self._one(cpu_ms)
                if pause_seconds:
                    stop.wait(pause_seconds)

        for _ in range(workers):
            thread = threading.Thread(target=loop, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._stops.append(stop)
        return stop

    def stop_all(self) -> None:
        for stop in self._stops:
            stop.set()
        for thread in self._threads:
            thread.join(40)

    @property
    def sent(self) -> int:
        with self.lock:
            return len(self.outcomes)

    @property
    def failures(self) -> list[str]:
        with self.lock:
            return [f"{o.sent_at:.1f}: {o.error}" for o in self.outcomes if o.error is not None]

    def during(self, start: float, end: float) -> int:
        """Requests that met the window: in flight at its start or sent inside it."""
        with self.lock:
            return sum(1 for o in self.outcomes if o.sent_at <= end and o.done_at >= start)

    def hosts_since(self, since: float) -> set[str]:
        with self.lock:
            return {o.host for o in self.outcomes if o.host is not None and o.done_at >= since}

    def counts(self, windows: Windows | None = None) -> str:
        """"F of N" failed, with the number that met each window (in flight or sent), e.g. "0 of 412 (kill -> replaced: 31)"."""
        text = f"{len(self.failures)} of {self.sent}"
        if windows:
            text += " (" + ", ".join(f"{name}: {self.during(start, end)}" for name, (start, end, _) in windows.items()) + ")"
        return text

    def assert_served(self, at_least: int, windows: Windows | None = None, failed_at_most: int = 0) -> str:
        """No request failed (or at most `failed_at_most`), and enough were sent for that to mean
        something: `at_least` in all, and inside each fault's window its minimum."""
        counts = self.counts(windows)
        assert len(self.failures) <= failed_at_most, f"{counts} failed (at most {failed_at_most}): {self.failures[:10]}"
        assert self.sent >= at_least, f"{counts}: at least {at_least} requests make the claim"
        for name, (start, end, minimum) in (windows or {}).items():
            assert self.during(start, end) >= minimum, f"{counts}: at least {minimum} {name} make the claim"
        return counts


def status(metrics_port: int, service: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/status", timeout=5) as r:
        return json.load(r)["services"][service]


def wait_for(predicate, timeout_seconds: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (urllib.error.URLError, OSError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_seconds}s waiting for {what}")


def start_daemon(config: Path, log_path: Path) -> subprocess.Popen:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop_daemon(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def demo_config(service: str, lb_port: int, metrics_port: int, max_replicas: int, policy: str) -> str:
    """A daemon config for the demo app on loopback ports, evaluating every second."""
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
min_replicas = 1
max_replicas = {max_replicas}
stop_timeout_seconds = 5

[services.{service}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service}.policy]
{policy}
"""


@dataclass
class DaemonProcess:
    """A daemon run as a process by a test: its /status, /metrics and log, stop and kill."""

    service: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def status(self) -> dict[str, Any]:
        return json.loads(self.get("/status")[1])["services"][self.service]

    def metric(self, name: str, **labels: str) -> float | None:
        wanted = {"service": self.service, **labels}
        for line in self.get("/metrics")[1].splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in wanted.items()):
                return float(line.rsplit(" ", 1)[1])
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_seconds: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_seconds)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
