"""Images for replicas (autoscaler/docker/images.py): references, digests, a pull's stream and
its failures in one line, and what each `pull` policy resolves, against an engine in memory.
The engine's sentences are those Docker Engine 20.10 answers (tests/integration/test_registry.py
gets them from a real registry)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest
import requests
import urllib3.exceptions

from autoscaler.docker.engine import DockerEngine
from autoscaler.docker.images import (
    DockerImages,
    PullFailed,
    PullTimedOut,
    Reference,
    familiar_name,
    parse_reference,
    pull_failure,
    read_pull_events,
    repo_digest,
)
from autoscaler.engine.ports import BackendError, ReplicaSpec

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
REGISTRY = "registry.local:5000"
IMAGE = f"{REGISTRY}/team/app:2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", Reference("nginx", None, None)),
        ("nginx:1.27", Reference("nginx", "1.27", None)),
        (IMAGE, Reference(f"{REGISTRY}/team/app", "2", None)),
        (f"{REGISTRY}/team/app", Reference(f"{REGISTRY}/team/app", None, None)),
        (f"{REGISTRY}/app@{D1}", Reference(f"{REGISTRY}/app", None, D1)),
        (f"{REGISTRY}/app:2@{D1}", Reference(f"{REGISTRY}/app", "2", D1)),
        ("localhost:5000/app", Reference("localhost:5000/app", None, None)),
    ],
    ids=["name", "tag", "registry-port-tag", "registry-port-no-tag", "digest", "tag-and-digest", "localhost"],
)
def test_parse_reference(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    ("repository", "registry", "familiar"),
    [
        ("nginx", "docker.io", "nginx"),
        ("docker.io/library/nginx", "docker.io", "nginx"),
        ("index.docker.io/team/app", "docker.io", "team/app"),
        ("team/app", "docker.io", "team/app"),
        (f"{REGISTRY}/team/app", REGISTRY, f"{REGISTRY}/team/app"),
        ("172.17.0.1:41000/app", "172.17.0.1:41000", "172.17.0.1:41000/app"),
    ],
)
def test_registry_and_familiar_name(repository: str, registry: str, familiar: str) -> None:
    assert Reference(repository, None, None).registry == registry
    assert familiar_name(repository) == familiar


@pytest.mark.parametrize(
    ("image", "repo_digests", "expected"),
    [
        (IMAGE, [f"{REGISTRY}/team/app@{D1}"], f"{REGISTRY}/team/app@{D1}"),
        # The same image pushed elsewhere too: the digest in the reference's own repository.
        (IMAGE, [f"other.local/app@{D2}", f"{REGISTRY}/team/app@{D1}"], f"{REGISTRY}/team/app@{D1}"),
        ("docker.io/library/nginx:1", [f"nginx@{D1}"], f"docker.io/library/nginx@{D1}"),
        ("nginx:1", [f"nginx@{D1}"], f"nginx@{D1}"),
        # Built here (no digest), or only known under another name: nothing to pin.
        ("autoscaler-demo-app:latest", [], None),
        ("autoscaler-demo-app:latest", [f"{REGISTRY}/demo@{D1}"], None),
        (IMAGE, [f"{REGISTRY}/team/app@sha256:short"], None),
    ],
    ids=["own-repository", "among-others", "hub-long-name", "hub-short-name", "built-here", "other-name", "bad-digest"],
)
def test_repo_digest(image: str, repo_digests: list[str], expected: str | None) -> None:
    assert repo_digest(parse_reference(image), repo_digests) == expected


# --- a pull's stream ------------------------------------------------------------------------

PULLED = [
    {"status": "Pulling from team/app", "id": "2"},
    {"status": "Already exists", "progressDetail": {}, "id": "3900a4dabc53"},
    {"status": f"Digest: {D1}"},
    {"status": f"Status: Downloaded newer image for {IMAGE}"},
]
OTHER_PLATFORM = [
    {"status": "Pulling from team/app", "id": "2"},
    {"errorDetail": {"message": "no matching manifest for linux/amd64 in the manifest list entries"},
     "error": "no matching manifest for linux/amd64 in the manifest list entries"},
]


def test_the_stream_gives_the_digest() -> None:
    assert read_pull_events(iter(PULLED), lambda: False) == D1
    assert read_pull_events(iter(PULLED[:2]), lambda: False) is None


def test_an_error_at_the_end_of_the_stream_is_the_engine_s_sentence() -> None:
    with pytest.raises(PullFailed, match="^no matching manifest for linux/amd64 in the manifest list entries$"):
        read_pull_events(iter(OTHER_PLATFORM), lambda: False)
    with pytest.raises(PullFailed, match="without a reason"):
        read_pull_events(iter([{"error": "", "errorDetail": {"code": 1}}]), lambda: False)


def test_a_stream_that_goes_on_past_its_time_stops() -> None:
    def endless() -> Iterator[dict[str, Any]]:
        while True:
            yield {"status": "Downloading", "progressDetail": {"current": 1}}

    calls = iter(range(100))
    with pytest.raises(PullTimedOut):
        read_pull_events(endless(), lambda: next(calls) >= 5)


def test_nonsense_in_the_stream_is_skipped() -> None:
    assert read_pull_events(iter(["text", 42, {"status": "Digest: sha256:nothex"}, {"status": f"Digest: {D2}"}]),
                            lambda: False) == D2


HINTS = {
    "wrong-password": ("unauthorized: authentication required", "refused access: wrong or missing credentials"),
    "no-credentials": (f'Head "https://{REGISTRY}/v2/team/app/manifests/2": no basic auth credentials',
                       "refused access"),
    "hub-denied": (("pull access denied for team/app, repository does not exist or may require 'docker login': "
                    "denied: requested access to the resource is denied"), "refused access"),
    "missing-tag": (f"manifest for {IMAGE} not found: manifest unknown: manifest unknown",
                    f"no such tag or repository in {REGISTRY}"),
    "registry-down": (f'Get "https://{REGISTRY}/v2/": dial tcp 10.0.0.5:5000: connect: connection refused',
                      f"{REGISTRY} is not reachable"),
    "no-such-host": ('Get "https://registry.local:5000/v2/": dial tcp: lookup registry.local: no such host',
                     "is not reachable"),
    "ping-timeout": (f'Get "https://{REGISTRY}/v2/": context deadline exceeded', "is not reachable"),
    "garbage": ("unexpected EOF", "answered with something that is not a registry's answer"),
    "garbage-json": ("unexpected end of JSON input", "not a registry's answer"),
    "garbage-status": ((f'Get "https://{REGISTRY}/v2/": net/http: HTTP/1.x transport connection broken: '
                        'malformed HTTP status code "this"'), "not a registry's answer"),
    "other-platform": ("no matching manifest for linux/amd64 in the manifest list entries",
                       "no variant for the Docker engine's platform"),
    "untrusted": (f'Get "https://{REGISTRY}/v2/": x509: certificate signed by unknown authority',
                  f"/etc/docker/certs.d/{REGISTRY}/ca.crt"),
    "plain-http": (f'Get "https://{REGISTRY}/v2/": http: server gave HTTP response to HTTPS client',
                   "insecure-registries"),
    "unknown": ("something else entirely", f"(registry {REGISTRY})"),
}


@pytest.mark.parametrize(("message", "hint"), HINTS.values(), ids=list(HINTS))
def test_a_failed_pull_is_the_engine_s_sentence_with_what_it_means(message: str, hint: str) -> None:
    line = pull_failure(parse_reference(IMAGE), message)
    assert line.startswith(message + " (") and hint in line
    assert "\n" not in line


# --- resolution, against an engine in memory -----------------------------------------------


class FakeAPI:
    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}  # reference -> inspect
        self.inspected: list[str] = []

    def inspect_image(self, reference: str) -> dict[str, Any]:
        self.inspected.append(reference)
        if reference not in self.images:
            raise docker.errors.NotFound(f"No such image: {reference}")
        return self.images[reference]


class FakePullClient:
    """What DockerImages uses of the SDK's client: reload_config, pull (a stream), close_response."""

    def __init__(self, api: FakeAPI) -> None:
        self.api = api
        self.pulls: list[tuple[str, str]] = []
        self.reloads = 0
        self.closed_responses = 0
        self.error: Exception | None = None  # raised by the next pulls
        self.events: list[Any] | None = None  # the stream of the next pulls (default: a pull of D1)
        self.digest = D1
        self.gate: threading.Event | None = None  # pulls wait for it
        self.started = threading.Event()

    def reload_config(self) -> None:
        self.reloads += 1

    def pull(self, repository: str, tag: str, stream: bool, decode: bool) -> Iterator[Any]:
        assert stream and decode
        self.pulls.append((repository, tag))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        events = self.events if self.events is not None else [{"status": f"Digest: {self.digest}"}]
        # The engine now has it, under its tag and its digest.
        info = {"Id": "sha256:" + "9" * 64, "RepoDigests": [f"{repository}@{self.digest}"]}
        self.api.images[f"{repository}:{tag}"] = info
        self.api.images[f"{repository}@{self.digest}"] = info
        return iter(events)

    def close_response(self) -> None:
        self.closed_responses += 1

    def close(self) -> None:
        pass


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> tuple[DockerImages, FakeAPI, FakePullClient, Clock]:
    client = FakeClient()
    puller = FakePullClient(client.api)
    clock = Clock()
    timeouts: list[float] = []

    def factory(timeout_seconds: float) -> FakePullClient:
        timeouts.append(timeout_seconds)
        return puller

    images = DockerImages(DockerEngine(client), client_factory=factory, clock=clock)  # type: ignore[arg-type]
    return images, client.api, puller, clock


