"""The Docker backend against the real engine: create, list, adopt, stats, remove — by label."""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from testcontainers.core.container import DockerContainer

from autoscaler.docker.backend import DockerBackend
from autoscaler.docker.labels import LABEL_MANAGED, LABEL_ROLE, LABEL_SERVICE
from autoscaler.docker.stats import cpu_cores_used, cpu_percent, memory_percent
from autoscaler.engine.ports import BackendError, Replica, ReplicaSpec

pytestmark = pytest.mark.docker

APP_IMAGE = "autoscaler-demo-app:latest"


def spec(service: str, network: str) -> ReplicaSpec:
    return ReplicaSpec(
        service=service, image=APP_IMAGE, port=8000, network=network,
        cpu_limit_cores=0.25, memory_limit_bytes=128 * 1024 * 1024,
    )


def start(backend: DockerBackend, replica: ReplicaSpec) -> Replica:
    return backend.containers.start_replica(replica, backend.containers.new_replica_name(replica.service))


class ConcurrencyProbe:
    """A CallObserver that records how many calls of each operation were in flight at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    @contextlib.contextmanager
    def call(self, component: str, operation: str) -> Iterator[None]:
        with self._lock:
            self._active[operation] = self._active.get(operation, 0) + 1
            self.peak[operation] = max(self.peak.get(operation, 0), self._active[operation])
        try:
            yield
        finally:
            with self._lock:
                self._active[operation] -= 1


@pytest.fixture
def probe() -> ConcurrencyProbe:
    return ConcurrencyProbe()


@pytest.fixture
def backend(docker_client, probe: ConcurrencyProbe):  # type: ignore[no-untyped-def]
    backend = DockerBackend(docker_client, observer=probe)
    yield backend
    backend.metrics.close()  # the client belongs to the session fixture


@pytest.fixture
def api_backend(docker_client, probe: ConcurrencyProbe):  # type: ignore[no-untyped-def]
    """Stats through the Docker API only, as on a host whose cgroup files we cannot read."""
    backend = DockerBackend(docker_client, observer=probe, cgroups=False)
    yield backend
    backend.metrics.close()


# A replica kept busy reads above this percent of its CPU limit even on a loaded machine (it reads
# ~100 on an idle one); an idle one reads ~0.
BUSY_PERCENT = 25


def burn_inside(docker_client, container_id: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Keeps a replica busy from inside its own container: no port to publish, and one process
    for the whole time (an exec per request cost the replica CPU time between requests). The
    loop ends by itself; the container is removed with the test's others."""
    loop = ("import time, urllib.request as u\n"
            f"end = time.time() + {seconds}\n"
            "while time.time() < end: u.urlopen('http://127.0.0.1:8000/work?cpu_ms=400').read()")
    docker_client.api.exec_start(docker_client.api.exec_create(container_id, ["python3", "-c", loop]), detach=True)


def test_create_list_adopt_remove(backend: DockerBackend, docker_client, service_name: str) -> None:  # type: ignore[no-untyped-def]
    network = f"autoscaler-{service_name}"
    backend.networks.ensure_network(service_name, network)
    backend.networks.ensure_network(service_name, network)  # idempotent
    assert len(docker_client.networks.list(names=[network])) == 1

    first = start(backend, spec(service_name, network))
    second = start(backend, spec(service_name, network))
    info = docker_client.api.inspect_container(first.id)
    labels = info["Config"]["Labels"]
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_SERVICE] == service_name
    assert labels[LABEL_ROLE] == "replica"
    assert info["HostConfig"]["NanoCpus"] == 250_000_000
    assert info["HostConfig"]["Memory"] == 128 * 1024 * 1024
    assert info["HostConfig"]["Init"] is True
    assert first.ip is not None

    # A second backend (a restarted daemon) finds the same replicas by label.
    adopted = DockerBackend(docker_client).containers.list_replicas(service_name, network)
    assert {r.id for r in adopted} == {first.id, second.id}
    assert all(r.running and r.ip for r in adopted)
    assert first.image == APP_IMAGE and all(r.image == APP_IMAGE for r in adopted), "what each was created from"

    backend.containers.remove_replica(service_name, first.id, stop_timeout_seconds=10)
    assert [r.id for r in backend.containers.list_replicas(service_name, network)] == [second.id]
    backend.containers.remove_replica(service_name, first.id, 10)  # already gone: no error

    # With an init as PID 1 the app gets SIGTERM and ends (0, or 143 if it had not yet set its
    # handler), instead of ignoring it until the engine sends SIGKILL after the timeout (137).
    docker_client.api.stop(second.id, timeout=10)
    assert docker_client.api.inspect_container(second.id)["State"]["ExitCode"] in (0, 143)


def test_never_touches_a_container_it_does_not_own(backend: DockerBackend, service_name: str) -> None:
    with DockerContainer(APP_IMAGE).with_command("python3 /app/server.py") as foreign:
        foreign_id = foreign.get_wrapped_container().id
        assert backend.containers.list_replicas(service_name, "bridge") == []
        with pytest.raises(BackendError, match="not ours"):
            backend.containers.remove_replica(service_name, foreign_id, 1)
        foreign.get_wrapped_container().reload()
        assert foreign.get_wrapped_container().status == "running"


