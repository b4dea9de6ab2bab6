"""The Swarm suite runs on a real three-node swarm of Docker-in-Docker nodes (deploy/swarm-lab.sh),
brought up once for the session and removed afterwards, also when a test fails.

The daemons under test run on this host and talk to the manager (DOCKER_HOST); clients reach
the load balancer at the manager's address on the lab network, where it is published with
mode=host. Each test's Swarm services carry its unique service name as a label and are removed
by it.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from swarmkit import REPO, Lab, SwarmDaemons


@pytest.fixture(scope="session")
def lab(docker_client) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    script = REPO / "deploy" / "swarm-lab.sh"
    try:
        result = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            message = f"the swarm lab did not come up:\n{result.stderr[-3000:]}"
            if os.environ.get("CI"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        values = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines()
                      if line.startswith("export "))
        client = docker.DockerClient(base_url=values["DOCKER_HOST"], timeout=60)
        yield Lab(values["DOCKER_HOST"], values["SWARMLAB_MANAGER_IP"], client)
        client.close()
    finally:
        subprocess.run(["bash", str(script), "down"], capture_output=True, timeout=300)


@pytest.fixture
def swarm_daemons(lab: Lab, tmp_path: Path) -> Iterator[SwarmDaemons]:
    service = f"s{uuid.uuid4().hex[:7]}"
    factory = SwarmDaemons(lab, service, tmp_path)
    yield factory
    for daemon in factory.started:
        daemon.kill()
    lab.remove_service_objects(service)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The worker-node kills leave the lab two nodes short: they run last."""
    last = [i for i in items if i.name.startswith("test_a_worker_node_killed_under_load")]
    items[:] = [i for i in items if i not in last] + last
