"""The gate a replica passes to serve, and the way out.

`Membership` is the load balancer in front of the replicas: each replica one step along
starting -> ready -> draining -> removed, through HAProxy's runtime API (register in
maintenance with checks on, ready when its check passes, drain, delete). Every step is one or
two runtime-API calls (about a millisecond each); nothing here waits.

`DirectGate` is the same part for a service without a load balancer (a worker): a replica is
ready when its container runs and, where a Docker HEALTHCHECK is defined, Docker says it is
healthy; scale-in stops it with its stop signal (its own way to finish its work).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple, Protocol

from autoscaler.config import ServiceConfig
from autoscaler.engine import backoff as bo
from autoscaler.engine.loadbalancer import LoadBalancerKeeper
from autoscaler.engine.ports import (
    BackendError,
    BackendStat,
    LoadBalancer,
    LoadBalancerAPI,
    LoadBalancerHost,
    LoadBalancerSpec,
    MembershipError,
    Replica,
    ServerBusy,
    ServerStat,
)
from autoscaler.engine.replicas import ReplicaView, Step, Tracked, Unhealthy, in_transition, timed_out
from autoscaler.engine.state import Context, ServiceState

log = logging.getLogger("autoscaler.engine")


def lb_spec(service: str, network: str, config: ServiceConfig) -> LoadBalancerSpec:
    """What the service's load balancer is made from."""
    lb = config.load_balancer
    assert lb is not None, "only a service with a load balancer has a Membership gate"
    host, port = lb.publish_host_port
    return LoadBalancerSpec(
        service=service,
        image=lb.image,
        network=network,
        publish_host=host,
        publish_port=port,
        health_path=config.health_path,
        algorithm=lb.algorithm,
        node=lb.node,
        per_try_timeout_seconds=lb.per_try_timeout_seconds,
    )


class Look(NamedTuple):
    """What a pass sees of the gate: the load balancer's stats, or None while it is down."""

    backend: BackendStat | None
    servers: dict[str, ServerStat] | None
    up: bool  # membership can be changed (the load balancer answers, or there is none)
    renewed: bool = False  # a new load balancer: every replica must be registered again

    def server(self, name: str) -> ServerStat | None:
        return self.servers.get(name) if self.servers is not None else None


class Gate(Protocol):
    """How replicas come to serve and leave. `Membership` (a load balancer) or `DirectGate`."""

    @property
    def load_balancer(self) -> LoadBalancer | None: ...
    def attach(self, config: ServiceConfig, wait_seconds: float) -> bool: ...
    def remove_created(self) -> None: ...
    def look(self, config: ServiceConfig, now: float) -> Look: ...
    def started(self, config: ServiceConfig, replica: Replica, tracked: Tracked, now: float) -> None: ...
    def step(self, config: ServiceConfig, replica: Replica, tracked: Tracked, look: Look, now: float,
             repair: bool) -> Step: ...
    def drain(self, config: ServiceConfig, view: ReplicaView, tracked: Tracked, now: float) -> bool: ...
    def stop_at_once(self, view: ReplicaView) -> bool: ...
    def release(self, config: ServiceConfig, name: str, now: float) -> None: ...
    def sweep(self, config: ServiceConfig, look: Look, listed: set[str], now: float) -> None: ...
    def progress(self, config: ServiceConfig, now: float, leaving: list[Replica]) -> list[str]: ...


