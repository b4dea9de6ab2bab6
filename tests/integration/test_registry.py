"""Images from a real registry (Debian's docker-registry, htpasswd auth, TLS with a CA of the
test's own; tests/registry.py), pulled by the daemon (a real process) with the Docker CLI's
credentials from its DOCKER_CONFIG.

- Replicas run the pulled image pinned by digest; a replica of another version runs that
  version's digest, the running ones keep theirs.
- Each bad pull is one clear line, the start backoff applies, and the replica already running
  keeps serving through it all: a registry answering nonsense, one that never answers (bounded
  by pull_timeout_seconds, try after try), a manifest for another platform only,
  a missing tag, the registry down (and the start that follows its return).
- A wrong password, from a credential helper named by the config file's credHelpers: one line,
  no replica, backed off.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import DaemonProcess, Traffic, free_port, wait_for
from registry import Certificates, Impostor, Registry, host_address, login, push, remove_references, trusted

pytestmark = pytest.mark.docker

APP_IMAGE = "autoscaler-demo-app:latest"
PULL_TIMEOUT_SECONDS = 5
_FAILED_START = re.compile(r"\] replica \S+ could not be started: ")


@dataclass
class Pushed:
    registry: Registry
    repository: str  # under the registry's address
    docker_config: Path  # what `docker login` wrote
    digests: dict[str, str]  # tag -> manifest digest
    impostors: dict[str, Impostor]  # mode -> server

    def image(self, tag: str) -> str:
        return f"{self.repository}:{tag}"

    def pinned(self, tag: str) -> str:
        return f"{self.repository}@{self.digests[tag]}"


@pytest.fixture(scope="module")
def pushed(docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:  # type: ignore[no-untyped-def]
    """A registry holding v1 (the demo app), v2 (the demo app with one label more: other bytes)
    and "arm" (a list with an arm64 entry only), and the impostors, all trusted by the engine."""
    directory = tmp_path_factory.mktemp("registry")
    host = host_address(docker_client)
    certificates = Certificates(directory / "certs", host)
    registry = Registry(directory, host, certificates)
    impostors = {mode: Impostor(host, certificates, mode) for mode in ("garbage", "hang")}
    name = f"autoscaler-test-{uuid.uuid4().hex[:8]}"
    try:
        with trusted(registry.address, certificates), trusted(impostors["garbage"].address, certificates), \
                trusted(impostors["hang"].address, certificates):
            registry.start()
            config = directory / "docker-config"
            login(registry, config)
            repository = f"{registry.address}/{name}"
            push(docker_client, config, APP_IMAGE, f"{repository}:v1")
            push(docker_client, config, APP_IMAGE, f"{repository}:v2", label=f"v2-{name}")
            registry.put_other_platform_list(name, "v1", "arm")
            digests = {tag: registry.manifest_digest(name, tag)[0] for tag in ("v1", "v2")}
            assert digests["v1"] != digests["v2"]
            yield Pushed(registry, repository, config, digests, impostors)
    finally:
        registry.stop()
        for impostor in impostors.values():
            impostor.close()
        remove_references(docker_client, registry.address)


def config_text(service: str, image: str, lb_port: int, metrics_port: int, *, min_replicas: int = 1,
                pull: str = "missing") -> str:
    return f"""
[daemon]
interval_seconds = 1
metrics_listen = "127.0.0.1:{metrics_port}"

[services.{service}]
image = "{image}"
pull = "{pull}"
pull_timeout_seconds = {PULL_TIMEOUT_SECONDS}
port = 8000
cpu_limit = 0.25
memory_limit = "128MiB"
min_replicas = {min_replicas}
max_replicas = 3
stop_timeout_seconds = 2
backoff_initial_seconds = 0.5
backoff_max_seconds = 2

[services.{service}.load_balancer]
publish = "127.0.0.1:{lb_port}"

[services.{service}.policy]
target_cpu_percent = 90
initialization_seconds = 0
"""


def replicas(docker_client, service: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Running replicas by container id: their inspect."""
    found = docker_client.containers.list(filters={"label": [f"autoscaler.service={service}",
                                                               "autoscaler.role=replica"]})
    return {c.id: c.attrs for c in found}


def failed_starts(daemon: DaemonProcess, fragment: str) -> list[str]:
    """The failed starts' lines that say `fragment` (not the backoff's, which repeat the reason)."""
    return [line for line in daemon.log().splitlines() if fragment in line and _FAILED_START.search(line)]


def warnings_with(daemon: DaemonProcess, fragment: str) -> list[str]:
    """The first failure of a kind is a warning; the same again is info."""
    return [line for line in failed_starts(daemon, fragment) if " WARNING " in line]


