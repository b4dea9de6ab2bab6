"""`autoscaler down`: removes what the daemon made for its services (replicas, load balancer,
the network it created), for example before `docker-compose down`, whose networks our replicas
would otherwise keep busy ("network ... has active endpoints").

Only with the lease: while a daemon runs for a service, `down` refuses (a running daemon would
start the replicas again). Replicas get their stop signal and `stop_timeout_seconds`, as on a
scale-in; only containers and networks labelled as this daemon's own for the service are
touched.
"""

from __future__ import annotations

import logging

from autoscaler.config import Settings
from autoscaler.docker.backend import DockerBackend
from autoscaler.docker.lease import Lease
from autoscaler.engine.ports import BackendError

log = logging.getLogger("autoscaler")


class DownError(Exception):
    """`down` could not remove a service's objects; the message says which and why."""


def down(settings: Settings, services: list[str], backend: DockerBackend) -> list[str]:
    """Removes each service's replicas, load balancer and network; returns one line per
    service saying what went. Raises DownError (nothing of that service removed) when a daemon
    holds its lease or the engine does not answer."""
    lines = []
    for name in services:
        service = settings.services[name]
        if service.backend == "swarm":
            raise DownError(f"service {name!r}: a Swarm service is removed with `docker service rm` "
                            f"(and its load balancer autoscaler-{name}-lb)")
        network = settings.network_for(name)
        lease = Lease(backend.client, name, service.lease_image)
        try:
            holder = lease.try_acquire()
        except BackendError as exc:
            raise DownError(f"service {name!r}: {exc}") from exc
        if holder is not None:
            raise DownError(f"service {name!r}: a daemon is running for it ({holder}): stop it first, "
                            "or it would start the replicas again")
        try:
            replicas = backend.containers.list_replicas(name, network)
            for replica in replicas:
                backend.containers.remove_replica(name, replica.id, service.stop_timeout_seconds)
            lb = backend.load_balancers.load_balancer_container(name)
            if lb is not None:
                backend.load_balancers.remove_load_balancer(name, lb.id)
            backend.networks.remove_network(name, network)
        except BackendError as exc:
            raise DownError(f"service {name!r}: {exc}") from exc
        finally:
            lease.release()
        lines.append(f"{name}: removed {len(replicas)} replica(s)" + (", the load balancer" if lb is not None else "")
                     + f"; network {network} removed if it was the daemon's and unused")
    return lines
