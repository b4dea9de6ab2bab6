"""The scale target, as the engine sees it: what keeps N replicas.

Two implementations: `ContainerSet` (containers.py), containers the engine itself starts and
stops, and `OrchestratedCount` (orchestrated.py), a count an orchestrator keeps. The controller
drives either through this protocol and never asks which one it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from autoscaler.config import ServiceConfig
from autoscaler.engine.ports import (
    ContainerFields,
    ContainerTemplate,
    HealthcheckSpec,
    Replica,
    ReplicaSpec,
    ServerStat,
)
from autoscaler.engine.replicas import ReplicaView, Tracked
from autoscaler.model import Decision

# Takes a replica out of the gate (the load balancer) before the target removes it.
Release = Callable[[ServiceConfig, str, float], None]

# What a target says of a listed replica before the gate looks at it: "alive" (the gate takes
# the next step), "starting" (on its way, nothing to step), "gone" (reported or done with).
Triage = Literal["alive", "starting", "gone"]


def replica_spec(service: str, network: str, config: ServiceConfig,
                 template: ContainerTemplate | None = None) -> ReplicaSpec:
    """What every new replica of the service is made from: the config, on top of the template
    (a container the user runs) when the service names one."""
    check = config.healthcheck
    image = config.image or (template.image if template is not None else "")
    assert image, "config validation: an image or a template, and a template is resolved before a start"
    return ReplicaSpec(
        service=service,
        image=image,
        port=config.port,
        network=network,
        cpu_limit_cores=config.cpu_limit,
        memory_limit_bytes=config.memory_limit,
        command=tuple(config.command),
        # compose's order: env_file first, environment on top.
        env={**config.file_env(), **config.env},
        fields=ContainerFields(
            volumes=tuple(config.volumes),
            networks=tuple(config.network_aliases().items()),
            labels=tuple(config.labels.items()),
            user=config.user,
            read_only=config.read_only,
            tmpfs=tuple(config.tmpfs),
            cap_add=tuple(config.cap_add),
            cap_drop=tuple(config.cap_drop),
            extra_hosts=tuple(config.extra_hosts),
            stop_signal=config.stop_signal,
            log_driver=config.logging.driver if config.logging is not None else None,
            log_options=tuple(config.logging.options.items()) if config.logging is not None else (),
        ),
        template=template,
        healthcheck=None if check is None else HealthcheckSpec(
            tuple(check.test), check.interval_seconds, check.timeout_seconds, check.retries,
            check.start_period_seconds,
        ),
        pull=config.pull,
        pull_timeout_seconds=config.pull_timeout_seconds,
    )


class ScaleTarget(Protocol):
    def resolve_template(self, config: ServiceConfig) -> ContainerTemplate | None: ...
    def prepare(self, config: ServiceConfig, spec: ReplicaSpec) -> bool: ...
    def remove_created(self) -> None: ...
    def list_replicas(self) -> list[Replica]: ...
    def collect(self, config: ServiceConfig, now: float) -> list[tuple[Replica, Tracked]]: ...
    def triage(self, config: ServiceConfig, replica: Replica, tracked: Tracked, now: float, first_failure: bool
               ) -> tuple[Triage, bool]: ...
    def retry_removal(self, config: ServiceConfig, replica: Replica) -> None: ...
    def unhealthy(self, config: ServiceConfig, replica: Replica, tracked: Tracked, server: ServerStat | None,
                  now: float, why: str) -> ReplicaView | None: ...
    def drained(self, config: ServiceConfig, name: str, tracked: Tracked) -> None: ...
    def read_count(self, config: ServiceConfig) -> None: ...
    def first_count(self, active: int) -> int: ...
    def apply(self, decision: Decision, now: float) -> None: ...
    def converge(self, config: ServiceConfig, views: list[ReplicaView], can_retire: bool, now: float
                 ) -> list[ReplicaView]: ...
    def remove(self, config: ServiceConfig, view: ReplicaView, tracked: Tracked, force: bool) -> None: ...
    def watch(self, now: float) -> list[Replica]: ...