def test_replicas_run_the_pulled_image_by_digest_and_no_bad_pull_touches_the_one_running(
    docker_client, service_name: str, pushed: Pushed, run_daemon  # type: ignore[no-untyped-def]
) -> None:
    lb_port, metrics_port = free_port(), free_port()
    text = config_text(service_name, pushed.image("v1"), lb_port, metrics_port)
    config_started = time.monotonic()
    daemon = run_daemon(text, metrics_port, env={"DOCKER_CONFIG": str(pushed.docker_config)})
    wait_for(lambda: daemon.status()["replicas"]["ready"] == 1, 60, "1 ready replica from the registry")
    first_ready_seconds = time.monotonic() - config_started

    # Pulled (the engine did not have it: the daemon started all the same) and pinned by digest.
    (first_id, first), = replicas(docker_client, service_name).items()
    assert first["Config"]["Image"] == pushed.pinned("v1")
    assert first["Image"] == docker_client.images.get(APP_IMAGE).id, "the same bytes as the image pushed"
    assert f"pulled {pushed.image('v1')} in " in daemon.log()
    assert f"image {pushed.image('v1')} is not on the Docker engine: the first replica pulls it" in daemon.log()

    traffic = Traffic(lb_port, timeout_seconds=10)
    traffic.start(workers=1, cpu_ms=1, pause_seconds=0.05)
    config_path = daemon.log_path.parent / "config.toml"

    def reload(image: str) -> None:
        # A new version, and a second replica wanted: its start must pull.
        config_path.write_text(config_text(service_name, image, lb_port, metrics_port, min_replicas=2))
        daemon.process.send_signal(signal.SIGHUP)

    garbage, hang = pushed.impostors["garbage"], pushed.impostors["hang"]
    steps = [
        ("garbage", f"{garbage.address}/app:1", "not a registry's answer"),
        ("hang", f"{hang.address}/app:1",
         f"pull of {hang.address}/app:1 did not finish in {PULL_TIMEOUT_SECONDS}s (pull_timeout_seconds)"),
        ("other platform", pushed.image("arm"),
         "no matching manifest for linux/amd64 in the manifest list entries (the image has no variant"),
        ("missing tag", pushed.image("nosuch"), "manifest unknown: manifest unknown (no such tag or repository in"),
    ]
    timings: dict[str, float] = {}
    try:
        for step, image, fragment in steps:
            began = time.monotonic()
            reload(image)
            wait_for(lambda fragment=fragment: warnings_with(daemon, fragment), 30, f"the {step} line")
            timings[step] = time.monotonic() - began
            if step == "hang":  # bounded try after try: the next one comes after the backoff, and ends too
                wait_for(lambda fragment=fragment: len(failed_starts(daemon, fragment)) >= 2, 30,
                         "a second hung pull to end")
            (line,) = warnings_with(daemon, fragment)
            assert "could not be started" in line and image in line and "next start in" in line, line
            status = daemon.status()
            assert status["start_backoff"]["failures"] >= 1, status
            assert list(replicas(docker_client, service_name)) == [first_id], f"{step}: only the first one runs"
        assert any("/v2/app/manifests/1 " in request for request in hang.requests), hang.requests

        # The registry goes down; a start needs v2, which the engine does not have.
        pushed.registry.stop()
        began = time.monotonic()
        reload(pushed.image("v2"))
        down_fragment = f"connect: connection refused ({pushed.registry.address} is not reachable)"
        wait_for(lambda: warnings_with(daemon, down_fragment), 30, "the registry-down line")
        timings["registry down"] = time.monotonic() - began
        time.sleep(3)  # a few starts backed off meanwhile
        attempts = failed_starts(daemon, down_fragment)
        assert 1 <= len(attempts) <= 6, attempts  # backoff 0.5 s doubling to 2 s: not one per 0.1 s step
        assert len(warnings_with(daemon, down_fragment)) == 1, "the same failure again is logged at info"
        assert list(replicas(docker_client, service_name)) == [first_id]

        pushed.registry.start()
        back = time.monotonic()
        wait_for(lambda: daemon.status()["replicas"]["ready"] >= 2, 60, "a replica of v2 after the registry returned")
        timings["back after the registry returned"] = time.monotonic() - back
    finally:
        traffic.stop_all()
        if not pushed.registry.running:
            pushed.registry.start()

    # v2 could be pulled at last: the rolling update replaced the first replica (drained, once
    # two of v2 were ready), and not before.
    wait_for(lambda: first_id not in replicas(docker_client, service_name), 60, "the rollout to replace v1")
    running = replicas(docker_client, service_name)
    assert len(running) == 2
    assert all(attrs["Config"]["Image"] == pushed.pinned("v2") for attrs in running.values()), \
        "the new version, pinned by its own digest"
    traffic.assert_served(at_least=50)
    assert daemon.metric("autoscaler_replica_start_failures_total", reason="create_failed") >= len(steps) + 1
    assert daemon.stop() == 0
    log = daemon.log()
    assert "Traceback" not in log, log[-3000:]
    print(f"\nfirst replica ready {first_ready_seconds:.1f}s after start (pull included); each bad pull's line after "
          + ", ".join(f"{k}: {v:.1f}s" for k, v in timings.items()) + f"; requests {traffic.counts()}")


