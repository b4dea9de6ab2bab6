"""What a replica is doing, as the reconciler sees it: value types and pure rules.

A replica moves through starting -> ready -> draining -> removed, or failed. Its state is read
back from the world (the container's state, its server's state in HAProxy); `Tracked` holds the
little that only this process knows (when it first saw the replica, whether it ever served).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union

from autoscaler.engine.ports import BackendStat, ExitReport, Replica, ServerStat


@dataclass(frozen=True)
class ReplicaView:
    replica: Replica
    state: str  # ready | starting | draining
    server: ServerStat | None


@dataclass(frozen=True)
class Unhealthy:
    """A replica out of rotation for longer than its startup timeout allows."""

    why: str  # e.g. "check L4CON", "paused"


# What a gate's step says of a replica besides a view: "gone" (not shown this pass: being
# removed, or its drain is finishing), "drained" (out of the load balancer: the target stops it).
Step = Union[ReplicaView, Unhealthy, Literal["gone", "drained"]]


@dataclass(frozen=True)
class Observation:
    views: tuple[ReplicaView, ...]
    backend: BackendStat | None
    in_flight: int = 0  # starts not finished yet
    pending: int = 0  # starts decided but held back (backoff, or no load balancer yet)

    @property
    def active(self) -> list[ReplicaView]:
        """Replicas that count toward the current size: everything not on its way out."""
        return [v for v in self.views if v.state != "draining"]


@dataclass
class Tracked:
    """What this process knows of one replica beyond what the world shows."""

    container_id: str
    first_seen_at: float  # clock: when this controller started it or first saw it
    created_at_wall: float  # epoch: the container's creation
    started_by_us: bool = False
    counted_at: float | None = None  # the scale-up decision this start belongs to (rate rules)
    registered_at: float | None = None
    ready_since: float | None = None
    unhealthy_since: float | None = None  # was ready (or paused), now out of rotation
    drain_deadline: float | None = None
    failed: bool = False
    version: str | None = None  # of what it was made from (Replica.version)


def classify_exit(report: ExitReport, was_ready: bool) -> tuple[str, bool]:
    """(reason code, whether it counts toward the start backoff) for a replica that stopped.

    A replica that never became ready failed to start, whatever its exit code. One that served
    and was then stopped from outside (SIGTERM: code 0 or 143; SIGKILL without OOM: 137, as an
    engine shutdown or `docker stop`/`kill` does) is replaced without a penalty.
    """
    if report.oom_killed:
        return "oom_killed", True
    if not was_ready:
        return "exited", True
    if report.exit_code in (0, 143, 137):
        return "stopped", False
    return "crashed", True


def timed_out(tracked: Tracked, timeout_seconds: float, now: float, now_wall: float) -> bool:
    """Whether a replica out of rotation has had timeout_seconds to get healthy.

    A starting one counts from its creation and from when this controller first saw it (an
    adopted replica gets a fresh chance); one that served counts from when it stopped.
    """
    if tracked.unhealthy_since is not None:
        return now - tracked.unhealthy_since > timeout_seconds
    seen = tracked.registered_at if tracked.registered_at is not None else tracked.first_seen_at
    return (now - tracked.first_seen_at > timeout_seconds and now - seen > timeout_seconds
            and now_wall - tracked.created_at_wall > timeout_seconds)


def in_transition(tracked: Tracked) -> bool:
    """Waiting for its check (new, re-registered, or back from a pause), or draining."""
    if tracked.failed:
        return False
    return tracked.drain_deadline is not None or tracked.ready_since is None or tracked.unhealthy_since is not None


def choose_victims(active: Sequence[ReplicaView], count: int) -> list[ReplicaView]:
    """Replicas that serve nobody first (as a ReplicaSet deletes unready pods first), then the
    fewest current sessions; ties go to the newest replica (least warmed up)."""
    def key(view: ReplicaView) -> tuple[int, int, float]:
        sessions = view.server.sessions_current if view.server else 0
        return (0 if view.state != "ready" else 1), sessions, -view.replica.created_at_seconds

    return sorted(active, key=key)[:max(0, count)]
