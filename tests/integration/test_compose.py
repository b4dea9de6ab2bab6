"""Replicas made from a user's own compose service, next to a real compose project (Debian's
docker-compose 1.29): a web app with a named volume and two networks (the second one shared
with its database) scaled out behind our load balancer, with compose and the daemon each
leaving the other's containers alone; templates that cannot be replicated refused at start."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import DaemonProcess, Traffic, free_port, remove_service_objects, start_daemon, wait_for

pytestmark = pytest.mark.docker

COMPOSE_FILE = """
version: "2.4"
services:
  web:
    image: autoscaler-demo-app:latest
    environment:
      SHOP_GREETING: hello-from-compose
    volumes:
      - shared:/data
    networks: [front, back]
    labels:
      shop.tier: web
  db:
    image: autoscaler-redis:latest
    networks: [back]
volumes:
  shared:
networks:
  front:
  back:
"""


def compose_binary() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        message = "docker-compose is not installed (Debian package: docker-compose)"
        if os.environ.get("CI"):
            pytest.fail(message + " — tests/run.sh must install it", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def shop(docker_client, service_name: str, tmp_path: Path) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    binary = compose_binary()
    project = f"shop{service_name}"
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE)

    def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([binary, "-p", project, *args], cwd=tmp_path, capture_output=True, text=True, timeout=180)
        if check:
            assert result.returncode == 0, f"docker-compose {' '.join(args)}: {result.stdout}{result.stderr}"
        return result

    try:
        compose("up", "-d")
        yield {"project": project, "compose": compose, "dir": tmp_path}
    finally:
        remove_service_objects(docker_client, service_name)
        compose("down", "-v", check=False)


def template_config(service: str, project: str, metrics_port: int, lb_port: int, count: int, extra: str = "") -> str:
    """A daemon config whose replicas copy the project's web service, `count` of them."""
    return f"""
[daemon]
interval_seconds = 1
metrics_listen = "127.0.0.1:{metrics_port}"

[services.{service}]
template = {{ compose_project = "{project}", compose_service = "web" }}
port = 8000
network = "{project}_front"
cpu_limit = 0.25
memory_limit = "128MiB"
min_replicas = {count}
max_replicas = {count}
{extra}

[services.{service}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service}.policy]
drain_timeout_seconds = 10
"""


def replica_containers(docker_client, service: str) -> list[Any]:  # type: ignore[no-untyped-def]
    return docker_client.containers.list(filters={"label": [f"autoscaler.service={service}", "autoscaler.role=replica"]})


