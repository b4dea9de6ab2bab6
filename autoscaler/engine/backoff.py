"""Start backoff per service, as Kubernetes' CrashLoopBackOff: exponential, capped, reset only
after a healthy period. Pure values and functions; the controller passes `now`.

After a failure, starts go one at a time ("a probe"): the next replica starts only when the
delay has passed and no other start is still on its way to ready. So a crash loop creates a
bounded number of containers: with delays d, 2d, 4d ... capped at D, one container per delay,
whatever the interval or the count the policy asks for. Once a replica started after the last
failure is ready, starts go in batches again; the failure count (and so the next delay) is
kept until the service has been healthy for a while, so a replica that crashes a little after
becoming ready still backs off.
"""

from __future__ import annotations

from typing import NamedTuple


class Backoff(NamedTuple):
    failures: int = 0  # consecutive failures since the last reset
    retry_at: float = 0.0  # no start before this (controller clock)
    last_failure_at: float | None = None
    recovered_at: float | None = None  # when a replica started after the last failure became ready
    reason: str = ""  # the last failure, one line

    @property
    def active(self) -> bool:
        return self.failures > 0


def delay_seconds(failures: int, initial_seconds: float, max_seconds: float) -> float:
    if failures <= 0:
        return 0.0
    # 2**failures overflows a float long before any cap matters: stop doubling at the cap.
    exponent = min(failures - 1, 64)
    return min(max_seconds, initial_seconds * 2.0**exponent)


def after_failure(backoff: Backoff, now: float, reason: str, initial_seconds: float, max_seconds: float) -> Backoff:
    failures = backoff.failures + 1
    return Backoff(failures, now + delay_seconds(failures, initial_seconds, max_seconds), now, None, reason)


def after_ready(backoff: Backoff, now: float, started_at: float) -> Backoff:
    """A replica became ready; it counts as a recovery if it was started after the last failure."""
    if not backoff.active or backoff.recovered_at is not None:
        return backoff
    if backoff.last_failure_at is not None and started_at < backoff.last_failure_at:
        return backoff
    return backoff._replace(recovered_at=now)


def maybe_reset(backoff: Backoff, now: float, healthy_seconds: float) -> Backoff:
    """Forgets the failures once a recovered service has gone healthy_seconds without one."""
    if backoff.active and backoff.recovered_at is not None and now - backoff.recovered_at >= healthy_seconds:
        return Backoff()
    return backoff


def starts_allowed(backoff: Backoff, now: float, wanted: int, starting: int) -> int:
    """How many of `wanted` new replicas may start now, with `starting` still on their way."""
    if wanted <= 0:
        return 0
    if not backoff.active or backoff.recovered_at is not None:
        return wanted
    if now < backoff.retry_at or starting > 0:
        return 0
    return 1


def seconds_until_retry(backoff: Backoff, now: float) -> float:
    return max(0.0, backoff.retry_at - now) if backoff.active else 0.0
