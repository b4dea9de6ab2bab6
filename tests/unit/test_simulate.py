"""`simulate()` on tiny hand-made traces, the trace reader, the timeline, the chart and the CLI.

Every expected number is worked out by hand in the comment beside it. The services here have
cpu_limit 0.5 and a 50 % CPU target unless a case says otherwise, so one replica serves 0.25
cores at target; initialization_seconds is 0 so that a replica counts from the moment it is
ready.
"""

from __future__ import annotations

import csv
import math
import os
import random
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from autoscaler.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from autoscaler.config import ServiceConfig
from autoscaler.policy import evaluate as evaluate_module
from autoscaler.simulate import (
    DEFAULT_START,
    MAX_SIMULATED_STEPS,
    MAX_TRACE_BYTES,
    TIMELINE_HEADER,
    Result,
    Summary,
    Trace,
    TraceError,
    plot,
    read_trace,
    replay_steps,
    simulate,
    write_timeline,
)

# The previous stabilization windows live with the benchmark that times the current ones against them.
from benchmarks.bench_simulate import rescanning_stabilize

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
UTC = timezone.utc


def service(
    *,
    cpu_limit: float = 0.5,
    target: float = 50,
    min_replicas: int = 1,
    max_replicas: int = 20,
    schedule: tuple[dict[str, Any], ...] = (),
    **policy: Any,
) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {
            "image": "demo:latest",
            "port": 8000,
            "cpu_limit": cpu_limit,
            "memory_limit": "256MiB",
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "load_balancer": {"publish": "127.0.0.1:18080"},
            "policy": {"target_cpu_percent": target, "initialization_seconds": 0, **policy},
            "schedule": list(schedule),
        }
    )


def constant(demand: float, seconds: float, step: float) -> Trace:
    times = [i * step for i in range(int(seconds / step) + 1)]
    return Trace(times, [demand] * len(times))


def column(result: Result, index: int) -> list[Any]:
    return [row[index] for row in result.rows]


TIME, DEMAND, READY, DESIRED, CPU, REASON = range(6)


# --- the model ------------------------------------------------------------------------------

STEADY = [
    # (demand cores, cpu_limit, target %, ceil(demand / (cpu_limit * target)))
    (1.0, 0.5, 50, 4),
    (1.5, 0.5, 50, 6),
    (0.3, 1.0, 60, 1),
    (2.0, 1.0, 70, 3),
    (3.0, 0.25, 80, 15),
]


@pytest.mark.parametrize(
    ("demand", "cpu_limit", "target", "expected"),
    STEADY,
    ids=["1.0-cores-4", "1.5-cores-6", "below-one-replica", "2.0-cores-at-70-3", "3.0-cores-quarter-limit-15"],
)
def test_constant_demand_settles_on_ceil_of_demand_over_capacity_at_target(
    demand: float, cpu_limit: float, target: float, expected: int
) -> None:
    assert expected == math.ceil(demand / (cpu_limit * target / 100))
    result = simulate(constant(demand, 300, 10), "web", service(cpu_limit=cpu_limit, target=target), 10)
    # Reached from below (the scale-up rate rules allow +4 or +100 % per 15 s), never overshot.
    assert max(column(result, DESIRED)) == expected
    assert column(result, DESIRED)[-20:] == [expected] * 20
    assert column(result, READY)[-20:] == [expected] * 20
    assert result.summary.scale_downs == 0


