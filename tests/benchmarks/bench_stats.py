"""Benchmark: one stats cycle (CPU and memory of every replica) at N = 50 and 200 replicas.

On the same containers in one run (best of 3 each; of 10 for the cgroup reads, which take
milliseconds), the daemon's two paths:
  cgroup        DockerBackend.read_stats reading each replica's cgroup files (the daemon's path)
  docker API    DockerBackend.read_stats with cgroups off (the fallback for hosts whose cgroup
                files the daemon cannot read)
against two baselines:
  floor         the same four cgroup v1 files per replica read by a bare loop in this process,
                their paths known (what reading the files costs at the least)
  API one-shot  one Docker API stats call per replica (`stream=False, one_shot=True`), all at
                once, one thread each (what the engine's API costs at the least)
and prints each path's figure with its ratio to the baseline of its kind. (`docker stats
--no-stream` is no baseline: it waits for two engine samples, ~2 s, by design.)

    .venv/bin/python tests/benchmarks/bench_stats.py [N ...]
"""

from __future__ import annotations

import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import docker

from autoscaler.docker.backend import DockerBackend
from benchkit import best_of, ensure_image, remove_all, remove_image, start_replicas

CGROUP_V1 = "/sys/fs/cgroup"


def floor_paths(ids: list[str]) -> list[tuple[str, str, str, str]] | None:
    """Each container's cgroup v1 files (cgroupfs driver), or None where they are elsewhere."""
    paths = [(f"{CGROUP_V1}/cpuacct/docker/{i}/cpuacct.usage", f"{CGROUP_V1}/memory/docker/{i}/memory.usage_in_bytes",
              f"{CGROUP_V1}/memory/docker/{i}/memory.stat", f"{CGROUP_V1}/memory/docker/{i}/memory.limit_in_bytes")
             for i in ids]
    return paths if all(os.path.exists(p) for four in paths for p in four) else None


def _read(path: str) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read()


def read_floor(paths: list[tuple[str, str, str, str]]) -> list[tuple[int, int, int]]:
    """CPU ns, memory used (usage less inactive file, as `docker stats`) and limit, per container:
    the same four files the daemon reads, by a bare loop."""
    readings = []
    for cpu, usage, stat, limit in paths:
        text = _read(stat)
        at = text.index(b"\ntotal_inactive_file ") + len(b"\ntotal_inactive_file ")
        inactive = int(text[at:text.index(b"\n", at)])
        readings.append((int(_read(cpu)), int(_read(usage)) - inactive, int(_read(limit))))
    return readings


def api_one_shot(client: docker.DockerClient, pool: ThreadPoolExecutor, ids: list[str]) -> None:
    list(pool.map(lambda i: client.api.stats(i, stream=False, one_shot=True), ids))


def main(counts: list[int]) -> None:
    client = docker.from_env(max_pool_size=256)
    ensure_image(client)
    service = f"bench{uuid.uuid4().hex[:6]}"
    network = f"autoscaler-{service}"
    cgroup_backend = DockerBackend(client)
    api_backend = DockerBackend(client, cgroups=False)
    replicas = []
    try:
        print(f"{'replicas':>8}  {'floor':>9}  {'cgroup (daemon)':>22}  {'API one-shot':>12}  {'docker API (daemon)':>20}")
        for count in counts:
            replicas += start_replicas(cgroup_backend, service, network, count - len(replicas))
            ids = [r.id for r in replicas]
            paths = floor_paths(ids)
            floor = best_of(10, lambda: read_floor(paths)) if paths else None
            first = best_of(1, lambda: cgroup_backend.metrics.read_stats(service, ids))  # locates the files once
            cgroup = best_of(10, lambda: cgroup_backend.metrics.read_stats(service, ids))
            readings = cgroup_backend.metrics.read_stats(service, ids)
            assert all(readings[i] is not None for i in ids), "every replica read"
            with ThreadPoolExecutor(len(ids)) as pool:
                one_shot = best_of(3, lambda: api_one_shot(client, pool, ids))
            api = best_of(3, lambda: api_backend.metrics.read_stats(service, ids))
            floor_text = f"{floor * 1000:>6.1f} ms" if floor else "      n/a"
            ratio = f"{cgroup / floor:>5.1f}x" if floor else "  n/a"
            print(f"{count:>8}  {floor_text}  {cgroup * 1000:>7.1f} ms {ratio} floor  {one_shot:>10.3f} s  "
                  f"{api:>7.3f} s {api / one_shot:>5.2f}x one-shot  (cgroup {cgroup / one_shot:.3f}x one-shot; "
                  f"source {cgroup_backend.metrics.stats_source(service)}; first cycle, locating the files: {first * 1000:.0f} ms)")
    finally:
        remove_all(client, service)
        remove_image(client)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [50, 200])
