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
from typing import Any, NoReturn

import pytest

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


def creations(docker_client, service: str, since: float, role: str = "replica") -> list[tuple[float, str]]:  # type: ignore[no-untyped-def]
    """(time, name) of each container of `role` the engine created for `service` since `since`
    (wall clock, as the engine reports it)."""
    events = docker_client.events(
        since=int(since), until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": "create", "label": [f"autoscaler.service={service}", f"autoscaler.role={role}"]},
    )
    # The API's `since` is whole seconds: the event's own nanoseconds decide.
    return [(e["timeNano"] / 1e9, e["Actor"]["Attributes"].get("name", "")) for e in events if e.get("timeNano", 0) >= since * 1e9]


def replicas_created(docker_client, service: str, since: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Names of the replica containers the engine created for `service` since `since`."""
    return [name for _, name in creations(docker_client, service, since)]


def backoff_delay_seconds(failures: int, initial_seconds: float = 1, max_seconds: float = 60) -> float:
    """The configured backoff (backoff_initial_seconds doubling up to backoff_max_seconds)."""
    return min(max_seconds, initial_seconds * 2.0 ** (failures - 1))


def check_backoff(attempts: list[float], end: float, fail_seconds: float, slack_seconds: float = 10) -> str:
    """Asserts that start attempts (the engine's create times) keep the backoff's schedule.

    After the k-th failed attempt the next one comes no sooner than the attempt took to fail
    (`fail_seconds`) plus the k-th delay: a lower bound that no slow machine breaks. The upper
    bound, that delay plus `slack_seconds` (noticing the failure, an interval, a loaded
    machine), is only a hang guard: a retry that is never made. Returns the count and the
    range the schedule allows from the first attempt to `end`, as text for the results.
    """
    assert attempts, "no attempt at all"
    due = [backoff_delay_seconds(k) + fail_seconds for k in range(1, len(attempts) + 1)]
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
    for k, gap in enumerate(gaps):
        # 0.25 s: the engine stamps the event a moment after the container's own creation time,
        # from which a check's timeout counts.
        assert gap >= due[k] - 0.25, f"attempt {k + 2} came {gap:.2f}s after the one before, sooner than {due[k]:.1f}s: {gaps}"
        assert gap <= due[k] + slack_seconds, f"attempt {k + 2} came {gap:.2f}s after the one before (due after {due[k]:.1f}s)"
    assert end - attempts[-1] <= due[-1] + slack_seconds, f"no attempt for {end - attempts[-1]:.1f}s after the last (due after {due[-1]:.1f}s)"

    def count_by(extra: float) -> int:  # attempts made by `end` when each waits its due time plus extra
        count, at = 1, attempts[0]
        while at + backoff_delay_seconds(count) + fail_seconds + extra <= end:
            at += backoff_delay_seconds(count) + fail_seconds + extra
            count += 1
        return count

    fewest, most = count_by(slack_seconds), count_by(0)
    assert fewest <= len(attempts) <= most
    return f"{len(attempts)} in {end - attempts[0]:.0f} s (the backoff allows {fewest}-{most})"


def watch_decisions(daemon: DaemonProcess, seconds: float) -> list[float]:
    """Watches /status for `seconds`; returns the time (wall clock) of each decision seen."""
    wait_until(lambda: daemon.status()["last_decision"], 30, "the daemon's first decision")
    seen: set[float] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            seen.add(daemon.status()["last_decision"]["at"])
        except (urllib.error.URLError, OSError, KeyError, TypeError):
            pass
        time.sleep(0.25)
    return sorted(seen)


def check_decisions_go_on(decisions: list[float], attempts: list[float], end: float) -> None:
    """Decisions went on while starts waited: each wait of 2 s or more between attempts, and the
    time after the last one, had a decision in it (the order, not its timing)."""
    waits = list(zip(attempts, attempts[1:])) + [(attempts[-1], end)]
    for start, stop in waits:
        if stop - start >= 2:
            assert any(start < at < stop for at in decisions), (
                f"no decision between {start:.1f} and {stop:.1f} (decisions at {decisions})")


def running_replicas(docker_client, service: str) -> list[Any]:  # type: ignore[no-untyped-def]
    return docker_client.containers.list(filters={"label": [f"autoscaler.service={service}", "autoscaler.role=replica"]})




def unavailable(message: str) -> NoReturn:
    """A scenario this machine cannot run: a failure in CI (which must provide it), else a skip."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


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
