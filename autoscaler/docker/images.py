"""Replicas' images: the engine's, or pulled from a registry as the service's `pull` says, and
pinned by digest once resolved, so that every replica started from one `image` runs the same
bytes.

- "missing": the engine's image when it has the reference, else a pull;
- "always": a pull when the reference is first resolved, even if the engine has it, so that a
  moving tag is read from the registry;
- "never": the engine's image, or a clear error.

A resolution is pinned (`repo@sha256:...`: the digest the pull reported, or the image's
RepoDigests in the reference's repository) and reused by the next starts of the service, per
(image, pull): a tag that moves afterwards changes nothing until the config names another image
or the daemon restarts (what a new digest behind a tag should trigger is a rolling update, not a
mix of versions). An image built locally has no digest from a registry: it is used by its
reference as it is, looked up at each start. A pinned image that left the engine is pulled
again by its digest, never by its tag.

Credentials are the Docker CLI's: the SDK's own resolution (`docker.auth`: `$DOCKER_CONFIG` or
~/.docker/config.json, its `auths`, `credsStore` and `credHelpers`), re-read before each pull as
the CLI reads them for each command. A pull is bounded: `APIClient.pull` waits with no timeout at
all, so pulls go through a client whose requests wait at most `pull_timeout_seconds` for a word
from the engine, and the whole pull is checked against the same time as its progress arrives.
Giving up closes the connection to the engine; what the engine does with its own request to the
registry is up to it (Docker Engine 20.10 keeps waiting on a registry that accepted the request
and never answers; no start waits for it).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.auth
import docker.errors
import docker.utils
import requests.exceptions
import urllib3.exceptions

from autoscaler.docker.engine import DockerEngine
from autoscaler.engine.ports import BackendError, ReplicaSpec

log = logging.getLogger("autoscaler.docker")

_DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})", re.ASCII)


# --- references -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    repository: str  # as written, without tag or digest: "registry.local:5000/team/app", "nginx"
    tag: str | None
    digest: str | None

    @property
    def registry(self) -> str:
        """The registry the SDK looks credentials up for ("docker.io" for Docker Hub's names)."""
        return str(docker.auth.resolve_repository_name(self.repository)[0])

    def pinned(self, digest: str) -> str:
        return f"{self.repository}@{digest}"


def parse_reference(text: str) -> Reference:
    """A valid image reference (the config checks the grammar) split into its parts; a colon
    before the last slash is a registry's port, not a tag."""
    name, _, digest = text.partition("@")
    repository, tag = name, None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        repository, tag = name[:colon], name[colon + 1:]
    return Reference(repository, tag, digest or None)


def familiar_name(repository: str) -> str:
    """Docker's short form of a repository, as RepoTags and RepoDigests show it: Docker Hub's
    "docker.io/library/nginx" is "nginx"."""
    registry, remote = docker.auth.resolve_repository_name(repository)
    if registry != docker.auth.INDEX_NAME:
        return repository
    return str(remote).removeprefix("library/")


def repo_digest(reference: Reference, repo_digests: Sequence[str]) -> str | None:
    """The image pinned in the reference's own repository, from its RepoDigests; None when it has
    no digest there (built locally, or pulled under another name)."""
    wanted = familiar_name(reference.repository)
    for entry in repo_digests:
        repository, _, digest = entry.partition("@")
        if _DIGEST_RE.fullmatch(digest) and familiar_name(repository) == wanted:
            return reference.pinned(digest)
    return None


# --- a pull's outcome -----------------------------------------------------------------------


class PullFailed(Exception):
    """The engine refused or gave up the pull; the message is its own sentence."""


class PullTimedOut(Exception):
    pass


def read_pull_events(events: Iterable[Any], out_of_time: Callable[[], bool]) -> str | None:
    """Follows a pull's progress stream to its end; returns the digest it reports
    ("Digest: sha256:..."), if any. A pull that fails after it started reporting progress (no
    variant for this platform, a layer that cannot be fetched) ends the stream with an error
    instead of an HTTP status: raised here as PullFailed."""
    digest = None
    for event in events:
        if isinstance(event, dict):
            detail = event.get("errorDetail")
            if event.get("error") or detail:
                message = (detail.get("message") if isinstance(detail, dict) else None) or event.get("error")
                raise PullFailed(str(message or "the pull failed without a reason"))
            status = str(event.get("status") or "")
            if status.startswith("Digest: ") and _DIGEST_RE.fullmatch(status.removeprefix("Digest: ").strip()):
                digest = status.removeprefix("Digest: ").strip()
        if out_of_time():
            raise PullTimedOut()
    return digest


# What the engine's sentence most likely means, first match wins: (lowercase fragments, hint).
_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("no matching manifest",), "the image has no variant for the Docker engine's platform"),
    (("x509:", "certificate"),
     "the Docker engine does not trust {registry}'s certificate: its CA goes in /etc/docker/certs.d/{registry}/ca.crt"),
    (("server gave http response to https client",),
     "{registry} speaks plain HTTP: list it in the engine's insecure-registries, or serve it over TLS"),
    (("unauthorized", "authentication required", "no basic auth credentials", "denied", "forbidden"),
     ("{registry} refused access: wrong or missing credentials in the Docker config the daemon reads "
      "(docker login {registry}; DOCKER_CONFIG), or no such repository")),
    (("manifest unknown", "not found", "name unknown"), "no such tag or repository in {registry}"),
    (("connection refused", "no such host", "i/o timeout", "no route to host", "network is unreachable",
      "context deadline exceeded", "tls handshake timeout", "connection reset"), "{registry} is not reachable"),
    (("unexpected eof", "unexpected end of json", "invalid character", "malformed", "cannot unmarshal",
      "unexpected content", "unsupported", "error parsing"),
     "{registry} answered with something that is not a registry's answer"),
)


