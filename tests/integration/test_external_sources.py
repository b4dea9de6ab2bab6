"""The external metric sources against the real thing: Debian's Redis in a container and
Debian's Prometheus scraping an exporter of the test's own. Every answer that is not one
number is one clear line (SourceError), never a traceback; an outage ends by itself."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from autoscaler.config import PrometheusQuery, RedisQueue
from autoscaler.engine.ports import SourceError
from autoscaler.sources.prometheus import PrometheusMetric
from autoscaler.sources.redis import RedisMetric
from externals import Exporter, Prometheus, RedisServer, prometheus_server, redis_server, wait_scraped

pytestmark = pytest.mark.docker


@pytest.fixture
def redis_box(docker_client, service_name: str) -> Iterator[RedisServer]:  # type: ignore[no-untyped-def]
    with redis_server(docker_client, service_name) as server:
        yield server


def redis_metric(server: RedisServer, **fields: object) -> RedisMetric:
    return RedisMetric("jobs", RedisQueue.model_validate({"url": server.url, "timeout_seconds": 2, **fields}))


def test_redis_list_length(redis_box: RedisServer) -> None:
    metric = redis_metric(redis_box, list="jobs")
    assert metric.read() == 0.0  # no key yet: an empty queue, not an error
    redis_box.client().lpush("jobs", *[f"job-{i}" for i in range(7)])
    assert metric.read() == 7.0
    redis_box.client().rpop("jobs")
    assert metric.read() == 6.0


def test_redis_stream_pending_entries_of_a_group(redis_box: RedisServer) -> None:
    client = redis_box.client()
    client.xgroup_create("events", "workers", id="0", mkstream=True)
    ids = [client.xadd("events", {"n": str(i)}) for i in range(5)]
    metric = redis_metric(redis_box, stream="events", consumer_group="workers")
    assert metric.read() == 0.0  # added, not yet delivered to a consumer
    client.xreadgroup("workers", "c1", {"events": ">"}, count=3)
    assert metric.read() == 3.0  # delivered and not acknowledged
    client.xack("events", "workers", ids[0])
    assert metric.read() == 2.0


@pytest.mark.parametrize(
    ("fields", "prepare", "expected"),
    [
        ({"list": "jobs"}, lambda c: c.set("jobs", "x"), "the key holds a string, not a list"),
        ({"list": "jobs"}, lambda c: c.hset("jobs", "a", "1"), "the key holds a hash, not a list"),
        ({"stream": "jobs", "consumer_group": "g"}, lambda c: c.lpush("jobs", "x"), "the key holds a list, not a stream"),
        ({"stream": "events", "consumer_group": "nobody"}, lambda c: c.xadd("events", {"a": "1"}), "no consumer group 'nobody'"),
    ],
    ids=["string-as-list", "hash-as-list", "list-as-stream", "no-group"],
)
def test_redis_key_of_the_wrong_kind_is_one_clear_line(redis_box: RedisServer, fields, prepare, expected) -> None:  # type: ignore[no-untyped-def]
    prepare(redis_box.client())
    with pytest.raises(SourceError) as caught:
        redis_metric(redis_box, **fields).read()
    message = str(caught.value)
    assert expected in message and "\n" not in message and message.startswith("metric jobs: redis ")


def test_redis_outage_is_an_error_then_reads_again(redis_box: RedisServer) -> None:
    metric = redis_metric(redis_box, list="jobs")
    redis_box.client().lpush("jobs", "a", "b")
    assert metric.read() == 2.0
    redis_box.stop()
    with pytest.raises(SourceError, match="cannot reach Redis"):
        metric.read()
    redis_box.start()  # empty again: nothing is persisted
    redis_box.client().lpush("jobs", "c")
    assert metric.read() == 1.0  # the same source object reconnects by itself


def test_redis_password_from_a_file(docker_client, service_name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with redis_server(docker_client, service_name, command=[
        "redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--requirepass", "s3cret",
    ]) as server:
        right, wrong = tmp_path / "right", tmp_path / "wrong"
        right.write_text("s3cret\n")
        wrong.write_text("nope\n")
        for path in (right, wrong):
            path.chmod(0o600)
        assert redis_metric(server, list="jobs", password_file=str(right)).read() == 0.0
        with pytest.raises(SourceError, match="authentication failed|invalid username-password"):
            redis_metric(server, list="jobs", password_file=str(wrong)).read()
        with pytest.raises(SourceError, match="authentication|NOAUTH"):
            redis_metric(server, list="jobs").read()


# --- Prometheus ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[tuple[Prometheus, Exporter]]:  # type: ignore[no-untyped-def]
    exporter = Exporter()
    exporter.values = {"test_backlog": 42.0, "test_depth_a": 1.0}
    try:
        with prometheus_server(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{exporter.port}"]) as server:
            wait_scraped(server, "test_backlog")
            yield server, exporter
    finally:
        exporter.close()


def prometheus_metric(url: str, query: str, **fields: object) -> PrometheusMetric:
    return PrometheusMetric("backlog", PrometheusQuery.model_validate({"url": url, "query": query, "timeout_seconds": 3, **fields}))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("test_backlog", 42.0),  # a vector of one series
        ("sum(test_backlog) * 2", 84.0),
        ("scalar(test_backlog)", 42.0),  # a scalar
        ("count(up)", 1.0),
    ],
)
def test_prometheus_query_of_one_number(prometheus: tuple[Prometheus, Exporter], query: str, expected: float) -> None:
    assert prometheus_metric(prometheus[0].url, query).read() == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('{__name__=~"test_.*"}', "2 series"),  # several series: aggregate them
        ("test_metric_that_does_not_exist", "no data"),
        ("test_backlog / 0 - test_backlog / 0", "the value is NaN"),
        ("test_backlog / 0", "the value is +Inf"),
        ('"a string"', "returned a string"),
        ("test_backlog[1m]", "not a number"),  # a range vector
        ("sum by (job test_backlog", "HTTP 400"),  # Prometheus's own parse error, quoted
    ],
    ids=["several-series", "no-data", "nan", "inf", "string", "range", "syntax"],
)
def test_prometheus_answer_that_is_not_one_number_is_one_clear_line(
    prometheus: tuple[Prometheus, Exporter], query: str, expected: str
) -> None:
    with pytest.raises(SourceError) as caught:
        PrometheusMetric("backlog", PrometheusQuery.model_construct(
            url=prometheus[0].url, query=query, timeout_seconds=3.0,
            bearer_token_file=None, username=None, password_file=None,
        )).read()
    message = str(caught.value)
    assert expected in message, message
    assert "\n" not in message and message.startswith("metric backlog: prometheus query ")


def test_prometheus_outage_is_an_error_then_reads_again(prometheus: tuple[Prometheus, Exporter]) -> None:
    server, exporter = prometheus
    metric = prometheus_metric(server.url, "test_backlog")
    assert metric.read() == 42.0
    server.stop()
    try:
        with pytest.raises(SourceError, match="cannot reach http://127.0.0.1"):
            metric.read()
    finally:
        server.start()
    exporter.values["test_backlog"] = 43.0
    wait_scraped(server, "test_backlog == 43")
    assert metric.read() == 43.0


class _AuthRecorder:
    """A loopback HTTP server answering like Prometheus and keeping each request's
    Authorization header: Debian's Prometheus has no bearer tokens of its own."""

    def __init__(self) -> None:
        self.headers: list[str | None] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                recorder.headers.append(self.headers.get("Authorization"))
                body = b'{"status":"success","data":{"resultType":"scalar","result":[1,"5"]}}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_prometheus_credentials_come_from_files_read_at_each_query(tmp_path: Path) -> None:
    recorder = _AuthRecorder()
    try:
        token, password = tmp_path / "token", tmp_path / "password"
        token.write_text("tok-1\n")
        password.write_text("pw\n")
        os.chmod(token, 0o600)
        os.chmod(password, 0o640)
        bearer = prometheus_metric(recorder.url, "up", bearer_token_file=str(token))
        assert bearer.read() == 5.0
        token.write_text("tok-2\n")  # rotated: the next query sends the new one
        bearer.read()
        basic = prometheus_metric(recorder.url, "up", username="grafana", password_file=str(password))
        basic.read()
        assert recorder.headers == [
            "Bearer tok-1", "Bearer tok-2", "Basic " + base64.b64encode(b"grafana:pw").decode(),
        ]
        token.unlink()
        with pytest.raises(SourceError, match="cannot read the bearer token file"):
            bearer.read()
    finally:
        recorder.server.shutdown()
