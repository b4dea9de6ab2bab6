"""Replays a demand trace through the daemon's own policy code, offline.

The model: demand is spread evenly over the ready replicas; a new replica becomes ready
`startup_seconds` after the decision that created it; utilization = demand / (ready replicas ×
cpu_limit). A removed replica is gone at once (draining is not modelled). Each step is one daemon
cycle of `interval_seconds`; the demand of a step is the mean of the trace samples inside it.

External metrics (a queue's length) come from columns named like the metrics, their value at
each time: a step reads the mean of its samples, as the daemon reads the source once a cycle.
A service whose bounds allow 0 replicas goes to 0 and back on them, as the daemon does; at 0
nothing runs, so there is no CPU reading.
"""

from __future__ import annotations

import csv
import gc
import io
import math
import operator
import os
import pickle
import signal
import stat
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice, repeat
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from autoscaler.config import MAX_METRIC_VALUE, MAX_WINDOW_SECONDS, PolicyConfig, ServiceConfig
from autoscaler.model import ExternalReading, History, ReplicaSample, ServiceSnapshot, TimedValue
from autoscaler.policy.evaluate import PolicyPlan, evaluate, plan_of, record_scale
from autoscaler.policy.schedule import ScheduledBounds

# cpu_cores may be left out when the trace has a column of one of the service's external metrics.
REQUIRED_COLUMNS = ("time_seconds", "cpu_cores")
OPTIONAL_COLUMNS = ("memory_bytes", "requests_per_second")
BUILTIN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# A Monday, so that weekday schedules line up with a trace that starts at time 0.
DEFAULT_START = datetime(2026, 1, 5, tzinfo=timezone.utc)

# A year at a 3-second interval. Each step costs 7 to 14 us (one or two targets) and 150 bytes of
# timeline, so the longest replay takes minutes and a few GB, not hours and all the memory there is.
MAX_SIMULATED_STEPS = 10_000_000
# The reader holds the file in memory several times over (text, lines, numbers); a year of
# one-second samples of two columns is about 0.5 GiB.
MAX_TRACE_BYTES = 1024**3
# The most a sample may say, per column. Larger values are unit mistakes, and they would make
# the replay's arithmetic (demand / capacity) overflow or lose all precision.
MAX_TRACE_VALUES = {
    # 317 years: Unix times in seconds pass, in milliseconds (1.7e12) do not.
    "time_seconds": 1e10,
    # MAX_REPLICAS replicas of the largest cpu_limit are about a million cores.
    "cpu_cores": 1e6,
    # MAX_REPLICAS replicas of the largest memory_limit are 7e16 bytes.
    "memory_bytes": 1e18,
    "requests_per_second": 1e12,
}
# An external metric's column: what the daemon accepts from a source (and decide from a snapshot).
MAX_EXTERNAL_VALUE = MAX_METRIC_VALUE
# Python's datetime spans years 1 to 9999; a day inside, for time zones.
_FIRST_WALL_SECONDS = datetime(1, 1, 2, tzinfo=timezone.utc).timestamp()
_LAST_WALL_SECONDS = datetime(9999, 12, 30, tzinfo=timezone.utc).timestamp()


class TraceError(ValueError):
    """A trace file we cannot use; the message names the file, line and column."""


