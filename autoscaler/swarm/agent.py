"""`autoscaler agent`: CPU and memory of the Swarm tasks on one node, served at /metrics.

A manager cannot read the stats of tasks on other nodes, so the agent runs as a global Swarm
service (one per node) and the daemon scrapes them all. Its output uses cAdvisor's names and
labels, so one Prometheus query works against either, and the daemon's parser reads both.

Readings come from the tasks' cgroup files where the node's /sys/fs/cgroup is visible (a few
microseconds each), else from one-shot Docker API stats. Whatever cannot be read is left out:
the daemon treats a task with no series as missing, never as 0 %.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import FrameType
from typing import Any, NamedTuple

import docker
import docker.errors
import requests
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler import __version__
from autoscaler.docker.cgroups import CgroupReader, host_mounts
from autoscaler.docker.stats import StatsFormatError, parse_stats
from autoscaler.engine.ports import StatsReading

log = logging.getLogger("autoscaler.agent")

EXIT_OK = 0
EXIT_FAILURE = 1

# Labels Swarm puts on every task container.
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
TASK_NAME_LABEL = "com.docker.swarm.task.name"
TASK_ID_LABEL = "com.docker.swarm.task.id"
NODE_ID_LABEL = "com.docker.swarm.node.id"

# cAdvisor's names: "container_label_" + the Docker label with every non-alphanumeric as "_".
SERIES_LABELS = (
    "id", "name", "image",
    "container_label_com_docker_swarm_service_name",
    "container_label_com_docker_swarm_task_name",
    "container_label_com_docker_swarm_task_id",
    "container_label_com_docker_swarm_node_id",
)

# The CFS period Docker uses for --cpus (NanoCpus), in microseconds.
CPU_PERIOD_US = 100_000
# Docker API stats for containers the cgroup files do not show: a handful at once, within the
# SDK's connection pool (10 by default).
API_STATS_WORKERS = 8
ENGINE_TIMEOUT_SECONDS = 10
SHUTDOWN_POLL_SECONDS = 0.2


class TaskStats(NamedTuple):
    container_id: str
    container_name: str
    image: str
    service_name: str
    task_name: str
    task_id: str
    node_id: str
    cpu_seconds_total: float  # cumulative CPU time of the container
    memory_working_set_bytes: int | None  # usage minus inactive page cache, as `docker stats` shows
    memory_limit_bytes: int | None  # the container's spec (HostConfig.Memory); None: no limit
    cpu_quota_us: int | None  # CFS quota per period; None: no CPU limit
    cpu_period_us: int | None
    read_at_seconds: float

    def series_labels(self) -> list[str]:
        """Values for SERIES_LABELS, in that order."""
        return [f"/docker/{self.container_id}", self.container_name, self.image, self.service_name,
                self.task_name, self.task_id, self.node_id]


class _Task(NamedTuple):
    """What inspect says of one task container; the reading is added afterwards."""

    container_id: str
    name: str
    image: str
    labels: dict[str, str]
    pid: int | None
    memory_limit_bytes: int | None
    cpu_quota_us: int | None
    cpu_period_us: int | None


def cpu_quota(host_config: dict[str, Any]) -> tuple[int | None, int | None]:
    """(quota, period) in microseconds from a container's HostConfig; (None, None) without a limit.

    Swarm's --limit-cpu sets NanoCpus, which the engine turns into a quota over a 100 ms period;
    a container started with --cpu-quota carries its own quota and period instead."""
    nano_cpus = int(host_config.get("NanoCpus") or 0)
    if nano_cpus > 0:
        return round(nano_cpus / 1e9 * CPU_PERIOD_US), CPU_PERIOD_US
    quota = int(host_config.get("CpuQuota") or 0)
    if quota > 0:
        return quota, int(host_config.get("CpuPeriod") or 0) or CPU_PERIOD_US
    return None, None


def _inspect(client: docker.DockerClient, container_id: str) -> _Task | None:
    """None when the container is gone or no longer running (it ended since the listing)."""
    try:
        info = client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        # The engine answered but refuses this one container (removal in progress, ...).
        log.debug("cannot inspect %s: %s", container_id[:12], exc)
        return None
    state = info.get("State") or {}
    if not state.get("Running"):
        return None
    config = info.get("Config") or {}
    host_config = info.get("HostConfig") or {}
    quota_us, period_us = cpu_quota(host_config)
    return _Task(
        container_id=info.get("Id") or container_id,
        name=str(info.get("Name") or "").lstrip("/"),
        image=str(config.get("Image") or ""),
        labels=dict(config.get("Labels") or {}),
        pid=int(state.get("Pid") or 0) or None,
        memory_limit_bytes=int(host_config.get("Memory") or 0) or None,
        cpu_quota_us=quota_us,
        cpu_period_us=period_us,
    )


def _api_stats(client: docker.DockerClient, container_id: str) -> StatsReading | None:
    try:
        doc = client.api.stats(container_id, stream=False, one_shot=True)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        log.debug("no stats for %s: %s", container_id[:12], exc)
        return None
    # A container that stopped meanwhile answers an empty document dated year 1.
    if not isinstance(doc, dict) or str(doc.get("read", "")).startswith("0001-"):
        return None
    try:
        return parse_stats(doc)
    except StatsFormatError as exc:
        log.debug("no stats for %s: %s", container_id[:12], exc)
        return None


def collect(
    client: docker.DockerClient, reader: CgroupReader, inspected: dict[str, _Task] | None = None
) -> list[TaskStats]:
    """The running Swarm task containers of the local engine with their CPU and memory: from
    their cgroup files, else one-shot Docker API stats. A container that vanished meanwhile is
    left out; an engine that does not answer raises (docker.errors.DockerException or
    requests.exceptions.RequestException).

    `inspected` keeps what inspect said of each container between scrapes: a task container's
    name, labels, image and limits do not change while it runs (Swarm replaces a task, it does
    not update it), so each one is inspected once instead of at every scrape."""
    listed = client.containers.list(filters={"label": TASK_ID_LABEL, "status": "running"}, sparse=True)
    listed_ids = {container.id for container in listed}
    reader.forget(listed_ids)  # memory stays bounded as tasks come and go
    known = inspected if inspected is not None else {}
    for gone in set(known) - listed_ids:
        known.pop(gone, None)  # pop: two scrapes at once may both prune it
    tasks: list[_Task] = []
    for container in listed:
        task = known.get(container.id) or _inspect(client, container.id)
        if task is not None:
            known[container.id] = task
            tasks.append(task)
    readings: dict[str, StatsReading | None] = {}
    for task in tasks:
        if not reader.known(task.container_id):
            reader.locate(task.container_id, task.pid)
        readings[task.container_id] = reader.read(task.container_id)
    fallback = [task.container_id for task in tasks if readings[task.container_id] is None]
    if fallback:
        with ThreadPoolExecutor(min(API_STATS_WORKERS, len(fallback)), thread_name_prefix="agent-stats") as pool:
            readings.update(zip(fallback, pool.map(lambda i: _api_stats(client, i), fallback), strict=True))
    result = []
    for task in tasks:
        reading = readings[task.container_id]
        if reading is None:
            continue
        result.append(TaskStats(
            container_id=task.container_id,
            container_name=task.name,
            image=task.image,
            service_name=task.labels.get(SERVICE_NAME_LABEL, ""),
            task_name=task.labels.get(TASK_NAME_LABEL, ""),
            task_id=task.labels.get(TASK_ID_LABEL, ""),
            node_id=task.labels.get(NODE_ID_LABEL, ""),
            cpu_seconds_total=reading.cpu_total_ns / 1e9,
            memory_working_set_bytes=reading.memory_used_bytes,
            memory_limit_bytes=task.memory_limit_bytes,
            cpu_quota_us=task.cpu_quota_us,
            cpu_period_us=task.cpu_period_us,
            read_at_seconds=reading.read_at_seconds,
        ))
    return result


class AgentCollector(Collector):
    """Reads the tasks at scrape time and yields them under cAdvisor's names, plus the agent's
    own metrics. An engine that cannot be read leaves only the agent's own metrics (engine_up 0),
    so the scrape itself still succeeds and says why the tasks are absent."""

    def __init__(self, collect_tasks: Callable[[], list[TaskStats]]) -> None:
        self._collect_tasks = collect_tasks
        # Scrapes may overlap (the HTTP server is threaded); the cgroup reader's cache is not
        # meant to be shared between threads, and one engine walk at a time is plenty.
        self._lock = threading.Lock()
        self._failure: str | None = None  # the kind of the last failure, for logging once per change

    def describe(self) -> Iterable[Metric]:
        # Names without reading anything: registration stays cheap and ?name[]= filters work.
        yield from _agent_families(0.0, [])
        yield from task_families([])

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            started = time.perf_counter()
            try:
                tasks: list[TaskStats] | None = self._collect_tasks()
            except Exception as exc:  # the scrape must survive whatever the engine does
                tasks = None
                self._note_failure(exc)
            else:
                self._note_success()
            duration_seconds = time.perf_counter() - started
        yield from _agent_families(duration_seconds, tasks)
        if tasks is not None:
            yield from task_families(tasks)

    def _note_failure(self, exc: Exception) -> None:
        # By kind, not by text: connection errors carry object addresses that differ every time.
        kind = type(exc).__name__
        if kind != self._failure:
            log.warning("cannot read the tasks from the Docker engine: %s", _reason(exc))
        self._failure = kind

    def _note_success(self) -> None:
        if self._failure is not None:
            log.info("reading the tasks from the Docker engine again")
        self._failure = None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _agent_families(duration_seconds: float, tasks: list[TaskStats] | None) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "autoscaler_agent_collect_duration_seconds", "Time the last collection of task stats took.",
        value=duration_seconds,
    )
    yield GaugeMetricFamily(
        "autoscaler_agent_engine_up", "1 when the last collection could read the local Docker engine, else 0.",
        value=0.0 if tasks is None else 1.0,
    )
    if tasks is not None:
        yield GaugeMetricFamily(
            "autoscaler_agent_tasks", "Swarm task containers with a reading in the last collection.",
            value=len(tasks),
        )


def task_families(tasks: list[TaskStats]) -> Iterator[Metric]:
    """cAdvisor-compatible families for these readings. A value that is not known (no memory
    reading, no limit) has no series rather than a 0 that would read as a real number."""
    cpu = CounterMetricFamily(
        "container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", labels=SERIES_LABELS,
    )
    working_set = GaugeMetricFamily(
        "container_memory_working_set_bytes", "Current working set in bytes (usage minus inactive file).",
        labels=SERIES_LABELS,
    )
    memory_limit = GaugeMetricFamily(
        "container_spec_memory_limit_bytes", "Memory limit for the container.", labels=SERIES_LABELS,
    )
    quota = GaugeMetricFamily("container_spec_cpu_quota", "CPU quota of the container.", labels=SERIES_LABELS)
    cpu_period = GaugeMetricFamily("container_spec_cpu_period", "CPU period of the container.", labels=SERIES_LABELS)
    for task in tasks:
        labels = task.series_labels()
        cpu.add_metric(labels, task.cpu_seconds_total)
        if task.memory_working_set_bytes is not None:
            working_set.add_metric(labels, task.memory_working_set_bytes)
        if task.memory_limit_bytes is not None:
            memory_limit.add_metric(labels, task.memory_limit_bytes)
        if task.cpu_quota_us is not None and task.cpu_period_us is not None:
            quota.add_metric(labels, task.cpu_quota_us)
            cpu_period.add_metric(labels, task.cpu_period_us)
    yield from (cpu, working_set, memory_limit, quota, cpu_period)


class _StopFlag:
    """Set by SIGTERM/SIGINT; a second one exits at once. A plain attribute rather than an
    Event: a handler must not take a lock the interrupted main thread may be holding."""

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            os._exit(EXIT_FAILURE)  # asked twice: the user does not want to wait for the shutdown
        self.requested = True


@contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    previous = {sig: signal.signal(sig, flag.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_agent(listen_host: str, listen_port: int) -> int:
    """Serves the local tasks' stats at http://listen_host:listen_port/metrics until SIGTERM or
    SIGINT. 0 after a clean stop; 1, with one line on stderr, when it cannot start (no engine,
    the port taken)."""
    # Installed first, so that a signal during start-up or shutdown is handled the same way.
    with _stop_on_signals() as stop:
        try:
            client = docker.from_env(timeout=ENGINE_TIMEOUT_SECONDS)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            log.error("cannot start: the Docker engine is not reachable (%s); run the agent with the "
                      "engine's socket mounted, or set DOCKER_HOST", _reason(exc))
            return EXIT_FAILURE
        try:
            return _serve(client, listen_host, listen_port, stop)
        finally:
            client.close()


def _serve(client: docker.DockerClient, listen_host: str, listen_port: int, stop: _StopFlag) -> int:
    reader = CgroupReader(host_mounts())
    inspected: dict[str, _Task] = {}
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: collect(client, reader, inspected)))
    try:
        server, thread = start_http_server(listen_port, addr=listen_host, registry=registry)
    except OSError as exc:
        log.error("cannot start: cannot listen on %s:%d (%s)", listen_host, listen_port, exc.strerror or exc)
        return EXIT_FAILURE
    try:
        log.info(
            "autoscaler agent %s serving http://%s:%d/metrics (%s)", __version__, listen_host, listen_port,
            "cgroup files, the Docker API as fallback" if reader.available
            else "no cgroup files visible: the Docker API",
        )
        while not stop.requested:
            time.sleep(SHUTDOWN_POLL_SECONDS)
        log.info("stopping")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return EXIT_OK