class Membership:
    def __init__(
        self,
        ctx: Context,
        state: ServiceState,
        host: LoadBalancerHost,
        lb_factory: Callable[[LoadBalancer], LoadBalancerAPI],
        sleep: Callable[[float], None],
    ) -> None:
        self._ctx = ctx
        self._state = state
        self._host = host
        self._keeper = LoadBalancerKeeper(ctx, host, lb_factory, sleep)
        self._fresh = False  # attach() created or (re)started it
        self._servers: dict[str, ServerStat] = {}  # as of the last look

    @property
    def load_balancer(self) -> LoadBalancer | None:
        return self._keeper.info

    # --- set-up -----------------------------------------------------------------------------

    def attach(self, config: ServiceConfig, wait_seconds: float) -> bool:
        """Adopts or creates the load balancer (a dry run only adopts a running one) and waits
        up to wait_seconds for its API. Returns whether it created (or restarted) it."""
        if self._ctx.dry_run:
            found = self._host.existing_load_balancer(self._ctx.name)
            if found is None:
                raise BackendError(
                    "setup", self._ctx.name,
                    "a dry run changes nothing, and this service has no running load balancer "
                    "yet; run once without --dry-run to create it",
                )
            lb, fresh = found, False
        else:
            lb, fresh = self._host.ensure_load_balancer(lb_spec(self._ctx.name, self._ctx.network, config))
        self._fresh = fresh
        self._keeper.use(lb)
        if wait_seconds > 0:
            try:
                self._keeper.wait(wait_seconds)
            except MembershipError:
                # The caller learns of no load balancer from a failed attach(): one made here
                # goes now, or the failed start would leave it (and its network) behind.
                self.remove_created()
                raise
        log.info("ready: load balancer %s%s", lb.name, " (new)" if fresh else " (adopted)", extra=self._ctx.extra())
        return fresh

    def remove_created(self) -> None:
        """Removes the load balancer attach() created (a failed start leaves nothing half-made)."""
        if self._fresh and self._keeper.info is not None:
            self._host.remove_load_balancer(self._ctx.name, self._keeper.info.id)

    # --- the pass ---------------------------------------------------------------------------

    def look(self, config: ServiceConfig, now: float) -> Look:
        backend, servers, renewed = self._keeper.state(config, lb_spec(self._ctx.name, self._ctx.network, config), now)
        if renewed:
            # A new HAProxy has no members: every replica is registered again.
            for tracked in self._state.tracked.values():
                tracked.registered_at = None
        self._servers = servers or {}
        return Look(backend, servers, servers is not None, renewed)

    def started(self, config: ServiceConfig, replica: Replica, tracked: Tracked, now: float) -> None:
        """A replica this daemon just started: into the load balancer at once, if it answers."""
        if replica.running and replica.ip and self._keeper.api is not None and self._ctx.health.lb_down_since is None:
            self._register(replica.name, tracked, replica.ip, _port(replica, config), now)

    def step(self, config: ServiceConfig, replica: Replica, tracked: Tracked, look: Look, now: float,
             repair: bool) -> Step:
        """One step of one replica along starting -> ready -> draining -> removed."""
        name = replica.name
        if look.servers is None:
            # No load balancer: nobody is served. Keep what we last knew of each replica.
            state = "draining" if tracked.drain_deadline is not None else (
                "ready" if tracked.ready_since is not None and tracked.unhealthy_since is None else "starting")
            return ReplicaView(replica, state, None)
        server = look.servers.get(name)
        if replica.leaving and tracked.drain_deadline is None and server is not None and repair:
            self._start_drain(config, name, tracked, server, now, "marked for removal by the orchestrator")
        if tracked.drain_deadline is not None or (server is not None and server.draining):
            if not repair:
                return ReplicaView(replica, "draining", server)
            if tracked.drain_deadline is None:  # a drain an earlier run left behind
                tracked.drain_deadline = now + config.policy.drain_timeout_seconds
            if server is None or server.sessions_current == 0 or now >= tracked.drain_deadline:
                return "drained" if self._finish_drain(config, name, server, tracked, now) else "gone"
            return ReplicaView(replica, "draining", server)
        port = _port(replica, config)
        if replica.ip is not None and (server is None or server.address != f"{replica.ip}:{port}"):
            if repair:
                self._ctx.note("replica %s is not in the load balancer: registering it", name)
                if server is None or self._delete_server(config, name, now, force=True):
                    self._register(name, tracked, replica.ip, port, now)
            return ReplicaView(replica, "starting", None)
        if server is not None and replica.state == "paused" and server.serving:
            # Frozen: it accepts connections and answers none. Out of rotation now, not after
            # the next failed checks; its checks go on, so it comes back by itself once unpaused.
            if repair:
                self._ctx.note("replica %s is paused: out of rotation until it passes its check again", name)
                self._call(self._api().set_health_down, name)
            tracked.unhealthy_since = tracked.unhealthy_since or now
            return ReplicaView(replica, "starting", server)
        if server is not None and server.serving:
            if tracked.ready_since is None:
                tracked.ready_since = now
            if tracked.unhealthy_since is not None:
                tracked.unhealthy_since = None
                self._ctx.note("replica %s passes its check again: serving", name)
            return ReplicaView(replica, "ready", server)
        if server is not None and server.maintenance and server.check_passed and replica.state == "running":
            if repair:
                self._promote(name, tracked, now)
                return ReplicaView(replica, "ready", server)
            return ReplicaView(replica, "starting", server)
        # Not serving: still starting, failing its check, paused, or without an address.
        if tracked.ready_since is not None and tracked.unhealthy_since is None:
            tracked.unhealthy_since = now
        if repair and timed_out(tracked, config.startup_timeout_seconds, now, self._ctx.wall_clock()):
            check = server.check_status if server is not None else "no address on the network"
            return Unhealthy("paused" if replica.state == "paused" else f"check {check or 'not run'}")
        return ReplicaView(replica, "starting", server)

    def drain(self, config: ServiceConfig, view: ReplicaView, tracked: Tracked, now: float) -> bool:
        """Scale-in of one replica: a serving one drains (True); one that serves nobody leaves
        the load balancer now and is for the target to remove (False)."""
        name = view.replica.name
        if view.state == "starting":
            if view.server is not None:
                self._delete_server(config, name, now)
            return False
        if self._call(self._api().set_drain, name):
            tracked.drain_deadline = now + config.policy.drain_timeout_seconds
            sessions = view.server.sessions_current if view.server is not None else 0
            log.info("draining replica %s (%d session(s))", name, sessions, extra=self._ctx.extra(replica=name))
        return True

    def stop_at_once(self, view: ReplicaView) -> bool:
        """A replica the gate did not drain is killed at once when it serves nobody yet."""
        return view.state != "ready"

    def release(self, config: ServiceConfig, name: str, now: float) -> None:
        """A replica that failed leaves the load balancer (if sessions remain, a later pass
        finishes it: its server then has no replica)."""
        if name in self._servers and self._keeper.api is not None and not self._ctx.dry_run:
            self._delete_server(config, name, now)

    def sweep(self, config: ServiceConfig, look: Look, listed: set[str], now: float) -> None:
        """Servers with no replica (nor a start in flight) leave the load balancer."""
        if look.servers is None or self._ctx.dry_run:
            return
        in_flight = self._state.in_flight
        for name in [n for n in look.servers if n not in listed and not in_flight.starting(n)]:
            if not in_flight.deleting(name):
                self._ctx.note("server %s has no replica: removing it from the load balancer", name)
            self._delete_server(config, name, now)
        in_flight.forget_deletions(look.servers)

    def progress(self, config: ServiceConfig, now: float, leaving: list[Replica]) -> list[str]:
        """Between passes: drains what the orchestrator marks for removal, promotes replicas
        whose check passed, finishes drains. Returns the replicas whose drain finished."""
        api = self._keeper.api
        state = self._state
        if api is None or not (leaving or any(
            in_transition(t) for n, t in state.tracked.items() if not state.in_flight.removing(n)
        )):
            return []
        try:
            servers = api.servers()
        except MembershipError:
            return []  # the next pass looks into it
        for replica in leaving:
            server = servers.get(replica.name)
            tracked = state.tracked.get(replica.name)
            if replica.leaving and tracked is not None and tracked.drain_deadline is None and server is not None \
                    and (server.serving or server.maintenance):
                self._start_drain(config, replica.name, tracked, server, now, "marked for removal by the orchestrator")
        drained = []
        for name, tracked in list(state.tracked.items()):
            server = servers.get(name)
            if server is None or state.in_flight.removing(name):
                continue
            if tracked.drain_deadline is not None:
                if (server.sessions_current == 0 or now >= tracked.drain_deadline) \
                        and self._finish_drain(config, name, server, tracked, now):
                    drained.append(name)
            elif in_transition(tracked) and server.maintenance and server.check_passed:
                self._promote(name, tracked, now)
        return drained

    # --- steps ------------------------------------------------------------------------------

    def _api(self) -> LoadBalancerAPI:
        api = self._keeper.api
        assert api is not None, "membership changes only while the load balancer answers"
        return api

    def _register(self, name: str, tracked: Tracked, ip: str, port: int, now: float) -> None:
        """Adds a replica in maintenance with health checks on; it serves once they pass."""
        api = self._api()
        if self._call(api.add_server, name, ip, port) and self._call(api.enable_health, name):
            tracked.registered_at = now
            if tracked.ready_since is not None and tracked.unhealthy_since is None:
                tracked.unhealthy_since = now  # it served before (e.g. a new HAProxy): not now
            log.debug("registered replica %s (%s:%d); waiting for its check", name, ip, port,
                      extra=self._ctx.extra(replica=name))

    def _promote(self, name: str, tracked: Tracked, now: float) -> None:
        if not self._call(self._api().set_ready, name):
            return
        tracked.ready_since = now
        tracked.unhealthy_since = None
        state = self._state
        was_backing_off = state.backoff.active and state.backoff.recovered_at is None
        state.backoff = bo.after_ready(state.backoff, now, tracked.first_seen_at)
        waited = now - (tracked.first_seen_at if tracked.started_by_us else tracked.registered_at or now)
        log.info("replica %s passed its health check: serving%s", name,
                 f" ({waited:.1f}s after its start)" if tracked.started_by_us else "",
                 extra=self._ctx.extra(replica=name))
        if was_backing_off and state.backoff.recovered_at is not None:
            self._ctx.note("a replica started after the last failure is ready: starting in batches again")

    def _start_drain(self, config: ServiceConfig, name: str, tracked: Tracked, server: ServerStat, now: float,
                     why: str) -> None:
        if self._call(self._api().set_drain, name):
            tracked.drain_deadline = now + config.policy.drain_timeout_seconds
            log.info("draining replica %s (%s; %d session(s))", name, why, server.sessions_current,
                     extra=self._ctx.extra(replica=name))

    def _finish_drain(self, config: ServiceConfig, name: str, server: ServerStat | None, tracked: Tracked,
                      now: float) -> bool:
        """Deletes a drained server; True when it is out (False: try again at the next step)."""
        left = server.sessions_current if server is not None else 0
        if left:
            log.warning("drain timeout (%gs) for %s: closing %d session(s)",
                        config.policy.drain_timeout_seconds, name, left, extra=self._ctx.extra(replica=name))
        return server is None or self._delete_server(config, name, now, force=left > 0)

    def _delete_server(self, config: ServiceConfig, name: str, now: float, force: bool = False) -> bool:
        """Takes a server out of the load balancer; True when it is gone.

        Connections still attached (HAProxy retrying a dead replica's requests elsewhere, idle
        keep-alive connections) make it wait for a later step rather than cut them, up to
        drain_timeout_seconds.
        """
        self._ctx.fence()
        first = self._state.in_flight.deletion_started(name, now)
        force = force or now - first >= config.policy.drain_timeout_seconds
        try:
            self._api().delete_server(name, force=force)
        except ServerBusy:
            return False
        except MembershipError as exc:
            log.warning("%s", exc, extra=self._ctx.extra(replica=name))
            return False
        self._state.in_flight.deletion_done(name)
        return True

    def _call(self, fn: Callable[..., None], *args: object) -> bool:
        """One membership change; a failure is logged and retried by the next pass."""
        self._ctx.fence()
        try:
            fn(*args)
            return True
        except MembershipError as exc:
            log.warning("%s", exc, extra=self._ctx.extra())
            return False


