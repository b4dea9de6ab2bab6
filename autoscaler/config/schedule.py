"""Scheduled capacity: cron windows that override a service's replica bounds, and the crontab
grammar they are written in. Validation only: policy/schedule.py builds the triggers."""

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, field_validator, model_validator

from autoscaler.config.values import (
    MAX_REPLICAS,
    MAX_WINDOW_SECONDS,
    ConfigModel,
    raise_problems,
)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')") from None
    return value


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_WEEKDAY_PART = re.compile(r"(\*|[a-z0-9]+)(?:-([a-z0-9]+))?(?:/([0-9]+))?", re.ASCII)


def _weekday_number(token: str) -> int | None:
    if token.isdigit():
        number = int(token)
        return number if 0 <= number <= 7 else None
    return _WEEKDAYS.index(token) if token in _WEEKDAYS else None


def _crontab_weekdays(field: str) -> str:
    """The day-of-week field spelled with names.

    APScheduler 3 numbers weekdays from Monday = 0, crontab from Sunday = 0 (and 7); names mean
    the same to both. Without this, "1-5" would run Tuesday to Saturday.
    """
    if not any(char.isdigit() for char in field):
        return field  # "*", names: already unambiguous
    days: set[int] = set()
    for part in field.lower().split(","):
        match = _WEEKDAY_PART.fullmatch(part)
        if match is None:
            return field
        first, last, step = match.groups()
        if first == "*":
            if last is not None:
                return field
            low, high = 0, 6
        else:
            low_number = _weekday_number(first)
            high_number = _weekday_number(last) if last is not None else (7 if step else low_number)
            if low_number is None or high_number is None or low_number > high_number:
                return field
            low, high = low_number, high_number
        days.update(day % 7 for day in range(low, high + 1, int(step or 1)))
    if not days:
        return field
    return ",".join(_WEEKDAYS[day] for day in sorted(days))


def crontab_expression(cron: str) -> str:
    """``cron`` as APScheduler's ``CronTrigger.from_crontab`` reads it the way crontab would
    (weekday numbers as crontab's)."""
    fields = cron.split()
    if len(fields) == 5:
        fields[4] = _crontab_weekdays(fields[4])
    return " ".join(fields)


class ScheduleWindow(ConfigModel):
    """From each ``cron`` firing, for ``duration_seconds``, override the replica bounds."""

    name: str = Field(min_length=1)
    cron: str
    duration_seconds: int = Field(gt=0, le=MAX_WINDOW_SECONDS)
    # Scale-to-zero is not supported: with no replica there is nothing to measure.
    min_replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] | None = None
    max_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = None
    timezone: Annotated[str, AfterValidator(_check_timezone)] = "UTC"

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        # Imported here, not at the top: the daemon needs APScheduler to run windows, but
        # `validate` and `--help` should not pay its import for one syntax check.
        from apscheduler.triggers.cron import CronTrigger

        # The zone does not change what parses, so the syntax check can run without it and
        # report a bad cron and a bad timezone independently.
        try:
            CronTrigger.from_crontab(crontab_expression(value), timezone=ZoneInfo("UTC"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{value!r} is not a valid 5-field crontab expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> "ScheduleWindow":
        if self.min_replicas is None and self.max_replicas is None:
            raise_problems([((), "set min_replicas, max_replicas or both")])
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise_problems([(("max_replicas",), f"must be >= min_replicas ({self.min_replicas})")])
        return self
