"""Shared set-up of the benchmarks that need many replicas on the real engine.

Replicas here are a static busybox httpd (a few hundred KiB of memory each, /healthz answers
200), so that 200 of them fit on a 2-core machine; the image is built on the fly with no
registry and removed afterwards. Everything carries the label autoscaler.service=<service> and
is removed by it.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from autoscaler.docker.backend import DockerBackend
from autoscaler.engine.ports import Replica, ReplicaSpec

IMAGE = "autoscaler-bench-replica:latest"


def ensure_image(client: docker.DockerClient) -> str:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "busybox-static"], check=True, capture_output=True)
        busybox = "/bin/busybox"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        tar.add(busybox, arcname="busybox")
        for name, text in (("www/healthz", "ok\n"), ("Dockerfile", (
            "FROM scratch\nCOPY busybox /busybox\nCOPY www /www\n"
            'CMD ["/busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]\n'))):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=IMAGE, rm=True)
    return IMAGE


def remove_image(client: docker.DockerClient) -> None:
    try:
        client.images.remove(IMAGE, force=True)
    except docker.errors.NotFound:
        pass


def start_replicas(backend: DockerBackend, service: str, network: str, count: int,
                   cpu_limit_cores: float = 0.1, workers: int = 16) -> list[Replica]:
    backend.networks.ensure_network(service, network)
    spec = ReplicaSpec(service, IMAGE, 8000, network, cpu_limit_cores, 32 * 1024 * 1024)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: backend.containers.start_replica(spec, backend.containers.new_replica_name(service)),
                             range(count)))


def remove_all(client: docker.DockerClient, service: str) -> None:
    label = f"autoscaler.service={service}"
    containers = client.containers.list(all=True, filters={"label": label})
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda c: c.remove(force=True), containers))
    for network in client.networks.list(filters={"label": label}):
        for _ in range(60):  # endpoints of just-removed containers go away a moment later
            try:
                network.remove()
                break
            except docker.errors.APIError:
                time.sleep(0.5)
        else:
            print(f"benchkit: network {network.name} still has endpoints; remove it by its label {label}")


def best_of(repeat: int, fn) -> float:  # type: ignore[no-untyped-def]
    """Best wall time of `repeat` runs (the machine is shared: the best run is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
