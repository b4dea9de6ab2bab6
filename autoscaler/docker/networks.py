"""The service's user-defined bridge network on one engine (Networks)."""

from __future__ import annotations

import logging

import docker.errors

from autoscaler.docker.engine import DockerEngine
from autoscaler.docker.labels import LABEL_MANAGED, LABEL_SERVICE, is_owned
from autoscaler.engine.ports import BackendError

log = logging.getLogger("autoscaler.docker")


class DockerNetworks:
    def __init__(self, engine: DockerEngine, driver: str = "bridge", attachable: bool = False) -> None:
        self._engine = engine
        self._driver = driver
        self._attachable = attachable

    def ensure_network(self, service: str, name: str) -> bool:
        """Creates the service's network if it does not exist; returns whether it created it."""
        engine = self._engine
        found = engine.call("network_list", service, engine.api.networks, names=[name])
        if any(n.get("Name") == name for n in found):
            return False
        log.info("creating %snetwork %s", "attachable overlay " if self._driver == "overlay" else "", name,
                 extra={"service": service})
        engine.call(
            "network_create", service, engine.change_api.create_network, name,
            driver=self._driver, attachable=self._attachable or None, check_duplicate=True,
            labels={LABEL_MANAGED: "true", LABEL_SERVICE: service},
        )
        return True

    def remove_network(self, service: str, name: str) -> None:
        """Removes a network this daemon created, if it is ours and nothing uses it any more."""
        engine = self._engine
        for network in engine.call("network_list", service, engine.api.networks, names=[name]):
            if network.get("Name") == name and is_owned(network.get("Labels"), service):
                try:
                    engine.call("network_remove", service, engine.change_api.remove_network, network["Id"])
                except (BackendError, docker.errors.NotFound) as exc:
                    log.warning("could not remove network %s: %s", name, exc, extra={"service": service})
