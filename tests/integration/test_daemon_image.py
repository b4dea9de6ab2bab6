"""The daemon's own image (deploy/autoscaler/Dockerfile), as deploy/docker-compose.yml runs it:
non-root, the Docker socket through its group, load balancers reached over the service network."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import docker.errors
import pytest

from helpers import free_port, wait_for

pytestmark = pytest.mark.docker

IMAGE = "autoscaler:latest"
SOCKET = "/var/run/docker.sock"


@pytest.fixture
def daemon_image(docker_client):  # type: ignore[no-untyped-def]
    try:
        docker_client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        message = f"{IMAGE} is missing; run deploy/build-images.sh"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    if not os.path.exists(SOCKET):
        pytest.skip(f"the engine is not at {SOCKET}")
    return IMAGE


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_the_image_runs_the_daemon_as_non_root_over_the_service_network(
    daemon_image: str, docker_client, service_name: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    network = f"autoscaler-{service_name}"
    # The daemon's container must sit on the service's network to reach its load balancer by name.
    docker_client.networks.create(network, labels={"autoscaler.service": service_name})
    lb_port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f"""
[daemon]
interval_seconds = 1
metrics_listen = "0.0.0.0:9464"
load_balancer_access = "network"

[services.{service_name}]
image = "autoscaler-demo-app:latest"
port = 8000
network = "{network}"
cpu_limit = 0.25
memory_limit = "128MiB"

[services.{service_name}.load_balancer]
publish = "127.0.0.1:{lb_port}"
""")
    config.chmod(0o644)
    # As in docker-compose.yml: a named volume for the admin sockets, shared with the load balancer.
    admin_volume = docker_client.volumes.create(f"{service_name}-admin", labels={"autoscaler.service": service_name})
    container = docker_client.containers.run(
        daemon_image,
        detach=True,
        name=f"{service_name}-daemon",
        labels={"autoscaler.service": service_name},  # for clean-up; not a managed container
        group_add=[str(os.stat(SOCKET).st_gid)],
        volumes={SOCKET: {"bind": "/var/run/docker.sock", "mode": "rw"},
                 str(config): {"bind": "/etc/autoscaler/config.toml", "mode": "ro"},
                 admin_volume.name: {"bind": "/run/autoscaler", "mode": "rw"},
                 "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
        network=network,
        ports={"9464/tcp": ("127.0.0.1", None)},
    )
    container.reload()
    metrics_port = int(container.ports["9464/tcp"][0]["HostPort"])
    assert container.exec_run("id -u").output.decode().strip() == "10001"

    def ready() -> bool:
        container.reload()
        assert container.status == "running", container.logs().decode()[-2000:]
        return get_json(f"http://127.0.0.1:{metrics_port}/status")["services"][service_name]["replicas"]["ready"] == 1

    wait_for(ready, 60, "the containerised daemon to start a replica")
    # With the host's cgroups mounted read-only it reads the files, not the Docker API.
    wait_for(lambda: get_json(f"http://127.0.0.1:{metrics_port}/status")["services"][service_name]["stats_source"]
             == "cgroup", 20, "stats from the cgroup files")
    served = get_json(f"http://127.0.0.1:{lb_port}/healthz")
    assert served["status"] == "ok"

    container.stop(timeout=30)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
    assert "Traceback" not in container.logs().decode()
    # Stopping the daemon is not an outage.
    time.sleep(0.5)
    assert get_json(f"http://127.0.0.1:{lb_port}/healthz")["status"] == "ok"