def test_a_wrong_password_from_a_credential_helper_is_one_line_and_backs_off(
    docker_client, service_name: str, pushed: Pushed, run_daemon, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    # The credentials come from a helper the config file names for this registry, as
    # docker-credential-ecr-login would: the Docker CLI's way, and so the daemon's.
    helpers = tmp_path / "bin"
    helpers.mkdir()
    calls = tmp_path / "helper-calls"
    helper = helpers / "docker-credential-autoscalertest"
    helper.write_text(f"""#!/bin/sh
read -r server
echo "$1 $server" >> {calls}
printf '{{"ServerURL": "%s", "Username": "tester", "Secret": "wrong-password"}}' "$server"
""")
    helper.chmod(0o755)
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(f'{{"credHelpers": {{"{pushed.registry.address}": "autoscalertest"}}}}')

    metrics_port = free_port()
    # "always": the engine may have v1 already (the other test pulled it); the registry decides.
    daemon = run_daemon(config_text(service_name, pushed.image("v1"), free_port(), metrics_port, pull="always"),
                        metrics_port, env={"DOCKER_CONFIG": str(config), "PATH": f"{helpers}:{os.environ['PATH']}"})
    fragment = "unauthorized: authentication required"
    wait_for(lambda: warnings_with(daemon, fragment), 30, "the wrong-password line")
    time.sleep(3)

    (line,) = warnings_with(daemon, fragment)
    assert f"pull of {pushed.image('v1')} failed: unauthorized: authentication required ({pushed.registry.address} " \
           "refused access: wrong or missing credentials" in line, line
    assert "next start in" in line
    attempts = failed_starts(daemon, fragment)
    assert 2 <= len(attempts) <= 6, attempts  # backed off: 0.5, 1, 2, 2 s
    assert daemon.status()["start_backoff"]["failures"] >= len(attempts)
    assert replicas(docker_client, service_name) == {}
    assert f"get {pushed.registry.address}" in calls.read_text(), "the helper gave the credentials"
    assert calls.read_text().count("get") >= len(attempts), "asked again for each pull"
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_a_new_image_behind_a_moving_tag_is_rolled_out(
    docker_client, service_name: str, pushed: Pushed, run_daemon  # type: ignore[no-untyped-def]
) -> None:
    """pull = "always": the tag is pulled again every pull_check_seconds; when it names other
    bytes, that is a new version, rolled out under load with no failed request."""
    repository_name = pushed.repository.split("/", 1)[1]
    tag = f"moving-{service_name}"
    push(docker_client, pushed.docker_config, APP_IMAGE, pushed.image(tag))
    first = f"{pushed.repository}@{pushed.registry.manifest_digest(repository_name, tag)[0]}"
    lb_port, metrics_port = free_port(), free_port()
    text = config_text(service_name, pushed.image(tag), lb_port, metrics_port, min_replicas=2, pull="always")
    daemon = run_daemon(text.replace('pull = "always"', 'pull = "always"\npull_check_seconds = 2'), metrics_port,
                        env={"DOCKER_CONFIG": str(pushed.docker_config)})
    wait_for(lambda: daemon.status()["replicas"]["ready"] == 2, 90, "2 replicas of the tag's first image")
    assert {a["Config"]["Image"] for a in replicas(docker_client, service_name).values()} == {first}
    traffic = Traffic(lb_port, timeout_seconds=10)
    traffic.start(workers=2, cpu_ms=1, pause_seconds=0.02)
    try:
        time.sleep(3)  # checks that find the same digest change nothing
        assert {a["Config"]["Image"] for a in replicas(docker_client, service_name).values()} == {first}
        # The tag moves in the registry: other bytes (one label more) under the same name.
        push(docker_client, pushed.docker_config, APP_IMAGE, pushed.image(tag), label=f"moved-{service_name}")
        second = f"{pushed.repository}@{pushed.registry.manifest_digest(repository_name, tag)[0]}"
        assert second != first

        def rolled_out() -> bool:
            running = replicas(docker_client, service_name)
            return (len(running) == 2 and {a["Config"]["Image"] for a in running.values()} == {second}
                    and daemon.status()["replicas"] == {"ready": 2, "starting": 0, "draining": 0})

        wait_for(rolled_out, 120, "the new image behind the tag rolled out")
    finally:
        traffic.stop_all()
    traffic.assert_served(at_least=100)
    log = daemon.log()
    assert f"a new image behind {pushed.image(tag)}: {second}" in log and "rolling out version" in log
