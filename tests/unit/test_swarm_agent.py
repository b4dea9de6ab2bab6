"""The Swarm agent: task containers read from their cgroup files (else the Docker API), exported
under cAdvisor's names; an engine that fails leaves only the agent's own metrics; the process
refuses to start with one line and stops on SIGTERM. A fake Docker client stands in for the
engine and fake cgroup trees in tmp_path for the node's /sys/fs/cgroup."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import docker.errors
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.docker.cgroups import CgroupMount, CgroupReader
from autoscaler.swarm import agent
from autoscaler.swarm.agent import SERIES_LABELS, AgentCollector, TaskStats, collect, cpu_quota, run_agent
from helpers import free_port

MiB = 1024**2
NODE = "n0de1d"


def cid(n: int) -> str:
    return f"{n:x}".rjust(64, "c")


def inspect_doc(n: int, *, running: bool = True, pid: int = 0, nano_cpus: int = 500_000_000,
                memory_bytes: int = 256 * MiB) -> dict[str, Any]:
    return {
        "Id": cid(n),
        "Name": f"/web.{n}.task{n}",
        "State": {"Running": running, "Pid": pid},
        "Config": {"Image": "demo:1@sha256:abc", "Labels": {
            "com.docker.swarm.service.name": "web",
            "com.docker.swarm.task.name": f"web.{n}.task{n}",
            "com.docker.swarm.task.id": f"task{n}",
            "com.docker.swarm.node.id": NODE,
        }},
        "HostConfig": {"NanoCpus": nano_cpus, "Memory": memory_bytes},
    }


def stats_doc(cpu_ns: int, usage_bytes: int, inactive_bytes: int,
              read: str = "2026-11-28T21:40:01.5Z") -> dict[str, Any]:
    return {
        "read": read,
        "cpu_stats": {"cpu_usage": {"total_usage": cpu_ns}, "system_cpu_usage": 10**12, "online_cpus": 4},
        "memory_stats": {"usage": usage_bytes, "limit": 8 * 1024 * MiB, "stats": {"inactive_file": inactive_bytes}},
    }


class FakeAPI:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.stats_calls: list[str] = []
        self.inspect_calls: list[str] = []

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.inspect_calls.append(container_id)
        if container_id in self.engine.gone_before_inspect or container_id not in self.engine.inspect:
            raise docker.errors.NotFound("No such container")
        return self.engine.inspect[container_id]

    def stats(self, container_id: str, stream: bool, one_shot: bool) -> dict[str, Any]:
        assert (stream, one_shot) == (False, True)
        self.stats_calls.append(container_id)
        if container_id not in self.engine.stats:
            raise docker.errors.NotFound("No such container")
        return self.engine.stats[container_id]


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.filters: list[dict[str, str]] = []

    def list(self, filters: dict[str, str], sparse: bool) -> list[Any]:
        if self.engine.unreachable:
            raise requests.exceptions.ConnectionError("Connection refused")
        self.filters.append(filters)
        return [type("Container", (), {"id": container_id})() for container_id in self.engine.listed]


class FakeEngine:
    """What a docker.DockerClient offers the agent: containers.list, api.inspect_container, api.stats."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.inspect: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.gone_before_inspect: set[str] = set()
        self.unreachable = False
        self.api = FakeAPI(self)
        self.containers = FakeContainers(self)
        self.closed = False

    def add(self, n: int, stats: dict[str, Any] | None = None, **inspect: Any) -> str:
        self.listed.append(cid(n))
        self.inspect[cid(n)] = inspect_doc(n, **inspect)
        if stats is not None:
            self.stats[cid(n)] = stats
        return cid(n)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def write_v2(root: Path, container_id: str, usage_usec: int, current_bytes: int, inactive_bytes: int) -> None:
    directory = root / "system.slice" / f"docker-{container_id}.scope"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    (directory / "memory.current").write_text(f"{current_bytes}\n")
    (directory / "memory.stat").write_text(f"anon 1\ninactive_file {inactive_bytes}\n")
    (directory / "memory.max").write_text("max\n")


def v2_reader(root: Path, proc: Path | None = None) -> CgroupReader:
    return CgroupReader([CgroupMount(str(root), "/", 2, frozenset())], proc=str(proc or root / "no-proc"))