def pull_failure(reference: Reference, message: str) -> str:
    """The engine's sentence for a failed pull, with what it most likely means."""
    lowered = message.lower()
    for fragments, hint in _HINTS:
        if any(fragment in lowered for fragment in fragments):
            return f"{message} ({hint.format(registry=reference.registry)})"
    return f"{message} (registry {reference.registry})"


# --- the engine's side ----------------------------------------------------------------------


class _PullClient(docker.APIClient):  # type: ignore[misc]  # docker publishes no type information
    """The SDK's client, for pulls. Two changes: every request waits at most `timeout` for a
    word from the engine (APIClient.pull passes timeout=None: a pull that hangs would hang its
    caller for ever), and the calling thread's last response can be closed (a streamed pull
    given up is not left open until the garbage collector finds it)."""

    def __init__(self, **kwargs: Any) -> None:
        self._responses = threading.local()
        super().__init__(**kwargs)

    def send(self, request: Any, **kwargs: Any) -> Any:  # requests.Session.send
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        response = super().send(request, **kwargs)
        self._responses.last = response
        return response

    def close_response(self) -> None:
        response = getattr(self._responses, "last", None)
        self._responses.last = None
        if response is not None:
            response.close()


@dataclass
class _Resolution:
    """One resolution in progress: the starts that need it meanwhile wait for its outcome
    instead of pulling the same image side by side (and maybe pinning different digests)."""

    done: threading.Event = field(default_factory=threading.Event)
    image: str | None = None
    error: Exception | None = None


