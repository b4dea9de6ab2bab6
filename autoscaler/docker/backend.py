"""One Docker engine's parts, made from one connection: the replicas' containers and their
images, the load balancer's container, the network and the metrics. Each part implements one of
the engine's ports (autoscaler/engine/ports.py); this only builds them together."""

from __future__ import annotations

import docker

from autoscaler.docker.containers import DockerContainers
from autoscaler.docker.engine import POOL_SIZE, DockerEngine
from autoscaler.docker.images import DockerImages
from autoscaler.docker.loadbalancer import AdminMount, DockerLoadBalancers
from autoscaler.docker.metrics import DockerMetrics
from autoscaler.docker.networks import DockerNetworks
from autoscaler.instrument import NULL_OBSERVER, CallObserver


class DockerBackend:
    def __init__(
        self,
        engine: DockerEngine | docker.DockerClient,
        observer: CallObserver = NULL_OBSERVER,
        stats_workers: int = POOL_SIZE,
        access: str = "published",
        admin_socket_dir: str | None = None,
        cgroups: bool | None = None,
    ) -> None:
        self.engine = engine if isinstance(engine, DockerEngine) else DockerEngine(engine, observer)
        self.admin = AdminMount(self.engine, admin_socket_dir)
        self.images = DockerImages(self.engine)
        self.containers = DockerContainers(self.engine, self.images)
        self.load_balancers = DockerLoadBalancers(self.engine, self.admin, access)
        self.networks = DockerNetworks(self.engine)
        self.metrics = DockerMetrics(self.engine, observer, stats_workers, cgroups)

    @classmethod
    def from_env(
        cls,
        observer: CallObserver = NULL_OBSERVER,
        access: str = "published",
        admin_socket_dir: str | None = None,
    ) -> DockerBackend:
        return cls(DockerEngine.from_env(observer), observer, access=access, admin_socket_dir=admin_socket_dir)

    @property
    def client(self) -> docker.DockerClient:
        return self.engine.client

    def close(self) -> None:
        self.metrics.close()
        self.images.close()
        self.engine.close()