def _port(replica: Replica, config: ServiceConfig) -> int:
    port = replica.port or config.port
    assert port is not None, "a service with a load balancer has a port (config validation)"
    return port


class DirectGate:
    """No load balancer (a worker): a replica is ready when its container runs and, where a
    Docker HEALTHCHECK is defined (the config's or the image's), once Docker says it is healthy.
    It leaves by its stop signal (the target stops it with the service's stop timeout)."""

    def __init__(self, ctx: Context, state: ServiceState) -> None:
        self._ctx = ctx
        self._state = state

    @property
    def load_balancer(self) -> LoadBalancer | None:
        return None

    def attach(self, config: ServiceConfig, wait_seconds: float) -> bool:
        return False

    def remove_created(self) -> None:
        pass

    def look(self, config: ServiceConfig, now: float) -> Look:
        return Look(None, None, up=True)

    def started(self, config: ServiceConfig, replica: Replica, tracked: Tracked, now: float) -> None:
        pass

    def step(self, config: ServiceConfig, replica: Replica, tracked: Tracked, look: Look, now: float,
             repair: bool) -> Step:
        name = replica.name
        # A check the config asked for must have passed: no health status (a container made
        # before the check was configured, or an image that turns it off) is not a pass.
        checked = replica.health is not None or config.healthcheck is not None
        if replica.running and (replica.health == "healthy" or not checked):
            if tracked.ready_since is None:
                tracked.ready_since = now
                self._state.backoff = bo.after_ready(self._state.backoff, now, tracked.first_seen_at)
                if checked:
                    waited = now - tracked.first_seen_at
                    log.info("replica %s is healthy: ready%s", name,
                             f" ({waited:.1f}s after its start)" if tracked.started_by_us else "",
                             extra=self._ctx.extra(replica=name))
            if tracked.unhealthy_since is not None:
                tracked.unhealthy_since = None
                self._ctx.note("replica %s is healthy again", name)
            return ReplicaView(replica, "ready", None)
        if tracked.ready_since is not None and tracked.unhealthy_since is None:
            tracked.unhealthy_since = now
            if replica.running:
                self._ctx.note("replica %s is %s", name, replica.health or "not checked")
        if repair and timed_out(tracked, config.startup_timeout_seconds, now, self._ctx.wall_clock()):
            if not replica.running:
                return Unhealthy(replica.state)
            return Unhealthy(f"health {replica.health}" if replica.health else "no health status, but a healthcheck is configured")
        return ReplicaView(replica, "starting", None)

    def drain(self, config: ServiceConfig, view: ReplicaView, tracked: Tracked, now: float) -> bool:
        return False  # its stop signal is its drain

    def stop_at_once(self, view: ReplicaView) -> bool:
        # Even one not yet healthy may hold a job: it gets its stop signal and stop timeout.
        return False

    def release(self, config: ServiceConfig, name: str, now: float) -> None:
        pass

    def sweep(self, config: ServiceConfig, look: Look, listed: set[str], now: float) -> None:
        pass

    def progress(self, config: ServiceConfig, now: float, leaving: list[Replica]) -> list[str]:
        return []