class DockerImages:
    def __init__(self, engine: DockerEngine, client_factory: Callable[[float], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._client_factory = client_factory or self._new_client
        self._clock = clock
        self._lock = threading.Lock()
        self._pinned: dict[tuple[str, str, str], str] = {}  # (service, image, pull) -> pinned reference
        self._resolving: dict[tuple[str, str, str], _Resolution] = {}
        self._clients: dict[float, Any] = {}  # by read timeout

    def resolve(self, spec: ReplicaSpec) -> str:
        """The reference to create the spec's replicas from (ContainerRuntime.resolve_image)."""
        key = (spec.service, spec.image, spec.pull)
        with self._lock:
            resolution = self._resolving.get(key)
            leader = resolution is None
            if resolution is None:
                resolution = self._resolving[key] = _Resolution()
        if not leader:
            resolution.done.wait()
        else:
            try:
                resolution.image = self._resolve(spec, key)
            except Exception as exc:  # handed to every start that waited for it
                resolution.error = exc
            finally:
                with self._lock:
                    del self._resolving[key]
                resolution.done.set()
        if resolution.error is not None:
            raise resolution.error
        assert resolution.image is not None
        return resolution.image

    def refresh(self, spec: ReplicaSpec) -> tuple[str | None, str]:
        """Pulls the spec's tag again (pull = "always"): (the reference pinned until now, or
        None when none was; the one pinned from now on). Raises BackendError as a start's pull."""
        key = (spec.service, spec.image, spec.pull)
        reference = parse_reference(spec.image)
        with self._lock:
            before = self._pinned.get(key)
        digest = self._pull(spec, reference, "") or reference.digest
        if digest is None:
            info = self._inspect(spec.service, spec.image)
            found = repo_digest(reference, (info or {}).get("RepoDigests") or []) or spec.image
        else:
            found = reference.pinned(digest)
        self._pin(key, found)
        return before, found

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _resolve(self, spec: ReplicaSpec, key: tuple[str, str, str]) -> str:
        reference = parse_reference(spec.image)
        with self._lock:
            pinned = self._pinned.get(key)
        if pinned is not None:
            if self._inspect(spec.service, pinned) is not None:
                return pinned
            # Removed from the engine since: the same bytes again, not whatever the tag says now.
            if spec.pull == "never":
                raise BackendError("image_inspect", spec.service,
                                   f'image {pinned} (resolved from {spec.image}) not found on the Docker engine, '
                                   'and pull = "never"')
            self._pull(spec, parse_reference(pinned), f"image {pinned} (resolved from {spec.image}) not found on "
                       "the Docker engine; ")
            return pinned
        if spec.pull != "always":
            info = self._inspect(spec.service, spec.image)
            if info is not None:
                found = reference.pinned(reference.digest) if reference.digest else repo_digest(
                    reference, info.get("RepoDigests") or [])
                if found is None:
                    return spec.image  # built here: no digest to pin, used as it is
                self._pin(key, found)
                return found
            if spec.pull == "never":
                raise BackendError("image_inspect", spec.service,
                                   f'image {spec.image} not found on the Docker engine, and pull = "never"')
        started = self._clock()
        digest = self._pull(spec, reference, "" if spec.pull == "always" else
                            f"image {spec.image} not found on the Docker engine; ")
        digest = digest or reference.digest
        if digest is None:
            info = self._inspect(spec.service, spec.image)
            found = repo_digest(reference, (info or {}).get("RepoDigests") or [])
        else:
            found = reference.pinned(digest)
        if found is None:
            log.warning("pulled %s but the engine reports no digest for it: its replicas are created from the tag",
                        spec.image, extra={"service": spec.service})
            return spec.image
        self._pin(key, found)
        log.info("pulled %s in %.1fs: its replicas run %s", spec.image, self._clock() - started, found,
                 extra={"service": spec.service})
        return found

    def _pin(self, key: tuple[str, str, str], pinned: str) -> None:
        with self._lock:
            self._pinned[key] = pinned

    def _inspect(self, service: str, reference: str) -> dict[str, Any] | None:
        engine = self._engine
        try:
            info: dict[str, Any] = engine.call("image_inspect", service, engine.api.inspect_image, reference)
            return info
        except docker.errors.NotFound:
            return None

    def _pull(self, spec: ReplicaSpec, reference: Reference, context: str) -> str | None:
        """Pulls `reference` within the spec's timeout; returns the digest the engine reports.
        `context` starts the error's sentence (why this pull happened)."""
        timeout = spec.pull_timeout_seconds
        client = self._client(timeout)
        started = self._clock()
        shown = reference.pinned(reference.digest) if reference.digest else (
            f"{reference.repository}:{reference.tag or 'latest'}")

        def pull() -> str | None:
            try:
                client.reload_config()  # the credentials as they are now, as the CLI reads them per command
                events = client.pull(reference.repository, reference.digest or reference.tag or "latest",
                                     stream=True, decode=True)
                return read_pull_events(events, lambda: self._clock() - started > timeout)
            except docker.errors.APIError as exc:
                raise PullFailed(str(exc.explanation or exc)) from exc
            except docker.errors.DockerException as exc:  # a credential helper that failed, among others
                raise PullFailed(str(exc)) from exc
            except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError) as exc:
                raise PullTimedOut() from exc
            except urllib3.exceptions.HTTPError as exc:
                # The connection broke mid-stream: the engine went away, not the registry.
                raise requests.exceptions.ConnectionError(str(exc)) from exc
            finally:
                client.close_response()

        try:
            digest: str | None = self._engine.call("image_pull", spec.service, pull)
            return digest
        except PullFailed as exc:
            raise BackendError("image_pull", spec.service,
                               f"{context}pull of {shown} failed: {pull_failure(reference, str(exc))}") from exc
        except PullTimedOut as exc:
            # The configured time, not the measured one: the same failure again is the same line.
            raise BackendError("image_pull", spec.service,
                               f"{context}pull of {shown} did not finish in {timeout:g}s (pull_timeout_seconds)"
                               ) from exc

    def _client(self, timeout_seconds: float) -> Any:
        with self._lock:
            client = self._clients.get(timeout_seconds)
            if client is None:
                client = self._clients[timeout_seconds] = self._client_factory(timeout_seconds)
        return client

    def _new_client(self, timeout_seconds: float) -> Any:
        # The engine the daemon talks to, found as docker.from_env finds it, at its API version.
        return _PullClient(version=self._engine.api.api_version, timeout=timeout_seconds,
                           **docker.utils.kwargs_from_env())

