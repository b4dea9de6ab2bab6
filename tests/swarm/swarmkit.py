"""Tools of the Swarm suite (tests/swarm/): the lab handle, daemon processes pointed at the lab's
manager, and their config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from helpers import DaemonProcess, free_port

REPO = Path(__file__).resolve().parents[2]

@dataclass
class Lab:
    docker_host: str
    manager_ip: str
    client: docker.DockerClient

    def tasks(self, service: str, running: bool = True) -> list[dict[str, Any]]:
        tasks = self.client.api.tasks(filters={"service": f"autoscaler-{service}"})
        return [t for t in tasks if not running or (t["Status"]["State"] == "running" and t["DesiredState"] == "running")]

    def nodes(self) -> dict[str, str]:
        """node id -> hostname"""
        return {n["ID"]: n["Description"]["Hostname"] for n in self.client.api.nodes()}

    def remove_service_objects(self, service: str) -> None:
        label = f"autoscaler.service={service}"
        for svc in self.client.api.services(filters={"label": label}):
            self.client.api.remove_service(svc["ID"])
        # The low-level list: containers.list() inspects each container it lists, and the
        # service's tasks are going away (a 404 between the list and the inspect).
        for container in self.client.api.containers(all=True, filters={"label": label}):
            try:
                self.client.api.remove_container(container["Id"], force=True)
            except docker.errors.APIError:
                pass  # gone already, or going
        deadline = time.time() + 30
        for network in self.client.networks.list(filters={"label": label}):
            while True:
                try:
                    network.remove()
                    break
                except docker.errors.APIError:
                    if time.time() > deadline:
                        raise
                    time.sleep(1)


def swarm_config(service: str, lb_port: int, *, service_keys: str = "", policy: str = "",
                 interval_seconds: float = 1, lb_keys: str = "") -> str:
    return f"""
[daemon]
interval_seconds = {interval_seconds}
metrics_listen = "127.0.0.1:{free_port()}"
shutdown_timeout_seconds = 5

[services.{service}]
backend = "swarm"
image = "autoscaler-demo-app:latest"
port = 8000
cpu_limit = 0.25
memory_limit = "128MiB"
{service_keys}

[services.{service}.load_balancer]
publish = "0.0.0.0:{lb_port}"
{lb_keys}

[services.{service}.policy]
initialization_seconds = 0
{policy}
"""


@dataclass
class SwarmDaemons:
    lab: Lab
    service: str
    tmp_path: Path
    lb_port: int = field(default_factory=free_port)
    started: list[DaemonProcess] = field(default_factory=list)

    def config(self, **kwargs: Any) -> Path:
        path = self.tmp_path / "config.toml"
        path.write_text(swarm_config(self.service, self.lb_port, **kwargs))
        return path

    def start(self, config: Path, name: str = "daemon") -> DaemonProcess:
        port = free_port()
        log_path = self.tmp_path / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DOCKER_HOST": self.lab.docker_host,
               "AUTOSCALER_DAEMON__METRICS_LISTEN": f"127.0.0.1:{port}"}
        process = subprocess.Popen([sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
                                   stdout=log_path.open("ab"), stderr=subprocess.STDOUT, env=env)
        daemon = DaemonProcess(self.service, process, log_path, port)
        self.started.append(daemon)
        return daemon

    @property
    def url(self) -> str:
        return f"http://{self.lab.manager_ip}:{self.lb_port}"


