"""The fault scenarios' tools: real daemon processes, real containers, real faults (killed
containers, a stopped dockerd, two daemons, SIGKILL). Each test bounds its own time and
everything it creates carries its service label, removed afterwards even when it fails.

Each scenario records a row (recovery time, failed requests, containers created) in
out/fault-results.md, the source of the README's reliability table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import DaemonProcess, free_port

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "out" / "fault-results.md"


def fault_config(
    service: str,
    lb_port: int,
    metrics_port: int,
    *,
    interval_seconds: float = 1,
    service_keys: str = "",
    policy: str = "",
) -> str:
    # A key given in service_keys replaces the template's line for it.
    overridden = {line.split("=", 1)[0].strip() for line in service_keys.splitlines() if "=" in line}
    base = "\n".join(
        line for line in """image = "autoscaler-demo-app:latest"
port = 8000
cpu_limit = 0.25
memory_limit = "128MiB"
stop_timeout_seconds = 5""".splitlines() if line.split("=", 1)[0].strip() not in overridden
    )
    return f"""
[daemon]
interval_seconds = {interval_seconds}
metrics_listen = "127.0.0.1:{metrics_port}"
shutdown_timeout_seconds = 5

[services.{service}]
network = "autoscaler-{service}"
{base}
{service_keys}

[services.{service}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service}.policy]
initialization_seconds = 0
{policy}
"""


@dataclass
class RunningDaemon(DaemonProcess):
    lb_port: int = 0


@dataclass
class DaemonFactory:
    service: str
    tmp_path: Path
    lb_port: int = field(default_factory=free_port)
    started: list[RunningDaemon] = field(default_factory=list)

    def config(self, **kwargs: Any) -> Path:
        path = self.tmp_path / "config.toml"
        # The metrics port in the file is replaced per daemon (AUTOSCALER_DAEMON__METRICS_LISTEN).
        path.write_text(fault_config(self.service, self.lb_port, free_port(), **kwargs))
        return path

    def start(self, config: Path, metrics_port: int | None = None, name: str = "daemon") -> RunningDaemon:
        port = metrics_port or free_port()
        log_path = self.tmp_path / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTOSCALER_DAEMON__METRICS_LISTEN": f"127.0.0.1:{port}"}
        process = subprocess.Popen(
            [sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
            stdout=log_path.open("ab"), stderr=subprocess.STDOUT, env=env,
        )
        daemon = RunningDaemon(self.service, process, log_path, port, self.lb_port)
        self.started.append(daemon)
        return daemon


def wait_until(predicate: Callable[[], Any], timeout_seconds: float, what: str, poll_seconds: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (urllib.error.URLError, OSError, KeyError, ValueError, json.JSONDecodeError):
            last = None
        if last:
            return last
        time.sleep(poll_seconds)
    raise AssertionError(f"timed out after {timeout_seconds}s waiting for {what} (last: {last!r})")


def replicas_created(docker_client, service: str, since: float, until: float | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """Names of the replica containers the engine created for `service` in [since, until]."""
    events = docker_client.events(
        since=int(since), until=int(until or time.time()) + 1, decode=True,
        filters={"type": "container", "event": "create", "label": [f"autoscaler.service={service}", "autoscaler.role=replica"]},
    )
    # The API's `since` is whole seconds: the event's own nanoseconds decide.
    return [e["Actor"]["Attributes"].get("name", "") for e in events if e.get("timeNano", 0) >= since * 1e9]


def running_replicas(docker_client, service: str) -> list[Any]:  # type: ignore[no-untyped-def]
    return docker_client.containers.list(filters={"label": [f"autoscaler.service={service}", "autoscaler.role=replica"]})




def dockerd_command() -> list[str] | None:
    """The running dockerd's command line, to start it again the same way (None: none here)."""
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    if len(found) != 1 or os.geteuid() != 0:
        return None
    return [part.decode() for part in Path(f"/proc/{found[0]}/cmdline").read_bytes().split(b"\0") if part]


def stop_dockerd(timeout_seconds: float = 60) -> None:
    (pid,) = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"dockerd did not stop within {timeout_seconds}s")
        time.sleep(0.2)


def start_dockerd(command: list[str], timeout_seconds: float = 60) -> None:
    """Starts dockerd as .ci/run's set-up does (in the background, log in /tmp/dockerd.log)."""
    with open("/tmp/dockerd.log", "ab") as log:
        subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_seconds
    while subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"dockerd did not come back within {timeout_seconds}s (see /tmp/dockerd.log)")
        time.sleep(0.2)