def test_exited_replica_is_listed_as_not_running(backend: DockerBackend, docker_client, service_name: str) -> None:  # type: ignore[no-untyped-def]
    network = f"autoscaler-{service_name}"
    backend.networks.ensure_network(service_name, network)
    replica = start(backend, spec(service_name, network))
    docker_client.api.kill(replica.id)
    [listed] = backend.containers.list_replicas(service_name, network)
    assert listed.id == replica.id and not listed.running


def test_api_stats_are_read_all_at_once_and_give_cpu_and_memory(
    api_backend: DockerBackend, probe: ConcurrencyProbe, docker_client, service_name: str  # type: ignore[no-untyped-def]
) -> None:
    backend = api_backend
    network = f"autoscaler-{service_name}"
    backend.networks.ensure_network(service_name, network)
    replicas = [start(backend, spec(service_name, network)) for _ in range(4)]
    busy = replicas[0]
    burn_inside(docker_client, busy.id, seconds=10)
    time.sleep(2)  # the load settles
    ids = [r.id for r in replicas]
    first = backend.metrics.read_stats(service_name, ids)
    time.sleep(1)
    second = backend.metrics.read_stats(service_name, ids)
    assert all(first[i] is not None and second[i] is not None for i in ids)
    # Each one-shot call waits for the engine's stats tick; all four wait side by side.
    assert probe.peak["container_stats"] == 4
    assert backend.metrics.stats_source(service_name) == "docker_api"
    busy_cpu = cpu_percent(first[busy.id], second[busy.id], 0.25)
    idle_cpu = cpu_percent(first[ids[1]], second[ids[1]], 0.25)
    assert busy_cpu is not None and idle_cpu is not None
    # The busy one reads as busy and the idle one as idle, whatever share a loaded machine gives.
    assert busy_cpu > max(BUSY_PERCENT, 4 * idle_cpu), (busy_cpu, idle_cpu)
    mem = memory_percent(second[busy.id], 128 * 1024 * 1024)
    assert mem is not None and 1 < mem < 100


def test_missing_image_is_reported(backend: DockerBackend) -> None:
    assert backend.engine.missing_images([APP_IMAGE, "autoscaler-no-such-image:latest"]) == [
        "autoscaler-no-such-image:latest"
    ]


def test_images_are_resolved_as_pull_says(backend: DockerBackend, service_name: str) -> None:
    # Built here, with no digest from a registry: used by its name whatever the policy.
    for pull in ("missing", "never"):
        assert backend.containers.resolve_image(replace(spec(service_name, "n"), pull=pull)) == APP_IMAGE
    missing = replace(spec(service_name, "n"), image="autoscaler-no-such-image:latest")
    with pytest.raises(BackendError, match='not found on the Docker engine, and pull = "never"'):
        backend.containers.resolve_image(replace(missing, pull="never"))
    # No registry to pull it from (or none has it): one line, the engine's reason, counted.
    with pytest.raises(BackendError, match="pull of autoscaler-no-such-image:latest failed: ") as caught:
        backend.containers.resolve_image(missing)
    assert not caught.value.unreachable and "\n" not in str(caught.value)


def _docker_stats(ids: list[str]) -> dict[str, tuple[float, float]]:
    """id -> (cores, memory bytes) as `docker stats --no-stream` shows them."""
    units = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.CPUPerc}} {{.MemUsage}}", *ids],
        capture_output=True, text=True, check=True,
    ).stdout
    result = {}
    for line in out.splitlines():
        short_id, cpu, usage, *_ = line.split()
        number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]+)", usage).groups()  # type: ignore[union-attr]
        result[short_id] = (float(cpu.rstrip("%")) / 100, float(number) * units[unit])
    return result


def test_cgroup_readings_equal_what_docker_stats_shows(
    backend: DockerBackend, probe: ConcurrencyProbe, docker_client, service_name: str  # type: ignore[no-untyped-def]
) -> None:
    network = f"autoscaler-{service_name}"
    backend.networks.ensure_network(service_name, network)
    replicas = [start(backend, spec(service_name, network)) for _ in range(2)]
    busy, idle = replicas
    burn_inside(docker_client, busy.id, seconds=10)
    time.sleep(2)  # the load settles at the replica's CPU limit
    ids = [r.id for r in replicas]
    first = backend.metrics.read_stats(service_name, ids)
    shown = _docker_stats(ids)
    second = backend.metrics.read_stats(service_name, ids)
    assert backend.metrics.stats_source(service_name) == "cgroup"
    assert "container_stats" not in probe.peak, "no Docker API stats call"
    for replica in replicas:
        before, after = first[replica.id], second[replica.id]
        assert before is not None and after is not None
        cores = cpu_cores_used(before, after)
        docker_cores, docker_memory = shown[replica.id[:12]]
        assert cores is not None
        # Within 5 points of the replica's limit (0.25 cores): the two windows differ a little.
        assert abs(cores - docker_cores) / 0.25 * 100 <= 5, (replica.name, cores, docker_cores)
        assert after.memory_used_bytes is not None
        assert abs(after.memory_used_bytes - docker_memory) <= max(0.03 * docker_memory, 512 * 1024), (
            replica.name, after.memory_used_bytes, docker_memory)
    # The comparison was between a busy reading and an idle one, not two idle ones.
    busy_cores, idle_cores = (cpu_cores_used(first[r.id], second[r.id]) for r in replicas)  # type: ignore[arg-type]
    assert busy_cores * 100 / 0.25 > max(BUSY_PERCENT, 4 * idle_cores * 100 / 0.25), (busy_cores, idle_cores)  # type: ignore[operator]
