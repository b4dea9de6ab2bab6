"""Sampling: readings and load-balancer counters in, the policy's snapshot out. No I/O.

CPU % needs two readings and requests per second two counters, so the Sampler keeps the last
of each per replica (only for live replicas: memory stays bounded as replicas come and go).
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.config import ServiceConfig
from autoscaler.docker.stats import cpu_percent, memory_percent
from autoscaler.engine.ports import StatsReading
from autoscaler.engine.replicas import Observation
from autoscaler.model import ReplicaSample, ServiceSnapshot
from autoscaler.telemetry import ReplicaMetrics

SOURCE_NAMES = {
    "cgroup": "the cgroup files", "docker_api": "the Docker API", "mixed": "the cgroup files or the Docker API",
    "agent": "the agents", "prometheus": "Prometheus",
}


@dataclass(frozen=True)
class Sample:
    snapshot: ServiceSnapshot
    replicas: list[ReplicaMetrics]  # per-replica gauges
    requests_per_second: float | None  # through the load balancer, all replicas
    response_time_ms: float | None


class Sampler:
    def __init__(self, service: str) -> None:
        self.service = service
        self._previous_stats: dict[str, StatsReading] = {}
        self._previous_requests: dict[str, tuple[float, int]] = {}

    def sample(
        self,
        config: ServiceConfig,
        observation: Observation,
        readings: dict[str, StatsReading | None],
        stats_error: str | None,
        source: str | None,
        now: float,
        now_wall: float,
    ) -> Sample:
        active = observation.active
        samples = []
        replica_metrics = []
        previous_stats: dict[str, StatsReading] = {}
        previous_requests: dict[str, tuple[float, int]] = {}
        for view in active:
            replica = view.replica
            reading = readings.get(replica.id)
            cpu = mem = None
            if reading is not None:
                before = self._previous_stats.get(replica.id)
                if before is not None:
                    cpu = cpu_percent(before, reading, config.cpu_limit)
                mem = memory_percent(reading, config.memory_limit)
                previous_stats[replica.id] = reading
            rps = rt = None
            if view.server is not None:
                total = view.server.sessions_total
                before_req = self._previous_requests.get(replica.id)
                if before_req is not None and now > before_req[0] and total >= before_req[1]:
                    rps = (total - before_req[1]) / (now - before_req[0])
                previous_requests[replica.id] = (now, total)
                rt = view.server.response_time_ms
            samples.append(
                ReplicaSample(
                    name=replica.name,
                    ready=view.state == "ready",
                    age_seconds=max(0.0, now_wall - replica.created_at_seconds),
                    cpu_percent=cpu,
                    memory_percent=mem,
                    requests_per_second=rps,
                    response_time_ms=rt,
                )
            )
            replica_metrics.append(
                ReplicaMetrics(replica.name, view.state == "ready", cpu, mem,
                               reading.memory_used_bytes if reading is not None else None)
            )
        # Replicas on their way (starting, or held back by the backoff) count toward the size,
        # with no reading: missing, as the HPA treats a pod that has no metrics yet.
        for index in range(observation.in_flight + observation.pending):
            samples.append(ReplicaSample(name=f"(pending {index + 1})", ready=False, age_seconds=0.0))
        self._previous_stats = previous_stats
        self._previous_requests = previous_requests
        # The backend answers None per replica it could not read, so "failed as a whole" means
        # no reading at all, not an empty answer.
        metrics_error = None
        if stats_error is not None:
            metrics_error = stats_error
        elif active and all(readings.get(v.replica.id) is None for v in active):
            metrics_error = f"no stats from {SOURCE_NAMES.get(source or '', 'the Docker engine')}"
        elif not active:
            metrics_error = "no replica running"
        backend = observation.backend
        queue = float(backend.queue_current) if backend else None
        rates = [r.requests_per_second for r in samples if r.requests_per_second is not None]
        return Sample(
            ServiceSnapshot(self.service, tuple(samples), queue, metrics_error),
            replica_metrics,
            sum(rates) if rates else None,
            backend.response_time_ms if backend else None,
        )
