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
import stat
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice, repeat
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from autoscaler.config import MAX_METRIC_VALUE, MAX_WINDOW_SECONDS, PolicyConfig, ServiceConfig
from autoscaler.model import ExternalReading, History, ReplicaSample, ServiceSnapshot
from autoscaler.policy.evaluate import evaluate, plan_of, record_scale
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


@dataclass
class Result:
    rows: list[tuple[float, float, int, int, float, str]]
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
) -> Result:
    with _collector_paused():
        return _replay(trace, service_name, service, interval_seconds, startup_seconds, start)


def _replay(
    trace: Trace,
    service_name: str,
    service: ServiceConfig,
    interval_seconds: float,
    startup_seconds: float,
    start: datetime,
) -> Result:
    policy, notes = policy_for_trace(service, trace)
    plan = plan_of(policy)
    initialization_seconds = policy.initialization_seconds
    # None only where the CPU target was switched off: no step is then above it.
    target = policy.target_cpu_percent if policy.target_cpu_percent is not None else math.inf
    cpu_limit = service.cpu_limit
    memory_limit = service.memory_limit
    schedule = ScheduledBounds(service)
    start_seconds = start.timestamp()

    steps = replay_steps(trace, interval_seconds, start)

    # Oldest first; the min_replicas replicas were running before the trace began (none for a
    # service that scales to zero).
    replicas = [_Replica(-math.inf, -math.inf)] * service.min_replicas
    history = History()
    # Plain locals, not Summary attributes, in the loop: this runs once per simulated step.
    replica_steps = steps_above_target = scale_ups = scale_downs = 0
    peak = 0.0
    rows: list[tuple[float, float, int, int, float, str]] = []
    first = trace.times[0]
    ends = [first + step * interval_seconds for step in range(steps)]
    has_cpu = trace.cpu_cores is not None
    # Without a cpu_cores column there is no demand to show and no CPU reading (its target was
    # dropped): NaN keeps the loop's arithmetic as it is, and the timeline leaves the field empty.
    cpu_demand = (
        step_means(trace.times, trace.cpu_cores, ends, interval_seconds) if trace.cpu_cores is not None
        else [math.nan] * steps
    )
    # What the policy reads of each external metric at each step, in the policy's order.
    external = {m.name: step_means(trace.times, trace.external[m.name], ends, interval_seconds) for m in policy.metrics}
    external_means = list(external.items())
    memory_demand = step_means(trace.times, trace.memory_bytes, ends, interval_seconds) if trace.memory_bytes else None
    rps_demand = (
        step_means(trace.times, trace.requests_per_second, ends, interval_seconds) if trace.requests_per_second else None
    )

    for step, now in enumerate(ends):
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
            scale_ups += 1
            history = record_scale(history, now, current, desired)
        elif desired < current:
            # Newest first: replicas still starting go before ones that serve.
            del replicas[desired:]
            scale_downs += 1
            history = record_scale(history, now, current, desired)

        replica_steps += len(replicas)
        if n_ready:
            if cpu > target:
                steps_above_target += 1
            if cpu > peak:
                peak = cpu
        rows.append((now, demand, n_ready, desired, cpu, decision.reason))

    summary = Summary(
        steps=steps,
        simulated_seconds=steps * interval_seconds,
        replica_seconds=replica_steps * interval_seconds,
        seconds_above_target=steps_above_target * interval_seconds,
        peak_utilization_percent=peak,
        scale_ups=scale_ups,
        scale_downs=scale_downs,
        reasons=dict(Counter(row[5] for row in rows)),
    )
    return Result(rows, summary, notes, external)


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
    rows: list[tuple[float, float, int, int, float, str]], fields: dict[str, str], columns: list[list[float]]
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
