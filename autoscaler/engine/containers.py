"""The scale target of containers the engine starts and stops itself (over ContainerRuntime).

Like a ReplicaSet: the decided count becomes the count to keep; each pass starts what is
missing (as operations in other threads, limited by the start backoff) or returns the surplus
to retire; a replica that died is reported and replaced up to the count to keep. What to start
or retire is a pure plan (`plan`); this class carries it out. Outcomes of operations are
collected by the next step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from autoscaler.config import ServiceConfig
from autoscaler.engine import backoff as bo
from autoscaler.engine.operations import Operations, Outcome
from autoscaler.engine.ports import (
    BackendError,
    ContainerRuntime,
    ContainerTemplate,
    ExitReport,
    Replica,
    ReplicaSpec,
    ServerStat,
)
from autoscaler.engine.replicas import ReplicaView, Tracked, choose_victims, classify_exit
from autoscaler.engine.state import (
    Context,
    Failure,
    LeaseLost,
    Rollout,
    ServiceState,
    record_failure,
    uncount_scale_up,
)
from autoscaler.engine.target import Release, Triage, replica_spec
from autoscaler.model import Decision
from autoscaler.policy.evaluate import record_scale

log = logging.getLogger("autoscaler.engine")

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    start: int  # replicas to start now
    held_back: int  # wanted, but held back by the start backoff
    drop_decided: int  # decided scale-up starts that will not happen (the count went down first)
    retire: tuple[ReplicaView, ...]  # the surplus, in the order to take it out
    outdated: int = 0  # replicas of another version still active (a rollout in progress)


def is_outdated(view: ReplicaView, version: str | None) -> bool:
    """Made from something else than the current version (None on either side: not known,
    counted as current, so that replicas from before versions are not rolled)."""
    return version is not None and view.replica.version is not None and view.replica.version != version


def plan(
    views: Sequence[ReplicaView],
    count_to_keep: int,
    starts_in_flight: int,
    decided_starts: int,
    backoff: bo.Backoff,
    tracked: Mapping[str, Tracked],
    can_retire: bool,
    now: float,
    version: str | None = None,
    max_surge: int = 1,
    max_unavailable: int = 0,
) -> Plan:
    """What to start or retire to move toward the count to keep, and replicas of another
    version over to `version` (a Deployment's rolling update: at most max_surge above the count
    to keep, at most max_unavailable ready ones below it). Pure."""
    active = [v for v in views if v.state != "draining"]
    count = len(active) + starts_in_flight
    drop = max(0, decided_starts - max(0, count_to_keep - count))
    outdated = [v for v in active if is_outdated(v, version)]
    if outdated:
        return _rolling(active, outdated, count_to_keep, starts_in_flight, drop, backoff, tracked, can_retire, now,
                        max_surge, max_unavailable)
    if count < count_to_keep:
        wanted = count_to_keep - count
        allowed = bo.starts_allowed(backoff, now, wanted, _on_their_way(active, starts_in_flight, tracked))
        return Plan(allowed, wanted - allowed, drop, ())
    if count > count_to_keep and can_retire:
        return Plan(0, 0, drop, tuple(choose_victims(active, count - count_to_keep - starts_in_flight)))
    return Plan(0, 0, drop, ())


def _on_their_way(active: Sequence[ReplicaView], starts_in_flight: int, tracked: Mapping[str, Tracked]) -> int:
    return starts_in_flight + sum(
        1 for v in active
        if v.state == "starting" and tracked[v.replica.name].started_by_us and tracked[v.replica.name].ready_since is None
    )


def _rolling(
    active: list[ReplicaView],
    outdated: list[ReplicaView],
    count_to_keep: int,
    starts_in_flight: int,
    drop: int,
    backoff: bo.Backoff,
    tracked: Mapping[str, Tracked],
    can_retire: bool,
    now: float,
    max_surge: int,
    max_unavailable: int,
) -> Plan:
    """One step of a rolling update. New replicas (and every start in flight) are of the
    current version; an outdated one is retired only while enough others are ready, so that
    with max_unavailable 0 the ready count never drops below the count to keep."""
    total = len(active) + starts_in_flight
    current = total - len(outdated)
    retire: list[ReplicaView] = []
    if can_retire:
        ready = sum(1 for v in active if v.state == "ready")
        # Outdated replicas that serve nobody go first: they take nothing from availability.
        for view in outdated:
            if view.state != "ready" and total - len(retire) > count_to_keep - max_unavailable:
                retire.append(view)
        spare = ready - (count_to_keep - max_unavailable)
        for view in sorted((v for v in outdated if v.state == "ready"), key=lambda v: -v.replica.created_at_seconds):
            if spare <= 0:
                break
            retire.append(view)
            spare -= 1
    # Up to the count to keep in the new version, within the surge above it (what is retired
    # now drains: it no longer counts, as a terminating pod does not in a Deployment).
    wanted = max(0, min(count_to_keep - current, count_to_keep + max_surge - (total - len(retire))))
    allowed = bo.starts_allowed(backoff, now, wanted, _on_their_way(active, starts_in_flight, tracked)) if wanted else 0
    return Plan(allowed, wanted - allowed, drop, tuple(retire), len(outdated))


class ContainerSet:
    def __init__(
        self,
        ctx: Context,
        state: ServiceState,
        runtime: ContainerRuntime,
        operations: Operations,
        release: Release,
    ) -> None:
        self._ctx = ctx
        self._state = state
        self._runtime = runtime
        self._ops = operations
        self._release = release  # takes a failed replica out of the gate (the load balancer)
        # pull = "always": a tag -> the digest reference found behind it when it moved (the
        # version new replicas are made from), and when the tag was last checked.
        self._moved: dict[str, str] = {}
        self._checked_at = -float("inf")
        self._wanted: tuple[ServiceConfig, ContainerTemplate | None, dict[str, str], ReplicaSpec] | None = None

    def resolve_template(self, config: ServiceConfig) -> ContainerTemplate | None:
        """Reads the container the replicas copy (at set-up and on reload; a start never waits
        for it). Raises BackendError (Unusable: the config must change)."""
        template = config.template
        if template is None:
            return None
        compose = (template.compose_project, template.compose_service) \
            if template.compose_project is not None and template.compose_service is not None else None
        return self._runtime.read_template(self._ctx.name, template.container, compose)

    def prepare(self, config: ServiceConfig, spec: ReplicaSpec) -> bool:
        return False  # nothing to create: each replica is started as it is needed

    def remove_created(self) -> None:
        pass

    def list_replicas(self) -> list[Replica]:
        return self._runtime.list_replicas(self._ctx.name, self._ctx.network)

    def read_count(self, config: ServiceConfig) -> None:
        pass  # what runs is the count

    def first_count(self, active: int) -> int:
        return active + self._state.in_flight.starts

    def watch(self, now: float) -> list[Replica]:
        return []  # no replica leaves but those we retire

    # --- outcomes ---------------------------------------------------------------------------

    def collect(self, config: ServiceConfig, now: float) -> list[tuple[Replica, Tracked]]:
        """Takes in the outcomes of finished starts and removals; returns the replicas started."""
        started = []
        for outcome in self._ops.completed():
            if outcome.kind == "start":
                self._state.in_flight.start_observed(outcome.key)
                result = self._started(config, outcome, now)
                if result is not None:
                    started.append(result)
            elif outcome.kind == "check":
                self._image_checked(outcome)
            elif outcome.kind == "remove" and outcome.error is not None:
                unreachable = isinstance(outcome.error, BackendError) and outcome.error.unreachable
                log.log(logging.DEBUG if unreachable or isinstance(outcome.error, LeaseLost) else logging.WARNING,
                        "could not remove replica %s: %s (trying again)", outcome.key, outcome.error,
                        extra=self._ctx.extra(replica=outcome.key))
        return started

    def _started(self, config: ServiceConfig, outcome: Outcome, now: float) -> tuple[Replica, Tracked] | None:
        counted_at = outcome.context.get("counted_at")
        submitted_at = outcome.context.get("submitted_at", now)
        if outcome.error is not None:
            self._start_failed(config, outcome.key, counted_at, outcome.error, now)
            return None
        replica: Replica = outcome.value
        tracked = self._state.tracked[replica.name] = Tracked(
            replica.id, submitted_at, replica.created_at_seconds, started_by_us=True, counted_at=counted_at,
            version=replica.version,
        )
        log.info("started replica %s (%.2fs)", replica.name, now - submitted_at,
                 extra=self._ctx.extra(replica=replica.name))
        return replica, tracked  # an exit right away is found by the next pass, with its exit code and output

    def _start_failed(self, config: ServiceConfig, name: str, counted_at: float | None, exc: Exception,
                      now: float) -> None:
        if isinstance(exc, LeaseLost) or (isinstance(exc, BackendError) and exc.unreachable):
            # The engine went away (or the lease did), not the replica: the next pass that reaches
            # it, holding the lease, starts it.
            if counted_at is not None:
                self._state.take_back_start(counted_at)
            log.debug("replica %s not started: %s", name, exc, extra=self._ctx.extra(replica=name))
            return
        failure = Failure(name, "create_failed", f"replica {name} could not be started: {exc}", never_ready=True,
                          counts=True, counted_at=counted_at, key=str(exc))
        # Not a circuit-breaker failure: a start that could not happen (a pull that failed, a
        # registry down) is held by the start backoff and tried again; the breaker counts
        # replicas of the new version that ran and exited or never passed their check.
        record_failure(self._ctx, self._state, failure, now, config.backoff_initial_seconds, config.backoff_max_seconds)

    # --- repair -----------------------------------------------------------------------------

    def triage(self, config: ServiceConfig, replica: Replica, tracked: Tracked, now: float, first_failure: bool
               ) -> tuple[Triage, bool]:
        """A replica that exited (or was created and never started) is reported and removed.
        Returns the triage and whether it counted toward the start backoff."""
        never_started = replica.state == "created" and now - tracked.first_seen_at > config.startup_timeout_seconds
        if not (replica.terminated or never_started) or self._ctx.dry_run:
            return "alive", False
        try:
            report = self._runtime.exit_report(self._ctx.name, replica.id)
        except BackendError as exc:
            report = ExitReport(None, False, f"unreadable: {exc}", ())
        if replica.state == "created":
            reason, counts = "never_started", True
            detail = f"created but never started for {config.startup_timeout_seconds:g}s"
        else:
            reason, counts = classify_exit(report, tracked.ready_since is not None)
            detail = f"{replica.state}: {report.describe()}"
        # Many replicas found dead in one pass (an engine restart) are one failure, not many.
        self._fail(config, replica.name, tracked, now, reason, detail, counts=counts and first_failure)
        return "gone", counts

    def unhealthy(self, config: ServiceConfig, replica: Replica, tracked: Tracked, server: ServerStat | None,
                  now: float, why: str) -> ReplicaView | None:
        self._fail(config, replica.name, tracked, now, "unhealthy",
                   f"not healthy for {config.startup_timeout_seconds:g}s ({why})", counts=True)
        return None

    def _fail(self, config: ServiceConfig, name: str, tracked: Tracked, now: float, reason: str, detail: str,
              counts: bool) -> None:
        self._release(config, name, now)
        self._submit_removal(config, name, tracked.container_id, force=True)
        tracked.failed = True
        never_ready = tracked.ready_since is None
        what = "failed to start" if never_ready else "failed"
        failure = Failure(name, reason, f"replica {name} {what} ({reason}): {detail}", never_ready, counts,
                          counted_at=tracked.counted_at)
        if never_ready:
            self._new_version_failed(config, tracked.version, f"{reason}: {detail}", now)
        record_failure(self._ctx, self._state, failure, now, config.backoff_initial_seconds, config.backoff_max_seconds)

    def retry_removal(self, config: ServiceConfig, replica: Replica) -> None:
        if replica.name not in self._ops.in_flight("remove"):
            self._submit_removal(config, replica.name, replica.id, force=True)  # an earlier try failed

    def drained(self, config: ServiceConfig, name: str, tracked: Tracked) -> None:
        self._submit_removal(config, name, tracked.container_id, force=False)
        log.info("removed replica %s from the load balancer (drained); stopping it", name,
                 extra=self._ctx.extra(replica=name))

    # --- act --------------------------------------------------------------------------------

    def apply(self, decision: Decision, now: float) -> None:
        """The decided count becomes the count to keep; the rate rules' history learns what is
        started now (taken back if a start fails) and what is drained when it is."""
        change = decision.desired - decision.current
        if change > 0:
            self._state.in_flight.decide_starts(change, now)
            self._state.history = record_scale(self._state.history, now, decision.current, decision.desired)
        self._state.count_to_keep = decision.desired

    def converge(self, config: ServiceConfig, views: list[ReplicaView], can_retire: bool, now: float
                 ) -> list[ReplicaView]:
        """Starts replicas up to the count to keep; returns the surplus to retire. Never waits."""
        state = self._state
        assert state.count_to_keep is not None
        in_flight = state.in_flight
        self._check_tag(config, now)
        rollout = self._rollout(config)
        step = plan(views, state.count_to_keep, in_flight.starts, in_flight.decided, state.backoff, state.tracked,
                    can_retire, now, rollout.spec.version, config.rollout.max_surge, config.rollout.max_unavailable)
        self._rollout_progress(rollout, step, views)
        for decided_at in in_flight.drop_decided(step.drop_decided):
            state.history = uncount_scale_up(state.history, decided_at)
        for _ in range(step.start):
            self._submit_start(config, in_flight.next_decided(), now)
        if step.held_back and state.backoff.active:
            self._ctx.once("backoff", logging.INFO,
                           "start backoff: %d replica(s) wanted, next start in %.0fs (%d failure(s): %s)",
                           step.held_back, max(bo.seconds_until_retry(state.backoff, now), 0),
                           state.backoff.failures, state.backoff.reason)
        if not state.backoff.active or state.backoff.recovered_at is not None:
            self._ctx.health.notes.pop("backoff", None)
        previous = state.backoff
        state.backoff = bo.maybe_reset(state.backoff, now, config.backoff_max_seconds)
        if previous.active and not state.backoff.active:
            # Not a repair step (Context.note would take the number for a replica's name).
            log.info("healthy for %gs since the last failure: start backoff reset", config.backoff_max_seconds,
                     extra=self._ctx.extra())
        return list(step.retire)

    def remove(self, config: ServiceConfig, view: ReplicaView, tracked: Tracked, force: bool) -> None:
        """Scale-in of one replica the gate does not drain: stopped now (its stop signal, or
        killed at once when it serves nobody yet)."""
        name = view.replica.name
        self._submit_removal(config, name, tracked.container_id, force=force)
        log.info("removing replica %s (%s)", name, "not serving yet" if force else "stop signal, then removed",
                 extra=self._ctx.extra(replica=name))

    # --- rollouts ---------------------------------------------------------------------------

    def _rollout(self, config: ServiceConfig) -> Rollout:
        """What new replicas are made from. A changed spec (a reload, a template read again)
        starts a rolling update toward it, unless the circuit breaker stopped that version."""
        state = self._state
        wanted = self._wanted_spec(config)
        rollout = state.rollout
        if rollout is None:
            rollout = state.rollout = Rollout(wanted)
        elif wanted.version != rollout.spec.version:
            if wanted.version in rollout.rolled_back:
                self._ctx.once("rollout", logging.WARNING,
                               "version %s was rolled back: replicas stay at %s until what they are made from "
                               "changes again", wanted.version, rollout.spec.version)
            else:
                log.info("rolling out version %s (from %s): at most %d extra and %d fewer replica(s), each new one "
                         "ready before an old one drains", wanted.version, rollout.spec.version,
                         config.rollout.max_surge, config.rollout.max_unavailable, extra=self._ctx.extra())
                self._ctx.health.notes.pop("rollout", None)
                rollout = state.rollout = Rollout(wanted, rollout.spec, rolled_back=rollout.rolled_back)
        return rollout

    def _wanted_spec(self, config: ServiceConfig) -> ReplicaSpec:
        """The spec new replicas are made from, built again (and its version hashed) only when
        the config, the template or the digest behind a moving tag changed, not every pass."""
        template = self._state.template
        cached = self._wanted
        if cached is not None and cached[0] is config and cached[1] is template and cached[2] == self._moved:
            return cached[3]
        wanted = replica_spec(self._ctx.name, self._ctx.network, config, template)
        moved = self._moved.get(wanted.image) if wanted.pull == "always" else None
        if moved is not None:
            wanted = replace(wanted, image=moved)  # a new digest behind the tag: a new version
        self._wanted = (config, template, dict(self._moved), wanted)
        return wanted

    def _check_tag(self, config: ServiceConfig, now: float) -> None:
        """pull = "always": the tag is pulled again every pull_check_seconds, in an operation's
        thread; a digest that moved is rolled out."""
        if config.pull != "always" or self._ctx.dry_run or now - self._checked_at < config.pull_check_seconds \
                or self._ops.in_flight("check"):
            return
        self._checked_at = now
        spec = replica_spec(self._ctx.name, self._ctx.network, config, self._state.template)
        self._ops.submit("check", spec.image, lambda: self._runtime.check_image(spec))

    def _image_checked(self, outcome: Outcome) -> None:
        tag = outcome.key
        if outcome.error is not None:
            self._ctx.once("pull-check", logging.WARNING, "cannot check %s for a new image: %s (trying again "
                           "in pull_check_seconds)", tag, outcome.error)
            return
        self._ctx.health.notes.pop("pull-check", None)
        before, now_pinned = outcome.value
        if before is not None and now_pinned != before and self._moved.get(tag) != now_pinned:
            log.info("a new image behind %s: %s (was %s): rolling it out", tag, now_pinned, before,
                     extra=self._ctx.extra())
            self._moved[tag] = now_pinned

    def _rollout_progress(self, rollout: Rollout, step: Plan, views: list[ReplicaView]) -> None:
        if rollout.in_progress and not step.outdated:
            current = sum(1 for v in views if v.state != "draining")
            log.info("rollout of version %s done: %d replica(s) of it", rollout.spec.version, current,
                     extra=self._ctx.extra())
            rollout.previous = None
            rollout.failures = 0
        rollout.in_progress = step.outdated > 0

    def _new_version_failed(self, config: ServiceConfig, version: str | None, detail: str, now: float) -> None:
        """A replica of the version being rolled out exited or never passed its check: after
        rollout.failure_threshold of them the rollout stops and rolls back (ECS's deployment
        circuit breaker); the old replicas were never touched (they drain only for ready ones)."""
        rollout = self._state.rollout
        if rollout is None or rollout.previous is None or version != rollout.spec.version or not rollout.in_progress:
            return
        rollout.failures += 1
        if rollout.failures < config.rollout.failure_threshold:
            return
        bad, good = rollout.spec, rollout.previous
        log.warning("rollout of version %s stopped after %d failed replica(s) (last: %s): rolling back to %s",
                    bad.version, rollout.failures, detail, good.version, extra=self._ctx.extra())
        self._ctx.telemetry.rollbacks.labels(self._ctx.name).inc()
        # No rollback target for the rollback itself: the version stopped is never started again.
        self._state.rollout = Rollout(good, None, rolled_back=rollout.rolled_back | {bad.version}, in_progress=True)

    def _submit_start(self, config: ServiceConfig, counted_at: float | None, now: float) -> None:
        self._ctx.fence()
        spec = self._rollout(config).spec
        name = self._runtime.new_replica_name(self._ctx.name)
        self._state.in_flight.expect_start(name)
        self._ops.submit("start", name, lambda: self._fenced(lambda: self._start(spec, name)),
                         counted_at=counted_at, submitted_at=now)

    def _start(self, spec: ReplicaSpec, name: str) -> Replica:
        # The image is resolved here, in the operation's thread: a pull takes as long as it takes
        # (up to its timeout) without holding up a pass, and one that fails is a failed start,
        # backed off like any other. The start counts as in flight meanwhile, so no pass starts
        # another replica for the same need.
        image = self._runtime.resolve_image(spec)
        self._ctx.fence()  # a pull may outlast the lease
        return self._runtime.start_replica(replace(spec, image=image, resolved_from=spec.version), name)

    def _submit_removal(self, config: ServiceConfig, name: str, replica_id: str, force: bool) -> None:
        self._ctx.fence()
        self._state.in_flight.expect_removal(name)
        stop_timeout = config.stop_timeout_seconds
        service = self._ctx.name
        self._ops.submit("remove", name, lambda: self._fenced(
            lambda: self._runtime.remove_replica(service, replica_id, stop_timeout, force=force)))

    def _fenced(self, call: Callable[[], T]) -> T:
        # Checked again in the operation's thread, right before the Docker call: a daemon stopped
        # between submitting and running it may have lost the lease meanwhile.
        self._ctx.fence()
        return call()