# --- collect ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host_config", "expected"),
    [
        ({"NanoCpus": 500_000_000}, (50_000, 100_000)),
        ({"NanoCpus": 1_500_000_000, "CpuQuota": 1}, (150_000, 100_000)),
        ({"NanoCpus": 0, "CpuQuota": 25_000, "CpuPeriod": 50_000}, (25_000, 50_000)),
        ({"CpuQuota": 25_000}, (25_000, 100_000)),
        ({"NanoCpus": 0, "CpuQuota": 0, "CpuPeriod": 0}, (None, None)),
        ({}, (None, None)),
    ],
    ids=["half-a-core", "nano-cpus-win", "own-quota-and-period", "own-quota-default-period", "zeros", "nothing"],
)
def test_cpu_quota(host_config: dict[str, int], expected: tuple[int | None, int | None]) -> None:
    assert cpu_quota(host_config) == expected


def expected_task(n: int, cpu_seconds: float, working_set_bytes: int, read_at_seconds: float) -> TaskStats:
    return TaskStats(
        container_id=cid(n), container_name=f"web.{n}.task{n}", image="demo:1@sha256:abc", service_name="web",
        task_name=f"web.{n}.task{n}", task_id=f"task{n}", node_id=NODE, cpu_seconds_total=cpu_seconds,
        memory_working_set_bytes=working_set_bytes, memory_limit_bytes=256 * MiB, cpu_quota_us=50_000,
        cpu_period_us=100_000, read_at_seconds=read_at_seconds,
    )


class Case(NamedTuple):
    cgroup: bool  # the container's cgroup files are on the fake tree
    pid_visible: bool  # /proc/<pid>/cgroup names the container
    stats: dict[str, Any] | None  # what the Docker API answers (None: 404)
    running: bool
    gone_before_inspect: bool
    expected: str | None  # "cgroup", "api" or None (left out)


COLLECT_CASES = {
    "cgroup-by-pid": Case(True, True, stats_doc(9, 9, 0), True, False, "cgroup"),
    "cgroup-by-id-search": Case(True, False, stats_doc(9, 9, 0), True, False, "cgroup"),
    "api-fallback": Case(False, False, stats_doc(3_000_000_000, 70 * MiB, 20 * MiB), True, False, "api"),
    "vanished-before-inspect": Case(False, False, None, True, True, None),
    "stopped-since-listed": Case(True, True, stats_doc(9, 9, 0), False, False, None),
    "vanished-before-stats": Case(False, False, None, True, False, None),
    "stopped-before-stats": Case(False, False, stats_doc(0, 0, 0, read="0001-01-01T00:00:00Z"), True, False, None),
    "unreadable-stats": Case(False, False, {"read": "2026-11-28T21:40:01Z"}, True, False, None),
}


@pytest.mark.parametrize("case", COLLECT_CASES.values(), ids=COLLECT_CASES.keys())
def test_collect_one_container(tmp_path: Path, case: Case) -> None:
    engine = FakeEngine()
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(f"0::/system.slice/docker-{cid(1)}.scope\n" if case.pid_visible else "0::/\n")
    cgroup_root = tmp_path / "cgroup"
    if case.cgroup:
        write_v2(cgroup_root, cid(1), usage_usec=2_500_000, current_bytes=50 * MiB, inactive_bytes=5 * MiB)
    engine.add(1, case.stats, running=case.running, pid=4242)
    if case.gone_before_inspect:
        engine.gone_before_inspect.add(cid(1))

    before = time.time()
    tasks = collect(engine, v2_reader(cgroup_root, proc))  # type: ignore[arg-type]

    assert engine.containers.filters == [{"label": "com.docker.swarm.task.id", "status": "running"}]
    if case.expected is None:
        assert tasks == []
    elif case.expected == "cgroup":
        [task] = tasks
        assert before <= task.read_at_seconds <= time.time()
        assert task == expected_task(1, 2.5, 45 * MiB, task.read_at_seconds)
        assert engine.api.stats_calls == [], "the files were enough"
    else:
        assert tasks == [expected_task(1, 3.0, 50 * MiB, 1795902001.5)]
        assert engine.api.stats_calls == [cid(1)]


