"""The Swarm backend on a real three-node swarm: scale out under CPU load with tasks on several
nodes, scale in with no failed request, the agents' CPU against `docker stats` on the node, a
daemon restart that adopts, bad input refused, and a worker node killed under load (last: it
leaves the lab one node short)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import docker
import pytest

from autoscaler.lb.haproxy import HAProxyRuntime
from externals import Exporter, prometheus_server, wait_scraped
from helpers import Traffic, free_port
from swarmkit import REPO, Lab, SwarmDaemons, swarm_config

pytestmark = pytest.mark.docker

RESULTS: list[str] = []


def wait_until(predicate, timeout_seconds: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, KeyError, ValueError, TypeError):
            last = None
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_seconds}s waiting for {what} (last: {last!r})")


def ready(daemon) -> int:  # type: ignore[no-untyped-def]
    return int(daemon.status()["replicas"]["ready"])


def test_scales_out_across_nodes_and_back_in_with_no_failed_request(lab: Lab, swarm_daemons: SwarmDaemons) -> None:
    config = swarm_daemons.config(service_keys="min_replicas = 1\nmax_replicas = 6", policy="""
target_cpu_percent = 50
scale_down_stabilization_seconds = 10
drain_timeout_seconds = 10
""")
    daemon = swarm_daemons.start(config)
    wait_until(lambda: ready(daemon) == 1, 120, "1 ready task")
    traffic = Traffic(swarm_daemons.lb_port, host=lab.manager_ip, timeout_seconds=30)
    traffic.start(workers=1, cpu_ms=1, pause_seconds=0.1)  # a probe through the whole cycle
    try:
        started = time.monotonic()
        heavy = traffic.start(workers=4, cpu_ms=30, pause_seconds=0)
        wait_until(lambda: ready(daemon) >= 3, 120, ">= 3 ready tasks")
        scaled_out = time.monotonic() - started
        nodes = {t["NodeID"] for t in lab.tasks(swarm_daemons.service)}
        assert len(nodes) >= 2, f"tasks on {len(nodes)} node(s)"
        spread_from = time.monotonic()
        wait_until(lambda: len(traffic.hosts_since(spread_from)) >= 3, 30, "requests reaching 3 tasks")
        heavy.set()
        stopped = time.monotonic()
        wait_until(lambda: daemon.status()["replicas"] == {"ready": 1, "starting": 0, "draining": 0}, 150,
                   "back to 1 task")
        scaled_in = time.monotonic() - stopped
        wait_until(lambda: len(lab.tasks(swarm_daemons.service)) == 1, 60, "Swarm down to 1 running task")
        removed = time.monotonic()
        time.sleep(2)
    finally:
        traffic.stop_all()
    log = daemon.log()
    assert daemon.stop() == 0
    # The probe alone sends ~8 a second (a 0.1 s pause) through the scale-in, which takes >= 10 s
    # of stabilization; the minimums are about a fifth of that, the whole run's a tenth.
    windows = {"load stop -> Swarm down to 1 task": (stopped, removed, 15)}
    RESULTS.append(f"scale-out to >= 3 on {len(nodes)} nodes in {scaled_out:.1f} s, back to 1 in {scaled_in:.1f} s; "
                   f"failed requests {traffic.counts(windows)}")
    print("\nswarm: " + RESULTS[-1])
    traffic.assert_served(at_least=60, windows=windows)
    assert "marked for removal by the orchestrator" in log, "each leaving task was drained first"
    assert "Traceback" not in log


def _docker_stats_on_node(node: str, container_id: str) -> float:
    """The container's CPU (cores) as `docker stats` on its own node shows it."""
    out = subprocess.run(["docker", "exec", node, "docker", "stats", "--no-stream", "--format", "{{.CPUPerc}}",
                          container_id], capture_output=True, text=True, check=True).stdout
    return float(out.strip().rstrip("%")) / 100


def _agent_cores(daemon, task_name: str) -> float | None:  # type: ignore[no-untyped-def]
    text = daemon.get("/metrics")[1]
    for line in text.splitlines():
        if line.startswith("autoscaler_replica_cpu_percent{") and f'replica="{task_name}"' in line:
            value = float(line.rsplit(" ", 1)[1])
            return None if value != value else value / 100 * 0.25
    return None