@pytest.mark.parametrize(
    ("startup_seconds", "first_ready_at"),
    [(0, 35), (5, 35), (20, 50), (23, 55)],
    ids=["ready-at-the-next-step", "exactly-one-interval", "four-intervals", "between-steps-rounds-up"],
)
def test_startup_seconds_delays_readiness_by_exactly_that(startup_seconds: float, first_ready_at: float) -> None:
    # 0.2 cores until 25 s (40 % on one replica), then 1.0: 200 % -> 4 replicas, decided at 30 s.
    # A replica is ready startup_seconds after the decision; each step counts the replicas
    # ready at its own time, before it decides, so readiness shows at the first step at or
    # after 30 + startup_seconds (and never at 30 itself).
    trace = Trace([i * 5.0 for i in range(21)], [0.2] * 6 + [1.0] * 15)
    result = simulate(trace, "web", service(), 5, startup_seconds=startup_seconds)
    ready = dict(zip(column(result, TIME), column(result, READY)))
    desired = dict(zip(column(result, TIME), column(result, DESIRED)))
    assert desired[25] == 1 and desired[30] == 4
    assert all(ready[t] == 1 for t in ready if t < first_ready_at)
    assert all(ready[t] == 4 for t in ready if t >= first_ready_at)
    # While they start, the 3 missing replicas count as idle: 200 % -> 50 %, so no second scale-up.
    assert all(desired[t] == 4 for t in desired if t >= 30)
    assert result.summary.scale_ups == 1


@pytest.mark.parametrize(
    ("window_seconds", "drops_at"),
    [(0, 60), (30, 80), (60, 110), (120, 170)],
    ids=["no-window", "30s", "60s", "120s"],
)
def test_scale_down_waits_for_the_stabilization_window(window_seconds: int, drops_at: float) -> None:
    # 2.0 cores up to 50 s (8 replicas), then 0.5 (2 replicas). The last high recommendation is
    # the one at 50 s, so the count drops at max(60, 50 + window), not one step earlier.
    times = [i * 10.0 for i in range(25)]
    trace = Trace(times, [2.0 if t <= 50 else 0.5 for t in times])
    result = simulate(trace, "web", service(scale_down_stabilization_seconds=window_seconds), 10)
    desired = dict(zip(column(result, TIME), column(result, DESIRED)))
    reasons = dict(zip(column(result, TIME), column(result, REASON)))
    assert desired[50] == 8
    assert all(desired[t] == 8 for t in desired if 50 <= t < drops_at)
    assert all(reasons[t] == "scale_down_stabilized" for t in desired if 60 <= t < drops_at)
    assert desired[drops_at] == 2 and reasons[drops_at] == "scale_down"
    assert all(desired[t] == 2 for t in desired if t >= drops_at)
    assert result.summary.scale_downs == 1


SUMMARIES = [
    # 1.0 cores on one replica (200 %) -> 4 at 0 s; then 4 x 50 %. 4 replicas x 3 steps x 10 s.
    (Trace([0.0, 10.0, 20.0], [1.0, 1.0, 1.0]), {}, 10, 0,
     Summary(3, 30.0, 120.0, 10.0, 200.0, 1, 0, {"scale_up": 1, "within_tolerance": 2})),
    # Two replicas, a band of +-30 %: 60 % and 45 % never scale; 60 % > 50 % in 3 of 5 steps.
    (Trace([0.0, 10.0, 20.0, 30.0, 40.0], [0.6, 0.45, 0.6, 0.6, 0.45]), {"min_replicas": 2, "tolerance": 0.3}, 10, 0,
     Summary(5, 50.0, 100.0, 30.0, 60.0, 0, 0, {"within_tolerance": 5})),
    # Starting replicas cost but do not serve: 1 replica for 0-25 s (6 steps x 5 s), 4 from the
    # decision at 30 s (7 steps x 5 s x 4) = 30 + 140; above target at 30-45 s while they start.
    (Trace([i * 5.0 for i in range(13)], [0.2] * 6 + [1.0] * 7), {}, 5, 20,
     Summary(13, 65.0, 170.0, 20.0, 200.0, 1, 0, {"hold": 9, "scale_up": 1, "within_tolerance": 3})),
]


@pytest.mark.parametrize(
    ("trace", "overrides", "interval", "startup", "expected"),
    SUMMARIES,
    ids=["one-scale-up", "within-the-band", "startup-costs-without-serving"],
)
def test_summary_arithmetic(trace: Trace, overrides: dict[str, Any], interval: float, startup: float, expected: Summary) -> None:
    result = simulate(trace, "web", service(**overrides), interval, startup_seconds=startup)
    assert result.summary == expected
    assert result.summary.scale_events == expected.scale_ups + expected.scale_downs


