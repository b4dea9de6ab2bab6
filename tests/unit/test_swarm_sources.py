"""The daemon's Swarm metrics sources: agent pages parsed back into readings, agents scraped
at once with the unreachable ones missing and logged once, and PromQL against a fake
Prometheus. Real HTTP servers on 127.0.0.1 stand in for the agents and for Prometheus."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError
from prometheus_client import CollectorRegistry, generate_latest

from autoscaler.config import PrometheusSourceConfig
from autoscaler.docker.stats import StatsReading
from autoscaler.swarm.agent import AgentCollector, TaskStats
from autoscaler.swarm.sources import AgentSource, PrometheusSource, SourceError, parse_agent_metrics

MiB = 1024**2
Response = tuple[int, str]  # status, body


@contextlib.contextmanager
def http_server(respond: Callable[[str], Response]) -> Iterator[str]:
    """Serves respond(path with query) on 127.0.0.1; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            status, body = respond(self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first: that is what the timeout cases test

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # a handler left sleeping must not hold the test up
    # A short poll: shutdown() waits for it, and the default half second adds up over the tests.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def task(n: int, cpu_seconds: float, working_set_bytes: int | None = 64 * MiB,
         memory_limit_bytes: int | None = 256 * MiB) -> TaskStats:
    return TaskStats(
        container_id=f"{n:x}".rjust(64, "c"), container_name=f"web.{n}.t{n}", image="demo:1", service_name="web",
        task_name=f"web.{n}.t{n}", task_id=f"t{n}", node_id=f"node{n}", cpu_seconds_total=cpu_seconds,
        memory_working_set_bytes=working_set_bytes, memory_limit_bytes=memory_limit_bytes, cpu_quota_us=50_000,
        cpu_period_us=100_000, read_at_seconds=1.0,
    )


def agent_page(*tasks: TaskStats, engine_fails: bool = False) -> str:
    """The agent's real output, through its collector."""
    def collect() -> list[TaskStats]:
        if engine_fails:
            raise ConnectionError("engine gone")
        return list(tasks)

    registry = CollectorRegistry()
    registry.register(AgentCollector(collect))
    return generate_latest(registry).decode()


def reading(cpu_ns: int, at: float, memory: int | None = 64 * MiB, limit: int | None = 256 * MiB) -> StatsReading:
    return StatsReading(cpu_total_ns=cpu_ns, system_cpu_ns=None, online_cpus=1, read_at_seconds=at,
                        memory_used_bytes=memory, memory_limit_bytes=limit)


# --- parse_agent_metrics ----------------------------------------------------------------------


def test_parse_agent_metrics_round_trips_the_collectors_output() -> None:
    page = agent_page(task(1, 12.5), task(2, 0.000000001, working_set_bytes=None, memory_limit_bytes=None),
                      task(3, 98765.123456789, working_set_bytes=3 * 1024 * MiB))
    assert parse_agent_metrics(page, 1000.0) == {
        "t1": reading(12_500_000_000, 1000.0),
        "t2": reading(1, 1000.0, memory=None, limit=None),
        "t3": reading(98_765_123_456_789, 1000.0, memory=3 * 1024 * MiB),
    }


LABELS = 'container_label_com_docker_swarm_task_id="{}",id="/docker/x"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        (agent_page(), {}),
        (agent_page(engine_fails=True), {}),
        # cAdvisor: untyped, the host's own cgroups without a task label, 0 for "no limit".
        (("container_cpu_usage_seconds_total{id=\"/\"} 5\n"
          f"container_cpu_usage_seconds_total{{{LABELS.format('a')}}} 2\n"
          f"container_memory_working_set_bytes{{{LABELS.format('a')}}} 1024\n"
          f"container_spec_memory_limit_bytes{{{LABELS.format('a')}}} 0\n"),
         {"a": reading(2_000_000_000, 7.0, memory=1024, limit=None)}),
        (f"container_memory_working_set_bytes{{{LABELS.format('a')}}} 1024\n", {}),
        (f"container_cpu_usage_seconds_total{{{LABELS.format('a')}}} NaN\n", {}),
        ((f"container_cpu_usage_seconds_total{{{LABELS.format('a')}}} 1\n"
          f"container_memory_working_set_bytes{{{LABELS.format('a')}}} NaN\n"),
         {"a": reading(1_000_000_000, 7.0, memory=None, limit=None)}),
    ],
    ids=["empty", "no-tasks", "engine-down", "cadvisor", "memory-without-cpu-is-missing", "nan-cpu",
         "nan-memory"],
)
def test_parse_agent_metrics(text: str, expected: dict[str, StatsReading]) -> None:
    assert parse_agent_metrics(text, 7.0) == expected


