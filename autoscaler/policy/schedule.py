"""Scheduled bounds: cron windows that override min/max replicas for their duration. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from autoscaler.config import ServiceConfig
from autoscaler.model import Bounds


def window_active(window_trigger: object, duration_seconds: int, now: datetime) -> bool:
    """True when the trigger fired within (now - duration, now].

    The first firing at or after now - duration, if it is not later than now, opened a window
    that is still open.
    """
    start = now - timedelta(seconds=duration_seconds)
    fire = window_trigger.get_next_fire_time(None, start)  # type: ignore[attr-defined]
    return fire is not None and fire <= now and fire > start


def bounds_at(config: ServiceConfig, now: datetime) -> Bounds:
    """The bounds in force at `now` (timezone-aware). Windows listed later win where they overlap."""
    low, high, source = config.min_replicas, config.max_replicas, "config"
    active = [w for w in config.schedule if window_active(w.trigger(), w.duration_seconds, now)]
    for window in active:
        if window.min_replicas is not None:
            low = window.min_replicas
        if window.max_replicas is not None:
            high = window.max_replicas
    if active:
        source = "schedule " + ", ".join(w.name for w in active)
    # Overlapping windows can cross each other's bounds; the minimum is the safer one to keep.
    high = max(high, low)
    return Bounds(low, high, source)
