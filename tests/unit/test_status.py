"""`autoscaler status` against a local HTTP server standing in for the daemon's /status."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autoscaler.cli import main
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
