"""One daemon per service and engine: a lease that the Docker engine itself holds, and that
expires when its holder stops renewing it.

The lease is a container named `autoscaler-<service>-lease` whose process reads its stdin,
attached to this daemon's connection with StdinOnce. The engine refuses a second container of
that name (409 Conflict), so a second daemon cannot take the lease while the first holds it.

As Kubernetes' leader election, the lease has a duration, a renew deadline and a retry period
(defaults 15 s / 10 s / 2 s). The holder renews by writing one byte every retry period; the
container's process waits at most the lease duration for the next byte, then exits, and the
engine removes the container (AutoRemove): the lease is free and a daemon standing by takes it
at its next try. So a holder that exits, is SIGKILLed, loses its connection *or hangs* (SIGSTOP,
a deadlock, a call that never returns: it stops renewing) loses the lease within its duration.

Fencing: the holder counts itself the holder only while its last renewal is younger than the
renew deadline (its own monotonic clock), which ends before the lease itself can expire. A
holder that resumes after a long stop therefore finds it lost the lease before it acts, and
acts on nothing until it holds it again (the engine's parts check `held()` before each change).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable
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


def lease_command(duration_seconds: float) -> list[str]:
    """The lease container's process: ends when no byte came for `duration_seconds` (the holder
    stopped renewing) or at end of input (the holder went away). POSIX sh, coreutils' or
    busybox's `timeout` and `head`: in any image with a shell."""
    return ["/bin/sh", "-c", f'while [ -n "$(timeout {duration_seconds:g} head -c 1)" ]; do :; done']


class Lease:
    def __init__(
        self,
        client: docker.DockerClient,
        service: str,
        image: str,
        owner: str | None = None,
        observer: CallObserver = NULL_OBSERVER,
        duration_seconds: float = 15.0,
        renew_deadline_seconds: float = 10.0,
        retry_period_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.service = service
        self.image = image  # any image with a shell: the load balancer's, which must exist anyway
        self.owner = owner or owner_id()
        self._observer = observer
        self.duration_seconds = duration_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.retry_period_seconds = retry_period_seconds
        self._clock = clock
        self._socket: Any = None
        self._container_id: str | None = None
        self._renewed_at = -float("inf")
        self.lost_at: float | None = None  # when the renew deadline passed without a renewal

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
                    self._renewed_at = self._clock()
                    self.lost_at = None
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
        """Whether this daemon may act: the connection is open and the last renewal is younger
        than the renew deadline. Cheap (no API call): checked before every change."""
        sock = self._socket
        if sock is None:
            return False
        if self._clock() - self._renewed_at >= self.renew_deadline_seconds:
            # Not renewed in time (this process was stopped, or its loop hung): the lease may
            # be someone else's by now. Let it go, so that it is free at once if it is not.
            self.lost_at = self._clock()
            log.warning("lease %s not renewed for %.0fs (deadline %gs): lost; acting on nothing until it is ours "
                        "again", lease_name(self.service), self._clock() - self._renewed_at,
                        self.renew_deadline_seconds, extra={"service": self.service})
            self._close()
            return False
        raw = getattr(sock, "_sock", sock)
        try:
            readable, _, _ = select.select([raw], [], [], 0)
            if readable and raw.recv(1, socket.MSG_PEEK) == b"":
                return False  # EOF: the engine ended the container (or the engine went away)
        except (OSError, ValueError):
            return False
        return True

    def renew(self) -> None:
        """One byte to the lease's process, at most every retry period: it waits no longer than
        the lease duration for the next one."""
        if self._socket is None or self._clock() - self._renewed_at < self.retry_period_seconds:
            return
        raw = getattr(self._socket, "_sock", self._socket)
        try:
            raw.sendall(b"x")
        except OSError:
            return  # the connection is gone: held() says so
        self._renewed_at = self._clock()

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
                entrypoint=lease_command(self.duration_seconds),
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