def test_collect_mixes_sources_and_forgets_gone_containers(tmp_path: Path) -> None:
    engine = FakeEngine()
    write_v2(tmp_path, cid(1), usage_usec=1_000_000, current_bytes=10 * MiB, inactive_bytes=0)
    engine.add(1, pid=0)
    engine.add(2, stats_doc(2_000_000_000, 30 * MiB, 10 * MiB))
    engine.add(3, stats=None)  # vanished before its stats
    reader = v2_reader(tmp_path)

    tasks = collect(engine, reader)  # type: ignore[arg-type]
    assert [(t.task_id, t.cpu_seconds_total, t.memory_working_set_bytes) for t in tasks] == [
        ("task1", 1.0, 10 * MiB), ("task2", 2.0, 20 * MiB),
    ]
    assert reader.known(cid(1))

    engine.listed = [cid(2)]
    assert [t.task_id for t in collect(engine, reader)] == ["task2"]  # type: ignore[arg-type]
    assert not reader.known(cid(1)), "what the reader knew of a gone task is dropped"


def test_collect_inspects_each_task_container_once_while_it_runs(tmp_path: Path) -> None:
    engine = FakeEngine()
    for n in (1, 2):
        write_v2(tmp_path, cid(n), usage_usec=n * 1_000_000, current_bytes=10 * MiB, inactive_bytes=0)
        engine.add(n, pid=0)
    reader = v2_reader(tmp_path)
    inspected: dict[str, Any] = {}

    first = collect(engine, reader, inspected)  # type: ignore[arg-type]
    write_v2(tmp_path, cid(1), usage_usec=4_000_000, current_bytes=10 * MiB, inactive_bytes=0)
    second = collect(engine, reader, inspected)  # type: ignore[arg-type]

    assert sorted(engine.api.inspect_calls) == [cid(1), cid(2)], "inspected at the first scrape only"
    assert [t.cpu_seconds_total for t in first] == [1.0, 2.0]
    assert [t.cpu_seconds_total for t in second] == [4.0, 2.0], "readings are fresh at every scrape"
    assert [t.task_id for t in second] == ["task1", "task2"]

    engine.listed = [cid(2)]
    engine.add(3, pid=0)  # listed from now on: a new task
    write_v2(tmp_path, cid(3), usage_usec=1_000_000, current_bytes=10 * MiB, inactive_bytes=0)
    engine.listed = [cid(2), cid(3)]
    assert [t.task_id for t in collect(engine, reader, inspected)] == ["task2", "task3"]  # type: ignore[arg-type]
    assert set(inspected) == {cid(2), cid(3)}, "a gone container is forgotten"
    assert engine.api.inspect_calls.count(cid(3)) == 1


