"""CPU and memory of containers on one engine (MetricsSource): from their cgroup files where
this host has them, else one-shot Docker stats, all at once."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import docker.errors

from autoscaler.docker.cgroups import CgroupReader, host_mounts
from autoscaler.docker.engine import POOL_SIZE, DockerEngine
from autoscaler.docker.stats import StatsFormatError, parse_stats
from autoscaler.engine.ports import BackendError, StatsReading
from autoscaler.instrument import NULL_OBSERVER, CallObserver

log = logging.getLogger("autoscaler.docker")


class DockerMetrics:
    def __init__(
        self,
        engine: DockerEngine,
        observer: CallObserver = NULL_OBSERVER,
        stats_workers: int = POOL_SIZE,
        cgroups: bool | None = None,
    ) -> None:
        self._engine = engine
        self._observer = observer
        # Stats through the API block for the engine's 1 s tick each: all of them run at once, so
        # that N replicas take one tick, not N / pool size. Threads are made as needed.
        self._stats_pool = ThreadPoolExecutor(stats_workers, thread_name_prefix="docker-stats")
        # Cgroup files are only ours to read when the engine runs on this host (a unix socket).
        if cgroups is None:
            cgroups = str(getattr(engine.api, "base_url", "")).startswith("http+docker://")
        self._cgroup_mounts = host_mounts() if cgroups else []
        self._cgroup_readers: dict[str, CgroupReader] = {}
        self.stats_sources: dict[str, str] = {}  # service -> "cgroup" | "docker_api" | "mixed"

    def close(self) -> None:
        self._stats_pool.shutdown(wait=False, cancel_futures=True)

    def read_stats(self, service: str, replica_ids: list[str]) -> dict[str, StatsReading | None]:
        """None per container with no reading this time."""
        result: dict[str, StatsReading | None] = {}
        api_ids = list(replica_ids)
        if self._cgroup_mounts:
            reader = self._cgroup_readers.get(service)
            if reader is None:
                reader = self._cgroup_readers[service] = CgroupReader(self._cgroup_mounts)
            reader.forget(set(replica_ids))
            api_ids = []
            with self._observer.call("cgroup", "read_stats"):
                for container_id in replica_ids:
                    if not reader.known(container_id):
                        reader.locate(container_id, self._pid(service, container_id))
                    reading = reader.read(container_id)
                    if reading is None:
                        api_ids.append(container_id)
                    else:
                        result[container_id] = reading
        if api_ids:
            result.update(zip(api_ids, self._stats_pool.map(lambda i: self._api_stats(service, i), api_ids)))
        if replica_ids:
            self.stats_sources[service] = (
                "cgroup" if not api_ids else "docker_api" if len(api_ids) == len(replica_ids) else "mixed"
            )
        return result

    def stats_source(self, service: str) -> str | None:
        """Where the last reading of the service came from: cgroup, docker_api or mixed."""
        return self.stats_sources.get(service)

    def source_errors(self, service: str) -> dict[str, str]:
        return {}  # one engine: a failed reading is a missing one, not a source that is down

    def _pid(self, service: str, container_id: str) -> int | None:
        engine = self._engine
        try:
            info = engine.call("container_inspect", service, engine.api.inspect_container, container_id)
        except (BackendError, docker.errors.NotFound):
            return None
        return int(info["State"].get("Pid") or 0) or None

    def _api_stats(self, service: str, container_id: str) -> StatsReading | None:
        engine = self._engine
        try:
            doc = engine.call("container_stats", service, engine.api.stats, container_id, stream=False, one_shot=True)
            return parse_stats(doc)
        except (BackendError, docker.errors.NotFound, StatsFormatError) as exc:
            log.debug("no stats for %s: %s", container_id[:12], exc, extra={"service": service})
            return None
