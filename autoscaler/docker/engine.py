"""The Docker engine connection and the one wrapper every Docker call goes through.

The wrapper records each call's latency (the observer), turns the SDK's errors into
BackendError with the engine's own sentence, and tells "did not answer" (unreachable: no
socket, refused, timed out) from "answered with an error". Every call is bounded: reads
(list, inspect, stats, logs) by a few seconds, changes (create, start, stop, remove) by a
minute, so that an engine that freezes is noticed within seconds, not after a default read
timeout, and no pass waits on it for long.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from autoscaler.docker.stats import parse_docker_time
from autoscaler.engine.ports import BackendError
from autoscaler.instrument import NULL_OBSERVER, CallObserver

# Reads answer in milliseconds; an engine that takes this long is not answering.
READ_TIMEOUT_SECONDS = 5
# Creates and starts queue behind each other in the engine when many run at once (19 at once
# take ~2.5 s on 2 cores); a minute is a hung engine, not a busy one. A stop's own grace
# period is added by the SDK.
CHANGE_TIMEOUT_SECONDS = 60
# Stats through the API block for the engine's 1 s tick each: all of them run at once, so the
# connection pool must hold as many.
POOL_SIZE = 256


class DockerEngine:
    def __init__(
        self,
        client: docker.DockerClient,
        observer: CallObserver = NULL_OBSERVER,
        change_client: docker.DockerClient | None = None,
    ) -> None:
        self.client = client  # reads
        self.change_client = change_client or client  # creates, starts, stops, removes
        self._observer = observer

    @classmethod
    def from_env(cls, observer: CallObserver = NULL_OBSERVER) -> DockerEngine:
        try:
            reads = docker.from_env(timeout=READ_TIMEOUT_SECONDS, max_pool_size=POOL_SIZE)
            reads.ping()
            changes = docker.from_env(timeout=CHANGE_TIMEOUT_SECONDS, max_pool_size=POOL_SIZE)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise BackendError(
                "connect", None,
                f"the Docker engine is not reachable ({exc}); start dockerd or set DOCKER_HOST",
            ) from exc
        return cls(reads, observer, changes)

    @property
    def api(self) -> Any:
        return self.client.api

    @property
    def change_api(self) -> Any:
        return self.change_client.api

    def call(self, operation: str, service: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Runs one Docker call; NotFound passes through (callers decide what absence means)."""
        started = time.monotonic()
        with self._observer.call("docker", operation):
            try:
                return fn(*args, **kwargs)
            except docker.errors.NotFound:
                raise
            except docker.errors.APIError as exc:
                # The engine's own sentence, without the request URL around it.
                raise BackendError(operation, service, str(exc.explanation or exc)) from exc
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                waited = time.monotonic() - started
                if isinstance(exc, requests.exceptions.Timeout):
                    message = f"the Docker engine did not answer within {waited:.0f}s"
                else:
                    message = str(exc)
                raise BackendError(operation, service, message, unreachable=_unreachable(exc),
                                   waited_seconds=waited) from exc

    def ping(self) -> bool:
        try:
            return bool(self.call("ping", None, self.client.ping))
        except BackendError:
            return False

    def close(self) -> None:
        self.client.close()
        if self.change_client is not self.client:
            self.change_client.close()

    def capacity(self) -> tuple[int, int]:
        """(CPUs, memory bytes) of the engine's host: no replica can have more."""
        info = self.call("info", None, self.api.info)
        return int(info.get("NCPU") or 0), int(info.get("MemTotal") or 0)

    def missing_images(self, images: list[str]) -> list[str]:
        missing = []
        for image in dict.fromkeys(images):
            try:
                self.call("image_inspect", None, self.api.inspect_image, image)
            except docker.errors.NotFound:
                missing.append(image)
        return missing

    def own_container(self) -> dict[str, Any] | None:
        """The container this process runs in, if the engine we talk to runs it."""
        if not Path("/.dockerenv").exists():
            return None
        try:
            info: dict[str, Any] = self.call("container_inspect", None, self.api.inspect_container,
                                             socket.gethostname())
            return info
        except (docker.errors.NotFound, BackendError):
            return None


def docker_epoch(text: str | None) -> float | None:
    """A Docker time as epoch seconds; None for none (Docker's zero time) or an unreadable one."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return parse_docker_time(text)
    except ValueError:
        return None


def _unreachable(exc: Exception) -> bool:
    """The engine did not answer (no socket, refused, reset, timed out), rather than refusing."""
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))