WINDOWS = [
    # (times, cpu_cores, interval, expected demand per step: the mean of the samples in (t - interval, t])
    ([float(t) for t in range(10)], [float(t) for t in range(10)], 5, [0.0, 3.0]),
    ([0.0, 2.0, 4.0, 20.0], [1.0, 2.0, 3.0, 8.0], 5, [1.0, 2.5, 3.0, 3.0, 8.0]),
    ([100.0, 103.0, 107.0, 110.0], [4.0, 1.0, 2.0, 3.0], 5, [4.0, 1.0, 2.5]),
    ([0.0, 1.0, 2.0, 3.0], [0.1, 0.1, 0.1, 2.0], 1, [0.1, 0.1, 0.1, 2.0]),
    ([0.0, 0.1, 0.2, 0.3], [1.0, 2.0, 3.0, 4.0], 0.1, [1.0, 2.0, 3.0, 4.0]),
]


@pytest.mark.parametrize(
    ("times", "cores", "interval", "expected"),
    WINDOWS,
    ids=[
        "mean-of-the-step",
        "gap-holds-the-last-sample",
        "trace-starting-late",
        "one-sample-is-exact",
        "fractional-interval-keeps-the-last-step",
    ],
)
def test_demand_is_the_mean_of_the_samples_in_the_step(
    times: list[float], cores: list[float], interval: float, expected: list[float]
) -> None:
    result = simulate(Trace(times, cores), "web", service(), interval)
    assert column(result, DEMAND) == expected


def test_a_sample_of_minus_zero_is_demand_zero() -> None:
    # "-0" is a valid sample; the mean of one sample is its fsum, which is +0.0, so the
    # timeline says "0" whether a step holds one sample or several.
    for interval in (1.0, 2.0):
        result = simulate(Trace([0.0, 1.0, 2.0, 3.0], [-0.0, -0.0, 1.0, 1.0]), "web", service(), interval)
        assert [math.copysign(1.0, d) for d in column(result, DEMAND)] == [1.0] * len(result.rows)


def noisy_trace(rows: int, seed: int, memory: bool = False) -> Trace:
    """A daily-like swing over rows seconds with noise and bursts: enough up and down to go
    through every window, rule and reason."""
    rng = random.Random(seed)
    times, cores, memory_bytes = [], [], []
    burst = 0
    for t in range(rows):
        swing = 0.5 - 0.5 * math.cos(2 * math.pi * t / 1200)
        if burst == 0 and rng.random() < 0.004:
            burst = rng.randint(5, 200)
        burst = max(0, burst - 1)
        times.append(float(t))
        cores.append(max(0.0, 0.1 + 2.5 * swing + (2.0 if burst else 0.0) + rng.gauss(0, 0.2)))
        memory_bytes.append(100e6 + 150e6 * swing + rng.random() * 4e7)
    return Trace(times, cores, memory_bytes if memory else None)


IDENTITY_POLICIES: dict[str, dict[str, Any]] = {
    "hpa-defaults": {},
    "up-window-and-select-min": {
        "scale_up": {"stabilization_seconds": 60, "select": "min"},
        "scale_down": {
            "stabilization_seconds": 120, "select": "min",
            "rules": [{"type": "replicas", "value": 1, "period_seconds": 60}, {"type": "percent", "value": 30, "period_seconds": 120}],
        },
    },
    "long-down-window": {"scale_down_stabilization_seconds": 900},
    "down-disabled": {"scale_down": {"select": "disabled"}},
    "steps-with-a-queue-never-read": {
        "strategy": "step",
        "steps": [
            {"metric": "cpu", "lower": 80, "adjustment": "+50%"},
            {"metric": "cpu", "upper": 40, "adjustment": "-1"},
            {"metric": "queue", "lower": 10, "adjustment": "+2"},
        ],
    },
    "fallback-through-the-windows": {
        "strategy": "step", "fallback_replicas": 2, "failure_threshold": 1,
        "steps": [{"metric": "queue", "lower": 10, "adjustment": "+2"}],
        "scale_down_stabilization_seconds": 60,
    },
    "memory-and-initialization": {"target_memory_percent": 60, "initialization_seconds": 30},
}


