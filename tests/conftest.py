"""Shared fixtures. Integration tests need a Docker engine and the project's images.

In CI (CI=true) a missing engine or image fails the run loudly; locally those tests skip with
the reason. Everything a test creates carries its unique service name as a label and is removed
by that label afterwards, also when the test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import DaemonProcess, remove_service_objects, wait_for

# testcontainers would pull its Ryuk reaper image, and no registry is reachable here; our
# fixtures clean up by label instead.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

APP_IMAGE = "autoscaler-demo-app:latest"
LB_IMAGE = "autoscaler-haproxy:latest"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no engine" here
        _unavailable(f"no Docker engine reachable ({exc.__class__.__name__}); start dockerd first")
    for image in (APP_IMAGE, LB_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            _unavailable(f"image {image} is missing; run deploy/build-images.sh")
    yield client
    client.close()


@pytest.fixture
def service_name(docker_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"t{uuid.uuid4().hex[:8]}"
    remove_service_objects(docker_client, name)
    yield name
    remove_service_objects(docker_client, name)


@pytest.fixture
def run_daemon(docker_client, service_name: str, tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:  # type: ignore[no-untyped-def]
    """Starts the daemon as a process on a config text (files NAME.toml and NAME.log in the
    test's tmp_path, with extra command-line flags and environment) and waits for its first
    decision; stops every one it started and removes the service's objects afterwards."""
    started: list[DaemonProcess] = []

    def run(config_text: str, metrics_port: int, name: str = "config", *flags: str,
            env: dict[str, str] | None = None) -> DaemonProcess:
        config = tmp_path / f"{name}.toml"
        config.write_text(config_text)
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "autoscaler.cli", "run", *flags, "--config", str(config)],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        daemon = DaemonProcess(service_name, process, log, metrics_port)
        started.append(daemon)

        def decided() -> bool:
            assert daemon.process.poll() is None, f"the daemon exited:\n{daemon.log()}"
            return daemon.status().get("desired_replicas") is not None

        wait_for(decided, 60, "the daemon's first decision")
        return daemon

    yield run
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.stop(60)
    remove_service_objects(docker_client, service_name)