def test_a_compose_web_app_scaled_out_with_its_volumes_networks_and_env_next_to_compose(
    docker_client, service_name: str, shop: dict[str, Any], tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    project, compose = shop["project"], shop["compose"]
    template = docker_client.containers.get(f"{project}_web_1")
    template.exec_run(["sh", "-c", "echo written-by-the-template > /data/proof"], user="0")
    metrics_port, lb_port = free_port(), free_port()
    config = tmp_path / "autoscaler.toml"
    config.write_text(template_config(service_name, project, metrics_port, lb_port, 3,
                                      'labels = { "shop.scaled-by" = "autoscaler" }'))
    daemon = DaemonProcess(service_name, start_daemon(config, tmp_path / "daemon.log"), tmp_path / "daemon.log", metrics_port)
    traffic = Traffic(lb_port)
    try:
        wait_for(lambda: daemon.status()["replicas"]["ready"] == 3, 90, "3 replicas of the compose service")
        traffic.start(workers=2, cpu_ms=2, pause_seconds=0.02)
        replicas = replica_containers(docker_client, service_name)
        assert len(replicas) == 3
        for replica in replicas:
            attrs = replica.attrs
            assert "SHOP_GREETING=hello-from-compose" in attrs["Config"]["Env"]
            labels = attrs["Config"]["Labels"]
            assert labels["shop.tier"] == "web" and labels["shop.scaled-by"] == "autoscaler"
            assert not [k for k in labels if k.startswith("com.docker.compose.")], "compose must not count it as its own"
            networks = attrs["NetworkSettings"]["Networks"]
            assert {f"{project}_front", f"{project}_back"} <= set(networks)
            assert "web" in networks[f"{project}_back"]["Aliases"]  # reached by the service's name, as the template
            assert attrs["HostConfig"]["NanoCpus"] == int(0.25e9)  # the TOML's limit over the template's (none)
            output = replica.exec_run(["cat", "/data/proof"]).output.decode().strip()
            assert output == "written-by-the-template", "the named volume is the template's"
            reach = replica.exec_run(["python3", "-c", "import socket; socket.create_connection(('db', 6379), 3)"])
            assert reach.exit_code == 0, f"the database on the second network: {reach.output!r}"
        ids = sorted(r.id for r in replicas)

        # compose and the daemon side by side: neither removes or recreates the other's.
        listed = compose("ps", "-q").stdout.split()
        assert sorted(listed) == sorted([template.id, docker_client.containers.get(f"{project}_db_1").id])
        up = compose("up", "-d")
        assert "Recreating" not in up.stdout + up.stderr
        time.sleep(2)
        assert sorted(r.id for r in replica_containers(docker_client, service_name)) == ids

        # The template removed while the daemon runs: a reload that needs it is refused, the
        # config in force stays and the replicas go on serving.
        compose("rm", "-sf", "web")
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reload rejected: services." in daemon.log(), 30, "the reload to be refused")
        assert f"services.{service_name}.template" in daemon.log()
        time.sleep(2)
        assert sorted(r.id for r in replica_containers(docker_client, service_name)) == ids
    finally:
        traffic.stop_all()
    traffic.assert_served(at_least=50)
    assert daemon.stop() == 0

    # `docker-compose down` cannot remove networks our replicas are on: it says so and fails...
    down = compose("down", check=False)
    assert down.returncode != 0 and "has active endpoints" in down.stderr
    # ... until `autoscaler down` removed what the daemon made; then compose's down completes.
    result = subprocess.run([sys.executable, "-m", "autoscaler.cli", "down", "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "removed 3 replica(s), the load balancer" in result.stdout
    assert replica_containers(docker_client, service_name) == []
    assert compose("down").returncode == 0


def test_autoscaler_down_is_refused_while_a_daemon_runs(
    docker_client, service_name: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from helpers import demo_config

    metrics_port, lb_port = free_port(), free_port()
    config = tmp_path / "autoscaler.toml"
    config.write_text(demo_config(service_name, lb_port, metrics_port, max_replicas=1, policy=""))
    daemon = DaemonProcess(service_name, start_daemon(config, tmp_path / "daemon.log"), tmp_path / "daemon.log", metrics_port)
    try:
        wait_for(lambda: daemon.status()["replicas"]["ready"] == 1, 60, "a replica")
        result = subprocess.run([sys.executable, "-m", "autoscaler.cli", "down", "--config", str(config)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "a daemon is running for it" in result.stderr and "Traceback" not in result.stderr
        assert len(replica_containers(docker_client, service_name)) == 1
    finally:
        daemon.stop()
        remove_service_objects(docker_client, service_name)


@pytest.mark.parametrize(
    ("run_kwargs", "expected"),
    [
        ({"network_mode": "host"}, "uses network_mode host"),
        ({"network_mode": "none"}, "has no network"),
        # What compose does for a service with `container_name: custom`: its labels, another name.
        ({"labels_extra": {"com.docker.compose.project": "p", "com.docker.compose.service": "s",
                           "com.docker.compose.container-number": "1"}}, "has a container_name"),
        (None, "does not exist"),
    ],
    ids=["host-network", "no-network", "container-name", "missing"],
)
def test_a_template_that_cannot_be_replicated_is_refused_at_start(
    docker_client, service_name: str, tmp_path: Path, run_kwargs: dict[str, Any] | None, expected: str  # type: ignore[no-untyped-def]
) -> None:
    name = f"{service_name}-template"
    if run_kwargs is not None:
        extra = dict(run_kwargs)
        labels = {"autoscaler.service": service_name, **extra.pop("labels_extra", {})}
        docker_client.containers.run("autoscaler-demo-app:latest", name=name, detach=True, labels=labels, **extra)
    metrics_port = free_port()
    config = tmp_path / "autoscaler.toml"
    config.write_text(f"""
[daemon]
metrics_listen = "127.0.0.1:{metrics_port}"

[services.{service_name}]
template = {{ container = "{name}" }}
port = 8000
cpu_limit = 0.25
memory_limit = "128MiB"

[services.{service_name}.load_balancer]
publish = "127.0.0.1:{free_port()}"
""")
    try:
        result = subprocess.run([sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert replica_containers(docker_client, service_name) == []
        assert docker_client.containers.list(all=True, filters={"label": [f"autoscaler.service={service_name}",
                                                                           "autoscaler.role=load-balancer"]}) == []
    finally:
        remove_service_objects(docker_client, service_name)


def test_compose_recreating_the_template_with_a_new_config_is_rolled_out(
    docker_client, service_name: str, shop: dict[str, Any], tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    project, compose = shop["project"], shop["compose"]
    metrics_port, lb_port = free_port(), free_port()
    config = tmp_path / "autoscaler.toml"
    config.write_text(template_config(service_name, project, metrics_port, lb_port, 2))
    daemon = DaemonProcess(service_name, start_daemon(config, tmp_path / "daemon.log"), tmp_path / "daemon.log", metrics_port)
    traffic = Traffic(lb_port)
    try:
        wait_for(lambda: daemon.status()["replicas"]["ready"] == 2, 90, "2 replicas of the compose service")
        first = daemon.status()["rollout"]["version"]
        traffic.start(workers=2, cpu_ms=2, pause_seconds=0.02)
        # The user ships a new config: compose recreates its container...
        compose_file = shop["dir"] / "docker-compose.yml"
        compose_file.write_text(compose_file.read_text().replace("hello-from-compose", "hello-again"))
        up = compose("up", "-d")
        assert "Recreating" in up.stdout + up.stderr

        def rolled_out() -> bool:
            status = daemon.status()
            return (status["rollout"]["version"] != first and not status["rollout"]["in_progress"]
                    and list(status["versions"].values()) == [2] and status["replicas"]["ready"] == 2)

        # ... and the daemon, which reads the template again every 10 s, rolls it out.
        wait_for(rolled_out, 120, "the new template rolled out")
    finally:
        traffic.stop_all()
        daemon.stop()
    traffic.assert_served(at_least=100)
    for replica in replica_containers(docker_client, service_name):
        assert "SHOP_GREETING=hello-again" in replica.attrs["Config"]["Env"]
    assert "the template changed" in daemon.log()