@pytest.mark.parametrize("interval", [1.0, 5.0], ids=["interval-1", "interval-5"])
@pytest.mark.parametrize("overrides", IDENTITY_POLICIES.values(), ids=list(IDENTITY_POLICIES))
def test_timeline_is_the_one_of_the_rescanning_windows(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any], interval: float
) -> None:
    # Recommendations answer the windows from monotonic stacks; the same replay with every
    # window scanned, as before them, must give the very same rows and summary.
    trace = noisy_trace(3000, seed=5, memory="target_memory_percent" in overrides)
    config = service(max_replicas=12, **overrides)
    fast = simulate(trace, "web", config, interval, startup_seconds=20)
    monkeypatch.setattr(evaluate_module, "stabilize", rescanning_stabilize)
    plain = simulate(trace, "web", config, interval, startup_seconds=20)
    assert fast.rows == plain.rows
    assert fast.summary == plain.summary
    assert fast.summary.scale_events > 0


MONDAY_0758 = datetime(2026, 1, 5, 7, 58, tzinfo=UTC)
WEEKDAY_WINDOW = {"name": "morning", "cron": "0 8 * * 1-5", "duration_seconds": 300, "min_replicas": 3}


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # The window opens at 08:00 (120 s) and is closed again at 08:05 (420 s): fire + duration.
        (MONDAY_0758, [1, 1, 3, 3, 3, 3, 3, 1, 1, 1, 1]),
        (datetime.fromisoformat("2026-01-05T08:58:00+01:00"), [1, 1, 3, 3, 3, 3, 3, 1, 1, 1, 1]),
        (datetime(2026, 1, 5, 8, 1, tzinfo=UTC), [3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1]),  # opened at 08:00, closes at 240 s
        (datetime(2026, 1, 10, 7, 58, tzinfo=UTC), [1] * 11),  # a Saturday: crontab 1-5 is Monday to Friday
        (DEFAULT_START, [1] * 11),  # midnight: nowhere near 08:00
    ],
    ids=["monday-aligned", "same-instant-other-offset", "starts-inside-the-window", "saturday", "default-start"],
)
def test_schedule_raises_min_during_its_window(start: datetime, expected: list[int]) -> None:
    # 0.1 cores: 20 % on one replica, which alone would never scale.
    config = service(schedule=(WEEKDAY_WINDOW,), scale_down_stabilization_seconds=0)
    result = simulate(constant(0.1, 600, 60), "web", config, 60, start=start)
    assert column(result, DESIRED) == expected
    if 3 in expected:
        assert column(result, REASON)[expected.index(3)] == "below_min"


def test_targets_without_data_are_dropped_with_a_note() -> None:
    config = service(target_memory_percent=70, target_requests_per_second_per_replica=5, target_response_time_ms=100)
    result = simulate(constant(1.0, 20, 10), "web", config, 10)
    assert result.notes == [
        "target_memory_percent ignored: the trace has no memory_bytes column",
        "target_requests_per_second_per_replica ignored: the trace has no requests_per_second column",
        "target_response_time_ms ignored: the model has no response times",
    ]
    # With the memory column the memory target stays, and wins over CPU's 20 %.
    trace = Trace([0.0, 10.0], [0.1, 0.1], memory_bytes=[512 * 2**20, 512 * 2**20])
    result = simulate(trace, "web", service(target_memory_percent=50), 10)
    assert result.notes == []
    assert column(result, DESIRED)[0] == 4  # 512 MiB / 256 MiB = 200 % of one replica, target 50 %


# --- read_trace -----------------------------------------------------------------------------

GOOD_TRACES = [
    ("time_seconds,cpu_cores\n0,0.5\n5,1\n", Trace([0.0, 5.0], [0.5, 1.0])),
    (
        "memory_bytes,requests_per_second,cpu_cores,time_seconds\n100,3,0.5,0\n200,4.5,1e-3,2.5\n",
        Trace([0.0, 2.5], [0.5, 0.001], [100.0, 200.0], [3.0, 4.5]),
    ),
    (" time_seconds , cpu_cores \r\n0, 0.5\r\n\r\n1,0.25\r\n", Trace([0.0, 1.0], [0.5, 0.25])),
    ("\ufefftime_seconds,cpu_cores\n0,1\n", Trace([0.0], [1.0])),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    GOOD_TRACES,
    ids=["required-columns", "all-columns-any-order", "spaces-crlf-blank-line", "byte-order-mark"],
)
def test_read_trace(tmp_path: Path, text: str, expected: Trace) -> None:
    path = tmp_path / "trace.csv"
    path.write_bytes(text.encode("utf-8"))
    assert read_trace(path) == expected


