"""Benchmark: one metrics cycle over 100 tasks spread on the 3 nodes of the Swarm lab.

Side by side in one run (best of 3 each):
  agents        the daemon's path: AgentSource scraping `autoscaler agent` on every node at once
                (each agent reads its node's cgroup files), all 100 tasks' CPU and memory
  API per node  the baseline: on each node, one Docker API stats call per task of the node
                (`stream=False, one_shot=True`), all at once, from a container on that node (a
                node's engine reads only its own tasks); the 3 nodes at once, the slowest counts
and prints both with the ratio. (`docker stats --no-stream` is no baseline: it waits for two
engine samples, ~2 s, by design.) Uses the lab (deploy/swarm-lab.sh): brings it up if it is
not, and takes it down afterwards only if it brought it up.

    .venv/bin/python tests/benchmarks/bench_swarm_stats.py [--tasks 100]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from docker.types import ContainerSpec, EndpointSpec, Resources, ServiceMode, TaskTemplate

from autoscaler.docker.engine import DockerEngine
from autoscaler.swarm.backend import Swarm, SwarmAgents
from autoscaler.swarm.sources import AgentSource
from benchkit import IMAGE, best_of, ensure_image, remove_image

REPO = Path(__file__).resolve().parents[2]
NODES = ("swarmlab-manager", "swarmlab-worker1", "swarmlab-worker2")


def lab(command: str) -> dict[str, str]:
    out = subprocess.run(["bash", str(REPO / "deploy" / "swarm-lab.sh"), command],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export "))


# Run on a node, in the daemon's image (Python and the Docker SDK): its tasks of the service,
# one one-shot stats call each, all at once; prints the count and the best of 3.
ONE_SHOT = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
import docker
client = docker.from_env(max_pool_size=256)
ids = [c.id for c in client.containers.list(filters={"label": f"com.docker.swarm.service.name={sys.argv[1]}"})]
best = float("inf")
with ThreadPoolExecutor(max(1, len(ids))) as pool:
    for _ in range(3):
        started = time.perf_counter()
        list(pool.map(lambda i: client.api.stats(i, stream=False, one_shot=True), ids))
        best = min(best, time.perf_counter() - started)
print(len(ids), best if ids else 0.0)
"""


def api_one_shot_on(node: str, service: str) -> tuple[int, float]:
    out = subprocess.run(["docker", "exec", node, "docker", "run", "--rm", "--user", "0", "--label", "autoscaler.bench=true",
                          "-v", "/var/run/docker.sock:/var/run/docker.sock", "--entrypoint", "/opt/autoscaler/bin/python",
                          "autoscaler:latest", "-c", ONE_SHOT, service], capture_output=True, text=True, check=True).stdout
    count, seconds = out.split()
    return int(count), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
    host = docker.from_env()
    was_up = bool(host.containers.list(filters={"label": "autoscaler.swarmlab=true"}))
    env = lab("up")
    client = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=120)
    name = f"benchswarm{uuid.uuid4().hex[:4]}"
    try:
        ensure_image(host)
        saved = subprocess.run(["docker", "save", IMAGE], capture_output=True, check=True).stdout
        with ThreadPoolExecutor(len(NODES)) as pool:
            list(pool.map(lambda node: subprocess.run(["docker", "exec", "-i", node, "docker", "load", "-q"],
                                                      input=saved, capture_output=True, check=True), NODES))
        agents = SwarmAgents(Swarm(DockerEngine(client)))
        agents.ensure()
        client.api.create_service(
            TaskTemplate(ContainerSpec(IMAGE), resources=Resources(cpu_limit=10_000_000, mem_limit=16 * 1024 * 1024)),
            name=name, mode=ServiceMode("replicated", replicas=args.tasks), endpoint_spec=EndpointSpec(mode="dnsrr"),
            labels={"autoscaler.bench": "true"})
        deadline = time.time() + 600
        while True:
            tasks = [t for t in client.api.tasks(filters={"service": name, "desired-state": "running"})
                     if t["Status"]["State"] == "running"]
            endpoints = agents.endpoints()
            if len(tasks) == args.tasks and len(endpoints) == len(NODES):
                break
            if time.time() > deadline:
                raise RuntimeError(f"{len(tasks)} of {args.tasks} tasks running, {len(endpoints)} agents")
            time.sleep(2)
        spread = {t["NodeID"] for t in tasks}
        ids = [t["ID"] for t in tasks]
        source = AgentSource(agents.endpoints)  # what SwarmMetrics reads tasks with
        time.sleep(3)  # the agents answer
        # The first scrape inspects every task container; later ones reuse what it found.
        first_started = time.perf_counter()
        source.read(ids)
        first_seconds = time.perf_counter() - first_started
        agent_seconds = best_of(3, lambda: source.read(ids))
        readings = source.read(ids)
        read = sum(1 for i in ids if readings.get(i) is not None)

        with ThreadPoolExecutor(len(NODES)) as pool:
            per_node = dict(zip(NODES, pool.map(lambda node: api_one_shot_on(node, name), NODES)))
        api_seconds = max(seconds for _, seconds in per_node.values())
        assert sum(count for count, _ in per_node.values()) == args.tasks, per_node
        print(f"{args.tasks} tasks on {len(spread)} nodes: agents {agent_seconds * 1000:.0f} ms ({read} tasks read; "
              f"the first scrape, inspecting each container, {first_seconds * 1000:.0f} ms), "
              f"API one-shot per node {api_seconds:.3f} s "
              f"({', '.join(f'{node}: {count} tasks {seconds:.3f} s' for node, (count, seconds) in per_node.items())}); "
              f"ratio {agent_seconds / api_seconds:.3f}x")
    finally:
        try:
            client.api.remove_service(name)
        except docker.errors.APIError:
            pass
        if not was_up:
            lab("down")
        remove_image(host)


if __name__ == "__main__":
    sys.exit(main())
