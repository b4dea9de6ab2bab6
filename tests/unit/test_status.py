"""`autoscaler status`: the table, against a local HTTP server standing in for the daemon's /status,
and the status document of a worker with external metrics, from a controller on fakes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from engine_fakes import NETWORK, SERVICE, World

from autoscaler.cli import main
from autoscaler.config import ServiceConfig
from autoscaler.engine import wiring
from autoscaler.engine.controller import ServiceController
from autoscaler.engine.daemon import service_status
from autoscaler.engine.ports import SourceError
from autoscaler.status import render_status

DOCUMENT = {
    "version": "0.1.0",
    "dry_run": True,
    "interval_seconds": 5,
    "services": {
        "web": {
            "replicas": {"ready": 4, "starting": 1, "draining": 0},
            "desired_replicas": 5,
            "min_replicas": 2,
            "max_replicas": 5,
            "bounds_source": "schedule business-hours",
            "targets": {"cpu_percent": 60, "memory_percent": None},
            "utilization": {"cpu": {"value": 91.5, "target": 60, "proposal": 7}},
            "last_decision": {"current": 4, "desired": 5, "reason": "too_many_replicas",
                              "message": "cpu 91.5% > target 60% -> 4 -> 5 (wanted 7, capped at max 5)", "age_seconds": 3},
            "load_balancer": {"name": "autoscaler-web-lb", "publish": "127.0.0.1:8080", "metrics": "127.0.0.1:1"},
            "warnings": ["pinned at max_replicas 5 (the policy wants 7)"],
        }
    },
}


def serve(body: bytes, code: int = 200) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def daemon_url() -> Iterator[str]:
    yield from serve(json.dumps(DOCUMENT).encode())


def test_table_shows_replicas_utilization_decision_and_warnings(daemon_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", daemon_url]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN" in out
    assert "ready 4  starting 1  draining 0   desired 5   min/max 2/5 (schedule business-hours)" in out
    assert "91.5% / target 60%" in out and "proposal 7" in out
    assert "too_many_replicas 3s ago: cpu 91.5% > target 60%" in out
    assert "WARNING     pinned at max_replicas 5" in out


def test_json_prints_the_raw_document(daemon_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", daemon_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == DOCUMENT


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [(b"not json", 200, "did not answer JSON"), (b"{}", 200, "without services"), (b"nope", 404, "answered 404")],
    ids=["not-json", "no-services", "http-error"],
)
def test_not_a_daemon(body: bytes, code: int, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    for url in serve(body, code):
        assert main(["status", "--url", url]) == 1
    assert fragment in capsys.readouterr().err


def test_unreachable_daemon_says_what_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the daemon" in err and "metrics_listen" in err and "Traceback" not in err


def test_render_handles_a_service_with_no_decision_yet() -> None:
    text = render_status({"services": {"api": {"replicas": {}, "utilization": {}, "last_decision": None}}})
    assert "no decision yet" in text


WORKER = {
    "worker": True,
    "replicas": {"ready": 2, "starting": 0, "draining": 0},
    "desired_replicas": 4,
    "min_replicas": 0,
    "max_replicas": 4,
    "bounds_source": "config",
    "targets": {"cpu_percent": 100},
    "utilization": {
        "cpu": {"value": 98.0, "target": 100, "proposal": 2},
        "jobs": {"value": 37.0, "target": 10, "proposal": 4},
    },
    "external_metrics": [
        {"name": "jobs", "source": "redis list 'jobs'", "kind": "average", "target": 10.0, "activation": 0.0,
         "value": 37.0, "error": None},
        {"name": "lag_seconds", "source": "prometheus 'max(lag)'", "kind": "value", "target": 30.0, "activation": 5.0,
         "value": None, "error": "metric lag_seconds: prometheus at http://127.0.0.1:9: cannot connect"},
    ],
    "last_decision": {"current": 2, "desired": 4, "reason": "scale_up",
                      "message": "jobs 37 (18.5 per replica) > target 10 per replica -> 2 -> 4", "age_seconds": 1},
    "load_balancer": None,
    "warnings": [],
}


def test_a_worker_shows_its_external_metrics_and_no_load_balancer() -> None:
    lines = render_status({"services": {"queue": WORKER}}).splitlines()
    assert "queue  (worker: no load balancer)" in lines
    assert not any(line.lstrip().startswith("clients") for line in lines)
    # The external metric once, with its kind, activation, proposal and source; CPU as before.
    [jobs] = [line for line in lines if line.lstrip().startswith("jobs ")]
    assert "37 / target 10 per replica (average)  activation 0  proposal 4  from redis list 'jobs'" in jobs
    [cpu] = [line for line in lines if line.lstrip().startswith("cpu ")]
    assert "98% / target 100%" in cpu and "proposal 2" in cpu
    # A failing source: missing, no proposal, and the source's own sentence under it.
    [lag] = [i for i, line in enumerate(lines) if line.lstrip().startswith("lag_seconds")]
    assert "missing / target 30 (value)  activation 5  proposal none" in lines[lag]
    assert lines[lag + 1].strip() == "source error: metric lag_seconds: prometheus at http://127.0.0.1:9: cannot connect"


class Queue:
    """An external source whose value the test sets; None makes it fail."""

    def __init__(self, value: float | None) -> None:
        self.value = value

    def read(self) -> float:
        if self.value is None:
            raise SourceError("metric jobs: redis list 'jobs' at redis://127.0.0.1:9/0: cannot reach Redis")
        return self.value

    def close(self) -> None:
        pass


def test_the_status_document_of_a_worker_names_each_external_metric() -> None:
    world = World()
    queue = Queue(23.0)
    config = ServiceConfig.model_validate({
        "image": "demo:latest", "cpu_limit": 0.5, "memory_limit": "256MiB", "min_replicas": 0, "max_replicas": 4,
        "policy": {"initialization_seconds": 0, "metrics": [
            {"name": "jobs", "redis": {"url": "redis://127.0.0.1:9/0", "list": "jobs"}, "target_average_value": 10},
        ]},
    })
    controller = ServiceController(
        SERVICE, config, NETWORK, target=wiring.containers(world.backend, world.operations),  # type: ignore[arg-type]
        metrics=world.backend, networks=world.backend, telemetry=world.telemetry,  # type: ignore[arg-type]
        clock=world.clock.now, wall_clock=world.clock.time, operations=world.operations,  # type: ignore[arg-type]
        external=lambda metric: queue,
    )
    controller.setup()
    controller.run_cycle()
    document = service_status(controller, world.clock.time(), 5)
    assert document["worker"] is True and document["load_balancer"] is None
    assert document["external_metrics"] == [{
        "name": "jobs", "source": "redis list 'jobs'", "kind": "average", "target": 10.0, "activation": 0.0,
        "value": 23.0, "error": None,
    }]
    assert document["last_decision"]["reason"] == "activation"

    queue.value = None
    world.tick(controller, 5)
    controller.run_cycle()
    [metric] = service_status(controller, world.clock.time(), 5)["external_metrics"]
    assert metric["value"] is None and "cannot reach Redis" in metric["error"]
    text = render_status({"services": {SERVICE: json.loads(json.dumps(service_status(controller, world.clock.time(), 5)))}})
    assert f"{SERVICE}  (worker: no load balancer)" in text and "source error: metric jobs:" in text