HEADER = "time_seconds,cpu_cores\n"
# (file content, line named in the message, text of the message)
BAD_TRACES = [
    ("", 1, "empty file (expected a header with time_seconds, cpu_cores)"),
    (HEADER, 2, "no samples after the header"),
    ("time_seconds\n0\n", 1, "missing column(s) cpu_cores"),
    ("time_seconds,cpu_cores,disk_bytes\n0,1,2\n", 1, "unknown column(s) disk_bytes"),
    ("time_seconds,cpu_cores,cpu_cores\n0,1,2\n", 1, "duplicate column(s) cpu_cores"),
    (HEADER + "0,abc\n", 2, "cpu_cores: 'abc' is not a number"),
    (HEADER + "0,\n", 2, "cpu_cores: '' is not a number"),
    (HEADER + "0,1_000\n", 2, "cpu_cores: '1_000' is not a number"),
    (HEADER + "0,1\n5,-0.5\n", 3, "cpu_cores: '-0.5' must be a finite number >= 0"),
    (HEADER + "0,nan\n", 2, "cpu_cores: 'nan' must be a finite number >= 0"),
    (HEADER + "0,inf\n", 2, "cpu_cores: 'inf' must be a finite number >= 0"),
    (HEADER + "-1,1\n", 2, "time_seconds: '-1' must be a finite number >= 0"),
    (HEADER + "0,1\n0,1\n", 3, "time_seconds must increase (0 after 0)"),
    (HEADER + "0,1\n10,1\n5,1\n", 4, "time_seconds must increase (5 after 10)"),
    (HEADER + "0,1,2\n", 2, "3 fields, header has 2"),
    (HEADER + "0,1\n5\n", 3, "1 fields, header has 2"),
    (HEADER + "\n0,1\n\nx,1\n", 5, "time_seconds: 'x' is not a number"),
    (b"time_seconds,cpu_cores\n0,1\n5,\xff\n", 3, "not UTF-8 text (invalid start byte)"),
    (b"time_seconds,cpu_\xe9\n0,1\n", 1, "not UTF-8 text"),
    # Absurd values: unit mistakes, and arithmetic the replay could not do exactly or at all.
    (HEADER + "0,1\n1e18,1\n", 3, "time_seconds: '1e18' is more than 1e+10 (milliseconds?)"),
    (HEADER + "0,1\n5,1\n10,2e6\n", 4, "cpu_cores: '2e6' is more than 1e+06"),
    (HEADER + "0,1e308\n", 2, "cpu_cores: '1e308' is more than 1e+06"),
    ("time_seconds,cpu_cores,memory_bytes\n0,1,1e19\n", 2, "memory_bytes: '1e19' is more than 1e+18"),
    ("time_seconds,cpu_cores,requests_per_second\n0,1,5\n1,1,1e13\n", 3, "requests_per_second: '1e13' is more than 1e+12"),
    (HEADER + "0,1\n1e400,1\n", 3, "time_seconds: '1e400' must be a finite number >= 0"),
]
BAD_IDS = [
    "empty-file",
    "header-only",
    "missing-column",
    "unknown-column",
    "duplicate-column",
    "non-numeric",
    "empty-field",
    "underscore-digits",
    "negative",
    "nan",
    "inf",
    "negative-time",
    "repeated-time",
    "decreasing-time",
    "too-many-fields",
    "too-few-fields",
    "blank-lines-counted",
    "not-utf8-row",
    "not-utf8-header",
    "time-1e18",
    "cpu-over-a-million-cores",
    "cpu-1e308",
    "memory-over-1e18",
    "rps-over-1e12",
    "time-overflows-to-inf",
]