def spec(image: str = IMAGE, pull: str = "missing", service: str = "web", timeout: float = 30) -> ReplicaSpec:
    return ReplicaSpec(service=service, image=image, port=8000, network="n", cpu_limit_cores=0.5,
                       memory_limit_bytes=2**28, pull=pull, pull_timeout_seconds=timeout)  # type: ignore[arg-type]


def test_missing_pulls_once_then_every_start_runs_the_pinned_digest(world: Any) -> None:
    images, api, puller, _ = world
    assert images.resolve(spec()) == f"{REGISTRY}/team/app@{D1}"
    assert puller.pulls == [(f"{REGISTRY}/team/app", "2")]
    assert puller.reloads == 1 and puller.closed_responses == 1, "credentials re-read; the response closed"

    puller.digest = D2  # the tag moves in the registry: the service's replicas stay on D1
    api.images[IMAGE]["RepoDigests"] = [f"{REGISTRY}/team/app@{D2}"]
    assert images.resolve(spec()) == f"{REGISTRY}/team/app@{D1}"
    assert len(puller.pulls) == 1


def test_missing_uses_the_engine_s_image_pinned_by_its_digest(world: Any) -> None:
    images, api, puller, _ = world
    api.images[IMAGE] = {"RepoDigests": [f"{REGISTRY}/team/app@{D2}"]}
    assert images.resolve(spec()) == f"{REGISTRY}/team/app@{D2}"
    assert puller.pulls == []


