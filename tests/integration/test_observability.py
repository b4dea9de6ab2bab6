"""The shipped observability, verified against a real Prometheus during a real scale-out.

Prometheus (Debian's package) runs on loopback with deploy/prometheus/prometheus.yml, pointed at
the daemon under test, and scrapes the daemon and, through the daemon's service discovery, the
load balancer's built-in exporter. Then every PromQL expression of every panel (and annotation)
of deploy/grafana/dashboards/autoscaler.json must return at least one series: add a panel and
this test covers it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Traffic, demo_config, free_port, remove_service_objects, start_daemon, status, stop_daemon, wait_for

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# What Grafana would put in place of its variables.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m"}
REDIS_IMAGE = "autoscaler-redis:latest"


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package: prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + " — .ci/run must install it", pytrace=False)
        pytest.skip(message)
    return path


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every target of every panel, nested rows included, and annotations."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"panel {panel['title']!r} {target.get('refId', '')}", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return found


def prometheus_get(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        document = json.load(response)
    assert document["status"] == "success", document
    return document["data"]


def start_redis(docker_client, service: str) -> int:  # type: ignore[no-untyped-def]
    """A Redis on a loopback port, labelled with the service so that its clean-up removes it;
    returns the port once Redis answers."""
    import docker.errors
    import redis

    try:
        docker_client.images.get(REDIS_IMAGE)
    except docker.errors.ImageNotFound:
        message = f"image {REDIS_IMAGE} is missing; run deploy/build-images.sh"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = free_port()
    docker_client.containers.run(
        REDIS_IMAGE, detach=True, name=f"{service}-redis", labels={"autoscaler.service": service},
        ports={"6379/tcp": ("127.0.0.1", port)},
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False

    wait_for(answers, 30, "Redis to answer")
    # A few jobs waiting, far below the target: the metric has a value and never decides.
    client.lpush("jobs", "a", "b", "c")
    client.close()
    return port


@pytest.fixture(scope="module")
def scaled_service(docker_client, tmp_path_factory) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """A daemon that has scaled a service out under load, still serving traffic. The service
    also has an external metric (a Redis list's length), for the dashboard's external panels."""
    service = f"obs{os.urandom(3).hex()}"
    tmp = tmp_path_factory.mktemp("observability")
    lb_port, metrics_port = free_port(), free_port()
    remove_service_objects(docker_client, service)
    daemon = None
    traffic = Traffic(lb_port)
    try:
        redis_port = start_redis(docker_client, service)
        config = tmp / "config.toml"
        config.write_text(demo_config(service, lb_port, metrics_port, max_replicas=3, policy="""
target_cpu_percent = 50
target_memory_percent = 80
initialization_seconds = 0
scale_down_stabilization_seconds = 600
""") + f"""
[[services.{service}.policy.metrics]]
name = "jobs"
redis = {{ url = "redis://127.0.0.1:{redis_port}/0", list = "jobs" }}
target_average_value = 100
""")
        daemon = start_daemon(config, tmp / "daemon.log")
        wait_for(lambda: status(metrics_port, service)["replicas"]["ready"] == 1, 60, "1 ready replica")
        traffic.start(workers=3, cpu_ms=20, pause_seconds=0)
        wait_for(lambda: status(metrics_port, service)["replicas"]["ready"] >= 2, 90, "a scale-out")
        yield {"service": service, "metrics_port": metrics_port, "tmp": tmp, "log": tmp / "daemon.log"}
    finally:
        traffic.stop_all()
        if daemon is not None and daemon.poll() is None:
            stop_daemon(daemon)
        remove_service_objects(docker_client, service)


@pytest.fixture(scope="module")
def prometheus(scaled_service: dict[str, Any]) -> Iterator[int]:
    binary = need_tool("prometheus")
    tmp: Path = scaled_service["tmp"] / "prometheus"
    tmp.mkdir()
    shipped = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "autoscaler:9464" in shipped
    (tmp / "prometheus.yml").write_text(shipped.replace("autoscaler:9464", f"127.0.0.1:{scaled_service['metrics_port']}"))
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp / "alerts.yml")
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        def targets_up() -> bool:
            active = prometheus_get(port, "/api/v1/targets")["activeTargets"]
            jobs = {t["labels"]["job"] for t in active if t["health"] == "up"}
            return {"autoscaler", "haproxy"} <= jobs

        wait_for(targets_up, 60, "Prometheus to scrape the daemon and the load balancer")
        # rate() over a window needs two samples of each series: a few scrape intervals.
        time.sleep(12)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def test_every_dashboard_query_returns_data(prometheus: int, scaled_service: dict[str, Any]) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "autoscaler.json").read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20

    def substitute(expr: str) -> str:
        expr = expr.replace("$service", scaled_service["service"])
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        return expr

    empty = {where: substitute(expr) for where, expr in queries}
    deadline = time.monotonic() + 60
    while empty and time.monotonic() < deadline:
        for where, expr in list(empty.items()):
            if prometheus_get(prometheus, "/api/v1/query", query=expr)["result"]:
                del empty[where]
        if empty:
            time.sleep(3)
    assert not empty, "queries without data:\n" + "\n".join(f"{w}: {e}" for w, e in empty.items())

    # The service selector (template variable) offers the service.
    [variable] = dashboard["templating"]["list"]
    assert variable["query"]["query"] == "label_values(autoscaler_desired_replicas, service)"
    values = prometheus_get(prometheus, "/api/v1/label/service/values", **{"match[]": "autoscaler_desired_replicas"})
    assert scaled_service["service"] in values


def test_alert_rules_load_and_evaluate(prometheus: int) -> None:
    groups = prometheus_get(prometheus, "/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["name"] for r in rules} >= {
        "AutoscalerNotEvaluating", "AutoscalerPinnedAtMaxReplicas", "AutoscalerMetricFailures",
    }
    assert all(r["health"] != "err" for r in rules), [r for r in rules if r["health"] == "err"]


def test_promtool_accepts_the_daemons_metrics_and_the_shipped_files(scaled_service: dict[str, Any], prometheus: int) -> None:
    promtool = need_tool("promtool")
    with urllib.request.urlopen(f"http://127.0.0.1:{scaled_service['metrics_port']}/metrics", timeout=10) as r:
        exposition = r.read()
    lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint
    rules = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run(
        [promtool, "check", "config", str(scaled_service["tmp"] / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True,
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_haproxy_exporter_is_scraped_per_server(prometheus: int, scaled_service: dict[str, Any]) -> None:
    service = scaled_service["service"]
    servers = prometheus_get(
        prometheus, "/api/v1/query",
        query=f'haproxy_server_http_responses_total{{proxy="replicas",code="2xx",service="{service}"}}',
    )["result"]
    assert len({s["metric"]["server"] for s in servers}) >= 2


def test_status_command_and_readyz(scaled_service: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{scaled_service['metrics_port']}"
    with urllib.request.urlopen(url + "/readyz", timeout=10) as r:
        assert r.status == 200
    table = subprocess.run(["autoscaler", "status", "--url", url], capture_output=True, text=True, env=_venv_env())
    assert table.returncode == 0, table.stderr
    assert scaled_service["service"] in table.stdout and "replicas    ready" in table.stdout
    assert "jobs" in table.stdout and "/ target 100 per replica (average)" in table.stdout
    raw = subprocess.run(["autoscaler", "status", "--url", url, "--json"], capture_output=True, text=True, env=_venv_env())
    document = json.loads(raw.stdout)
    service = document["services"][scaled_service["service"]]
    assert service["replicas"]["ready"] >= 2
    assert service["worker"] is False and service["load_balancer"] is not None
    assert service["external_metrics"] == [{
        "name": "jobs", "source": "redis list 'jobs'", "kind": "average", "target": 100.0, "activation": 0.0,
        "value": 3.0, "error": None,
    }]


def _venv_env() -> dict[str, str]:
    # The console script lives next to the interpreter running the tests.
    import sys

    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