def write_trace(directory: Path, content: str | bytes) -> Path:
    path = directory / "trace.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize(("content", "line", "message"), BAD_TRACES, ids=BAD_IDS)
def test_read_trace_rejects_naming_file_and_line(tmp_path: Path, content: str | bytes, line: int, message: str) -> None:
    path = write_trace(tmp_path, content)
    with pytest.raises(TraceError) as error:
        read_trace(path)
    assert str(error.value).startswith(f"{path}: line {line}: ")
    assert message in str(error.value)


def test_read_trace_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="missing.csv: cannot read"):
        read_trace(tmp_path / "missing.csv")


def test_read_trace_refuses_a_file_over_the_limit_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:
        handle.truncate(MAX_TRACE_BYTES + 1)  # sparse: no disk space, nothing to read
    with pytest.raises(TraceError) as error:
        read_trace(path)
    assert str(error.value) == f"{path}: 1.0 GiB is too large a trace (at most 1 GiB; a year of one-second samples is about 0.5 GiB)"


def test_read_trace_refuses_what_is_not_a_regular_file() -> None:
    # /dev/zero has no size and no end: the reader would hold it in memory until killed.
    with pytest.raises(TraceError, match="^/dev/zero: cannot read \\(not a regular file\\)$"):
        read_trace("/dev/zero")


# --- the replay's size, checked before it allocates -------------------------------------------

# id -> (first and last time of the trace, interval_seconds, steps or the refusal's text)
REPLAY_SIZES: dict[str, tuple[float, float, float, int | str]] = {
    "one-step": (0.0, 0.0, 5.0, 1),
    "a-week-at-5-s": (0.0, 604_800.0, 5.0, 120_961),
    "at-the-limit": (0.0, (MAX_SIMULATED_STEPS - 1) * 5.0, 5.0, MAX_SIMULATED_STEPS),
    "one-step-over": (0.0, MAX_SIMULATED_STEPS * 5.0, 5.0,
                      "the trace spans 50,000,000 s: at interval_seconds 5 that is 10,000,001 steps, more than the limit of 10,000,000"),
    "span-1e18": (0.0, 1e18, 5.0, "the trace spans 1e+18 s: at interval_seconds 5 that is 2e+17 steps"),
    "late-start-of-a-long-span": (1e9, 1e9 + 1e8, 1.0, "the trace spans 100,000,000 s: at interval_seconds 1 that is 100,000,001 steps"),
    "tiny-interval": (0.0, 10.0, 1e-300, "that is 1e+301 steps, more than the limit of 10,000,000 (shorten the trace or lengthen"),
    "zero-interval": (0.0, 10.0, 0.0, "interval_seconds must be a finite number > 0 (got 0.0)"),
    "nan-interval": (0.0, 10.0, math.nan, "interval_seconds must be a finite number > 0 (got nan)"),
}  # fmt: skip


@pytest.mark.parametrize(("first", "last", "interval", "expected"), REPLAY_SIZES.values(), ids=list(REPLAY_SIZES))
def test_replay_steps(first: float, last: float, interval: float, expected: int | str) -> None:
    trace = Trace([first, last] if last > first else [first], [1.0, 1.0] if last > first else [1.0])
    if isinstance(expected, int):
        assert replay_steps(trace, interval) == expected
    else:
        with pytest.raises(TraceError) as error:
            replay_steps(trace, interval)
        assert expected in str(error.value)


@pytest.mark.parametrize(
    "start",
    [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 1, tzinfo=UTC)],
    ids=["year-1", "year-9999"],
)
def test_replay_that_leaves_the_calendar_is_refused(start: datetime) -> None:
    # Schedules look a window's length around each step: near year 1 or 9999 that overflowed.
    with pytest.raises(TraceError, match="leaves the calendar"):
        replay_steps(Trace([0.0, 86_400.0], [1.0, 1.0]), 5.0, start)


def test_simulate_refuses_a_huge_span_before_allocating() -> None:
    # Two samples 1e18 s apart would be 2e17 steps: the refusal must come before the per-step lists.
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(TraceError, match="more than the limit of 10,000,000"):
            simulate(Trace([0.0, 1e18], [1.0, 1.0]), "web", service(), 5.0)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak_bytes < 10 * 1024**2


