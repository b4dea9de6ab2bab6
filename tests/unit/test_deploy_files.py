"""The shipped deploy/ files are well-formed and consistent with each other."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALLOWED_IMAGES = re.compile(r"^(autoscaler(-haproxy|-demo-app)?:latest|prom/prometheus:v[\d.]+|grafana/grafana:[\d.]+)$")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: .ci/run must install it", pytrace=False)
        pytest.skip(f"{name} is not installed")
    return path


def test_compose_file_is_valid_for_compose_v1_and_uses_only_allowed_images() -> None:
    result = subprocess.run(
        [tool("docker-compose"), "-f", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True, text=True, env={**os.environ, "DOCKER_GID": "999"},
    )
    assert result.returncode == 0, result.stderr
    images = re.findall(r"^\s+image:\s*(\S+)", result.stdout, re.MULTILINE)
    assert images and all(ALLOWED_IMAGES.match(i) for i in images), images
    # Every port the stack publishes stays on the host's loopback.
    mappings = re.findall(r'-\s*"([\w.:]+:\d+:\d+)"', (DEPLOY / "docker-compose.yml").read_text())
    assert mappings and all(m.startswith("127.0.0.1:") for m in mappings), mappings


def test_compose_mounts_match_the_provisioning_paths() -> None:
    compose = (DEPLOY / "docker-compose.yml").read_text()
    provider = (DEPLOY / "grafana" / "provisioning" / "dashboards" / "autoscaler.yml").read_text()
    assert "./grafana/dashboards:/var/lib/grafana/dashboards" in compose
    assert "path: /var/lib/grafana/dashboards" in provider
    datasource = (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "uid: prometheus" in datasource and "url: http://prometheus:9090" in datasource
    assert (DEPLOY / "compose" / "autoscaler.toml").exists()


def test_compose_daemon_config_is_valid() -> None:
    from autoscaler.config import load_config

    settings = load_config(DEPLOY / "compose" / "autoscaler.toml", environ={})
    assert settings.daemon.load_balancer_access == "network"
    assert settings.services["demo"].network == "autoscaler-demo"


def test_dashboard_panels_use_the_provisioned_datasource_and_the_service_variable() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "autoscaler.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            # Per-service series must follow the selector; daemon-wide ones need not.
            if "autoscaler_external_call" not in expr:
                assert 'service="$service"' in expr, (panel["title"], expr)
    assert dashboard["templating"]["list"][0]["name"] == "service"


def test_the_swarm_stack_is_consistent_with_its_daemon_config() -> None:
    """deploy/swarm: the config names the stack's service and network, the stack labels what
    the daemon looks for, and the scrape config is valid for promtool."""
    from autoscaler.config import load_config

    stack = (DEPLOY / "swarm" / "stack.yml").read_text()
    settings = load_config(DEPLOY / "swarm" / "autoscaler.toml", environ={})
    web = settings.services["web"]
    assert (web.backend, web.swarm_service, web.effective_metrics_source) == ("swarm", "autoscaler_web", "agent")
    assert f"name: {web.network}" in stack and "attachable: true" in stack
    assert "autoscaler.service: web" in stack, "the adopted service carries the label"
    assert "autoscaler.role: agent" in stack and "mode: global" in stack
    assert f"published: {settings.daemon.swarm_agent_port}, mode: host" in stack
    assert "endpoint_mode: dnsrr" in stack, "no IPVS needed"
    result = subprocess.run([tool("docker-compose"), "-f", str(DEPLOY / "swarm" / "stack.yml"), "config"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_swarm_scrape_config_passes_promtool(tmp_path: Path) -> None:
    # The stack mounts prometheus.yml and alerts.yml side by side in /etc/prometheus.
    shutil.copy(DEPLOY / "swarm" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- deploy/systemd/autoscaler.service ----------------------------------------------------------

UNIT = DEPLOY / "systemd" / "autoscaler.service"


def read_unit(path: Path = UNIT) -> configparser.ConfigParser:
    # strict: a key given twice would be a list to systemd but silently one value here.
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def test_the_systemd_unit_runs_reloads_and_restarts_the_daemon() -> None:
    from autoscaler.config.daemon import DaemonConfig

    service = read_unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "autoscaler" and argv[1] == "run", argv
    assert argv[2] == "--config" and argv[3].startswith("/"), argv
    # systemctl reload sends SIGHUP, which re-reads the config.
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure" and float(service["RestartSec"]) > 0
    assert "2" in service["RestartPreventExitStatus"].split(), "a bad config is not retried"
    # SIGTERM gives the operations in progress shutdown_timeout_seconds; systemd must wait longer.
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > DaemonConfig().shutdown_timeout_seconds


def test_the_systemd_unit_reaches_the_engine_as_a_dedicated_user_with_its_admin_socket_dir() -> None:
    unit = read_unit()
    assert "docker.service" in unit["Unit"]["After"].split()
    assert "docker.service" in (unit["Unit"].get("Wants", "") + " " + unit["Unit"].get("Requires", "")).split()
    service = unit["Service"]
    assert service["User"] not in ("", "root", "0")
    assert "docker" in service["SupplementaryGroups"].split(), "the Docker socket's group"
    # The load balancers bind-mount the admin socket dir: it must survive a restart of the daemon.
    assert service["RuntimeDirectory"] == "autoscaler" and service["RuntimeDirectoryPreserve"] == "yes"
    environment = dict(item.split("=", 1) for item in shlex.split(service["Environment"]))
    assert environment["AUTOSCALER_DAEMON__ADMIN_SOCKET_DIR"] == "/run/autoscaler"
    # The daemon finds replicas' cgroups through /proc/<pid>/cgroup of processes not its own.
    assert service.get("ProtectProc", "default") in ("default", "noaccess", "ptraceable")
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart exists: point it at this venv's console script.
    script = Path(sys.executable).with_name("autoscaler")
    if not script.exists():
        pytest.skip(f"{script} is missing (the project is not installed in this venv)")
    argv = shlex.split(read_unit()["Service"]["ExecStart"])
    copy = tmp_path / "autoscaler.service"
    copy.write_text(UNIT.read_text().replace(f"ExecStart={argv[0]} ", f"ExecStart={script} "))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# --- deploy/autoscaler/Dockerfile -------------------------------------------------------------


def test_the_daemon_image_builds_with_the_legacy_builder_from_what_dockerignore_lets_in() -> None:
    dockerfile = (DEPLOY / "autoscaler" / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.replace("\\\n", " ").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    # No BuildKit: no RUN --mount, no heredocs, no syntax directive.
    assert not any("--mount" in line or "<<" in line for line in instructions)
    assert "# syntax" not in dockerfile
    # The packages are installed in a build stage; the last stage only copies its venv.
    stages = [line.split() for line in instructions if line.startswith("FROM ")]
    assert [s[1] for s in stages] == ["debian:bookworm-slim", "python", "venv", "python"], stages
    assert "COPY --from=build /opt/autoscaler /opt/autoscaler" in instructions
    # Every file copied from the context (the repository's root) is let in by .dockerignore.
    allowed = {line[1:] for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    sources = [part for line in instructions if line.startswith("COPY ") and "--from=" not in line
               for part in line.split()[1:-1]]
    assert sources and set(sources) <= allowed, (sources, allowed)
    assert all((DEPLOY.parent / source).exists() for source in sources)


# --- deploy/compose/docker-compose.autoscaler.yml: the daemon alone, next to a user's project ---

PRODUCTION_COMPOSE = DEPLOY / "compose" / "docker-compose.autoscaler.yml"


def compose_config(path: Path, *options: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_GID" and not k.startswith("AUTOSCALER_")}
    return subprocess.run([tool("docker-compose"), "-f", str(path), "config", *options],
                          capture_output=True, text=True, env={**env, **environ})


def test_the_production_compose_file_runs_only_the_daemon_with_what_it_needs(tmp_path: Path) -> None:
    from autoscaler.config.daemon import DaemonConfig

    environ = {"DOCKER_GID": "999", "AUTOSCALER_CONFIG_DIR": str(tmp_path)}
    assert compose_config(PRODUCTION_COMPOSE, "--services", **environ).stdout.split() == ["autoscaler"]
    result = compose_config(PRODUCTION_COMPOSE, **environ)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert re.findall(r"^\s+image:\s*(\S+)", text, re.MULTILINE) == ["autoscaler:latest"]
    assert "/var/run/docker.sock:/var/run/docker.sock:rw" in text
    assert f"{tmp_path}:/etc/autoscaler:ro" in text
    assert "admin:/run/autoscaler:rw" in text and "name: autoscaler-admin" in text
    assert "/sys/fs/cgroup:/sys/fs/cgroup:ro" in text
    assert "group_add:\n    - '999'" in text
    assert "restart: unless-stopped" in text
    assert "AUTOSCALER_DAEMON__LOAD_BALANCER_ACCESS: network" in text
    # The metrics port only on the host's loopback; the daemon's shutdown fits in the grace period.
    assert re.findall(r"^\s+- (\S+:\d+:\d+)(?:/tcp)?$", text, re.MULTILINE) == ["127.0.0.1:9464:9464"]
    grace = re.search(r"stop_grace_period: (\d+)s", text)
    assert grace and int(grace.group(1)) > DaemonConfig().shutdown_timeout_seconds


def test_the_production_compose_file_refuses_to_start_without_the_socket_group_or_the_config(tmp_path: Path) -> None:
    missing_gid = compose_config(PRODUCTION_COMPOSE, AUTOSCALER_CONFIG_DIR=str(tmp_path))
    assert missing_gid.returncode != 0 and "DOCKER_GID" in missing_gid.stderr
    missing_config = compose_config(PRODUCTION_COMPOSE, DOCKER_GID="999")
    assert missing_config.returncode != 0 and "AUTOSCALER_CONFIG_DIR" in missing_config.stderr