@pytest.mark.parametrize(
    "text",
    ["<html><body>Bad gateway</body></html>\n", 'container_cpu_usage_seconds_total{a="b" 1\n',
     "container_cpu_usage_seconds_total one\n", "\x00\n"],
    ids=["html", "unclosed-labels", "not-a-number", "nul"],
)
def test_parse_agent_metrics_refuses_what_is_not_the_text_format(text: str) -> None:
    with pytest.raises(SourceError, match="^not in the Prometheus text format: "):
        parse_agent_metrics(text, 0.0)


# --- AgentSource ------------------------------------------------------------------------------


class Agent:
    """A fake agent whose page and health the test changes between reads."""

    def __init__(self, *tasks: TaskStats) -> None:
        self.page = agent_page(*tasks)
        self.status = 200
        self.requests = 0

    def __call__(self, path: str) -> Response:
        self.requests += 1
        return (self.status, self.page) if path == "/metrics" else (404, "not found")


def test_an_unreachable_agent_leaves_its_tasks_missing_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Agent(task(2, 2.0))
    calls: list[tuple[str, bool]] = []
    with http_server(Agent(task(1, 1.0))) as first, http_server(flaky) as second:
        gone = closed_port_url()
        source = AgentSource(
            lambda: [("node1", first), ("node2", second + "/"), ("node3", gone)],
            timeout_seconds=2.0, on_agent=lambda node, ok: calls.append((node, ok)),
        )
        with caplog.at_level(logging.INFO, logger="autoscaler.swarm"):
            for _ in range(3):
                readings = source.read(["t1", "t2", "t3"])
                assert readings["t3"] is None and readings["t1"] is not None and readings["t2"] is not None
                assert readings["t1"].cpu_total_ns == 1_000_000_000
            assert list(source.last_errors) == ["node3"]
            assert gone in source.last_errors["node3"]

            flaky.status = 503
            for _ in range(2):
                readings = source.read(["t1", "t2"])
                assert readings["t2"] is None and readings["t1"] is not None
            assert source.last_errors["node2"] == f"{second}/metrics: HTTP 503 Service Unavailable"

            flaky.status = 200
            for _ in range(2):
                assert source.read(["t2"])["t2"] is not None
        source.close()

    messages = [(r.levelname, r.getMessage().split(",")[0]) for r in caplog.records]
    assert messages == [
        ("WARNING", "agent on node node3 is failing"),
        ("WARNING", "agent on node node2 is failing"),
        ("INFO", "agent on node node2 is back"),
    ]
    assert calls[:3] == [("node1", True), ("node2", True), ("node3", False)]
    assert len(calls) == 7 * 3, "every agent on every read, for the gauge"
    assert ("node2", False) in calls[9:15] and calls[-2] == ("node2", True)


@pytest.mark.parametrize(
    ("respond", "error"),
    [
        (lambda path: (200, agent_page(engine_fails=True)), "the agent cannot read its node's Docker engine"),
        (lambda path: (200, "<html>proxy error</html>"), "not in the Prometheus text format"),
        (lambda path: (404, "not found"), "HTTP 404"),
        (lambda path: time.sleep(1.5) or (200, ""), "timed out"),
    ],
    ids=["engine-down", "garbage", "not-found", "too-slow"],
)
def test_a_failing_agent_is_missing_with_the_reason(respond: Callable[[str], Response], error: str) -> None:
    with http_server(respond) as url:
        source = AgentSource(lambda: [("node1", url)], timeout_seconds=0.3)
        started = time.monotonic()
        assert source.read(["t1"]) == {"t1": None}
        assert time.monotonic() - started < 1.5, "a slow agent costs the timeout, not its own time"
        assert error in source.last_errors["node1"]
        source.close()


def test_agents_are_scraped_at_the_same_time() -> None:
    # Each agent answers only once both requests are in flight: one after the other would
    # break the barrier, and both agents would count as failing.
    both_in_flight = threading.Barrier(2, timeout=1.5)

    def agent(n: int) -> Callable[[str], Response]:
        def respond(path: str) -> Response:
            try:
                both_in_flight.wait()
            except threading.BrokenBarrierError:
                return 500, "scraped one after the other"
            return 200, agent_page(task(n, float(n)))
        return respond

    with http_server(agent(1)) as first, http_server(agent(2)) as second:
        source = AgentSource(lambda: [("node1", first), ("node2", second)], timeout_seconds=3.0)
        readings = source.read(["t1", "t2"])
        source.close()
    assert source.last_errors == {}
    assert {k: v.cpu_total_ns if v else None for k, v in readings.items()} == {"t1": 1_000_000_000, "t2": 2_000_000_000}