# --- timeline and chart ---------------------------------------------------------------------


def test_write_timeline(tmp_path: Path) -> None:
    result = Result(
        [
            (0.0, 1.0, 1, 4, 200.0, "scale_up"),
            (2.5, 0.123456789, 4, 4, 49.382716, "within_tolerance"),
            # Two weeks in: plain digits, not 1.2096e+06 for both of two neighbouring steps.
            (1209600.0, 0.25, 4, 4, 12.5, "hold"),
            (1209605.0, 0.25, 0, 1, math.nan, "metrics_unavailable"),
        ],
        Summary(),
    )
    path = tmp_path / "timeline.csv"
    write_timeline(result, path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        list(TIMELINE_HEADER),
        ["0", "1", "1", "4", "200", "scale_up"],
        ["2.5", "0.123457", "4", "4", "49.38", "within_tolerance"],
        ["1209600", "0.25", "4", "4", "12.5", "hold"],
        ["1209605", "0.25", "0", "1", "", "metrics_unavailable"],
    ]
    assert TIMELINE_HEADER == (
        "time_seconds", "demand_cpu_cores", "ready_replicas", "desired_replicas", "cpu_utilization_percent", "reason",
    )


def test_plot_writes_a_png(tmp_path: Path) -> None:
    result = simulate(Trace([0.0, 10.0, 20.0, 30.0], [0.2, 1.0, 1.0, 0.2]), "web", service(), 10)
    path = tmp_path / "chart.png"
    plot(result, service(), path, "web: tiny")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


# --- the command line -----------------------------------------------------------------------

