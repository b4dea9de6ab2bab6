"""The parts a ServiceController is composed of, made from the ports that serve them.

Each function returns a factory the controller calls with the state it created, so that every
part shares the one state object. The daemon (daemon.py) chooses which ones a service gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from autoscaler.config import ExternalMetric
from autoscaler.engine.containers import ContainerSet
from autoscaler.engine.controller import GateFactory, TargetFactory
from autoscaler.engine.membership import Membership
from autoscaler.engine.operations import Operations
from autoscaler.engine.orchestrated import OrchestratedCount
from autoscaler.engine.ports import (
    ContainerRuntime,
    ExternalSource,
    LoadBalancer,
    LoadBalancerAPI,
    LoadBalancerHost,
    OrchestratedService,
)
from autoscaler.sources.prometheus import PrometheusMetric
from autoscaler.sources.redis import RedisMetric
from autoscaler.engine.state import Context, ServiceState
from autoscaler.engine.target import Release


def containers(runtime: ContainerRuntime, operations: Operations) -> TargetFactory:
    """Containers the engine starts and stops itself."""
    def make(ctx: Context, state: ServiceState, release: Release) -> ContainerSet:
        return ContainerSet(ctx, state, runtime, operations, release)
    return make


def orchestrated(service: OrchestratedService) -> TargetFactory:
    """A count an orchestrator keeps."""
    def make(ctx: Context, state: ServiceState, release: Release) -> OrchestratedCount:
        return OrchestratedCount(ctx, state, service, release)
    return make


def load_balancer(
    host: LoadBalancerHost,
    lb_factory: Callable[[LoadBalancer], LoadBalancerAPI],
    sleep: Callable[[float], None] = time.sleep,
) -> GateFactory:
    """A load balancer in front of the replicas, run by `host`, changed through `lb_factory`'s API."""
    def make(ctx: Context, state: ServiceState) -> Membership:
        return Membership(ctx, state, host, lb_factory, sleep)
    return make


def external_source(metric: ExternalMetric) -> ExternalSource:
    """The source module of an external metric: a PromQL query, or a Redis key's length."""
    if metric.prometheus is not None:
        return PrometheusMetric(metric.name, metric.prometheus)
    assert metric.redis is not None, "config validation: exactly one source"
    return RedisMetric(metric.name, metric.redis)
