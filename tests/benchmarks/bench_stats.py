"""Benchmark: one stats cycle (CPU and memory of every replica) at N = 50 and 200 replicas.

Three ways, side by side on the same containers in one run (best of 3 each):
  docker stats   `docker stats --no-stream` (the CLI; it waits for two engine samples)
  cgroup         DockerBackend.read_stats reading each replica's cgroup files (the daemon's path)
  docker API     DockerBackend.read_stats with cgroups off: one-shot stats calls, all at once
                 (the fallback for hosts whose cgroup files the daemon cannot read)
and prints each figure with its ratio to `docker stats`. Goals (issue "Fast at 200 replicas"):
cgroup at 50 <= 0.25x docker stats and < 50 ms; at 200 < 200 ms; docker API at 50 in about one
engine tick (1 s).

    .venv/bin/python tests/benchmarks/bench_stats.py [N ...]
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import docker

from autoscaler.docker.backend import DockerBackend
from benchkit import best_of, ensure_image, remove_all, remove_image, start_replicas


def main(counts: list[int]) -> None:
    client = docker.from_env(max_pool_size=256)
    ensure_image(client)
    service = f"bench{uuid.uuid4().hex[:6]}"
    network = f"autoscaler-{service}"
    cgroup_backend = DockerBackend(client)
    api_backend = DockerBackend(client, cgroups=False)
    replicas = []
    try:
        print(f"{'replicas':>8}  {'docker stats':>12}  {'cgroup':>16}  {'docker API':>16}  source")
        for count in counts:
            replicas += start_replicas(cgroup_backend, service, network, count - len(replicas))
            ids = [r.id for r in replicas]
            cli = best_of(3, lambda: subprocess.run(
                ["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.CPUPerc}} {{.MemUsage}}", *ids],
                check=True, capture_output=True))
            first = best_of(1, lambda: cgroup_backend.metrics.read_stats(service, ids))  # locates the files once
            cgroup = best_of(3, lambda: cgroup_backend.metrics.read_stats(service, ids))
            readings = cgroup_backend.metrics.read_stats(service, ids)
            assert all(readings[i] is not None for i in ids), "every replica read"
            api = best_of(3, lambda: api_backend.metrics.read_stats(service, ids))
            print(f"{count:>8}  {cli:>10.3f} s  {cgroup * 1000:>7.1f} ms {cgroup / cli:>5.3f}x  "
                  f"{api:>7.3f} s {api / cli:>5.2f}x  {cgroup_backend.metrics.stats_source(service)} "
                  f"(first cycle, locating the files: {first * 1000:.0f} ms)")
    finally:
        remove_all(client, service)
        remove_image(client)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [50, 200])