def test_an_image_built_here_is_used_by_its_name_and_looked_up_at_each_start(world: Any) -> None:
    images, api, puller, _ = world
    api.images["demo:latest"] = {"RepoDigests": []}
    assert images.resolve(spec("demo:latest")) == "demo:latest"
    assert images.resolve(spec("demo:latest")) == "demo:latest"
    assert puller.pulls == [] and api.inspected.count("demo:latest") == 2


def test_always_pulls_even_what_the_engine_has_once_per_image(world: Any) -> None:
    images, api, puller, _ = world
    api.images[IMAGE] = {"RepoDigests": [f"{REGISTRY}/team/app@{D2}"]}
    assert images.resolve(spec(pull="always")) == f"{REGISTRY}/team/app@{D1}"
    assert images.resolve(spec(pull="always")) == f"{REGISTRY}/team/app@{D1}"
    assert len(puller.pulls) == 1
    # Another image (a reload) is resolved afresh.
    assert images.resolve(spec(f"{REGISTRY}/team/app:3", pull="always")) == f"{REGISTRY}/team/app@{D1}"
    assert puller.pulls[-1] == (f"{REGISTRY}/team/app", "3")


def test_never_uses_the_engine_s_image_or_says_it_is_missing(world: Any) -> None:
    images, api, puller, _ = world
    with pytest.raises(BackendError, match=f'image {IMAGE} not found on the Docker engine, and pull = "never"'):
        images.resolve(spec(pull="never"))
    api.images[IMAGE] = {"RepoDigests": [f"{REGISTRY}/team/app@{D2}"]}
    assert images.resolve(spec(pull="never")) == f"{REGISTRY}/team/app@{D2}"
    assert puller.pulls == []


def test_a_pinned_image_removed_from_the_engine_is_pulled_again_by_its_digest(world: Any) -> None:
    images, api, puller, _ = world
    pinned = images.resolve(spec())
    api.images.clear()
    assert images.resolve(spec()) == pinned
    assert puller.pulls[-1] == (f"{REGISTRY}/team/app", D1)


