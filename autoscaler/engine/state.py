"""The state the reconciler's parts share (membership.py, acting.py), declared once.

ServiceController (controller.py) owns and initialises all of it; the parts are mixins over it,
one file per concern, so that each reads on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from autoscaler.config import ServiceConfig
from autoscaler.docker.backend import ReplicaSpec
from autoscaler.engine import backoff as bo
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.replicas import Tracked
from autoscaler.model import History
from autoscaler.telemetry import Telemetry

if TYPE_CHECKING:
    from autoscaler.engine.controller import LoadBalancerAPI, ReplicaBackend
    from autoscaler.engine.operations import Operations


class ReconcilerState:
    name: str
    dry_run: bool
    network: str
    health: ServiceHealth
    _backend: "ReplicaBackend"
    _telemetry: Telemetry
    _tracked: dict[str, Tracked]
    _removing: dict[str, str]
    _deleting: dict[str, float]
    _expected_starts: set[str]
    _counted: list[float]
    _ops: "Operations"
    _history: History
    _backoff: bo.Backoff
    _spec: int | None
    _orchestrated_count: int | None
    _watch_leaving_until: float
    _started_at: float
    _clock: Callable[[], float]
    _wall_clock: Callable[[], float]

    @property
    def _lb(self) -> "LoadBalancerAPI | None": ...

    def _extra(self, **fields: object) -> dict[str, object]: ...

    def _once(self, topic: str, level: int, message: str, *args: object, **extra: object) -> None: ...

    def replica_spec(self, config: ServiceConfig | None = None) -> ReplicaSpec: ...