CONFIG = """\
[daemon]
interval_seconds = 10

[services.web]
image = "demo:latest"
port = 8000
cpu_limit = 0.5
memory_limit = "256MiB"
max_replicas = 10

[services.web.load_balancer]
publish = "127.0.0.1:18080"

[services.web.policy]
target_cpu_percent = 50
initialization_seconds = 0
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # AUTOSCALER_* variables of the shell running the tests would change the configs.
    for key in list(os.environ):
        if key.upper().startswith("AUTOSCALER_"):
            monkeypatch.delenv(key)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refuses usage errors this way
        return int(exc.code or 0)


def test_cli_summary(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # trace_constant.csv: 1.0 cores at 0, 10, ..., 50 s. 200 % on one replica -> 4 at 0 s, ready
    # at 20 s; at 10 s the 3 starting replicas count as idle (hold). 4 replicas x 6 steps x 10 s.
    timeline = tmp_path / "timeline.csv"
    trace = FIXTURES / "trace_constant.csv"
    argv = ["simulate", "-c", str(config), "--service", "web", "--trace", str(trace), "--startup-seconds", "20"]
    code = run([*argv, "--out", str(timeline)])
    out, err = capsys.readouterr()
    assert (code, err) == (EXIT_OK, "")
    assert out.splitlines() == [
        "simulated web: 60 s in 6 steps of 10 s (startup 20 s, 6 trace rows)",
        "  replica-seconds (cost):   240  (mean 4.00 replicas)",
        "  seconds above target:     20  (33.3 % of the time)",
        "  peak cpu utilization:     200.0 %",
        "  scale events:             1  (1 up, 0 down)",
        "  decisions by reason:      within_tolerance 4, scale_up 1, hold 1",
        f"  timeline: {timeline}",
    ]
    with timeline.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert [row[2] for row in rows[1:]] == ["1", "1", "4", "4", "4", "4"]


def test_cli_notes_and_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        CONFIG
        + "target_memory_percent = 70\n\n"
        + '[[services.web.schedule]]\nname = "morning"\ncron = "0 8 * * mon-fri"\nduration_seconds = 3600\nmin_replicas = 5\n'
    )
    trace = FIXTURES / "trace_constant.csv"
    argv = ["simulate", "-c", str(path), "--service", "web", "--trace", str(trace), "--start", "2026-01-05T08:00:00Z"]
    assert run(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert "  note: target_memory_percent ignored: the trace has no memory_bytes column" in out
    # Inside the window from the first step: raised to min 5 at once, never below.
    assert "scale events:             1  (1 up, 0 down)" in out
    assert "replica-seconds (cost):   300  (mean 5.00 replicas)" in out


@pytest.mark.parametrize(("content", "line", "message"), BAD_TRACES, ids=BAD_IDS)
def test_cli_bad_trace_exits_2_naming_file_and_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, line: int, message: str
) -> None:
    path = write_trace(tmp_path, content)
    assert run(["simulate", "-c", str(config), "--service", "web", "--trace", str(path)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"autoscaler: {path}: line {line}: ")
    assert message in err
    assert "Traceback" not in err


BAD_USAGE = [
    (["--trace", "{tmp}/missing.csv"], "missing.csv: cannot read"),
    (["--trace", "{tmp}"], "cannot read"),
    (["--trace", "{trace}", "--startup-seconds", "-1"], "argument --startup-seconds: '-1' must be a number >= 0"),
    (["--trace", "{trace}", "--startup-seconds", "nan"], "argument --startup-seconds: 'nan' must be a number >= 0"),
    (["--trace", "{trace}", "--startup-seconds", "soon"], "argument --startup-seconds: 'soon' is not a number"),
    (["--trace", "{trace}", "--start", "monday"], "argument --start: 'monday' is not an ISO 8601 time"),
    (["--service", "api", "--trace", "{trace}"], "unknown service 'api' (the config has: web)"),
]


@pytest.mark.parametrize(
    ("argv", "message"),
    BAD_USAGE,
    ids=[
        "missing-trace",
        "trace-is-a-directory",
        "negative-startup",
        "nan-startup",
        "non-numeric-startup",
        "bad-start",
        "unknown-service",
    ],
)
def test_cli_bad_usage_exits_2(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    filled = [a.format(tmp=tmp_path, trace=FIXTURES / "trace_constant.csv") for a in argv]
    if "--service" not in filled:
        filled = ["--service", "web", *filled]
    assert run(["simulate", "-c", str(config), *filled]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err


def test_cli_unwritable_output_exits_1(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = FIXTURES / "trace_constant.csv"
    out_path = tmp_path / "no-such-directory" / "timeline.csv"
    argv = ["simulate", "-c", str(config), "--service", "web", "--trace", str(trace), "--out", str(out_path)]
    assert run(argv) == EXIT_FAILURE
    assert "autoscaler: cannot write output:" in capsys.readouterr().err



# id -> (trace text, the one line expected on stderr after "autoscaler: <trace>: ")
NASTY_TRACES = {
    "time-1e18": (HEADER + "0,1\n1e18,1\n", "line 3: time_seconds: '1e18' is more than 1e+10 (milliseconds?)"),
    "span-over-the-step-limit": (
        HEADER + "0,1\n1e9,1\n",
        "the trace spans 1,000,000,000 s: at interval_seconds 10 that is 100,000,001 steps, "
        "more than the limit of 10,000,000 (shorten the trace or lengthen the interval)",
    ),
}


@pytest.mark.parametrize(("text", "message"), NASTY_TRACES.values(), ids=list(NASTY_TRACES))
def test_as_a_process_a_nasty_trace_is_one_line_and_exit_2_at_once(tmp_path: Path, config: Path, text: str, message: str) -> None:
    trace = write_trace(tmp_path, text)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "simulate", "-c", str(config), "--service", "web", "--trace", str(trace)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )
    assert time.perf_counter() - started < 10  # the process start is most of it
    assert result.returncode == EXIT_USAGE
    assert result.stderr.splitlines() == [f"autoscaler: {trace}: {message}"]
    assert result.stdout == ""


def test_cli_start_outside_the_calendar_exits_2(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "-c", str(config), "--service", "web", "--trace", str(FIXTURES / "trace_constant.csv")]
    assert run([*argv, "--start", "0001-01-01T00:00:00+00:00"]) == EXIT_USAGE
    assert "argument --start: '0001-01-01T00:00:00+00:00' must be between 1970-01-01 and 9000-01-01" in capsys.readouterr().err