def test_a_reference_with_a_digest_is_pinned_as_it_is(world: Any) -> None:
    images, _, puller, _ = world
    puller.events = [{"status": "Status: Image is up to date"}]
    assert images.resolve(spec(f"{REGISTRY}/team/app:2@{D2}")) == f"{REGISTRY}/team/app@{D2}"
    assert puller.pulls == [(f"{REGISTRY}/team/app", D2)]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (docker.errors.APIError("500 Server Error", explanation="unauthorized: authentication required"),
         (f"image {IMAGE} not found on the Docker engine; pull of {IMAGE} failed: unauthorized: authentication "
          f"required ({REGISTRY} refused access")),
        (docker.errors.NotFound("404", explanation=f"manifest for {IMAGE} not found: manifest unknown: manifest unknown"),
         f"failed: manifest for {IMAGE} not found: manifest unknown: manifest unknown (no such tag or repository in"),
        (docker.errors.DockerException("Credentials store error: StoreError('docker-credential-pass not installed')"),
         "failed: Credentials store error"),
    ],
    ids=["unauthorized", "manifest-unknown", "credential-helper"],
)
def test_a_failed_pull_is_one_backend_error_and_nothing_is_pinned(world: Any, error: Exception, expected: str) -> None:
    images, _, puller, _ = world
    puller.error = error
    with pytest.raises(BackendError) as caught:
        images.resolve(spec())
    assert expected in str(caught.value) and not caught.value.unreachable
    assert str(caught.value).startswith("docker image_pull for service 'web': ")
    puller.error = None
    assert images.resolve(spec()) == f"{REGISTRY}/team/app@{D1}", "nothing was pinned: the next start pulls"
    assert len(puller.pulls) == 2


def test_an_error_in_the_stream_is_a_failed_pull(world: Any) -> None:
    images, _, puller, _ = world
    puller.events = OTHER_PLATFORM
    with pytest.raises(BackendError, match="no matching manifest for linux/amd64.*no variant for the Docker engine's"):
        images.resolve(spec(pull="always"))
    assert puller.closed_responses == 1


@pytest.mark.parametrize(
    "error",
    [requests.exceptions.ReadTimeout("read timed out"), urllib3.exceptions.ReadTimeoutError(None, "", "")],
    ids=["before-the-answer", "mid-stream"],
)
def test_a_pull_that_hangs_ends_at_its_timeout(world: Any, error: Exception) -> None:
    images, _, puller, clock = world

    def hang(*args: Any, **kwargs: Any) -> Iterator[Any]:
        clock.now += 30  # what the client's read timeout waited
        raise error

    puller.pull = hang
    with pytest.raises(BackendError, match=rf"pull of {IMAGE} did not finish in 30s \(pull_timeout_seconds\)$") as caught:
        images.resolve(spec(timeout=30))
    assert not caught.value.unreachable, "counted as a failed start: the engine answered, the registry did not"
    assert puller.closed_responses == 1


def test_a_pull_that_goes_on_past_its_timeout_is_given_up(world: Any) -> None:
    images, _, puller, clock = world

    def slow() -> Iterator[dict[str, Any]]:
        while True:
            clock.now += 4
            yield {"status": "Downloading"}

    puller.events = slow()
    with pytest.raises(BackendError, match="did not finish in 10s"):
        images.resolve(spec(timeout=10))


def test_the_engine_going_away_mid_pull_is_unreachable(world: Any) -> None:
    images, _, puller, _ = world
    puller.error = urllib3.exceptions.ProtocolError("Connection broken")
    with pytest.raises(BackendError) as caught:
        images.resolve(spec())
    assert caught.value.unreachable


def test_starts_that_need_the_same_image_at_once_share_one_pull(world: Any) -> None:
    images, _, puller, _ = world
    puller.gate = threading.Event()
    puller.error = docker.errors.APIError("500", explanation="unauthorized: authentication required")
    outcomes: list[str] = []

    def start() -> None:
        try:
            outcomes.append(images.resolve(spec()))
        except BackendError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert puller.started.wait(5)
    puller.gate.set()
    for thread in threads:
        thread.join(5)
    assert len(puller.pulls) == 1, "one pull for the three starts"
    assert len(outcomes) == 3 and all("unauthorized" in outcome for outcome in outcomes)

    puller.gate, puller.error = None, None
    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(puller.pulls) <= 3 and outcomes[-3:] == [f"{REGISTRY}/team/app@{D1}"] * 3


def test_each_service_pins_its_own(world: Any) -> None:
    images, _, puller, _ = world
    assert images.resolve(spec(service="a")) == f"{REGISTRY}/team/app@{D1}"
    puller.digest = D2
    assert images.resolve(spec(service="a", pull="always")) == f"{REGISTRY}/team/app@{D2}"
    assert images.resolve(spec(service="b", pull="always")) == f"{REGISTRY}/team/app@{D2}"
    assert images.resolve(spec(service="a")) == f"{REGISTRY}/team/app@{D1}", "a's resolution of its image stays"
