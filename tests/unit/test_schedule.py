"""Scheduled bounds: window_active, bounds_at, next_change and the ScheduledBounds cache.

Times are written in UTC unless a case is about zones; Europe/Berlin is UTC+1 in winter and
UTC+2 from 2026-03-29 01:00Z to 2026-10-25 01:00Z. 2026-01-05 is a Monday.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from autoscaler.config import ScheduleWindow, ServiceConfig
from autoscaler.model import Bounds
from autoscaler.policy.schedule import ScheduledBounds, bounds_at, next_change, window_active

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


def window(cron: str, duration_seconds: int, *, name: str = "w", timezone: str = "UTC", **bounds: int) -> dict[str, Any]:
    return {"name": name, "cron": cron, "duration_seconds": duration_seconds, "timezone": timezone, **(bounds or {"min_replicas": 3})}


def service(*windows: dict[str, Any], min_replicas: int = 1, max_replicas: int = 10) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {
            "image": "demo:latest",
            "port": 8000,
            "cpu_limit": 0.5,
            "memory_limit": "256MiB",
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "load_balancer": {"publish": "127.0.0.1:18080"},
            "schedule": list(windows),
        }
    )


# Weekdays 08:00-18:00 Berlin time: ten hours from each 08:00 firing.
BUSINESS = window("0 8 * * mon-fri", 36000, name="business-hours", timezone="Europe/Berlin")
BUSINESS_NUMERIC = window("0 8 * * 1-5", 36000, name="business-hours", timezone="Europe/Berlin")
# 22:00 UTC for four hours: open across midnight.
NIGHT = window("0 22 * * *", 4 * 3600, name="night")
# Midnight Berlin time for ten elapsed hours: crosses both DST changes of 2026.
FROM_MIDNIGHT = window("0 0 * * *", 36000, name="from-midnight", timezone="Europe/Berlin")
# Back to back: each firing opens the window the previous one closes.
HOURLY = window("0 * * * *", 3600, name="hourly")
SUNDAY_NUMERIC = window("0 8 * * 0", 3600, name="sunday")


def as_window(spec: dict[str, Any]) -> ScheduleWindow:
    return ScheduleWindow.model_validate(spec)


# --- window_active --------------------------------------------------------------------------

ACTIVE_CASES = [
    (BUSINESS, utc("2026-01-05T06:59:59"), False),
    (BUSINESS, utc("2026-01-05T07:00:00"), True),  # 08:00 CET, the firing second itself
    (BUSINESS, utc("2026-01-05T12:00:00"), True),
    (BUSINESS, utc("2026-01-05T16:59:59"), True),
    (BUSINESS, utc("2026-01-05T17:00:00"), False),  # fire + duration: closed
    (BUSINESS, utc("2026-01-10T10:00:00"), False),  # Saturday
    (BUSINESS, utc("2026-03-27T07:00:00"), True),  # Friday before the change: 08:00 CET
    (BUSINESS, utc("2026-03-30T05:59:59"), False),  # Monday after: 07:59:59 CEST
    (BUSINESS, utc("2026-03-30T06:00:00"), True),  # 08:00 CEST = 06:00Z
    (BUSINESS, utc("2026-03-30T07:00:00"), True),
    (BUSINESS, utc("2026-03-30T15:59:59"), True),
    (BUSINESS, utc("2026-03-30T16:00:00"), False),  # 18:00 CEST
    (BUSINESS, berlin("2026-03-30T08:00:00"), True),  # same instants, given in the zone itself
    (BUSINESS, berlin("2026-03-30T17:59:59"), True),
    (BUSINESS, berlin("2026-03-30T18:00:00"), False),
    (BUSINESS, utc("2026-01-05T06:59:59.999999"), False),
    (BUSINESS, utc("2026-01-05T16:59:59.999999"), True),
    (BUSINESS_NUMERIC, utc("2026-01-05T07:00:00"), True),  # crontab 1 = Monday
    (BUSINESS_NUMERIC, utc("2026-01-09T07:00:00"), True),  # 5 = Friday
    (BUSINESS_NUMERIC, utc("2026-01-10T07:00:00"), False),  # not Saturday
    (SUNDAY_NUMERIC, utc("2026-01-04T08:00:00"), True),  # crontab 0 = Sunday
    (SUNDAY_NUMERIC, utc("2026-01-05T08:00:00"), False),  # not Monday
    (NIGHT, utc("2026-01-05T21:59:59"), False),
    (NIGHT, utc("2026-01-05T22:00:00"), True),
    (NIGHT, utc("2026-01-05T23:59:59"), True),
    (NIGHT, utc("2026-01-06T00:00:00"), True),
    (NIGHT, utc("2026-01-06T01:59:59"), True),
    (NIGHT, utc("2026-01-06T02:00:00"), False),
    # 00:00 CEST (22:00Z) + 10 h is 08:00Z, 09:00 CET after the clocks went back.
    (FROM_MIDNIGHT, utc("2026-10-24T21:59:59"), False),
    (FROM_MIDNIGHT, utc("2026-10-24T22:00:00"), True),
    (FROM_MIDNIGHT, utc("2026-10-25T07:59:59"), True),
    (FROM_MIDNIGHT, utc("2026-10-25T08:00:00"), False),
    (FROM_MIDNIGHT, berlin("2026-10-25T08:59:59"), True),
    (FROM_MIDNIGHT, berlin("2026-10-25T09:00:00"), False),
    # 00:00 CET (23:00Z) + 10 h is 09:00Z, 11:00 CEST after the clocks went forward.
    (FROM_MIDNIGHT, utc("2026-03-29T08:59:59"), True),
    (FROM_MIDNIGHT, utc("2026-03-29T09:00:00"), False),
    (FROM_MIDNIGHT, berlin("2026-03-29T10:30:00"), True),
    (FROM_MIDNIGHT, berlin("2026-03-29T11:00:00"), False),
    (HOURLY, utc("2026-01-05T08:59:59"), True),
    (HOURLY, utc("2026-01-05T09:00:00"), True),  # one firing closes, the next opens
    (HOURLY, utc("2026-01-05T09:00:00.5"), True),
]


@pytest.mark.parametrize(
    ("spec", "now", "active"),
    ACTIVE_CASES,
    ids=[
        "business-before-open",
        "business-opening-second",
        "business-midday",
        "business-last-second",
        "business-closed-at-fire-plus-duration",
        "business-saturday",
        "business-friday-before-dst",
        "business-dst-monday-before-open",
        "business-dst-monday-opening-second",
        "business-dst-monday-morning",
        "business-dst-monday-last-second",
        "business-dst-monday-closed",
        "business-berlin-aware-open",
        "business-berlin-aware-last-second",
        "business-berlin-aware-closed",
        "business-microsecond-before-open",
        "business-microsecond-before-close",
        "numeric-weekday-1-is-monday",
        "numeric-weekday-5-is-friday",
        "numeric-weekday-not-saturday",
        "numeric-weekday-0-is-sunday",
        "numeric-weekday-0-not-monday",
        "night-before-open",
        "night-opening-second",
        "night-before-midnight",
        "night-midnight",
        "night-after-midnight",
        "night-closed",
        "fall-back-before-open",
        "fall-back-opening-second",
        "fall-back-last-second",
        "fall-back-closed-after-elapsed-seconds",
        "fall-back-berlin-aware-last-second",
        "fall-back-berlin-aware-closed",
        "spring-forward-last-second",
        "spring-forward-closed-after-elapsed-seconds",
        "spring-forward-berlin-aware-open",
        "spring-forward-berlin-aware-closed",
        "hourly-last-second",
        "hourly-back-to-back-boundary",
        "hourly-after-boundary-fraction",
    ],
)
def test_window_active(spec: dict[str, Any], now: datetime, active: bool) -> None:
    assert window_active(as_window(spec), now) is active


# --- bounds_at ------------------------------------------------------------------------------

MORNING = window("0 8 * * *", 8 * 3600, name="morning", min_replicas=2, max_replicas=6)
NOON = window("0 12 * * *", 2 * 3600, name="noon", min_replicas=4, max_replicas=8)
FLOOR = window("0 8 * * *", 8 * 3600, name="floor", min_replicas=5)
CEILING = window("0 12 * * *", 2 * 3600, name="ceiling", max_replicas=3)

BOUNDS_CASES = [
    ((), utc("2026-01-05T12:00:00"), Bounds(1, 10)),
    ((BUSINESS,), utc("2026-01-05T08:00:00"), Bounds(3, 10, "schedule business-hours")),
    ((BUSINESS,), utc("2026-01-05T17:00:00"), Bounds(1, 10)),
    ((BUSINESS,), utc("2026-01-10T08:00:00"), Bounds(1, 10)),
    ((MORNING, NOON), utc("2026-01-05T10:00:00"), Bounds(2, 6, "schedule morning")),
    ((MORNING, NOON), utc("2026-01-05T12:30:00"), Bounds(4, 8, "schedule morning, noon")),
    ((NOON, MORNING), utc("2026-01-05T12:30:00"), Bounds(2, 6, "schedule noon, morning")),
    ((MORNING, NOON), utc("2026-01-05T14:00:00"), Bounds(2, 6, "schedule morning")),
    ((MORNING, NOON), utc("2026-01-05T16:00:00"), Bounds(1, 10)),
    ((FLOOR, CEILING), utc("2026-01-05T12:30:00"), Bounds(5, 5, "schedule floor, ceiling")),
    ((CEILING,), utc("2026-01-05T12:00:00"), Bounds(1, 3, "schedule ceiling")),
    ((HOURLY,), utc("2026-01-05T09:00:00"), Bounds(3, 10, "schedule hourly")),
]


@pytest.mark.parametrize(
    ("windows", "now", "expected"),
    BOUNDS_CASES,
    ids=[
        "no-schedule",
        "window-open-names-it",
        "window-closed",
        "weekend",
        "one-of-two-open",
        "overlap-later-wins",
        "overlap-order-decides-not-time",
        "later-closed-earlier-still-open",
        "both-closed",
        "crossed-bounds-keep-the-floor",
        "max-only-window-keeps-service-min",
        "back-to-back-boundary-stays-open",
    ],
)
def test_bounds_at(windows: Sequence[dict[str, Any]], now: datetime, expected: Bounds) -> None:
    assert bounds_at(service(*windows), now) == expected


# --- next_change ----------------------------------------------------------------------------

NEXT_CASES = [
    ((), utc("2026-01-05T12:00:00"), None),
    ((BUSINESS,), utc("2026-01-05T06:00:00"), utc("2026-01-05T07:00:00")),
    ((BUSINESS,), utc("2026-01-05T06:59:59.5"), utc("2026-01-05T07:00:00")),
    ((BUSINESS,), utc("2026-01-05T07:00:00"), utc("2026-01-05T17:00:00")),
    ((BUSINESS,), utc("2026-01-05T12:00:00"), utc("2026-01-05T17:00:00")),
    ((BUSINESS,), utc("2026-01-05T17:00:00"), utc("2026-01-06T07:00:00")),
    ((BUSINESS,), utc("2026-01-09T18:00:00"), utc("2026-01-12T07:00:00")),
    ((BUSINESS,), utc("2026-03-29T12:00:00"), utc("2026-03-30T06:00:00")),
    ((FROM_MIDNIGHT,), utc("2026-10-25T01:00:00"), utc("2026-10-25T08:00:00")),
    ((FROM_MIDNIGHT,), berlin("2026-10-25T02:30:00"), utc("2026-10-25T08:00:00")),
    ((MORNING, NOON), utc("2026-01-05T10:00:00"), utc("2026-01-05T12:00:00")),
    ((MORNING, NOON), utc("2026-01-05T12:30:00"), utc("2026-01-05T14:00:00")),
    ((HOURLY,), utc("2026-01-05T09:00:00"), utc("2026-01-05T10:00:00")),
]


@pytest.mark.parametrize(
    ("windows", "now", "expected"),
    NEXT_CASES,
    ids=[
        "no-schedule-never",
        "before-open",
        "fraction-before-open",
        "at-opening-second-next-is-close",
        "open-next-is-close",
        "at-close-next-is-tomorrow",
        "friday-evening-next-is-monday",
        "across-spring-forward",
        "close-after-fall-back-in-elapsed-seconds",
        "close-after-fall-back-zone-aware-now",
        "other-window-opens-first",
        "later-window-closes-first",
        "back-to-back-next-firing",
    ],
)
def test_next_change(windows: Sequence[dict[str, Any]], now: datetime, expected: datetime | None) -> None:
    assert next_change(service(*windows), now) == expected


# --- ScheduledBounds agrees with bounds_at --------------------------------------------------

# Overlapping windows of three kinds: weekday hours in a DST zone, ten elapsed hours from
# midnight Berlin (across the clock changes), back-to-back hourly windows.
MIXED = service(BUSINESS, FROM_MIDNIGHT, HOURLY | {"min_replicas": 2, "max_replicas": 9})


def _times(start: datetime, days: int = 3, step: timedelta = timedelta(minutes=7)) -> list[datetime]:
    """Every `step` over `days`, plus the second before and the second of every full hour,
    where the windows open and close."""
    end = start + timedelta(days=days)
    times = set()
    moment = start
    while moment < end:
        times.add(moment)
        moment += step
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        times.update((hour - timedelta(seconds=1), hour))
        hour += timedelta(hours=1)
    return sorted(t for t in times if start <= t < end)


SEQUENCES = {
    # Friday to Sunday: weekday windows, then the night the clocks go back.
    "fall-back-weekend": _times(utc("2026-10-23T00:00:00")),
    # The same around the spring change, as Berlin times a quarter second off the whole second.
    "spring-forward-berlin-aware-with-fraction": [
        t.astimezone(BERLIN) for t in _times(utc("2026-03-27T00:00:00.25"))
    ],
}


@functools.cache
def _expected(sequence: str) -> dict[datetime, Bounds]:
    return {t: bounds_at(MIXED, t) for t in SEQUENCES[sequence]}


def _sawtooth(times: list[datetime]) -> list[datetime]:
    """Forward, jumping back 40 samples after every 60: time going backwards, repeatedly."""
    order, position = [], 0
    while position < len(times):
        order.extend(times[position : position + 60])
        order.extend(times[max(0, position + 20) : position + 60])
        position += 60
    return order


ORDERS = {
    "forward": lambda times: times,
    "sawtooth": _sawtooth,
    # The last day only (the clock change), newest first: every answer comes from a new cache
    # entry, which costs a next_change per step.
    "backward-last-day": lambda times: [t for t in times if t >= times[-1] - timedelta(days=1)][::-1],
}
AGREEMENT_CASES = [
    ("fall-back-weekend", "forward"),
    ("fall-back-weekend", "sawtooth"),
    ("fall-back-weekend", "backward-last-day"),
    ("spring-forward-berlin-aware-with-fraction", "forward"),
    ("spring-forward-berlin-aware-with-fraction", "sawtooth"),
]


@pytest.mark.parametrize(("sequence", "order"), AGREEMENT_CASES, ids=[f"{s}-{o}" for s, o in AGREEMENT_CASES])
def test_scheduled_bounds_agrees_with_bounds_at(sequence: str, order: str) -> None:
    expected = _expected(sequence)
    cached = ScheduledBounds(MIXED)
    times = ORDERS[order](SEQUENCES[sequence])
    disagreements = [(t.isoformat(), got, expected[t]) for t in times if (got := cached.at(t)) != expected[t]]
    assert disagreements == []
    # The sequence really crosses changes: agreement is not trivially "always the config".
    assert len(set(expected.values())) >= 4


def test_scheduled_bounds_without_schedule_is_the_service_bounds() -> None:
    cached = ScheduledBounds(service(min_replicas=2, max_replicas=5))
    now = utc("2026-01-05T12:00:00")
    assert cached.at(now) == Bounds(2, 5) == bounds_at(cached.config, now)
