"""ExternalMetrics, the controller's part that reads a service's external metrics: every source
at once each pass, one reading per metric in config order, failures as missing readings logged
once per outage, sources remade when a reload changes their metric, and the telemetry series.

Sources are fakes made by an injected factory; telemetry is on a fresh CollectorRegistry and
read back with get_sample_value.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.config import ExternalMetric, ServiceConfig
from autoscaler.engine.external import ExternalMetrics
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.ports import SourceError
from autoscaler.engine.state import Context
from autoscaler.model import ExternalReading
from autoscaler.telemetry import Telemetry

SERVICE = "jobs"


class FakeSource:
    """Returns `value`, or raises `error`; `wait` (a barrier or an event) is passed first."""

    def __init__(self, metric: ExternalMetric) -> None:
        self.metric = metric
        self.value: float = 1.0
        self.error: Exception | None = None
        self.barrier: threading.Barrier | None = None
        self.reads = 0
        self.closed = False
        self.thread: str | None = None

    def read(self) -> float:
        self.reads += 1
        self.thread = threading.current_thread().name
        if self.barrier is not None:
            self.barrier.wait(timeout=5)  # every read must be under way at once to get past it
        if self.error is not None:
            raise self.error
        return self.value

    def close(self) -> None:
        self.closed = True


class Factory:
    """The source factory the daemon wires in: remembers every source it made, by metric name."""

    def __init__(self) -> None:
        self.made: list[FakeSource] = []

    def __call__(self, metric: ExternalMetric) -> FakeSource:
        source = FakeSource(metric)
        self.made.append(source)
        return source

    def latest(self, name: str) -> FakeSource:
        return [s for s in self.made if s.metric.name == name][-1]


class WallClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def metric(name: str, **keys: Any) -> dict[str, Any]:
    if "target_value" not in keys:
        keys.setdefault("target_average_value", 5)
    return {"name": name, "redis": {"url": "redis://redis:6379/0", "list": name}, **keys}


def config(*metrics: dict[str, Any]) -> ServiceConfig:
    return ServiceConfig.model_validate({
        "image": "worker:1", "cpu_limit": 0.5, "memory_limit": "128MiB", "policy": {"metrics": list(metrics)},
    })


class Part:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.telemetry = Telemetry(self.registry)
        self.clock = WallClock()
        ctx = Context(SERVICE, "bridge", self.telemetry, ServiceHealth(), clock=lambda: 0.0, wall_clock=self.clock)
        self.factory = Factory()
        self.external = ExternalMetrics(ctx, self.telemetry, self.factory)

    def sample(self, name: str, metric: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"service": SERVICE, "metric": metric, **labels})


@pytest.fixture
def part() -> Iterator[Part]:
    made = Part()
    yield made
    made.external.close()


# --- reading --------------------------------------------------------------------------------


def test_no_metrics_no_sources_no_reads(part: Part) -> None:
    assert part.external.read(config()) == ()
    assert part.factory.made == [] and part.external.last == ()


def test_one_reading_per_metric_in_config_order(part: Part) -> None:
    service = config(metric("zeta"), metric("alpha"), metric("mid", target_value=2))
    part.external.read(service)  # makes the sources
    for value, source in zip((3.0, 0.0, 1.5), part.factory.made):
        source.value = value
    assert part.external.read(service) == (
        ExternalReading("zeta", 3.0), ExternalReading("alpha", 0.0), ExternalReading("mid", 1.5),
    )
    assert [s.metric.name for s in part.factory.made] == ["zeta", "alpha", "mid"], "one source each, made once"


def read_three_at_a_barrier(part: Part, service: Any) -> Any:
    """A read of `service`'s three sources where each waits at a barrier for the other two (the
    sources made by a first read): read one after the other, they time out there (5 s)."""
    part.external.read(service)
    barrier = threading.Barrier(3)
    for source in part.factory.made:
        source.barrier = barrier
    return part.external.read(service)


def test_the_sources_are_read_at_the_same_time(part: Part) -> None:
    # Each read waits at a barrier for all three: read one after the other, they would time
    # out there (5 s) and come back as failures.
    readings = read_three_at_a_barrier(part, config(metric("a"), metric("b"), metric("c")))
    assert [r.value for r in readings] == [1.0, 1.0, 1.0], readings
    assert len({s.thread for s in part.factory.made}) == 3
    assert all(s.thread and s.thread.startswith(f"metrics-{SERVICE}") for s in part.factory.made)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (SourceError("metric jobs: redis list 'jobs': cannot reach Redis (connection refused)"),
         "metric jobs: redis list 'jobs': cannot reach Redis (connection refused)"),
        (RuntimeError("boom"), "metric jobs: RuntimeError: boom"),
        (ZeroDivisionError("float division by zero"), "metric jobs: ZeroDivisionError: float division by zero"),
    ],
    ids=["source-error", "unexpected-exception", "a-bug-in-a-source"],
)  # fmt: skip
def test_a_failing_source_is_a_missing_reading_with_its_sentence(part: Part, error: Exception, message: str) -> None:
    service = config(metric("jobs"), metric("other"))
    part.external.read(service)
    part.factory.latest("jobs").error = error
    readings = part.external.read(service)
    assert readings == (ExternalReading("jobs", None, message), ExternalReading("other", 1.0))
    assert part.external.errors() == {"jobs": message}


def test_an_unexpected_exception_is_logged_with_its_traceback(part: Part, caplog: pytest.LogCaptureFixture) -> None:
    service = config(metric("jobs"))
    part.external.read(service)
    part.factory.latest("jobs").error = RuntimeError("boom")
    part.external.read(service)
    [unexpected] = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert unexpected.exc_info is not None and unexpected.levelno == logging.ERROR


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    part: Part, caplog: pytest.LogCaptureFixture
) -> None:
    service = config(metric("jobs"))
    part.external.read(service)
    source = part.factory.latest("jobs")
    caplog.set_level(logging.INFO, "autoscaler.engine")
    source.error = SourceError("metric jobs: cannot reach Redis")
    for _ in range(5):
        part.clock.now += 5
        part.external.read(service)
    source.error, source.value = None, 4.0
    for _ in range(3):
        part.clock.now += 5
        part.external.read(service)

    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "autoscaler.engine"]
    assert lines == [
        (logging.WARNING, "metric jobs: cannot reach Redis (the failure rules apply until it answers)"),
        (logging.WARNING, "metric jobs: its source answers again after 25s (4)"),
    ]
    assert all(getattr(r, "service", None) == SERVICE and getattr(r, "metric", None) == "jobs" for r in caplog.records)
    assert part.external.errors() == {}


def test_a_second_outage_is_logged_again(part: Part, caplog: pytest.LogCaptureFixture) -> None:
    service = config(metric("jobs"))
    part.external.read(service)
    source = part.factory.latest("jobs")
    for error in (SourceError("down"), None, SourceError("down again"), None):
        source.error = error
        part.external.read(service)
    starts = [r for r in caplog.records if "failure rules apply" in r.getMessage()]
    ends = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert (len(starts), len(ends)) == (2, 2)


# --- reload ---------------------------------------------------------------------------------


def test_a_reload_remakes_only_the_sources_whose_metric_changed(part: Part) -> None:
    part.external.read(config(metric("jobs"), metric("late", target_value=2), metric("gone")))
    jobs, late, gone = part.factory.made

    part.external.read(config(metric("jobs", target_average_value=10), metric("late", target_value=2)))

    assert (jobs.closed, late.closed, gone.closed) == (True, False, True)
    assert [s.metric.name for s in part.factory.made[3:]] == ["jobs"], "only the changed one is made again"
    new_jobs = part.factory.latest("jobs")
    assert new_jobs.metric.target_average_value == 10 and new_jobs.reads == 1
    assert late.reads == 2, "the unchanged source is kept and read"


def test_a_source_change_remakes_it(part: Part) -> None:
    part.external.read(config(metric("jobs")))
    [old] = part.factory.made
    moved = metric("jobs")
    moved["redis"] = {"url": "redis://other:6379/1", "list": "jobs"}
    part.external.read(config(moved))
    assert old.closed and len(part.factory.made) == 2


def test_removing_every_metric_closes_every_source(part: Part) -> None:
    part.external.read(config(metric("jobs"), metric("late")))
    assert part.external.read(config()) == ()
    assert all(s.closed for s in part.factory.made)
    assert part.external.last == ()


def test_close_closes_every_source(part: Part) -> None:
    part.external.read(config(metric("jobs"), metric("late")))
    part.external.close()
    assert all(s.closed for s in part.factory.made)


def test_a_reload_during_an_outage_forgets_it(part: Part, caplog: pytest.LogCaptureFixture) -> None:
    # The changed metric's new source starts with a clean slate: its first failure is news.
    part.external.read(config(metric("jobs")))
    part.factory.latest("jobs").error = SourceError("down")
    part.external.read(config(metric("jobs")))
    part.external.read(config(metric("jobs", activation=1)))  # made again: a new source, that answers
    part.factory.latest("jobs").error = SourceError("down")
    part.external.read(config(metric("jobs", activation=1)))
    assert [r.getMessage() for r in caplog.records].count("down (the failure rules apply until it answers)") == 2
    assert not [r for r in caplog.records if "answers again" in r.getMessage()]


# --- telemetry ------------------------------------------------------------------------------


def test_telemetry_of_each_metric(part: Part) -> None:
    service = config(metric("jobs", activation=2), metric("late", target_value=0.5))
    part.external.read(service)
    part.factory.latest("jobs").value = 12.0
    part.factory.latest("late").error = SourceError("no data")
    part.external.read(service)

    assert part.sample("autoscaler_external_metric_value", "jobs") == 12.0
    assert math.isnan(part.sample("autoscaler_external_metric_value", "late") or 0.0), "NaN, never 0"
    assert part.sample("autoscaler_external_metric_source_up", "jobs") == 1
    assert part.sample("autoscaler_external_metric_source_up", "late") == 0
    assert part.sample("autoscaler_external_metric_target", "jobs", kind="average") == 5
    assert part.sample("autoscaler_external_metric_target", "late", kind="value") == 0.5
    assert part.sample("autoscaler_external_metric_target", "late", kind="average") is None
    assert part.sample("autoscaler_external_metric_activation", "jobs") == 2
    assert part.sample("autoscaler_external_metric_activation", "late") == 0
    assert part.sample("autoscaler_external_metric_errors_total", "jobs") == 0
    assert part.sample("autoscaler_external_metric_errors_total", "late") == 1

    part.external.read(service)
    part.external.read(service)
    assert part.sample("autoscaler_external_metric_errors_total", "late") == 3, "one per failed read"
    part.factory.latest("late").error = None
    part.external.read(service)
    assert part.sample("autoscaler_external_metric_errors_total", "late") == 3
    assert part.sample("autoscaler_external_metric_value", "late") == 1.0
    assert part.sample("autoscaler_external_metric_source_up", "late") == 1


SERIES = (
    "autoscaler_external_metric_value", "autoscaler_external_metric_source_up",
    "autoscaler_external_metric_activation", "autoscaler_external_metric_errors_total",
)


def test_a_removed_metric_takes_its_series_along(part: Part) -> None:
    part.external.read(config(metric("jobs"), metric("late", target_value=1)))
    part.factory.latest("late").error = SourceError("down")
    part.external.read(config(metric("jobs"), metric("late", target_value=1)))
    assert part.sample("autoscaler_external_metric_errors_total", "late") == 1

    part.external.read(config(metric("jobs")))

    for name in SERIES:
        assert part.sample(name, "late") is None, name
        assert part.sample(name, "jobs") is not None, name
    for kind in ("average", "value"):
        assert part.sample("autoscaler_external_metric_target", "late", kind=kind) is None

    part.external.read(config())
    for name in SERIES:
        assert part.sample(name, "jobs") is None, name


def test_a_target_kind_change_leaves_one_target_series(part: Part) -> None:
    part.external.read(config(metric("jobs")))
    part.external.read(config(metric("jobs", target_average_value=None, target_value=3)))
    assert part.sample("autoscaler_external_metric_target", "jobs", kind="average") is None
    assert part.sample("autoscaler_external_metric_target", "jobs", kind="value") == 3
