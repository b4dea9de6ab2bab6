"""The reconciler's state: one object, created by the controller and handed to each part.

`ServiceState` is what only this process knows of a service (the world holds the rest): the
replicas it tracks, the policy's history, the count to keep, the start backoff and the work in
flight. `InFlight` owns the work in flight, with a small API, as the ReplicaSet controller's
expectations do. `Context` is what every part uses to speak: the service's name, telemetry,
clocks, the conditions `status` shows, whether this is a dry run. `record_failure` is the one
way a failed replica is reported, counted and backed off.
"""

from __future__ import annotations

import logging
from bisect import insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from autoscaler.engine import backoff as bo
from autoscaler.engine.health import ServiceHealth
from autoscaler.engine.ports import ContainerTemplate, Replica, ReplicaSpec
from autoscaler.engine.replicas import Tracked
from autoscaler.model import History, TimedValue
from autoscaler.telemetry import Telemetry

log = logging.getLogger("autoscaler.engine")


class LeaseLost(Exception):
    """This daemon no longer holds the service's lease: the pass stops before its next change."""


def _always_held() -> None:
    pass


@dataclass(frozen=True)
class Context:
    name: str
    network: str  # the service's network: replicas are found and registered by their address on it
    telemetry: Telemetry
    health: ServiceHealth
    clock: Callable[[], float]  # monotonic: every deadline and period
    wall_clock: Callable[[], float]  # epoch: creation times, what `status` shows
    dry_run: bool = False
    # Raises LeaseLost unless this daemon still holds the service's lease: every change to the
    # world (a start, a removal, a membership change, a count) checks it first.
    fence: Callable[[], None] = _always_held

    def extra(self, **fields: object) -> dict[str, object]:
        return {"service": self.name, **fields}

    def once(self, topic: str, level: int, message: str, *args: object, **extra: object) -> None:
        """Logs a condition once per change (see ServiceHealth.once)."""
        self.health.once(log, topic, level, message, *args, extra=self.extra(**extra))

    def note(self, message: str, *args: object) -> None:
        """A repair step: info, or in a dry run what would be done (debug)."""
        replica = args[0] if args else None
        if self.dry_run:
            log.debug("[dry run] would do: " + message, *args, extra=self.extra(replica=replica))
        else:
            log.info(message, *args, extra=self.extra(replica=replica))


class InFlight:
    """Work in flight. A start counts as a replica from the moment it is asked for until its
    outcome is collected, so that no pass starts the same replica twice; a scale-up start that
    was decided but not submitted (held back by the backoff) keeps its decision time for the
    rate rules; a removal is remembered until the replica is no longer listed; a server delete
    that connections hold up is remembered with its first try."""

    def __init__(self) -> None:
        self._starts: set[str] = set()
        self._decided: list[float] = []
        self._removals: set[str] = set()  # replica names
        self._deletions: dict[str, float] = {}  # server name -> first try

    # starts
    def expect_start(self, name: str) -> None:
        self._starts.add(name)

    def start_observed(self, name: str) -> None:
        self._starts.discard(name)

    def starting(self, name: str) -> bool:
        return name in self._starts

    @property
    def starts(self) -> int:
        return len(self._starts)

    # decided scale-up starts, oldest first
    def decide_starts(self, count: int, at: float) -> None:
        self._decided.extend([at] * count)

    def next_decided(self) -> float | None:
        return self._decided.pop(0) if self._decided else None

    def drop_decided(self, count: int) -> list[float]:
        """The newest `count` decided starts will not happen; their decision times."""
        dropped = []
        for _ in range(max(0, min(count, len(self._decided)))):
            dropped.append(self._decided.pop())
        return dropped

    @property
    def decided(self) -> int:
        return len(self._decided)

    # removals
    def expect_removal(self, name: str) -> None:
        self._removals.add(name)

    def removing(self, name: str) -> bool:
        return name in self._removals

    def forget_removals(self, listed: set[str]) -> None:
        self._removals &= listed

    # server deletions held up by connections
    def deletion_started(self, name: str, now: float) -> float:
        return self._deletions.setdefault(name, now)

    def deleting(self, name: str) -> bool:
        return name in self._deletions

    def deletion_done(self, name: str) -> None:
        self._deletions.pop(name, None)

    def forget_deletions(self, servers: Iterable[str]) -> None:
        present = set(servers)
        self._deletions = {n: t for n, t in self._deletions.items() if n in present}


