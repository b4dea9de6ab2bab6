"""Scheduled bounds: cron windows that override min/max replicas for their duration. Pure."""

from __future__ import annotations

import math

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from autoscaler.config import ScheduleWindow, ServiceConfig, crontab_expression
from autoscaler.model import Bounds

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

# Cron triggers fire on whole seconds.
_RESOLUTION = timedelta(seconds=1)
_UTC = timezone.utc


def crontab_trigger(cron: str, timezone: str) -> CronTrigger:
    """An APScheduler trigger that fires as crontab would (weekday numbers as crontab's)."""
    # Imported on first use: `decide` and `simulate` of a service with no schedule never need it.
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(crontab_expression(cron), timezone=ZoneInfo(timezone))


@lru_cache(maxsize=256)
def _trigger(cron: str, timezone: str) -> CronTrigger:
    # Parsing a crontab costs far more than evaluating it; windows are few and never change.
    return crontab_trigger(cron, timezone)


def _first_fire_after(window: ScheduleWindow, moment: datetime) -> datetime | None:
    """The first firing strictly after `moment`.

    get_next_fire_time(None, t) is inclusive and rounds a fractional t up to the next whole
    second, so "strictly after" is "at or after the whole second following `moment`", with or
    without a fraction.
    """
    after = moment.astimezone(_UTC).replace(microsecond=0) + _RESOLUTION
    fire: datetime | None = _trigger(window.cron, window.timezone).get_next_fire_time(None, after)
    return fire


def _last_open(window: ScheduleWindow, now: datetime) -> datetime | None:
    """The firing that opened the window still open at `now`, if any: the first firing in
    (now - duration, now]."""
    # In UTC: arithmetic on a zone-aware datetime is wall-clock arithmetic, an hour off
    # across a DST change; duration_seconds are elapsed seconds.
    now = now.astimezone(_UTC)
    fire = _first_fire_after(window, now - timedelta(seconds=window.duration_seconds))
    if fire is not None and fire <= now:
        return fire
    return None


def window_active(window: ScheduleWindow, now: datetime) -> bool:
    return _last_open(window, now) is not None


def bounds_at(config: ServiceConfig, now: datetime) -> Bounds:
    """The bounds in force at `now` (timezone-aware). Windows listed later win where they overlap."""
    low, high = config.min_replicas, config.max_replicas
    active = [w for w in config.schedule if window_active(w, now)]
    for window in active:
        if window.min_replicas is not None:
            low = window.min_replicas
        if window.max_replicas is not None:
            high = window.max_replicas
    if not active:
        return Bounds(low, high)
    # Overlapping windows can cross each other's bounds; keep the floor, it is the safer one.
    return Bounds(low, max(high, low), "schedule " + ", ".join(w.name for w in active))


def next_change(config: ServiceConfig, now: datetime) -> datetime | None:
    """When the set of open windows can next change: a window closes or one opens (UTC)."""
    candidates = []
    for window in config.schedule:
        opened = _last_open(window, now)
        if opened is not None:
            candidates.append(opened.astimezone(_UTC) + timedelta(seconds=window.duration_seconds))
        fire = _first_fire_after(window, now)
        if fire is not None:
            candidates.append(fire.astimezone(_UTC))
    return min(candidates, default=None)


class ScheduledBounds:
    """bounds_at with a memory of how long its answer holds, for callers that ask every step.

    Times are kept as epoch seconds: comparing floats is what every step pays, building a
    datetime only what a change of bounds pays.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._fixed = None if config.schedule else Bounds(config.min_replicas, config.max_replicas)
        self._cached: tuple[float, float, Bounds] | None = None

    def at(self, now: datetime) -> Bounds:
        return self.at_timestamp(now.timestamp())

    def at_timestamp(self, now_seconds: float) -> Bounds:
        if self._fixed is not None:
            return self._fixed
        if self._cached is not None:
            since, until, bounds = self._cached
            if since <= now_seconds < until:
                return bounds
        now = datetime.fromtimestamp(now_seconds, _UTC)
        bounds = bounds_at(self.config, now)
        change = next_change(self.config, now)
        self._cached = (now_seconds, math.inf if change is None else change.timestamp(), bounds)
        return bounds