@dataclass
class Trace:
    times: list[float]
    cpu_cores: list[float] | None  # None only in a trace with an external metric's column
    memory_bytes: list[float] | None = None
    requests_per_second: list[float] | None = None
    # External metric name -> its value at each time (a column named like the metric).
    external: dict[str, list[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)


def read_trace(path: str | os.PathLike[str], external_names: Collection[str] = ()) -> Trace:
    """Reads and checks a trace file; raises TraceError naming the file, line and column.

    external_names: the service's external metrics, each of which may have a column of its own
    (with one, cpu_cores may be left out)."""
    _check_trace_file(path)
    clash = sorted(set(external_names) & set(BUILTIN_COLUMNS))
    if clash:
        raise TraceError(
            f"{path}: the external metric(s) {', '.join(clash)} have the name of a trace column of their own: "
            "rename the metric to replay it"
        )
    names = frozenset(external_names)
    return _read_plain_trace(path, names) or _read_trace_by_row(path, names)


def _required_columns(header: Collection[str], external_names: frozenset[str]) -> tuple[str, ...]:
    """time_seconds, and cpu_cores unless the trace has an external metric's column instead."""
    return ("time_seconds",) if not external_names.isdisjoint(header) else REQUIRED_COLUMNS


def _limit(name: str) -> float:
    return MAX_TRACE_VALUES.get(name, MAX_EXTERNAL_VALUE)


def _trace(columns: dict[str, list[float]], external_names: frozenset[str]) -> Trace:
    return Trace(
        times=columns["time_seconds"],
        cpu_cores=columns.get("cpu_cores"),
        memory_bytes=columns.get("memory_bytes"),
        requests_per_second=columns.get("requests_per_second"),
        external={name: values for name, values in columns.items() if name in external_names},
    )


def _check_trace_file(path: str | os.PathLike[str]) -> None:
    """Refuses, before reading anything, a file too large to hold or one with no size (a pipe,
    a device: the readers may read it twice, and /dev/zero never ends)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise TraceError(f"{path}: cannot read (not a regular file)")
    if info.st_size > MAX_TRACE_BYTES:
        raise TraceError(
            f"{path}: {info.st_size / 1024**3:.1f} GiB is too large a trace (at most {MAX_TRACE_BYTES // 1024**3} GiB; "
            "a year of one-second samples is about 0.5 GiB)"
        )


def _read_plain_trace(path: str | os.PathLike[str], external_names: frozenset[str]) -> Trace | None:
    """The common case at C speed: a plain numeric CSV (no quotes, blank lines or odd values),
    600,000 rows in a fraction of a second. None when the file is anything else; the row by row
    reader then says exactly what is wrong, or reads what is unusual but valid."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    if len(lines) < 2 or '"' in text:
        return None
    header = [h.strip() for h in lines[0].split(",")]
    if (
        len(set(header)) != len(header)
        or not set(_required_columns(header, external_names)) <= set(header) <= set(BUILTIN_COLUMNS) | external_names
    ):
        return None
    body = lines[1:]
    # Every row has the header's width, and there is no blank row.
    if set(map(str.count, body, repeat(","))) != {len(header) - 1} or "" in body:
        return None
    joined = ",".join(body)
    if "_" in joined:  # float() takes "1_000"; no CSV writer means a number by it
        return None
    try:
        flat = list(map(float, joined.split(",")))
    except ValueError:
        return None
    # sum() is finite only if every value is (nan and inf carry through), and runs at C speed.
    if not math.isfinite(sum(flat)) or min(flat) < 0:
        return None
    width = len(header)
    columns = {name: flat[i::width] for i, name in enumerate(header)}
    times = columns["time_seconds"]
    if not all(map(operator.lt, times, islice(times, 1, None))):
        return None
    # Times increase, so the last is the largest.
    if times[-1] > MAX_TRACE_VALUES["time_seconds"] or any(
        max(values) > _limit(name) for name, values in columns.items() if name != "time_seconds"
    ):
        return None
    return _trace(columns, external_names)


def _read_trace_by_row(path: str | os.PathLike[str], external_names: frozenset[str]) -> Trace:
    try:
        # utf-8-sig: spreadsheets save CSV with a byte-order mark, which would hide the first column.
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise TraceError(f"{path}: line 1: empty file (expected a header with {', '.join(REQUIRED_COLUMNS)})") from None
        except csv.Error as exc:
            raise TraceError(f"{path}: line 1: not CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: line {_undecodable_line(path)}: not UTF-8 text ({exc.reason})") from None
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            # Only one of the copies would be read; which one the author meant is unknowable.
            raise TraceError(f"{path}: line 1: duplicate column(s) {', '.join(repeated)}")
        externals = sorted(external_names)
        # A column we do not know is most often the one reported missing, misspelled: named first.
        unknown = [c for c in header if c not in BUILTIN_COLUMNS and c not in external_names]
        if unknown:
            external_help = (
                f"and the service's external metrics: {', '.join(externals)}" if externals
                else "and the service has no external metrics"
            )
            raise TraceError(
                f"{path}: line 1: unknown column(s) {', '.join(unknown)} "
                f"(known: {', '.join(BUILTIN_COLUMNS)}; {external_help})"
            )
        missing = [c for c in _required_columns(header, external_names) if c not in header]
        if missing:
            need = ", ".join(REQUIRED_COLUMNS)
            if externals:
                need = f"time_seconds, and cpu_cores or an external metric's column: {', '.join(externals)}"
            raise TraceError(
                f"{path}: line 1: missing column(s) {', '.join(missing)} "
                f"(have {', '.join(header) or 'none'}; need {need})"
            )
        index = {name: header.index(name) for name in header}
        limits = {name: _limit(name) for name in header}
        columns: dict[str, list[float]] = {name: [] for name in header}
        previous_time = -math.inf
        line = 1
        try:
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise TraceError(f"{path}: line {line}: {len(row)} fields, header has {len(header)}")
                for name, position in index.items():
                    text = row[position]
                    try:
                        # float() also takes Python's "1_000"; no CSV writer means a number by it.
                        if "_" in text:
                            raise ValueError(text)
                        value = float(text)
                    except ValueError:
                        raise TraceError(f"{path}: line {line}: {name}: {text!r} is not a number") from None
                    if not math.isfinite(value) or value < 0:
                        raise TraceError(f"{path}: line {line}: {name}: {text!r} must be a finite number >= 0")
                    if value > limits[name]:
                        hint = " (milliseconds?)" if name == "time_seconds" else ""
                        raise TraceError(f"{path}: line {line}: {name}: {text!r} is more than {limits[name]:g}{hint}")
                    columns[name].append(value)
                time_value = columns["time_seconds"][-1]
                if time_value <= previous_time:
                    raise TraceError(f"{path}: line {line}: time_seconds must increase ({time_value:.15g} after {previous_time:.15g})")
                previous_time = time_value
        except csv.Error as exc:
            raise TraceError(f"{path}: line {reader.line_num}: not CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: line {_undecodable_line(path)}: not UTF-8 text ({exc.reason})") from None
    if not columns["time_seconds"]:
        raise TraceError(f"{path}: line {line + 1}: no samples after the header")
    return _trace(columns, external_names)


def _undecodable_line(path: str | os.PathLike[str]) -> int:
    """The first line that is not UTF-8. The text reader decodes ahead in blocks, so the line
    it was on when decoding failed can be far from the bad byte (an error on line 2 of a small
    file surfaces while the header is read)."""
    with open(path, "rb") as handle:
        # Splitting on b"\n" is safe: no multi-byte UTF-8 sequence contains that byte.
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def step_means(times: list[float], values: list[float], ends: list[float], interval_seconds: float) -> list[float]:
    """For each step ending at `end`, the mean of the samples in (end - interval, end].

    A step with no sample keeps the last sample before it. Steps come in time order, so each
    search starts where the previous step's ended: linear over a whole replay.
    """
    if _one_sample_per_step(times, ends, interval_seconds):
        # The trace at the interval's own rate, aligned: each step's mean is its one sample, as
        # the loop below finds it (+ 0.0 included), at C speed.
        return list(map(operator.add, values, repeat(0.0)))
    means = []
    lo = hi = 0
    for end in ends:
        lo = bisect_right(times, end - interval_seconds, lo)
        hi = bisect_right(times, end, max(lo, hi))
        if hi - lo == 1:
            # One sample per step (a trace at the interval's own rate): its fsum, cheaply. The
            # + 0.0 is what fsum does to a -0.0, so that the timeline never says "-0".
            means.append(values[lo] + 0.0)
        elif hi > lo:
            # fsum, not a difference of prefix sums: those carry the rounding of every earlier
            # sample (one sample of 2.0 came out as 2.0000000000000004), enough to push a ratio
            # sitting on the tolerance edge across it.
            means.append(math.fsum(values[lo:hi]) / (hi - lo))
        else:
            means.append(values[hi - 1] if hi > 0 else values[0])
    return means


def _one_sample_per_step(times: list[float], ends: list[float], interval_seconds: float) -> bool:
    """Whether step i's window (end - interval, end] holds exactly sample i: each sample is its
    step's end, and in floats each window starts at or after the previous end and before its
    own (a large time less a small interval can round back to the time itself)."""
    if times != ends:
        return False
    starts = list(map(operator.sub, ends, repeat(interval_seconds)))
    return all(map(operator.lt, starts, ends)) and all(map(operator.le, ends, islice(starts, 1, None)))


@dataclass
class Summary:
    steps: int = 0
    simulated_seconds: float = 0.0
    replica_seconds: float = 0.0
    seconds_above_target: float = 0.0
    peak_utilization_percent: float = 0.0
    scale_ups: int = 0
    scale_downs: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def scale_events(self) -> int:
        return self.scale_ups + self.scale_downs


TIMELINE_HEADER = (
    "time_seconds", "demand_cpu_cores", "ready_replicas", "desired_replicas",
    "cpu_utilization_percent", "reason",
)


# time_seconds, demand_cpu_cores, ready_replicas, desired_replicas, cpu_utilization_percent, reason
Row = tuple[float, float, int, int, float, str]


@dataclass
class Result:
    rows: list[Row]
    summary: Summary
    notes: list[str] = field(default_factory=list)
    # External metric name -> the value the policy read at each step (the timeline's last columns).
    external: dict[str, list[float]] = field(default_factory=dict)


STARTING = ReplicaSample("starting", False, 0.0)


class _Replica(NamedTuple):
    created_at: float
    ready_at: float


def simulate(
    trace: Trace,
    service_name: str,
    service: ServiceConfig,
    interval_seconds: float,
    startup_seconds: float = 0.0,
    start: datetime = DEFAULT_START,
    workers: int = 1,
) -> Result:
    """The replay of `trace`. workers=2 runs a long replay in two halves side by side (see
    _replay_in_halves); the result is the same as with workers=1, row for row."""
    with _collector_paused():
        policy, notes = policy_for_trace(service, trace)
        steps = replay_steps(trace, interval_seconds, start)
        setup = _setup(trace, service_name, service, policy, interval_seconds, startup_seconds, start, steps)
        if workers > 1 and steps >= PARALLEL_MIN_STEPS and hasattr(os, "fork"):
            rows, _ = _replay_in_halves(setup, steps)
        else:
            rows = _run(setup, 0, steps, *_initial_state(setup)).rows
        return Result(rows, _summary(rows, setup), notes, setup.external)


@dataclass(frozen=True)
class _Setup:
    """What every step of a replay reads and none changes: the plan, the limits, and each step's
    time and demand, worked out once for the whole replay."""

    service_name: str
    interval_seconds: float
    plan: PolicyPlan
    schedule: ScheduledBounds
    min_replicas: int
    cpu_limit: float
    memory_limit: float
    initialization_seconds: float
    startup_seconds: float
    start_seconds: float  # the wall time of trace time 0
    target_cpu_percent: float  # inf where the CPU target was switched off: no step is above it
    ends: list[float]  # each step's time (the end of its interval)
    cpu_demand: list[float]  # NaN at every step without a cpu_cores column
    has_cpu: bool
    memory_demand: list[float] | None
    rps_demand: list[float] | None
    # External metric name -> its value at each step, in the policy's order.
    external: dict[str, list[float]]


def _setup(
    trace: Trace,
    service_name: str,
    service: ServiceConfig,
    policy: PolicyConfig,
    interval_seconds: float,
    startup_seconds: float,
    start: datetime,
    steps: int,
) -> _Setup:
    first = trace.times[0]
    ends = [first + step * interval_seconds for step in range(steps)]
    return _Setup(
        service_name=service_name,
        interval_seconds=interval_seconds,
        plan=plan_of(policy),
        schedule=ScheduledBounds(service),
        min_replicas=service.min_replicas,
        cpu_limit=service.cpu_limit,
        memory_limit=service.memory_limit,
        initialization_seconds=policy.initialization_seconds,
        startup_seconds=startup_seconds,
        start_seconds=start.timestamp(),
        target_cpu_percent=policy.target_cpu_percent if policy.target_cpu_percent is not None else math.inf,
        ends=ends,
        # Without a cpu_cores column there is no demand to show and no CPU reading (its target
        # was dropped): NaN keeps the step's arithmetic as it is, and the timeline leaves the
        # field empty.
        cpu_demand=(
            step_means(trace.times, trace.cpu_cores, ends, interval_seconds) if trace.cpu_cores is not None
            else [math.nan] * steps
        ),
        has_cpu=trace.cpu_cores is not None,
        memory_demand=(
            step_means(trace.times, trace.memory_bytes, ends, interval_seconds) if trace.memory_bytes else None
        ),
        rps_demand=(
            step_means(trace.times, trace.requests_per_second, ends, interval_seconds)
            if trace.requests_per_second else None
        ),
        external={
            m.name: step_means(trace.times, trace.external[m.name], ends, interval_seconds) for m in policy.metrics
        },
    )


def _initial_state(setup: _Setup) -> tuple[list[_Replica], History]:
    """The min_replicas replicas running since before the trace began (none for a service that
    scales to zero), and no history."""
    return [_Replica(-math.inf, -math.inf)] * setup.min_replicas, History()


class _Run(NamedTuple):
    rows: list[Row]
    replicas: list[_Replica]
    history: History
    # Step -> _state_key after it, for the steps asked for.
    keys: dict[int, tuple[object, ...]]


def _run(
    setup: _Setup,
    first_step: int,
    stop_step: int,
    replicas: list[_Replica],
    history: History,
    key_steps: Collection[int] = (),
) -> _Run:
    """Steps first_step .. stop_step - 1 from the state (replicas, history), which the run
    changes. Its rows, its last state, and the state keys after the steps in key_steps."""
    service_name = setup.service_name
    plan = setup.plan
    initialization_seconds = setup.initialization_seconds
    startup_seconds = setup.startup_seconds
    cpu_limit, memory_limit = setup.cpu_limit, setup.memory_limit
    cpu_demand, memory_demand, rps_demand = setup.cpu_demand, setup.memory_demand, setup.rps_demand
    has_cpu = setup.has_cpu
    external_means = list(setup.external.items())
    schedule = setup.schedule
    start_seconds = setup.start_seconds
    ends = setup.ends
    keys: dict[int, tuple[object, ...]] = {}
    rows: list[Row] = []

    for step in range(first_step, stop_step):
        now = ends[step]
        demand = cpu_demand[step]
        # Replicas are started in order, so the ones still starting are a suffix of the list,
        # and among the ready ones those still initializing (CPU ignored) are a suffix too.
        n_ready = len(replicas)
        while n_ready and replicas[n_ready - 1].ready_at > now:
            n_ready -= 1
        n_settled = n_ready
        while n_settled and now - replicas[n_settled - 1].created_at < initialization_seconds:
            n_settled -= 1
        if n_ready:
            cpu = demand / (n_ready * cpu_limit) * 100.0
            mem = memory_demand[step] / (n_ready * memory_limit) * 100.0 if memory_demand else None
            rps = rps_demand[step] / n_ready if rps_demand else None
        else:
            cpu = math.nan
            mem = rps = None
        reading = cpu if has_cpu else None
        # The policy counts replicas by state and reading and never looks at their names, so
        # replicas alike share one sample: three kinds at most, whatever the count.
        samples = (ReplicaSample("ready", True, math.inf, reading, mem, rps),) * n_settled
        if n_settled < n_ready:
            samples += (ReplicaSample("initializing", True, 0.0, reading, mem, rps),) * (n_ready - n_settled)
        if n_ready < len(replicas):
            samples += (STARTING,) * (len(replicas) - n_ready)
        bounds = schedule.at_timestamp(start_seconds + now)
        if external_means:
            readings = tuple([ExternalReading(name, means[step]) for name, means in external_means])
            snapshot = ServiceSnapshot(service_name, samples, None, None, readings)
        else:
            snapshot = ServiceSnapshot(service_name, samples)
        decision, history = evaluate(snapshot, plan, bounds, history, now, explain=False)
        current, desired = decision.current, decision.desired
        if desired > current:
            replicas.extend([_Replica(now, now + startup_seconds)] * (desired - current))
            history = record_scale(history, now, current, desired)
        elif desired < current:
            # Newest first: replicas still starting go before ones that serve.
            del replicas[desired:]
            history = record_scale(history, now, current, desired)
        rows.append((now, demand, n_ready, desired, cpu, decision.reason))
        if step in key_steps:
            keys[step] = _state_key(setup, replicas, history, now)
    return _Run(rows, replicas, history, keys)


def _state_key(setup: _Setup, replicas: list[_Replica], history: History, now: float) -> tuple[object, ...]:
    """Everything a replay's later steps can read of its state at `now`: two states with equal
    keys give the same rows from here on, whatever came before.

    A replica ready and past its initialization stays so (time only moves on), and the policy
    never tells such replicas apart: only their number counts. They are the oldest, a prefix of
    the list; the rest are kept as they are. Of the history, the policy reads only entries newer
    than `now` less its longest window or rate period (later steps look even less far back),
    and of the failure streak only whether it reached failure_threshold: past it, the count
    shows only in messages, which a replay does not keep.
    """
    settled = 0
    for replica in replicas:
        if replica.ready_at > now or now - replica.created_at < setup.initialization_seconds:
            break
        settled += 1
    cutoff = now - setup.plan.history_span_seconds

    def recent(entries: Iterable[TimedValue]) -> tuple[TimedValue, ...]:
        return tuple(entry for entry in entries if entry.at_seconds > cutoff)

    return (
        settled,
        tuple(replicas[settled:]),
        recent(history.recommendations),
        recent(history.scale_up_events),
        recent(history.scale_down_events),
        min(history.consecutive_failures, setup.plan.config.failure_threshold),
        history.last_active_seconds,
    )


# A replay at least this long runs in two halves with workers=2: a second process costs about
# 20 ms to start and the halves' rows a few hundred ms to hand over, which a shorter one would
# not win back.
PARALLEL_MIN_STEPS = 100_000
# The second half starts this many steps early, from no history, so that its state has forgotten
# that start by the time the first half reaches it (at least an hour at 1 s, and 8 of the
# policy's longest windows).
_WARMUP_MIN_STEPS = 3_600
_WARMUP_SPANS = 8
# Where the halves' states are compared: every span of the policy's history, 256 times at most.
_MAX_CHECKPOINTS = 256


def _replay_in_halves(setup: _Setup, steps: int) -> tuple[list[Row], int | None]:
    """The replay in two processes side by side, with the rows of a sequential one, and the
    first step whose row came from the child (None: none did).

    A forked child replays the second half from a warm-up before it (at least an hour at 1 s),
    from the initial state, and sends back its rows and its state keys at checkpoints. Meanwhile this process replays
    the first half. The child's rows are kept only from a checkpoint where both states have the
    same key (_state_key): from there the steps are the same function of the same state. Where
    no checkpoint matches (a load that never moves the count past where the child guessed it),
    or the child failed, this process replays the rest itself: the time of a sequential replay,
    never a different result.
    """
    interval_seconds = setup.interval_seconds
    span_steps = max(1, math.ceil(setup.plan.history_span_seconds / interval_seconds))
    warmup = min(steps // 4, max(_WARMUP_MIN_STEPS, _WARMUP_SPANS * span_steps))
    # Each side does about the same number of steps: the child its half and the warm-up.
    split = (steps + warmup) // 2
    checkpoints = range(split - 1, steps - 1, span_steps)[:_MAX_CHECKPOINTS]
    child = _Child.start(setup, split - warmup, steps, split, frozenset(checkpoints))
    try:
        replicas, history = _initial_state(setup)
        first = _run(setup, 0, split, replicas, history)
        rows, replicas, history = first.rows, first.replicas, first.history
        keys, child_rows = child.result()
    finally:
        child.close()
    done = split  # rows holds steps 0 .. done - 1
    for checkpoint in checkpoints:
        if checkpoint not in keys:
            break
        more = _run(setup, done, checkpoint + 1, replicas, history)
        rows += more.rows
        replicas, history, done = more.replicas, more.history, checkpoint + 1
        if _state_key(setup, replicas, history, setup.ends[checkpoint]) == keys[checkpoint]:
            rows += child_rows[done - split :]
            return rows, done
    rows += _run(setup, done, steps, replicas, history).rows
    return rows, None


@dataclass
class _Child:
    """A forked process running steps first_step .. stop_step - 1 from the initial state; it
    sends (the state keys at key_steps, its rows from send_from on) through a pipe."""

    pid: int
    reader: int  # the pipe's end in this process

    @classmethod
    def start(cls, setup: _Setup, first_step: int, stop_step: int, send_from: int, key_steps: frozenset[int]) -> _Child:
        reader, writer = os.pipe()
        pid = os.fork()
        if pid:
            os.close(writer)
            return cls(pid, reader)
        # The child: whatever happens, it leaves through os._exit, so that it neither flushes
        # the parent's buffered output nor runs its exit handlers.
        code = 1
        try:
            os.close(reader)
            run = _run(setup, first_step, stop_step, *_initial_state(setup), key_steps)
            with os.fdopen(writer, "wb") as out:
                pickle.dump((run.keys, run.rows[send_from - first_step :]), out, pickle.HIGHEST_PROTOCOL)
            code = 0
        finally:
            os._exit(code)

    def result(self) -> tuple[dict[int, tuple[object, ...]], list[Row]]:
        """What the child sent; nothing (no checkpoint, no rows) if it failed."""
        try:
            with os.fdopen(self.reader, "rb") as source:
                self.reader = -1
                keys, rows = pickle.load(source)
        except (EOFError, pickle.UnpicklingError, ValueError):
            return {}, []
        return keys, rows

    def close(self) -> None:
        """Stops the child if it still runs (this process was interrupted) and reaps it."""
        if self.reader >= 0:
            os.close(self.reader)
            self.reader = -1
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


def _summary(rows: list[Row], setup: _Setup) -> Summary:
    """The replay's totals, from its rows: after a step the service has `desired` replicas, and
    the count before a step is the one after the step before (min_replicas at first)."""
    interval_seconds = setup.interval_seconds
    desired = list(map(operator.itemgetter(3), rows))
    before = [setup.min_replicas, *islice(desired, len(desired) - 1)]
    cpu = list(map(operator.itemgetter(4), rows))  # NaN where no replica was ready
    return Summary(
        steps=len(rows),
        simulated_seconds=len(rows) * interval_seconds,
        replica_seconds=sum(desired) * interval_seconds,
        # NaN > target is false: a step with no replica ready is never above the target.
        seconds_above_target=sum(map(operator.gt, cpu, repeat(setup.target_cpu_percent))) * interval_seconds,
        peak_utilization_percent=max([value for value in cpu if value > 0.0], default=0.0),
        scale_ups=sum(map(operator.gt, desired, before)),
        scale_downs=sum(map(operator.lt, desired, before)),
        reasons=dict(Counter(map(operator.itemgetter(5), rows))),
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The replay keeps a few tuples per step and makes no reference cycles; with the cyclic
    collector on, it would walk the growing timeline again and again (about a tenth of a week at
    1 s). Reference counting still frees all that goes; the collector resumes after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay_steps(trace: Trace, interval_seconds: float, start: datetime = DEFAULT_START) -> int:
    """The number of steps of a replay; TraceError for one too long to run or to date.

    Runs before the replay allocates anything per step: a two-row trace spanning 1e18 s would
    otherwise ask for memory for 2 x 10^17 steps.
    """
    if not (math.isfinite(interval_seconds) and interval_seconds > 0):
        raise TraceError(f"interval_seconds must be a finite number > 0 (got {interval_seconds!r})")
    first, last = trace.times[0], trace.times[-1]
    span = last - first
    # Rounded first: 0.3 / 0.1 is 2.9999999999999996, which would drop the last sample's step.
    intervals = round(span / interval_seconds, 9)
    if not intervals + 1 <= MAX_SIMULATED_STEPS:  # "not <=": an infinite count fails too
        # Exact while a float holds the count exactly; 2e+17 rather than 18 digits of noise.
        count = f"{math.floor(intervals) + 1:,}" if intervals < 1e15 else f"{intervals:.3g}"
        raise TraceError(
            f"the trace spans {span:,.15g} s: at interval_seconds {interval_seconds:g} that is {count} steps, "
            f"more than the limit of {MAX_SIMULATED_STEPS:,} (shorten the trace or lengthen the interval)"
        )
    # Schedules look a window's length either side of the replay's wall times, in any zone.
    start_seconds = start.timestamp()
    if not (
        _FIRST_WALL_SECONDS <= start_seconds + first - MAX_WINDOW_SECONDS
        and start_seconds + last + MAX_WINDOW_SECONDS <= _LAST_WALL_SECONDS
    ):
        raise TraceError(f"a replay from {start.isoformat()} over {last:,.15g} s leaves the calendar (years 1 to 9999)")
    return max(1, math.floor(intervals) + 1)


def policy_for_trace(service: ServiceConfig, trace: Trace) -> tuple[PolicyConfig, list[str]]:
    """The service's policy without the targets and external metrics the trace has no data for.

    A target with no data would be a metric that is always missing, and missing metrics forbid
    every scale-down: the replay would only ever grow. TraceError when that leaves a service
    that may go to 0 replicas with no external metric to wake it up.
    """
    policy = service.policy
    drop: dict[str, object] = {}
    notes = []
    if policy.target_cpu_percent is not None and trace.cpu_cores is None:
        drop["target_cpu_percent"] = None
        notes.append("target_cpu_percent ignored: the trace has no cpu_cores column")
    kept = [m for m in policy.metrics if m.name in trace.external]
    if len(kept) < len(policy.metrics):
        drop["metrics"] = kept
        notes.extend(
            f"external metric {m.name} ignored: the trace has no {m.name} column" for m in policy.metrics if m not in kept
        )
        if not kept and (service.min_replicas == 0 or any(w.min_replicas == 0 for w in service.schedule)):
            names = ", ".join(m.name for m in policy.metrics)
            raise TraceError(
                f"the service scales to 0 replicas and back on its external metrics ({names}), and the trace has no "
                "column of any of them: add one, named like the metric, with its value at each time"
            )
    if policy.target_memory_percent is not None and trace.memory_bytes is None:
        drop["target_memory_percent"] = None
        notes.append("target_memory_percent ignored: the trace has no memory_bytes column")
    if policy.target_requests_per_second_per_replica is not None and trace.requests_per_second is None:
        drop["target_requests_per_second_per_replica"] = None
        notes.append("target_requests_per_second_per_replica ignored: the trace has no requests_per_second column")
    if policy.target_response_time_ms is not None:
        drop["target_response_time_ms"] = None
        notes.append("target_response_time_ms ignored: the model has no response times")
    return (policy.model_copy(update=drop) if drop else policy), notes


# Rows formatted per write: a few MB of text at a time, not the whole timeline's.
_TIMELINE_CHUNK_ROWS = 65_536
# .15g: plain digits up to 1e15 s; "g" would write 1209600 and 1209605 both as 1.2096e+06.
# No CPU figure (no replica ready) is an empty field.
_ROW_FORMAT = "%.15g,%.6g,%d,%d,%.4g,%s\r\n"
_ROW_FORMAT_NO_CPU = "%.15g,%.6g,%d,%d,,%s\r\n"


def write_timeline(result: Result, path: str | os.PathLike[str]) -> None:
    """The rows as csv.writer writes them (its "excel" dialect), one %-format a row: numbers
    never need quoting, and each distinct reason is quoted once by csv itself. A replay with
    external metrics has a column more for each, named like the metric."""
    rows = result.rows
    fields = {reason: _csv_field(reason) for reason in set(map(operator.itemgetter(5), rows))}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(TIMELINE_HEADER + tuple(result.external))
        if result.external:
            handle.writelines(_rows_with_external(rows, fields, list(result.external.values())))
            return
        for start in range(0, len(rows), _TIMELINE_CHUNK_ROWS):
            handle.write(
                "".join(
                    [
                        _ROW_FORMAT % (time_s, demand, ready, desired, cpu, fields[reason])
                        if cpu == cpu  # not NaN
                        else _ROW_FORMAT_NO_CPU % (time_s, demand, ready, desired, fields[reason])
                        for time_s, demand, ready, desired, cpu, reason in islice(
                            rows, start, start + _TIMELINE_CHUNK_ROWS
                        )
                    ]
                )
            )


def _number(value: float, form: str) -> str:
    return form % value if value == value else ""  # NaN (no figure): an empty field


def _rows_with_external(
    rows: list[Row], fields: dict[str, str], columns: list[list[float]]
) -> Iterator[str]:
    """Timeline lines with the external metrics' values after the reason. Slower than the
    one-format rows, and only for replays with external metrics; the demand is empty where the
    trace had no cpu_cores column."""
    for index, (time_s, demand, ready, desired, cpu, reason) in enumerate(rows):
        values = "".join(["," + _number(means[index], "%.10g") for means in columns])
        yield (
            f"{time_s:.15g},{_number(demand, '%.6g')},{ready:d},{desired:d},{_number(cpu, '%.4g')},{fields[reason]}"
            f"{values}\r\n"
        )


def _csv_field(text: str) -> str:
    """`text` as csv.writer writes it inside a row (quoted only if it must be)."""
    buffer = io.StringIO()
    # A second, empty field: a row of one empty field would be written '""'.
    csv.writer(buffer).writerow((text, ""))
    return buffer.getvalue().removesuffix(",\r\n")


def plot(result: Result, service: ServiceConfig, path: str | os.PathLike[str], title: str) -> None:
    """Demand, capacity (ready × cpu_limit), the external metrics and replicas over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a file
    import matplotlib.pyplot as plt

    hours = [r[0] / 3600 for r in result.rows]
    demand = [r[1] for r in result.rows]
    capacity = [r[2] * service.cpu_limit for r in result.rows]
    target_percent = service.policy.target_cpu_percent or 100.0  # no CPU target: the whole capacity
    target_capacity = [c * target_percent / 100 for c in capacity]
    replicas = [r[2] for r in result.rows]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(12, 6), height_ratios=(2, 1))
    top.plot(hours, demand, label="demand (cores)", color="tab:red", linewidth=0.8)
    top.plot(hours, capacity, label="capacity (ready × cpu_limit)", color="tab:blue", linewidth=0.8)
    top.plot(hours, target_capacity, label="capacity at target", color="tab:blue", linestyle=":", linewidth=0.8)
    top.set_ylabel("CPU cores")
    top.legend(loc="upper right")
    top.set_title(title)
    if result.external:
        # External metrics have units of their own (jobs, seconds): an axis of their own.
        right = top.twinx()
        for name, values in result.external.items():
            right.plot(hours, values, label=name, linestyle="--", linewidth=0.8)
        right.set_ylabel("external metrics")
        right.legend(loc="upper left")
    bottom.step(hours, replicas, where="post", color="tab:green", linewidth=0.8)
    bottom.set_ylabel("ready replicas")
    bottom.set_xlabel("hours")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=100)
    plt.close(fig)