@dataclass
class Rollout:
    """What new replicas are made from, and the rolling update toward it."""

    spec: ReplicaSpec  # new replicas are made from this
    previous: ReplicaSpec | None = None  # the version being replaced (the rollback target)
    failures: int = 0  # replicas of `spec` that failed while it replaced `previous`
    rolled_back: frozenset[str] = frozenset()  # versions the circuit breaker stopped
    in_progress: bool = False  # replicas of another version run


@dataclass
class ServiceState:
    started_at: float  # controller clock, when this process began looking at the service
    tracked: dict[str, Tracked] = field(default_factory=dict)
    in_flight: InFlight = field(default_factory=InFlight)
    history: History = field(default_factory=History)
    backoff: bo.Backoff = field(default_factory=bo.Backoff)
    count_to_keep: int | None = None  # None until the first look; lost replicas are replaced up to it
    # The container the replicas copy, as read at set-up or the last reload (None: no template).
    template: ContainerTemplate | None = None
    rollout: Rollout | None = None  # None until the first pass that starts or counts replicas

    def track(self, replica: Replica, now: float) -> Tracked:
        tracked = self.tracked.get(replica.name)
        if tracked is None:
            tracked = self.tracked[replica.name] = Tracked(replica.id, now, replica.created_at_seconds,
                                                           version=replica.version)
        return tracked

    def forget(self, listed: set[str]) -> None:
        """Forgets what is gone, so that memory stays bounded as replicas come and go."""
        for name in [n for n in self.tracked if n not in listed and not self.in_flight.starting(n)]:
            del self.tracked[name]
        self.in_flight.forget_removals(listed)

    def take_back_start(self, decided_at: float) -> None:
        """A scale-up start that failed or will not happen: out of the rate rules' history (at
        the time it was counted, so it leaves their periods with its decision), and the count
        to keep drops back to what really started."""
        self.history = uncount_scale_up(self.history, decided_at)
        if self.count_to_keep is not None:
            self.count_to_keep -= 1


def uncount_scale_up(history: History, decided_at: float) -> History:
    events = list(history.scale_up_events)
    insort(events, TimedValue(decided_at, -1), key=lambda e: e.at_seconds)
    return history._replace(scale_up_events=tuple(events))


@dataclass(frozen=True)
class Failure:
    """A replica that failed, as one report."""

    replica: str
    reason: str  # a metric label and a log field: exited, unhealthy, oom_killed, create_failed, ...
    message: str  # one line, e.g. "replica web-1 failed to start (exited): exit code 3, ..."
    never_ready: bool  # a start failure, not a failure of a replica that served
    counts: bool  # toward the start backoff
    counted_at: float | None = None  # the scale-up decision of a start that never served
    then: str = "replacing it"  # what happens next, when it does not count
    key: str | None = None  # the same key as the last failure is logged at info (default: reason)


def record_failure(
    ctx: Context, state: ServiceState, failure: Failure, now: float,
    backoff_initial_seconds: float, backoff_max_seconds: float,
) -> None:
    """Counts, takes back the scale-up it belonged to, backs off starts and logs one line: the
    first of a kind at warning, the same again at info (the first one said it all)."""
    metric = ctx.telemetry.start_failures if failure.never_ready else ctx.telemetry.replica_failures
    metric.labels(ctx.name, failure.reason).inc()
    if failure.counted_at is not None and failure.never_ready:
        state.take_back_start(failure.counted_at)
    message = failure.message
    ctx.health.last_failure = message
    ctx.health.last_failure_at = ctx.wall_clock()
    if failure.counts:
        state.backoff = bo.after_failure(state.backoff, now, message, backoff_initial_seconds, backoff_max_seconds)
        message += (f"; next start in {bo.seconds_until_retry(state.backoff, now):g}s"
                    f" (failure {state.backoff.failures} in a row)")
    else:
        message += f"; {failure.then}"
    key = failure.key or failure.reason
    level = logging.INFO if ctx.health.notes.get("failure-reason") == key else logging.WARNING
    ctx.health.notes["failure-reason"] = key
    log.log(level, "%s", message, extra=ctx.extra(replica=failure.replica, reason=failure.reason))
