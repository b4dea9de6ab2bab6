"""The daemon refuses to start with a clear message, a non-zero exit, and nothing left behind."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import demo_config, free_port

pytestmark = pytest.mark.docker


def run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )


def containers(docker_client, service: str) -> list:  # type: ignore[no-untyped-def]
    return docker_client.containers.list(all=True, filters={"label": f"autoscaler.service={service}"})


def test_a_missing_image_it_may_not_pull_exits_2_before_creating_anything(docker_client, service_name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # With pull = "missing" (the default) the first start would pull it instead
    # (tests/integration/test_registry.py).
    config = tmp_path / "config.toml"
    config.write_text(
        demo_config(service_name, free_port(), free_port(), 2, "target_cpu_percent = 50")
        .replace('"autoscaler-demo-app:latest"', '"autoscaler-no-such-image:latest"\npull = "never"')
    )
    result = run(config)
    assert result.returncode == 2
    assert "autoscaler-no-such-image:latest" in result.stderr and "build-images.sh" in result.stderr
    assert 'let the daemon pull autoscaler-no-such-image:latest: pull = "missing"' in result.stderr
    assert "Traceback" not in result.stderr
    assert containers(docker_client, service_name) == []
    assert docker_client.networks.list(names=[f"autoscaler-{service_name}"]) == []


def test_a_taken_client_port_exits_1_and_leaves_no_container(docker_client, service_name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(demo_config(service_name, port, free_port(), 2, "target_cpu_percent = 50"))
        result = run(config)
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert containers(docker_client, service_name) == []
    assert docker_client.networks.list(names=[f"autoscaler-{service_name}"]) == [], "the network it made went too"


def test_limits_beyond_the_engine_exit_2_naming_the_key(docker_client, service_name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.toml"
    config.write_text(
        demo_config(service_name, free_port(), free_port(), 2, "target_cpu_percent = 50")
        .replace("cpu_limit = 0.25", "cpu_limit = 1000")
    )
    result = run(config)
    assert result.returncode == 2
    assert f"services.{service_name}.cpu_limit: 1000 cores, but the Docker engine has" in result.stderr
    assert "Traceback" not in result.stderr
    assert containers(docker_client, service_name) == []