def test_the_agent_reads_a_busy_task_on_a_worker_as_docker_stats_does(lab: Lab, swarm_daemons: SwarmDaemons) -> None:
    config = swarm_daemons.config(service_keys="min_replicas = 3\nmax_replicas = 3")
    daemon = swarm_daemons.start(config)
    wait_until(lambda: ready(daemon) == 3, 120, "3 ready tasks")
    nodes = lab.nodes()
    workers = [t for t in lab.tasks(swarm_daemons.service) if "worker" in nodes[t["NodeID"]]]
    assert workers, "a task on a worker"
    task = workers[0]
    node = nodes[task["NodeID"]]
    container = task["Status"]["ContainerStatus"]["ContainerID"]
    task_name = f"autoscaler-{swarm_daemons.service}.{task['Slot']}.{task['ID']}"
    # Load that one task from inside its own container: steady, whatever the balancing.
    burner = subprocess.Popen(["docker", "exec", node, "docker", "exec", container, "python3", "-c",
                               "import urllib.request as u\nwhile True: u.urlopen('http://127.0.0.1:8000/work?cpu_ms=500').read()"])
    try:
        time.sleep(4)
        comparisons = []
        for _ in range(3):
            shown = _docker_stats_on_node(node, container)
            ours = wait_until(lambda: _agent_cores(daemon, task_name), 10, "the agent's reading")
            comparisons.append((ours, shown))
            time.sleep(1)
    finally:
        burner.kill()
        burner.wait(10)
    ours, shown = max(comparisons, key=lambda c: c[1])
    RESULTS.append(f"busy task on {node}: agent {ours:.3f} cores, docker stats on the node {shown:.3f} cores")
    print("\nswarm: " + RESULTS[-1] + f" (all: {comparisons})")
    assert shown > 0.15, "the task was busy"
    assert abs(ours - shown) <= 0.10 * shown, comparisons
    assert daemon.stop() == 0


def test_a_restarted_daemon_adopts_the_service_its_tasks_and_its_load_balancer(lab: Lab, swarm_daemons: SwarmDaemons) -> None:
    config = swarm_daemons.config(service_keys="min_replicas = 2\nmax_replicas = 4")
    daemon = swarm_daemons.start(config)
    wait_until(lambda: ready(daemon) == 2, 120, "2 ready tasks")
    assert daemon.stop() == 0
    before_tasks = {t["ID"] for t in lab.tasks(swarm_daemons.service)}
    before_services = {s["ID"]: s["Version"]["Index"] for s in lab.client.api.services(
        filters={"label": f"autoscaler.service={swarm_daemons.service}"})}
    restarted = swarm_daemons.start(config, name="restarted")
    wait_until(lambda: ready(restarted) == 2 and restarted.status()["last_decision"], 60, "adopted and serving")
    time.sleep(3)
    with urllib.request.urlopen(f"{swarm_daemons.url}/healthz", timeout=5) as r:
        assert json.load(r)["status"] == "ok"
    assert {t["ID"] for t in lab.tasks(swarm_daemons.service)} == before_tasks, "same tasks"
    after_services = {s["ID"]: s["Version"]["Index"] for s in lab.client.api.services(
        filters={"label": f"autoscaler.service={swarm_daemons.service}"})}
    assert after_services == before_services, "the service and the load balancer adopted, not changed"
    assert restarted.stop() == 0


@pytest.mark.parametrize("problem", ["global", "unlabelled"])
def test_an_adopted_service_that_cannot_be_scaled_is_refused(lab: Lab, swarm_daemons: SwarmDaemons, problem: str) -> None:
    name = f"adopt-{swarm_daemons.service}"
    labels = {"autoscaler.service": swarm_daemons.service} if problem == "global" else {"autoscaler.other": "x"}
    mode = docker.types.ServiceMode("global") if problem == "global" else docker.types.ServiceMode("replicated", replicas=1)
    lab.client.api.create_service(docker.types.TaskTemplate(docker.types.ContainerSpec("autoscaler-demo-app:latest")),
                                  name=name, labels=labels, mode=mode)
    try:
        config = swarm_daemons.config(service_keys=f'swarm_service = "{name}"')
        daemon = swarm_daemons.start(config)
        code = daemon.process.wait(60)
        log = daemon.log()
        assert code == 2, log
        assert ("is global" if problem == "global" else "does not carry the label") in log
        assert "Traceback" not in log
    finally:
        lab.client.api.remove_service(name)


