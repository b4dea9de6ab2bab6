"""A real image registry for the integration tests, and impostors of one.

Debian's `docker-registry` runs on the host with htpasswd auth and TLS from a CA of the test's
own. It listens on an address of this machine outside loopback (the bridge network's gateway):
the engine treats 127.0.0.0/8 as an insecure registry and would fall back to plain HTTP there,
so TLS would never be exercised. The engine trusts the CA through
/etc/docker/certs.d/HOST:PORT/ca.crt, which it reads at each pull (no engine restart); every
such directory is removed afterwards. The impostors (a server that answers nonsense, one that
never answers a manifest) listen on the same address with the same certificate.

Images are pushed under the registry's address with `docker login` / `docker push` and a
DOCKER_CONFIG of the test's own, as a user would; every local reference to the registry's
address is removed afterwards (the image behind them, autoscaler-demo-app:latest, stays).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from helpers import wait_for

CERTS_D = Path("/etc/docker/certs.d")
USER = "tester"
PASSWORD = "s3cret-for-tests"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run and tests/run.sh)", pytrace=False)
    pytest.skip(reason)


def host_address(client) -> str:  # type: ignore[no-untyped-def]
    """An address of this machine outside loopback that the engine reaches: docker0's."""
    return str(client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"])


def free_port_on(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Certificates:
    """A CA of the test's own and a server certificate it signed for `host` (an IP address)."""

    def __init__(self, directory: Path, host: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.crt"
        self.certificate = directory / "server.crt"
        self.key = directory / "server.key"
        ca_key = directory / "ca.key"
        request = directory / "server.csr"
        extensions = directory / "server.ext"
        extensions.write_text(f"subjectAltName=IP:{host}\n")
        for command in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", self.ca, "-days", "2",
             "-subj", "/CN=autoscaler test CA"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", request, "-subj", f"/CN={host}"],
            ["x509", "-req", "-in", request, "-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial", "-out",
             self.certificate, "-days", "2", "-extfile", extensions],
        ):
            subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@contextmanager
def trusted(address: str, certificates: Certificates) -> Iterator[None]:
    """The engine trusts the test's CA for `address` (HOST:PORT) while the block runs."""
    directory = CERTS_D / address
    try:
        directory.mkdir(parents=True, exist_ok=False)
        shutil.copy(certificates.ca, directory / "ca.crt")
    except OSError as exc:
        _unavailable(f"cannot make the engine trust the test's CA in {directory} ({exc}): run as root")
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Registry:
    """Debian's docker-registry on HOST:PORT with htpasswd auth and TLS; stop() and start() make
    an outage on the same address."""

    def __init__(self, directory: Path, host: str, certificates: Certificates) -> None:
        binary, htpasswd = shutil.which("docker-registry"), shutil.which("htpasswd")
        if binary is None or htpasswd is None:
            _unavailable("docker-registry or htpasswd is not installed (Debian packages: docker-registry, "
                         "apache2-utils; tests/run.sh installs them)")
        assert binary is not None and htpasswd is not None
        self._binary = binary
        self._directory = directory
        self.host = host
        self.port = free_port_on(host)
        self.address = f"{host}:{self.port}"
        self.certificates = certificates
        passwords = subprocess.run([htpasswd, "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True)
        (directory / "htpasswd").write_text(passwords.stdout)
        (directory / "config.yml").write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {directory / "data"}
http:
  addr: {self.address}
  secret: autoscaler-tests
  tls:
    certificate: {certificates.certificate}
    key: {certificates.key}
auth:
  htpasswd:
    realm: autoscaler-tests
    path: {directory / "htpasswd"}
""")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self._directory / "registry.log").open("ab")
        self._process = subprocess.Popen([self._binary, "serve", str(self._directory / "config.yml")],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, 30, f"the registry on {self.address}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _answers(self) -> bool:
        assert self._process is not None
        assert self._process.poll() is None, (self._directory / "registry.log").read_text()
        try:
            urllib.request.urlopen(f"https://{self.address}/v2/", timeout=2,
                                   context=self.certificates.client_context())
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, asking for credentials
        return False

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Any:
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(f"https://{self.address}/v2/{path}", data=body, method=method,
                                         headers={"Authorization": f"Basic {credentials}", **(headers or {})})
        return urllib.request.urlopen(request, timeout=10, context=self.certificates.client_context())

    def manifest_digest(self, repository: str, tag: str) -> tuple[str, int]:
        """(digest, size) of the image manifest the registry holds for repository:tag."""
        with self._request("HEAD", f"{repository}/manifests/{tag}",
                           headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}) as response:
            return response.headers["Docker-Content-Digest"], int(response.headers["Content-Length"])

    def put_other_platform_list(self, repository: str, source_tag: str, tag: str) -> None:
        """repository:tag becomes a manifest list whose one entry (source_tag's manifest) says
        linux/arm64: nothing in it for the engine's linux/amd64."""
        digest, size = self.manifest_digest(repository, source_tag)
        media_type = "application/vnd.docker.distribution.manifest.list.v2+json"
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest, "size": size,
             "platform": {"architecture": "arm64", "os": "linux"}},
        ]}).encode()
        with self._request("PUT", f"{repository}/manifests/{tag}", body, {"Content-Type": media_type}) as response:
            assert response.status == 201


def docker_cli(config_dir: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(["docker", "--config", str(config_dir), *args], input=stdin, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def login(registry: Registry, config_dir: Path) -> None:
    """`docker login` into a DOCKER_CONFIG directory of its own, as a user would."""
    config_dir.mkdir(parents=True, exist_ok=True)
    docker_cli(config_dir, "login", "--username", USER, "--password-stdin", registry.address, stdin=PASSWORD)


def push(client, config_dir: Path, source: str, target: str, label: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Pushes `source` (or an image built FROM it with one label more: other bytes, the same
    layers) as `target`, then removes the local `target` so that the engine must pull it."""
    if label is None:
        client.images.get(source).tag(target)
    else:
        dockerfile = f"FROM {source}\nLABEL autoscaler.test={label}\n".encode()
        client.images.build(fileobj=io.BytesIO(dockerfile), tag=target, rm=True, pull=False)
    docker_cli(config_dir, "push", target)
    client.images.remove(target)


def remove_references(client, address: str) -> None:  # type: ignore[no-untyped-def]
    """Every local tag and digest reference under `address`/ (the images behind them stay if
    anything else names them)."""
    for image in client.images.list(all=True):
        for reference in (image.attrs.get("RepoTags") or []) + (image.attrs.get("RepoDigests") or []):
            if reference.startswith(f"{address}/"):
                try:
                    client.images.remove(reference)
                except docker.errors.NotFound:
                    pass


class Impostor:
    """A TLS server on the registry's host that is not a registry. It answers the engine's API
    check (GET /v2/) as a registry would, then: "garbage" answers every other request with
    nonsense; "hang" never answers (until it is closed)."""

    def __init__(self, host: str, certificates: Certificates, mode: str) -> None:
        self.mode = mode
        self.context = certificates.server_context()
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._socket = socket.create_server((host, 0))
        self._socket.settimeout(0.2)
        self.address = f"{host}:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(10)
            with self.context.wrap_socket(connection, server_side=True) as tls:
                request = tls.recv(65536)
                self.requests.append(request.split(b"\r\n", 1)[0].decode(errors="replace"))
                if request.startswith(b"GET /v2/ "):
                    tls.sendall(b"HTTP/1.1 200 OK\r\nDocker-Distribution-API-Version: registry/2.0\r\n"
                                b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                elif self.mode == "garbage":
                    body = b"\x00\x01 not a manifest {{{[[[ \xff\xfe"
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                                b"Content-Length: %d\r\n\r\n" % len(body) + body)
                else:
                    # Until the test ends: Docker Engine 20.10 itself never gives up a request to a
                    # registry that does not answer (the daemon's pull timeout is what bounds it).
                    self._stop.wait()
        except OSError:
            pass  # a probe that closed early, or the server stopping

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
