"""Real external metric sources for the integration tests: a Redis server in a container
(Debian's redis-server, image autoscaler-redis:latest) and a Prometheus process (Debian's
package) scraping an exporter of the test's own.

Redis runs in a container, not on the host: the worker replicas reach it by name on a Docker
network of the test, and the daemon, on the host, through a port published on 127.0.0.1. Both
carry the test's service label, so the test's clean-up removes them with everything else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker.errors
import pytest
import redis

from helpers import free_port, wait_for

REDIS_IMAGE = "autoscaler-redis:latest"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)", pytrace=False)
    pytest.skip(reason)


@dataclass
class RedisServer:
    container: object  # docker.models.containers.Container
    port: int  # published on 127.0.0.1, for the daemon and the test
    name: str  # the container's name: the replicas' host name for it
    network: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def inner_url(self) -> str:
        """As the replicas on `network` reach it."""
        return f"redis://{self.name}:6379/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def stop(self) -> None:
        self.container.stop(timeout=2)  # type: ignore[attr-defined]

    def start(self) -> None:
        """Starts it again, on the same port, empty (no persistence: a restarted queue)."""
        self.container.start()  # type: ignore[attr-defined]
        wait_for(self._answers, 30, "Redis to answer again")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.exceptions.ResponseError, redis.exceptions.AuthenticationError):
            return True  # it answers, asking for a password
        except redis.exceptions.RedisError:
            return False


@contextmanager
def redis_server(client, service: str, command: list[str] | None = None) -> Iterator[RedisServer]:  # type: ignore[no-untyped-def]
    """A Redis container and a network for it (labelled with `service`), removed afterwards."""
    try:
        client.images.get(REDIS_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"image {REDIS_IMAGE} is missing; run deploy/build-images.sh")
    labels = {"autoscaler.service": service, "autoscaler.test": "redis"}
    network = client.networks.create(f"{service}-jobs", driver="bridge", labels=labels)
    port = free_port()
    name = f"{service}-redis"
    container = client.containers.run(
        REDIS_IMAGE, command=command, name=name, labels=labels, network=network.name, detach=True,
        ports={"6379/tcp": ("127.0.0.1", port)},
    )
    server = RedisServer(container, port, name, network.name)
    try:
        wait_for(server._answers, 30, "Redis to answer")
        yield server
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        try:
            network.remove()
        except docker.errors.APIError:
            pass  # replicas still attached: the service's clean-up removes it by label


class Exporter:
    """An exporter of the test's own: serves whatever gauges the test sets, in the Prometheus
    text format, on 127.0.0.1."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                body = "".join(f"# TYPE {k} gauge\n{k} {v}\n" for k, v in sorted(exporter.values.items())).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Prometheus:
    """Debian's Prometheus on loopback, scraping `targets` every second. stop() and start()
    make an outage on the same port."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            _unavailable("prometheus is not installed (Debian package: prometheus)")
        assert binary is not None
        self._binary = binary
        self._tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        listed = ", ".join(f'"{t}"' for t in targets)
        (tmp / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{listed}]\n"
        )
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self._tmp / "prometheus.log").open("ab")
        self._process = subprocess.Popen(
            [self._binary, f"--config.file={self._tmp / 'prometheus.yml'}", f"--storage.tsdb.path={self._tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 60, "Prometheus to be ready")

    def _ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)
        self._process = None


@contextmanager
def prometheus_server(tmp: Path, targets: list[str]) -> Iterator[Prometheus]:
    server = Prometheus(tmp, targets)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_scraped(prometheus: Prometheus, query: str, timeout_seconds: float = 30) -> None:
    """Until `query` returns a series (the exporter was scraped)."""
    import json
    import urllib.parse
    import urllib.request

    def has_data() -> bool:
        url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(json.load(response)["data"]["result"])

    wait_for(has_data, timeout_seconds, f"Prometheus to have {query}")