def test_collect_raises_when_the_engine_does_not_answer(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.unreachable = True
    with pytest.raises(requests.exceptions.ConnectionError):
        collect(engine, v2_reader(tmp_path))  # type: ignore[arg-type]


# --- the collector ----------------------------------------------------------------------------

TASK = TaskStats(
    container_id=cid(1), container_name="web.1.task1", image="demo:1", service_name="web", task_name="web.1.task1",
    task_id="task1", node_id=NODE, cpu_seconds_total=12.25, memory_working_set_bytes=70 * MiB,
    memory_limit_bytes=256 * MiB, cpu_quota_us=50_000, cpu_period_us=100_000, read_at_seconds=1.0,
)
UNLIMITED = TASK._replace(container_id=cid(2), task_id="task2", memory_working_set_bytes=None,
                          memory_limit_bytes=None, cpu_quota_us=None, cpu_period_us=None)
TASK_LABELS = {
    "id": f"/docker/{cid(1)}",
    "name": "web.1.task1",
    "image": "demo:1",
    "container_label_com_docker_swarm_service_name": "web",
    "container_label_com_docker_swarm_task_name": "web.1.task1",
    "container_label_com_docker_swarm_task_id": "task1",
    "container_label_com_docker_swarm_node_id": NODE,
}


def scrape(collector: AgentCollector) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """Family name -> (type, samples) as Prometheus would read the exposition."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        family.name: (family.type, [(s.name, s.labels, s.value) for s in family.samples])
        for family in text_string_to_metric_families(text)
    }


@pytest.mark.parametrize(
    ("family", "kind", "sample", "value"),
    [
        ("container_cpu_usage_seconds", "counter", "container_cpu_usage_seconds_total", 12.25),
        ("container_memory_working_set_bytes", "gauge", "container_memory_working_set_bytes", 70 * MiB),
        ("container_spec_memory_limit_bytes", "gauge", "container_spec_memory_limit_bytes", 256 * MiB),
        ("container_spec_cpu_quota", "gauge", "container_spec_cpu_quota", 50_000),
        ("container_spec_cpu_period", "gauge", "container_spec_cpu_period", 100_000),
    ],
    ids=["cpu", "working-set", "memory-limit", "cpu-quota", "cpu-period"],
)
def test_the_collector_speaks_cadvisor(family: str, kind: str, sample: str, value: float) -> None:
    families = scrape(AgentCollector(lambda: [TASK, UNLIMITED]))
    assert families[family][0] == kind
    by_task = {labels["container_label_com_docker_swarm_task_id"]: (name, labels, v)
               for name, labels, v in families[family][1]}
    assert by_task["task1"] == (sample, TASK_LABELS, value)
    if family == "container_cpu_usage_seconds":
        assert by_task["task2"][2] == 12.25
    else:
        assert "task2" not in by_task, "an unknown value or no limit has no series, not a 0"


def test_the_collector_exports_its_own_metrics() -> None:
    families = scrape(AgentCollector(lambda: [TASK, UNLIMITED]))
    assert families["autoscaler_agent_tasks"] == ("gauge", [("autoscaler_agent_tasks", {}, 2.0)])
    assert families["autoscaler_agent_engine_up"] == ("gauge", [("autoscaler_agent_engine_up", {}, 1.0)])
    kind, [(_, _, duration)] = families["autoscaler_agent_collect_duration_seconds"]
    assert kind == "gauge" and 0 <= duration < 1
    assert set(SERIES_LABELS) == set(TASK_LABELS)


def test_a_failing_collect_leaves_the_agents_own_metrics_and_is_logged_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = True

    def tasks() -> list[TaskStats]:
        if failing:
            raise requests.exceptions.ConnectionError(f"refused by <object at {id(object())}>")
        return [TASK]

    collector = AgentCollector(tasks)
    with caplog.at_level(logging.INFO, logger="autoscaler.agent"):
        for _ in range(3):
            families = scrape(collector)
            assert set(families) == {"autoscaler_agent_collect_duration_seconds", "autoscaler_agent_engine_up"}
            assert families["autoscaler_agent_engine_up"][1][0][2] == 0.0
        failing = False
        for _ in range(2):
            assert "container_cpu_usage_seconds" in scrape(collector)
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("WARNING", "cannot read the tasks from the Docker engine"),
        ("INFO", "reading the tasks from the Docker engine again"),
    ]
    assert "refused by" in caplog.records[0].getMessage(), "the reason is in the line"


# --- run_agent --------------------------------------------------------------------------------


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    engine = FakeEngine()
    engine.add(1, stats_doc(4_000_000_000, 10 * MiB, 0))
    monkeypatch.setattr(agent.docker, "from_env", lambda **kwargs: engine)
    monkeypatch.setattr(agent, "host_mounts", lambda: [])  # not this machine's cgroups
    return engine


def test_run_agent_without_an_engine_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    port = free_port()
    assert run_agent("127.0.0.1", port) == 1
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage().startswith("cannot start: the Docker engine is not reachable")
    assert record.exc_info is None


def test_run_agent_on_a_taken_port_exits_1(fake_engine: FakeEngine, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_agent("127.0.0.1", port) == 1
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage().startswith(f"cannot start: cannot listen on 127.0.0.1:{port}")
    assert fake_engine.closed


def test_run_agent_serves_metrics_until_sigterm(fake_engine: FakeEngine) -> None:
    port = free_port()
    previous = signal.getsignal(signal.SIGTERM)
    pages: list[str] = []

    def scrape_then_stop() -> None:
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not pages:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                        pages.append(response.read().decode())
                except OSError:
                    time.sleep(0.05)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # always: run_agent must not wait forever

    threading.Thread(target=scrape_then_stop, daemon=True).start()
    assert run_agent("127.0.0.1", port) == 0
    [page] = pages
    assert 'container_label_com_docker_swarm_task_id="task1"' in page and "autoscaler_agent_tasks 1.0" in page
    assert signal.getsignal(signal.SIGTERM) == previous, "the previous handler is back"
    assert fake_engine.closed
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)