@pytest.mark.parametrize("per_try_seconds", [None, 5], ids=["one-try", "per-try-5s"])
def test_a_worker_node_killed_under_load(lab: Lab, swarm_daemons: SwarmDaemons, per_try_seconds: int | None) -> None:
    """Only requests HAProxy had sent to the dead node may fail (those in flight on it at the
    kill, and those it sent there until its checks took it out of rotation, within seconds),
    counted from HAProxy's own session counters of the node's servers; every other request is
    served. A killed node's network goes with it, so a request sent there gets no answer at
    all: with one try it waits for the client's timeout, with a per-try timeout HAProxy sends it
    again elsewhere (tests/faults/test_hangs.py). Run twice, each killing a worker: the lab ends
    two nodes short, so these run last."""
    lb_keys = "" if per_try_seconds is None else f"per_try_timeout_seconds = {per_try_seconds}"
    config = swarm_daemons.config(service_keys="min_replicas = 3\nmax_replicas = 3\nstartup_timeout_seconds = 20",
                                  lb_keys=lb_keys)
    daemon = swarm_daemons.start(config)
    wait_until(lambda: ready(daemon) == 3, 120, "3 ready tasks")
    nodes = lab.nodes()
    live = {n["ID"] for n in lab.client.api.nodes() if n["Status"]["State"] == "ready"}
    # The node to kill: a live worker (the manager runs the load balancer) with the most tasks.
    on_node: dict[str, list[dict]] = {}
    for task in lab.tasks(swarm_daemons.service):
        if task["NodeID"] in live:
            on_node.setdefault(nodes[task["NodeID"]], []).append(task)
    on_workers = {host: tasks for host, tasks in on_node.items() if "worker" in host}
    assert on_workers, f"no task on a worker: {sorted(on_node)}"
    victim = max(sorted(on_workers), key=lambda host: len(on_workers[host]))
    victim_tasks = on_workers[victim]
    victim_servers = {f"autoscaler-{swarm_daemons.service}.{t['Slot']}.{t['ID']}" for t in victim_tasks}
    victim_hosts = {t["Status"]["ContainerStatus"]["ContainerID"][:12] for t in victim_tasks}
    runtime = HAProxyRuntime(f"/run/autoscaler/autoscaler-{swarm_daemons.service}-lb.sock")

    def in_flight_on_victim() -> int:
        return sum(s.sessions_current for name, s in runtime.servers().items() if name in victim_servers)

    sent_to_victim = [0]  # the most requests HAProxy has counted for the node's servers

    def sessions_total_on_victim() -> int:
        return sum(s.sessions_total for name, s in runtime.servers().items() if name in victim_servers)

    def victim_out_of_rotation() -> bool:
        servers = runtime.servers()
        sent_to_victim[0] = max(sent_to_victim[0],
                                sum(s.sessions_total for name, s in servers.items() if name in victim_servers))
        return not any(s.serving for name, s in servers.items() if name in victim_servers)

    # The load: 6 clients of 60 ms of CPU each (0.25-core tasks: about 0.25 s a request
    # alone), clients giving up after 10 s.
    workers = 6
    traffic = Traffic(swarm_daemons.lb_port, host=lab.manager_ip, timeout_seconds=10)
    loaded = time.monotonic()
    traffic.start(workers=workers, cpu_ms=60, pause_seconds=0)
    try:
        time.sleep(3)
        served_before = traffic.hosts_since(loaded)
        # In flight on the node at the kill: HAProxy's current sessions on its tasks just before
        # the kill and just after it (requests sent to it meanwhile are in flight on it too).
        in_flight = in_flight_on_victim()
        sent_before_kill = sent_to_victim[0] = sessions_total_on_victim()
        killed = time.monotonic()
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
        in_flight = max(in_flight, in_flight_on_victim())
        dead_ids = {nid for nid, host in nodes.items() if host == victim}
        wait_until(victim_out_of_rotation, 60, "the dead node's servers out of rotation")
        out_of_rotation = time.monotonic() - killed
        # Sent to the dead node after the kill, before its checks took it out of rotation.
        sent_after_kill = sent_to_victim[0] - sent_before_kill

        def recovered() -> bool:
            tasks = lab.tasks(swarm_daemons.service)
            return (len(tasks) == 3 and not {t["NodeID"] for t in tasks} & dead_ids
                    and daemon.status()["replicas"]["ready"] == 3)

        wait_until(recovered, 120, "3 tasks serving on the remaining nodes")
        recovery = time.monotonic()
        time.sleep(3)
    finally:
        traffic.stop_all()
    # Membership is exactly the running tasks: the dead node's servers are gone.
    servers = runtime.servers()
    running = {f"autoscaler-{swarm_daemons.service}.{t['Slot']}.{t['ID']}" for t in lab.tasks(swarm_daemons.service)}
    assert {n for n, s in servers.items() if s.serving} == running
    log = daemon.log()
    assert daemon.stop() == 0
    # 6 clients send about 10 a second, and the recovery takes >= 10 s (the node's tasks are
    # rescheduled once the manager declares it down); the minimums are about a fifth of that.
    windows = {"from the kill to 3 tasks serving": (killed, recovery, 20)}
    mode = "one try" if per_try_seconds is None else f"per-try timeout {per_try_seconds} s"
    RESULTS.append(f"{mode}: {victim} killed with {len(victim_tasks)} of 3 tasks on it, {in_flight} requests in "
                   f"flight on it and {sent_after_kill} sent to it after the kill; out of rotation after "
                   f"{out_of_rotation:.1f} s, recovered in "
                   f"{recovery - killed:.1f} s; failed requests {traffic.counts(windows)}")
    print("\nswarm: " + RESULTS[-1])
    assert served_before & victim_hosts, f"the killed node's tasks {victim_hosts} served before it: {served_before}"
    # Only what HAProxy had sent to the node may fail: everything else is served.
    traffic.assert_served(at_least=40, windows=windows, failed_at_most=in_flight + sent_after_kill)
    assert "Traceback" not in log
    for line in RESULTS:
        print("swarm result: " + line)