def test_nodes_that_leave_are_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    gone = closed_port_url()
    nodes = [("node9", gone)]
    source = AgentSource(lambda: nodes, timeout_seconds=1.0)
    with caplog.at_level(logging.INFO, logger="autoscaler.swarm"):
        source.read([])
        assert list(source.last_errors) == ["node9"]
        nodes.clear()
        assert source.read(["t1"]) == {"t1": None}
        assert source.last_errors == {}
        nodes.append(("node9", gone))
        source.read([])
    source.close()
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"], "a node that comes back starts afresh"


def test_two_agents_claiming_one_task_keep_the_newest_reading() -> None:
    stale = Agent(task(1, 1.0))

    def newer(path: str) -> Response:
        time.sleep(0.2)  # read after the stale page, whatever order the threads run in
        return 200, agent_page(task(1, 5.0))

    with http_server(stale) as first, http_server(newer) as second:
        source = AgentSource(lambda: [("b", second), ("a", first)])
        result = source.read(["t1"])["t1"]
        source.close()
    assert result is not None and result.cpu_total_ns == 5_000_000_000


# --- PrometheusSource -------------------------------------------------------------------------

SELECTOR = '{container_label_com_docker_swarm_service_name="autoscaler-web"}'
CPU_QUERY = f"container_cpu_usage_seconds_total{SELECTOR}"
MEMORY_QUERY = f"container_memory_working_set_bytes{SELECTOR}"
TIMESTAMP_QUERY = f"timestamp({CPU_QUERY})"


def vector(*series: tuple[dict[str, str], float, str]) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [at, value]} for labels, at, value in series
    ]}})


def tid(task_id: str, **more: str) -> dict[str, str]:
    return {"container_label_com_docker_swarm_task_id": task_id, "instance": "n1:9101", **more}


class FakePrometheus:
    """Answers /api/v1/query from a table of query -> (status, body); records what it was asked."""

    def __init__(self, answers: dict[str, Response]) -> None:
        self.answers = answers
        self.queries: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, path: str) -> Response:
        route, _, query_string = path.partition("?")
        if route != "/prom/api/v1/query":
            return 404, "not found"
        [query] = urllib.parse.parse_qs(query_string)["query"]
        with self._lock:
            self.queries.append(query)
        return self.answers.get(query, (400, json.dumps({"status": "error", "errorType": "bad_data",
                                                         "error": "unexpected query"})))


GOOD_ANSWERS: dict[str, Response] = {
    CPU_QUERY: (200, vector((tid("t1"), 1000.0, "12.5"), (tid("t2"), 1000.0, "3"), ({"id": "/"}, 1000.0, "99"))),
    TIMESTAMP_QUERY: (200, vector((tid("t1"), 1000.0, "994.25"), (tid("t2"), 1000.0, "990"))),
    MEMORY_QUERY: (200, vector((tid("t1"), 1000.0, "67108864"), (tid("t3"), 1000.0, "1024"))),
}


def prometheus_config(url: str, **overrides: Any) -> PrometheusSourceConfig:
    return PrometheusSourceConfig(url=url + "/prom/", timeout_seconds=2.0, **overrides)


def test_prometheus_queries_and_maps_by_task_label() -> None:
    prometheus = FakePrometheus(GOOD_ANSWERS)
    with http_server(prometheus) as url:
        readings = PrometheusSource(prometheus_config(url), "autoscaler-web").read(["t1", "t2", "t3", "t4"])
    assert sorted(prometheus.queries) == sorted([CPU_QUERY, TIMESTAMP_QUERY, MEMORY_QUERY])
    assert readings == {
        # read_at: when Prometheus scraped the sample, not when the query was evaluated.
        "t1": reading(12_500_000_000, 994.25, memory=64 * MiB, limit=None),
        "t2": reading(3_000_000_000, 990.0, memory=None, limit=None),
        "t3": None,  # memory alone: no CPU reading, missing
        "t4": None,
    }


