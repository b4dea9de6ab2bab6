"""One daemon per service and engine: a lease that the Docker engine itself holds.

The lease is a container named `autoscaler-<service>-lease` whose only process (`cat`) reads
its stdin, attached to this daemon's connection with StdinOnce. The engine refuses a second
container of that name (409 Conflict), so a second daemon cannot take the lease while the first
holds it. When the holder exits, is SIGKILLed or loses its connection, stdin reaches EOF, `cat`
exits, and the engine removes the container (AutoRemove): the lease is free and a daemon
standing by takes it at its next try. Nothing here needs clocks that agree or renewals.
"""

from __future__ import annotations

import logging
import os
import select
import socket
from typing import Any

import docker
import docker.errors
import requests.exceptions

from autoscaler.docker.labels import LABEL_MANAGED, LABEL_ROLE, LABEL_SERVICE, is_owned
from autoscaler.engine.ports import BackendError
from autoscaler.instrument import NULL_OBSERVER, CallObserver

log = logging.getLogger("autoscaler.lease")

ROLE_LEASE = "lease"
LABEL_OWNER = "autoscaler.lease-owner"


def lease_name(service: str) -> str:
    return f"autoscaler-{service}-lease"


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    def __init__(
        self,
        client: docker.DockerClient,
        service: str,
        image: str,
        owner: str | None = None,
        observer: CallObserver = NULL_OBSERVER,
    ) -> None:
        self._client = client
        self.service = service
        self.image = image  # any image with `cat`: the load balancer's, which must exist anyway
        self.owner = owner or owner_id()
        self._observer = observer
        self._socket: Any = None
        self._container_id: str | None = None

    def try_acquire(self) -> str | None:
        """Takes the lease if it is free. Returns None when held by us, else who holds it.
        Raises BackendError when the engine cannot be asked."""
        if self.held():
            return None
        self._close()
        try:
            for _ in range(2):
                try:
                    self._create_and_attach()
                    log.info("lease %s taken (owner %s)", lease_name(self.service), self.owner,
                             extra={"service": self.service})
                    return None
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:
                        raise BackendError("lease", self.service, str(exc.explanation or exc)) from exc
                holder = self._holder()
                if holder is not None:
                    return holder
                # A lease container that is not running (left by an engine restart) holds nothing.
            return self._holder() or "another daemon (the lease container keeps reappearing)"
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            unreachable = isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))
            raise BackendError("lease", self.service, str(exc), unreachable=unreachable) from exc

    def held(self) -> bool:
        """Whether our attach connection is still open: cheap, no API call."""
        sock = self._socket
        if sock is None:
            return False
        raw = getattr(sock, "_sock", sock)
        try:
            readable, _, _ = select.select([raw], [], [], 0)
            if readable and raw.recv(1, socket.MSG_PEEK) == b"":
                return False  # EOF: the engine ended the container (or the engine went away)
        except (OSError, ValueError):
            return False
        return True

    def release(self) -> None:
        """Gives the lease back at once (closing the connection alone frees it too)."""
        container_id = self._container_id
        self._close()
        if container_id is None:
            return
        try:
            with self._observer.call("docker", "lease_release"):
                self._client.api.remove_container(container_id, force=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass  # AutoRemove takes it when cat sees EOF

    def _close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except OSError:
                pass
        self._socket = None
        self._container_id = None

    def _create_and_attach(self) -> None:
        api = self._client.api
        with self._observer.call("docker", "lease_create"):
            created = api.create_container(
                self.image,
                entrypoint=["cat"],
                name=lease_name(self.service),
                # detach=False with stdin_open sets StdinOnce: stdin closes when we go away. We
                # attach stdout too, so that the stream ends (EOF here) when the container dies.
                stdin_open=True,
                detach=False,
                labels={
                    LABEL_MANAGED: "true",
                    LABEL_SERVICE: self.service,
                    LABEL_ROLE: ROLE_LEASE,
                    LABEL_OWNER: self.owner,
                },
                host_config=api.create_host_config(
                    auto_remove=True, network_mode="none", mem_limit=16 * 1024 * 1024, read_only=True
                ),
            )
        container_id = created["Id"]
        try:
            with self._observer.call("docker", "lease_attach"):
                self._socket = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stream": 1})
                api.start(container_id)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self._close()
            try:
                api.remove_container(container_id, force=True)
            except docker.errors.DockerException:
                pass
            raise BackendError("lease", self.service, str(exc)) from exc
        self._container_id = container_id

    def _holder(self) -> str | None:
        """Who holds the lease, or None after removing a lease container that holds nothing."""
        api = self._client.api
        try:
            info = api.inspect_container(lease_name(self.service))
        except docker.errors.NotFound:
            return None
        labels = (info.get("Config") or {}).get("Labels") or {}
        if not is_owned(labels, self.service):
            return f"a container named {lease_name(self.service)} that is not ours"
        if info["State"].get("Running"):
            return str(labels.get(LABEL_OWNER, "another daemon"))
        try:
            api.remove_container(info["Id"], force=True)
        except docker.errors.NotFound:
            pass
        return None
