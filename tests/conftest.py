"""Shared fixtures. Integration tests need a Docker engine and the project's images.

In CI (CI=true) a missing engine or image fails the run loudly; locally those tests skip with
the reason. Everything a test creates carries its unique service name as a label and is removed
by that label afterwards, also when the test fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from helpers import remove_service_objects

# testcontainers would pull its Ryuk reaper image, and no registry is reachable here; our
# fixtures clean up by label instead.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

APP_IMAGE = "autoscaler-demo-app:latest"
LB_IMAGE = "autoscaler-haproxy:latest"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no engine" here
        _unavailable(f"no Docker engine reachable ({exc.__class__.__name__}); start dockerd first")
    for image in (APP_IMAGE, LB_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            _unavailable(f"image {image} is missing; run deploy/build-images.sh")
    yield client
    client.close()


@pytest.fixture
def service_name(docker_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"t{uuid.uuid4().hex[:8]}"
    remove_service_objects(docker_client, name)
    yield name
    remove_service_objects(docker_client, name)
