"""The daemon's own image (deploy/autoscaler/Dockerfile), as deploy/docker-compose.yml runs it:
non-root, the Docker socket through its group, load balancers reached over the service network.

It runs on whichever engine the tests reach (DOCKER_HOST included, local or not): the socket
and cgroups are mounted from the engine's host, the config is copied into the container, and
every request is made from inside the containers, so nothing depends on this machine's files
or on reaching a published port."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

import docker.errors
import pytest

from helpers import free_port, wait_for

pytestmark = pytest.mark.docker

IMAGE = "autoscaler:latest"
# The engine's own socket, on the engine's host (what docker-compose.yml mounts).
ENGINE_SOCKET = "/var/run/docker.sock"


@pytest.fixture
def daemon_image(docker_client):  # type: ignore[no-untyped-def]
    try:
        docker_client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        message = f"{IMAGE} is missing; run deploy/build-images.sh"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return IMAGE


def engine_socket_gid(docker_client, service: str) -> int:  # type: ignore[no-untyped-def]
    """The group of the engine's socket as its host sees it (this machine's may be another)."""
    out = docker_client.containers.run(
        IMAGE, entrypoint=["python3", "-c", f"import os; print(os.stat({ENGINE_SOCKET!r}).st_gid)"],
        volumes={ENGINE_SOCKET: {"bind": ENGINE_SOCKET, "mode": "ro"}}, labels={"autoscaler.service": service},
        remove=True)
    return int(out.decode().strip())


def copy_into(container, path: str, text: str) -> None:  # type: ignore[no-untyped-def]
    """Copies a file into a created container (the engine may not see this machine's files)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        directory = tarfile.TarInfo(os.path.dirname(path).lstrip("/"))
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        data = text.encode()
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    assert container.put_archive("/", archive.getvalue())


def get_json_inside(container, url: str) -> dict:  # type: ignore[no-untyped-def]
    """GET url from inside the container (its python3)."""
    result = container.exec_run(["python3", "-c", "import sys, urllib.request as u; "
                                 f"sys.stdout.write(u.urlopen({url!r}, timeout=5).read().decode())"])
    if result.exit_code != 0:
        raise OSError(f"GET {url} in {container.name}: {result.output.decode()[-500:]}")
    return json.loads(result.output)


def test_the_image_runs_the_daemon_as_non_root_over_the_service_network(
    daemon_image: str, docker_client, service_name: str  # type: ignore[no-untyped-def]
) -> None:
    network = f"autoscaler-{service_name}"
    # The daemon's container must sit on the service's network to reach its load balancer by name.
    docker_client.networks.create(network, labels={"autoscaler.service": service_name})
    lb_port = free_port()
    config = f"""
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
"""
    # As in docker-compose.yml: a named volume for the admin sockets, shared with the load balancer.
    admin_volume = docker_client.volumes.create(f"{service_name}-admin", labels={"autoscaler.service": service_name})
    container = docker_client.containers.create(
        daemon_image,
        name=f"{service_name}-daemon",
        labels={"autoscaler.service": service_name},  # for clean-up; not a managed container
        group_add=[str(engine_socket_gid(docker_client, service_name))],
        volumes={ENGINE_SOCKET: {"bind": "/var/run/docker.sock", "mode": "rw"},
                 admin_volume.name: {"bind": "/run/autoscaler", "mode": "rw"},
                 "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
        network=network,
    )
    copy_into(container, "/etc/autoscaler/config.toml", config)
    container.start()
    assert container.exec_run("id -u").output.decode().strip() == "10001"

    def status() -> dict:
        container.reload()
        assert container.status == "running", container.logs().decode()[-2000:]
        return get_json_inside(container, "http://127.0.0.1:9464/status")["services"][service_name]

    wait_for(lambda: status()["replicas"]["ready"] == 1, 60, "the containerised daemon to start a replica")
    # With the host's cgroups mounted read-only it reads the files, not the Docker API.
    wait_for(lambda: status()["stats_source"] == "cgroup", 20, "stats from the cgroup files")
    (lb,) = docker_client.containers.list(filters={"label": [f"autoscaler.service={service_name}",
                                                             "autoscaler.role=load-balancer"]})
    lb_url = f"http://{lb.attrs['NetworkSettings']['Networks'][network]['IPAddress']}:8080/healthz"
    assert get_json_inside(container, lb_url)["status"] == "ok"

    container.stop(timeout=30)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
    assert "Traceback" not in container.logs().decode()
    # Stopping the daemon is not an outage: the load balancer still serves, seen from a replica.
    time.sleep(0.5)
    (replica,) = docker_client.containers.list(filters={"label": [f"autoscaler.service={service_name}",
                                                                  "autoscaler.role=replica"]})
    assert get_json_inside(replica, lb_url)["status"] == "ok"