def test_a_swarm_service_against_an_engine_that_is_no_manager_is_refused(tmp_path, docker_client) -> None:  # type: ignore[no-untyped-def]
    """The host's own engine is not in swarm mode: one sentence, exit 2, nothing created."""
    config = tmp_path / "config.toml"
    config.write_text(swarm_config("nomanager", 18999))
    result = subprocess.run([sys.executable, "-m", "autoscaler.cli", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"})
    assert result.returncode == 2, result.stderr
    assert re.search(r"needs a swarm manager, but the Docker engine at .* is not one: run `docker swarm init`",
                     result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert docker_client.containers.list(all=True, filters={"label": "autoscaler.service=nomanager"}) == []


# --- the shipped stack, the Prometheus source, an agent that goes away -------------------------
# (defined after the node-kill test in the file, run before it: see pytest_collection_modifyitems)


def test_the_shipped_stack_deploys_and_scales_its_web_service(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """deploy/swarm/stack.yml as `docker stack deploy` runs it on the manager (without its
    Prometheus, whose image comes from Docker Hub): the daemon in its container adopts the
    stack's web service, creates the load balancer and scales under load."""
    for service in lab.client.api.services(filters={"label": "autoscaler.role=agent"}):
        lab.client.api.remove_service(service["ID"])  # the stack brings its own agents
    stack = (REPO / "deploy" / "swarm" / "stack.yml").read_text()
    stack = stack[: stack.index("  prometheus:\n    image: prom/")] + stack[stack.index("networks:\n  web:"):]
    stack = stack.replace("  prometheus:\n    file: ./prometheus.yml\n  alerts:\n    file: ../prometheus/alerts.yml\n", "")
    config = (REPO / "deploy" / "swarm" / "autoscaler.toml").read_text().replace(
        "interval_seconds = 5", "interval_seconds = 1").replace(
        "scale_down_stabilization_seconds = 60", "scale_down_stabilization_seconds = 5")
    (tmp_path / "stack.yml").write_text(stack)
    (tmp_path / "autoscaler.toml").write_text(config)
    subprocess.run(["docker", "cp", str(tmp_path), "swarmlab-manager:/tmp/stack"], check=True)
    deployed = subprocess.run(["docker", "exec", "-w", "/tmp/stack", "swarmlab-manager", "docker", "stack", "deploy",
                               "-c", "stack.yml", "autoscaler"], capture_output=True, text=True)
    assert deployed.returncode == 0, deployed.stderr
    traffic = Traffic(8080, host=lab.manager_ip, timeout_seconds=30)
    try:
        def status() -> dict:
            with urllib.request.urlopen(f"http://{lab.manager_ip}:9464/status", timeout=5) as r:
                return json.load(r)["services"]["web"]

        wait_until(lambda: status()["replicas"]["ready"] >= 1 and status()["stats_source"] == "agent", 120,
                   "the stack's daemon serving web")
        with urllib.request.urlopen(f"http://{lab.manager_ip}:8080/healthz", timeout=5) as r:
            assert json.load(r)["status"] == "ok"
        traffic.start(workers=4, cpu_ms=30, pause_seconds=0)
        wait_until(lambda: status()["replicas"]["ready"] >= 2, 120, "the stack's web scaled out")
        tasks = lab.client.api.tasks(filters={"service": "autoscaler_web", "desired-state": "running"})
        assert len(tasks) >= 2
    finally:
        traffic.stop_all()
        subprocess.run(["docker", "exec", "swarmlab-manager", "docker", "stack", "rm", "autoscaler"], capture_output=True)
        time.sleep(3)
        lab.remove_service_objects("web")
        for volume in lab.client.volumes.list():
            if volume.name.startswith("autoscaler_"):
                try:
                    volume.remove(force=True)
                except docker.errors.APIError:
                    pass
    # 4 clients, ~0.12 s a request (30 ms of CPU at 0.25 cores), for the >= 2 s of a scale-out.
    print("\nswarm: the stack's web scaled out; failed requests " + traffic.assert_served(at_least=20))


def test_the_prometheus_source_reads_the_agents_through_a_real_prometheus(lab: Lab, swarm_daemons: SwarmDaemons, tmp_path) -> None:  # type: ignore[no-untyped-def]
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus is not installed (Debian package: prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    # The shipped scrape config, pointed at the lab's manager socket.
    shipped = (REPO / "deploy" / "swarm" / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(shipped.replace("unix:///var/run/docker.sock", lab.docker_host))
    (tmp_path / "alerts.yml").write_text((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    port = free_port()
    prometheus = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                  stdout=(tmp_path / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        config = swarm_daemons.config(
            service_keys=f'min_replicas = 2\nmax_replicas = 2\nmetrics_source = "prometheus"\n'
                         f'[services.{swarm_daemons.service}.prometheus]\nurl = "http://127.0.0.1:{port}"',
        )
        # The agents come from the agent source's service: the Prometheus here scrapes them.
        daemon = swarm_daemons.start(config)
        wait_until(lambda: ready(daemon) == 2, 120, "2 ready tasks")
        lab_backend_agents = lab.client.api.services(filters={"label": "autoscaler.role=agent"})
        if not lab_backend_agents:  # this daemon's source is Prometheus: start agents for it to scrape
            from autoscaler.docker.engine import DockerEngine
            from autoscaler.swarm.backend import Swarm, SwarmAgents
            SwarmAgents(Swarm(DockerEngine(lab.client))).ensure()
        traffic = Traffic(swarm_daemons.lb_port, host=lab.manager_ip)
        traffic.start(workers=3, cpu_ms=30, pause_seconds=0)
        try:
            def busy() -> bool:
                utilization = (daemon.status()["utilization"].get("cpu") or {}).get("value")
                return utilization is not None and utilization > 30

            wait_until(busy, 90, "CPU from Prometheus showing the load")
        finally:
            traffic.stop_all()
        status = daemon.status()
        assert status["stats_source"] == "prometheus"
        assert "Traceback" not in daemon.log()
        assert daemon.stop() == 0
    finally:
        prometheus.terminate()
        prometheus.wait(30)


def test_a_new_version_goes_out_through_swarms_own_rolling_update(lab: Lab, swarm_daemons: SwarmDaemons) -> None:
    service = swarm_daemons.service
    config = swarm_daemons.config(service_keys='min_replicas = 2\nmax_replicas = 2\nenv = { APP_VERSION = "1" }',
                                  policy="drain_timeout_seconds = 10")
    daemon = swarm_daemons.start(config)
    wait_until(lambda: ready(daemon) == 2, 120, "2 ready tasks")
    first = {t["ID"] for t in lab.tasks(service)}
    traffic = Traffic(swarm_daemons.lb_port, host=lab.manager_ip)
    traffic.start(workers=2, cpu_ms=2, pause_seconds=0.05)
    try:
        config.write_text(config.read_text().replace('APP_VERSION = "1"', 'APP_VERSION = "2"'))
        daemon.process.send_signal(__import__("signal").SIGHUP)

        def updated() -> bool:
            tasks = lab.tasks(service)
            envs = [t["Spec"]["ContainerSpec"].get("Env") or [] for t in tasks]
            return (len(tasks) == 2 and not {t["ID"] for t in tasks} & first
                    and all("APP_VERSION=2" in env for env in envs) and ready(daemon) == 2)

        wait_until(updated, 180, "Swarm's update to replace both tasks")
        time.sleep(2)
    finally:
        traffic.stop_all()
    counts = traffic.assert_served(at_least=50)
    assert "rolling update to version" in daemon.log()
    # Swarm watches the last task for its monitor period before it calls the update complete.
    wait_until(lambda: (lab.client.api.inspect_service(f"autoscaler-{service}").get("UpdateStatus") or {})
               .get("State") == "completed", 60, "Swarm to call its update completed")
    RESULTS.append(f"swarm rolling update of 2 tasks under load (Swarm's own, start-first): requests {counts}")
    print("\nswarm: " + RESULTS[-1])


def test_a_worker_service_without_a_load_balancer_goes_0_to_3_to_0_on_a_prometheus_query(
    lab: Lab, swarm_daemons: SwarmDaemons, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    """A replicated Swarm service with no load balancer of ours (a worker), its count set from
    an external metric: a query of a real Prometheus scraping an exporter of the test's own."""
    service = swarm_daemons.service
    exporter = Exporter()
    exporter.values = {"test_work_items": 0.0}
    try:
        with prometheus_server(tmp_path / "prometheus", [f"127.0.0.1:{exporter.port}"]) as prometheus:
            wait_scraped(prometheus, "test_work_items")
            config = tmp_path / "worker.toml"
            config.write_text(f"""
[daemon]
interval_seconds = 1
shutdown_timeout_seconds = 5

[services.{service}]
backend = "swarm"
image = "autoscaler-demo-app:latest"
cpu_limit = 0.25
memory_limit = "128MiB"
min_replicas = 0
max_replicas = 3
stop_timeout_seconds = 5

[services.{service}.policy]
initialization_seconds = 0
scale_down_stabilization_seconds = 0
scale_to_zero_after_seconds = 3

[[services.{service}.policy.metrics]]
name = "work_items"
prometheus = {{ url = "{prometheus.url}", query = "sum(test_work_items)" }}
target_average_value = 1
""")
            daemon = swarm_daemons.start(config)
            wait_until(lambda: daemon.status()["desired_replicas"] == 0, 120, "the worker service at 0")
            assert lab.tasks(service) == []
            assert lab.client.api.services(filters={"label": f"autoscaler.service={service}", "name": "autoscaler-" + service + "-lb"}) == []
            exporter.values["test_work_items"] = 3.0
            wait_until(lambda: ready(daemon) == 3 and len(lab.tasks(service)) == 3, 120, "3 running tasks")
            nodes = {t["NodeID"] for t in lab.tasks(service)}
            exporter.values["test_work_items"] = 0.0
            wait_until(lambda: lab.tasks(service) == [] and daemon.status()["desired_replicas"] == 0, 120,
                       "the worker service back at 0")
            log = daemon.log()
            assert "reason=activation" in log and "reason=scale_to_zero" in log
            assert "Traceback" not in log
            assert daemon.stop() == 0
            RESULTS.append(f"swarm worker (no load balancer) 0 -> 3 -> 0 on a Prometheus query, tasks on {len(nodes)} node(s)")
    finally:
        exporter.close()


def test_an_agent_that_goes_away_leaves_its_tasks_missing_logged_once(lab: Lab, swarm_daemons: SwarmDaemons) -> None:
    config = swarm_daemons.config(service_keys="min_replicas = 3\nmax_replicas = 3")
    daemon = swarm_daemons.start(config)
    wait_until(lambda: ready(daemon) == 3, 120, "3 ready tasks")
    nodes = {host: nid for nid, host in lab.nodes().items()}
    worker = nodes["swarmlab-worker1"]
    agents = subprocess.run(["docker", "exec", "swarmlab-worker1", "docker", "ps", "-q", "--filter",
                             "label=com.docker.swarm.service.name=autoscaler-agent"], capture_output=True, text=True).stdout.split()
    assert agents, "an agent runs on worker1"
    subprocess.run(["docker", "exec", "swarmlab-worker1", "docker", "kill", *agents], check=True, capture_output=True)
    down = wait_until(lambda: daemon.get("/metrics")[1].count(f'autoscaler_agent_up{{node="{worker}"}} 0.0'), 20,
                      "the agent's gauge at 0")
    assert down
    wait_until(lambda: f'autoscaler_agent_up{{node="{worker}"}} 1.0' in daemon.get("/metrics")[1], 60, "the agent back")
    log = daemon.log()
    assert log.count(worker) >= 1
    gone = [line for line in log.splitlines() if worker in line and "WARNING" in line]
    assert len(gone) == 1, gone
    assert "Traceback" not in log
    assert daemon.stop() == 0
