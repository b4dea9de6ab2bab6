"""Helpers shared by the integration tests."""

from __future__ import annotations

import socket


def remove_service_objects(client, service: str) -> None:  # type: ignore[no-untyped-def]
    """Removes every container and network labelled with this service name."""
    for container in client.containers.list(all=True, filters={"label": f"autoscaler.service={service}"}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": f"autoscaler.service={service}"}):
        network.remove()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
