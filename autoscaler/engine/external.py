"""External metrics of one service: each pass reads every configured source at once and hands
the policy one ExternalReading per metric (a value, or None with the source's own sentence).

A source that fails is logged once when it starts failing and once when it answers again, not
every pass; the policy applies the failure rules (hold, failure_threshold, fallback). Sources
are made by the factory the daemon wires in, and made again when a reload changes a metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from autoscaler.config import ExternalMetric, ServiceConfig
from autoscaler.engine.ports import ExternalSource, SourceError
from autoscaler.engine.state import Context
from autoscaler.model import ExternalReading
from autoscaler.telemetry import Telemetry

log = logging.getLogger("autoscaler.engine")

SourceFactory = Callable[[ExternalMetric], ExternalSource]
# Sources are read side by side: a pass waits for the slowest one, never for their sum.
MAX_PARALLEL_READS = 16


class ExternalMetrics:
    def __init__(self, ctx: Context, telemetry: Telemetry, make_source: SourceFactory) -> None:
        self._ctx = ctx
        self._telemetry = telemetry
        self._make_source = make_source
        self._sources: dict[str, tuple[ExternalMetric, ExternalSource]] = {}
        self._failing_since: dict[str, tuple[float, str]] = {}  # metric -> (wall clock, first error)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self.last: tuple[ExternalReading, ...] = ()

    def errors(self) -> dict[str, str]:
        """The metrics whose source fails now, with the source's sentence."""
        return {r.name: r.error or "no reading" for r in self.last if r.value is None}

    def read(self, config: ServiceConfig) -> tuple[ExternalReading, ...]:
        metrics = config.policy.metrics
        if not metrics and not self._sources:
            return ()
        self._rebuild(metrics)
        if not metrics:
            self._telemetry.record_external(self._ctx.name, [])
            self.last = ()
            return ()
        if self._pool is None:
            self._pool_size = min(MAX_PARALLEL_READS, len(metrics))
            self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix=f"metrics-{self._ctx.name}")
        sources = [self._sources[m.name][1] for m in metrics]
        readings = tuple(self._pool.map(_read, [m.name for m in metrics], sources))
        self._log_outages(readings)
        self._telemetry.record_external(self._ctx.name, [
            (m.name, "average" if m.per_replica else "value", m.target or 0.0, m.activation, r.value)
            for m, r in zip(metrics, readings)
        ])
        self.last = readings
        return readings

    def _rebuild(self, metrics: list[ExternalMetric]) -> None:
        """Keeps the source of every metric whose config is unchanged; makes the others."""
        wanted = {m.name: m for m in metrics}
        for name, (config, source) in list(self._sources.items()):
            if wanted.get(name) != config:
                source.close()
                del self._sources[name]
                self._failing_since.pop(name, None)
        for name, config in wanted.items():
            if name not in self._sources:
                self._sources[name] = (config, self._make_source(config))
        if self._pool is not None and self._pool_size < min(MAX_PARALLEL_READS, len(metrics)):
            self._pool.shutdown(wait=False)
            self._pool = None

    def _log_outages(self, readings: tuple[ExternalReading, ...]) -> None:
        now = self._ctx.wall_clock()
        for reading in readings:
            failing = self._failing_since.get(reading.name)
            if reading.value is None and failing is None:
                self._failing_since[reading.name] = (now, reading.error or "no reading")
                log.warning("%s (the failure rules apply until it answers)", reading.error,
                            extra=self._ctx.extra(metric=reading.name))
            elif reading.value is not None and failing is not None:
                del self._failing_since[reading.name]
                log.warning("metric %s: its source answers again after %.0fs (%s)", reading.name,
                            now - failing[0], f"{reading.value:g}", extra=self._ctx.extra(metric=reading.name))

    def close(self) -> None:
        for _, source in self._sources.values():
            source.close()
        self._sources.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def _read(name: str, source: ExternalSource) -> ExternalReading:
    try:
        return ExternalReading(name, source.read())
    except SourceError as exc:
        return ExternalReading(name, None, str(exc))
    except Exception as exc:  # a source's bug must not end the pass: the metric is missing
        log.exception("metric %s: reading its source failed unexpectedly", name)
        return ExternalReading(name, None, f"metric {name}: {type(exc).__name__}: {exc}")