def test_prometheus_queries_can_be_overridden() -> None:
    cpu = 'sum by (task) (my_cpu_seconds_total{svc="autoscaler-web"})'
    memory = 'sum by (task) (my_memory_bytes{svc="autoscaler-web"})'
    prometheus = FakePrometheus({
        cpu: (200, vector(({"task": "t1"}, 50.0, "2"), ({"task": "t1", "zone": "b"}, 50.0, "3"))),
        f"timestamp({cpu})": (200, vector(({"task": "t1"}, 50.0, "50"))),
        memory: (200, vector(({"task": "t1"}, 50.0, "100"))),
    })
    with http_server(prometheus) as url:
        config = prometheus_config(url, task_label="task",
                                   cpu_query='sum by (task) (my_cpu_seconds_total{{svc="{service}"}})',
                                   memory_query='sum by (task) (my_memory_bytes{{svc="{service}"}})')
        readings = PrometheusSource(config, "autoscaler-web").read(["t1"])
    # Two series for t1: the first by sorted labels wins, on every cycle alike.
    assert readings == {"t1": reading(2_000_000_000, 50.0, memory=100, limit=None)}


def with_answer(query: str, answer: Response) -> dict[str, Response]:
    return {**GOOD_ANSWERS, query: answer}


PROMETHEUS_ERRORS = {
    "http-500": (with_answer(CPU_QUERY, (500, "oops")), CPU_QUERY, "HTTP 500"),
    "bad-query": (with_answer(MEMORY_QUERY, (400, json.dumps({"status": "error", "errorType": "bad_data",
                                                               "error": "parse error at char 5"}))),
                  MEMORY_QUERY, "HTTP 400 Bad Request: parse error at char 5"),
    "status-error": (with_answer(MEMORY_QUERY, (200, json.dumps({"status": "error", "error": "query timed out"}))),
                     MEMORY_QUERY, "query timed out"),
    "matrix": (with_answer(CPU_QUERY, (200, json.dumps({"status": "success", "data": {"resultType": "matrix",
                                                                                       "result": []}}))),
               CPU_QUERY, "returned a matrix result, not an instant vector"),
    "bad-json": (with_answer(MEMORY_QUERY, (200, "{not json")), MEMORY_QUERY, "the answer is not JSON"),
    "nan": (with_answer(CPU_QUERY, (200, vector((tid("t1"), 1.0, "NaN")))), CPU_QUERY, "task t1 has the value NaN"),
    "no-task-label": (with_answer(MEMORY_QUERY, (200, vector(({"id": "/"}, 1.0, "1")))), MEMORY_QUERY,
                      "no series has the label 'container_label_com_docker_swarm_task_id'"),
    "not-a-sample": (with_answer(TIMESTAMP_QUERY, (200, json.dumps({"status": "success", "data": {
        "resultType": "vector", "result": [{"metric": tid("t1"), "value": "1"}]}}))),
        TIMESTAMP_QUERY, "a series is not [timestamp, value]"),
}


@pytest.mark.parametrize(("answers", "query", "message"), PROMETHEUS_ERRORS.values(), ids=PROMETHEUS_ERRORS.keys())
def test_a_failing_prometheus_query_raises_naming_it(answers: dict[str, Response], query: str, message: str) -> None:
    with http_server(FakePrometheus(answers)) as url:
        source = PrometheusSource(prometheus_config(url), "autoscaler-web")
        with pytest.raises(SourceError) as raised:
            source.read(["t1"])
    text = str(raised.value)
    assert repr(query) in text and message in text and "\n" not in text


def test_an_unreachable_prometheus_raises_naming_the_query() -> None:
    url = closed_port_url()
    expected = r"^prometheus (cpu|memory)_query .*: cannot reach http://127\.0\.0\.1:\d+/prom/ \("
    with pytest.raises(SourceError, match=expected):
        PrometheusSource(prometheus_config(url), "autoscaler-web").read(["t1"])


@pytest.mark.parametrize(
    "cpu_query",
    ['rate(x{job="{service}"}[1m])', "x{svc={service}", "x{0}"],
    ids=["single-braces", "unbalanced", "positional"],
)
def test_a_query_that_cannot_take_the_service_name_is_refused(cpu_query: str) -> None:
    # Refused when the config is read, naming the key (the source's own check stays as a guard).
    with pytest.raises(ValidationError, match="cpu_query[\\s\\S]*braces doubled"):
        prometheus_config("http://prom", cpu_query=cpu_query)
    config = prometheus_config("http://prom").model_copy(update={"cpu_query": cpu_query})
    with pytest.raises(SourceError, match="^prometheus cpu_query .*double"):
        PrometheusSource(config, "web")
