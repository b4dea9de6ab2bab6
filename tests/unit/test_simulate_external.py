"""`simulate` with external metric columns: the trace reader, the replay (scale to zero
included), the timeline and the CLI.

A worker here ("jobs") has cpu_limit 0.5, a jobs_waiting metric of 5 jobs per replica (Redis
list), min_replicas 0 and scale_to_zero_after_seconds 300 unless a case says otherwise.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autoscaler.cli import EXIT_OK, EXIT_USAGE
from autoscaler.config import ServiceConfig
from autoscaler.simulate import (
    TIMELINE_HEADER,
    Result,
    Summary,
    Trace,
    TraceError,
    plot,
    read_trace,
    simulate,
    write_timeline,
)
from test_simulate import DESIRED, FIXTURES, READY, REASON, ROOT, TIME, clean_environment, column, run, write_trace

__all__ = ["clean_environment"]  # the autouse fixture, imported to apply here too

JOBS = "jobs_waiting"
REDIS = {"url": "redis://redis:6379/0", "list": "jobs"}


def worker(*, min_replicas: int = 0, max_replicas: int = 12, metrics: list[dict[str, Any]] | None = None,
           schedule: tuple[dict[str, Any], ...] = (), **policy: Any) -> ServiceConfig:
    policy.setdefault("scale_to_zero_after_seconds", 300)
    return ServiceConfig.model_validate({
        "image": "worker:1", "cpu_limit": 0.5, "memory_limit": "128MiB",
        "min_replicas": min_replicas, "max_replicas": max_replicas,
        "policy": {"initialization_seconds": 0, "target_cpu_percent": 50, **policy,
                   "metrics": metrics if metrics is not None else [{"name": JOBS, "target_average_value": 5, "redis": REDIS}]},
        "schedule": list(schedule),
    })


def queue(values: list[float], step: float = 60.0, cpu: list[float] | None = None) -> Trace:
    return Trace([i * step for i in range(len(values))], cpu, external={JOBS: values})


# --- read_trace -----------------------------------------------------------------------------

GOOD = {
    "external-only": ("time_seconds,jobs_waiting\n0,3\n60,0\n", Trace([0.0, 60.0], None, external={JOBS: [3.0, 0.0]})),
    "external-and-cpu": (
        "jobs_waiting,cpu_cores,time_seconds\n3,0.5,0\n4.5,1,60\n",
        Trace([0.0, 60.0], [0.5, 1.0], external={JOBS: [3.0, 4.5]}),
    ),
    "two-externals": (
        "time_seconds,late,jobs_waiting\n0,1.5,3\n",
        Trace([0.0], None, external={"late": [1.5], JOBS: [3.0]}),
    ),
    # Quotes and blank lines take the row-by-row reader: the same trace.
    "row-by-row-reader": (
        '"time_seconds","jobs_waiting"\r\n0,3\r\n\r\n60,0\r\n', Trace([0.0, 60.0], None, external={JOBS: [3.0, 0.0]}),
    ),
    "at-the-limit": ("time_seconds,jobs_waiting\n0,1e9\n", Trace([0.0], None, external={JOBS: [1e9]})),
    # The service's metrics need no column: a CPU-only trace stays what it was.
    "no-external-column": ("time_seconds,cpu_cores\n0,1\n", Trace([0.0], [1.0])),
}


@pytest.mark.parametrize(("text", "expected"), GOOD.values(), ids=list(GOOD))
def test_read_trace_with_external_columns(tmp_path: Path, text: str, expected: Trace) -> None:
    assert read_trace(write_trace(tmp_path, text), [JOBS, "late"]) == expected


# (content, the service's external metrics, line in the message, text of the message)
BAD: dict[str, tuple[str, list[str], int, str]] = {
    "unknown-column": (
        "time_seconds,jobs\n0,3\n", [JOBS], 1,
        "unknown column(s) jobs (known: time_seconds, cpu_cores, memory_bytes, requests_per_second; "
        "and the service's external metrics: jobs_waiting)",
    ),
    "external-column-of-a-service-without-them": (
        "time_seconds,cpu_cores,jobs_waiting\n0,1,3\n", [], 1,
        "unknown column(s) jobs_waiting (known: time_seconds, cpu_cores, memory_bytes, requests_per_second; "
        "and the service has no external metrics)",
    ),
    "no-cpu-and-no-external-column": (
        "time_seconds\n0\n", [JOBS], 1,
        "missing column(s) cpu_cores (have time_seconds; need time_seconds, and cpu_cores or an external "
        "metric's column: jobs_waiting)",
    ),
    "no-time": ("jobs_waiting\n3\n", [JOBS], 1, "missing column(s) time_seconds"),
    "duplicate-external": ("time_seconds,jobs_waiting,jobs_waiting\n0,1,2\n", [JOBS], 1, "duplicate column(s) jobs_waiting"),
    "non-numeric": ("time_seconds,jobs_waiting\n0,3\n60,many\n", [JOBS], 3, "jobs_waiting: 'many' is not a number"),
    "empty-value": ("time_seconds,jobs_waiting\n0,\n", [JOBS], 2, "jobs_waiting: '' is not a number"),
    "negative": ("time_seconds,jobs_waiting\n0,-1\n", [JOBS], 2, "jobs_waiting: '-1' must be a finite number >= 0"),
    "nan": ("time_seconds,jobs_waiting\n0,nan\n", [JOBS], 2, "jobs_waiting: 'nan' must be a finite number >= 0"),
    "over-1e9": ("time_seconds,jobs_waiting\n0,2e9\n", [JOBS], 2, "jobs_waiting: '2e9' is more than 1e+09"),
    "too-few-fields": ("time_seconds,cpu_cores,jobs_waiting\n0,1\n", [JOBS], 2, "2 fields, header has 3"),
}  # fmt: skip


@pytest.mark.parametrize(("content", "names", "line", "message"), BAD.values(), ids=list(BAD))
def test_read_trace_refuses_bad_external_columns(
    tmp_path: Path, content: str, names: list[str], line: int, message: str
) -> None:
    path = write_trace(tmp_path, content)
    with pytest.raises(TraceError) as error:
        read_trace(path, names)
    assert str(error.value).startswith(f"{path}: line {line}: ")
    assert message in str(error.value)


def test_an_external_metric_named_like_a_trace_column_cannot_be_replayed(tmp_path: Path) -> None:
    path = write_trace(tmp_path, "time_seconds,cpu_cores\n0,1\n")
    with pytest.raises(TraceError) as error:
        read_trace(path, ["cpu_cores", JOBS])
    assert str(error.value) == (
        f"{path}: the external metric(s) cpu_cores have the name of a trace column of their own: rename the metric to replay it"
    )


# --- the replay -------------------------------------------------------------------------------


def test_the_fixture_day_replays_zero_to_n_and_back_to_zero() -> None:
    # trace_queue.csv: a day at 60 s steps; no job until 06:00, 5 to 50 waiting until 18:00
    # (the lunch-time batch at 12:00 is the peak), none after.
    trace = read_trace(FIXTURES / "trace_queue.csv", [JOBS])
    assert trace.cpu_cores is None and len(trace) == 1441
    result = simulate(trace, "jobs", worker(), 60)
    desired = dict(zip(column(result, TIME), column(result, DESIRED)))
    reasons = dict(zip(column(result, TIME), column(result, REASON)))
    assert result.notes == ["target_cpu_percent ignored: the trace has no cpu_cores column"]
    assert all(desired[t] == 0 for t in desired if t < 21_600), "idle until 06:00: no replica at all"
    assert (desired[21_600], reasons[21_600]) == (1, "activation")
    # 20 jobs, 5 per replica: 4, reached the next step (rate rules: 0 + 4 within 15 s of the wake-up).
    assert desired[21_660] == 4
    assert desired[43_200] == 10 == max(desired.values()), "50 jobs at 12:00: ceil(50 / 5)"
    # The last job is seen at 64,740 s: at 0 after 300 s more, at the first step at or past it.
    assert all(desired[t] >= 1 for t in desired if 21_600 <= t < 65_040)
    assert (desired[65_040], reasons[65_040]) == (0, "scale_to_zero")
    assert all(desired[t] == 0 for t in desired if t >= 65_040)
    assert result.summary.reasons["activation"] == 1 and result.summary.reasons["scale_to_zero"] == 1
    assert result.external == {JOBS: trace.external[JOBS]}, "one sample per step: the step's value is the sample"
    assert all(math.isnan(row[1]) and math.isnan(row[4]) for row in result.rows), "no cpu_cores column: no demand"
    # At 0 replicas nothing runs: the cost is the replicas that ran.
    assert result.summary.replica_seconds == sum(column(result, READY)[1:]) * 60 + desired[86_400] * 60


@pytest.mark.parametrize(
    ("startup_seconds", "zero_at"),
    [(0, 420.0), (60, 420.0), (600, 720.0)],
    ids=["no-startup", "ready-before-the-wait-ends", "still-starting-when-the-wait-ends"],
)
def test_never_to_zero_while_a_replica_starts(startup_seconds: float, zero_at: float) -> None:
    # One job at 120 s (woken up, 1 replica), then none: at 0 after 300 s, but not while the
    # replica started at 120 s is not ready yet (ready at 120 + startup_seconds).
    trace = queue([0, 0, 1] + [0] * 20)
    result = simulate(trace, "jobs", worker(), 60, startup_seconds=startup_seconds)
    desired = dict(zip(column(result, TIME), column(result, DESIRED)))
    assert desired[120] == 1
    assert next(t for t in desired if t > 120 and desired[t] == 0) == zero_at


def test_activation_and_the_mean_of_the_step() -> None:
    # Samples every 10 s, steps of 60 s: a step reads the mean of its samples. 0.4 on average
    # in the step ending at 60 s stays at or below activation 0.5; 0.6 wakes it.
    values = [0.0] + [0.0, 0.0, 1.2, 0.0, 0.0, 1.2] + [0.6] * 6
    trace = queue(values, step=10.0)
    config = worker(metrics=[{"name": JOBS, "target_average_value": 5, "activation": 0.5, "redis": REDIS}])
    result = simulate(trace, "jobs", config, 60)
    assert result.external[JOBS] == pytest.approx([0.0, 0.4, 0.6])
    assert column(result, DESIRED) == [0, 0, 1]
    assert column(result, REASON) == ["inactive", "inactive", "activation"]


def test_external_and_cpu_columns_vote_together() -> None:
    # Two replicas (min 2): 30 jobs ask for 6, 1.8 cores at 50 % of 0.5 for ceil(1.8 / 0.25) = 8.
    trace = queue([30, 30], cpu=[1.8, 1.8])
    result = simulate(trace, "jobs", worker(min_replicas=2), 60)
    assert column(result, DESIRED)[0] == 6 and result.rows[0][4] == pytest.approx(180.0)
    assert result.notes == []
    # Without the CPU column, the jobs alone.
    assert column(simulate(queue([30, 30]), "jobs", worker(min_replicas=2), 60), DESIRED)[0] == 6


def test_a_metric_without_a_column_is_dropped_with_a_note() -> None:
    late = {"name": "late", "target_value": 2, "redis": REDIS}
    config = worker(min_replicas=1, metrics=[{"name": JOBS, "target_average_value": 5, "redis": REDIS}, late])
    result = simulate(queue([20, 20]), "jobs", config, 60)
    assert result.notes == [
        "target_cpu_percent ignored: the trace has no cpu_cores column",
        "external metric late ignored: the trace has no late column",
    ]
    assert list(result.external) == [JOBS]
    assert column(result, DESIRED)[-1] == 4
    # A CPU-only trace replays a service with external metrics on CPU alone.
    cpu_only = simulate(Trace([0.0, 60.0], [1.0, 1.0]), "jobs", worker(min_replicas=1), 60)
    assert cpu_only.notes == ["external metric jobs_waiting ignored: the trace has no jobs_waiting column"]
    assert column(cpu_only, DESIRED)[0] == 4 and cpu_only.external == {}


@pytest.mark.parametrize(
    "config",
    [worker(), worker(min_replicas=1, schedule=({"name": "night", "cron": "0 22 * * *", "duration_seconds": 3600,
                                                   "min_replicas": 0},))],
    ids=["min-0", "a-window-with-min-0"],
)
def test_scale_to_zero_without_any_external_column_is_refused(config: ServiceConfig) -> None:
    with pytest.raises(TraceError) as error:
        simulate(Trace([0.0, 60.0], [1.0, 1.0]), "jobs", config, 60)
    assert str(error.value) == (
        "the service scales to 0 replicas and back on its external metrics (jobs_waiting), and the trace has no "
        "column of any of them: add one, named like the metric, with its value at each time"
    )


def test_a_value_target_counts_the_ready_replicas() -> None:
    # mean job seconds 60 against a target of 30 on 2 ready replicas: ceil(2 x 60 / 30) = 4.
    config = worker(min_replicas=2, metrics=[{"name": "mean_job_seconds", "target_value": 30, "redis": REDIS}])
    trace = Trace([0.0, 60.0], None, external={"mean_job_seconds": [60.0, 30.0]})
    assert column(simulate(trace, "jobs", config, 60), DESIRED)[0] == 4


def test_with_min_one_it_never_goes_to_zero() -> None:
    result = simulate(queue([10] + [0] * 30), "jobs", worker(min_replicas=1), 60)
    assert min(column(result, DESIRED)) == 1
    assert "scale_to_zero" not in result.summary.reasons


# --- timeline and chart -------------------------------------------------------------------------


def test_the_timeline_has_a_column_per_external_metric(tmp_path: Path) -> None:
    result = Result(
        [
            (0.0, math.nan, 0, 1, math.nan, "activation"),
            (60.0, 0.5, 1, 4, 200.0, "scale_up"),
            (120.0, math.nan, 4, 4, math.nan, "within_tolerance"),
        ],
        Summary(),
        external={JOBS: [20.0, 20.5, 0.333333333333], "late": [1.0, 2.0, 1234567890.0]},
    )
    path = tmp_path / "timeline.csv"
    write_timeline(result, path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        [*TIMELINE_HEADER, JOBS, "late"],
        ["0", "", "0", "1", "", "activation", "20", "1"],
        ["60", "0.5", "1", "4", "200", "scale_up", "20.5", "2"],
        ["120", "", "4", "4", "", "within_tolerance", "0.3333333333", "1234567890"],
    ]
    assert path.read_bytes().count(b"\r\n") == 4, "the excel dialect, as the rows without external metrics"


def test_the_chart_draws_the_external_metrics(tmp_path: Path) -> None:
    result = simulate(queue([0, 20, 20, 0]), "jobs", worker(scale_to_zero_after_seconds=0), 60)
    path = tmp_path / "chart.png"
    plot(result, worker(), path, "jobs: queue")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the command line -------------------------------------------------------------------------

CONFIG = """\
[daemon]
interval_seconds = 60

[services.jobs]
image = "worker:1"
cpu_limit = 0.5
memory_limit = "128MiB"
min_replicas = 0
max_replicas = 12

[services.jobs.policy]
scale_to_zero_after_seconds = 300

[[services.jobs.policy.metrics]]
name = "jobs_waiting"
target_average_value = 5
redis = { url = "redis://redis:6379/0", list = "jobs" }
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def test_cli_replays_the_day_of_queue_lengths(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timeline = tmp_path / "timeline.csv"
    argv = ["simulate", "-c", str(config), "--service", "jobs", "--trace", str(FIXTURES / "trace_queue.csv")]
    code = run([*argv, "--out", str(timeline)])
    out, err = capsys.readouterr()
    assert (code, err) == (EXIT_OK, "")
    lines = out.splitlines()
    assert lines[0] == "simulated jobs: 86,460 s in 1441 steps of 60 s (startup 0 s, 1441 trace rows)"
    assert "  note: target_cpu_percent ignored: the trace has no cpu_cores column" in lines
    assert "  seconds above target:     n/a (the trace has no cpu_cores column)" in lines
    assert not [line for line in lines if "peak cpu utilization" in line]
    [reasons] = [line for line in lines if "decisions by reason" in line]
    assert "activation 1" in reasons and "scale_to_zero 1" in reasons
    with timeline.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [*TIMELINE_HEADER, JOBS]
    assert rows[1] == ["0", "", "0", "0", "", "inactive", "0"]
    assert [row[3] for row in rows if row[5] == "scale_to_zero"] == ["0"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time_seconds,jobs\n0,3\n", "line 1: unknown column(s) jobs (known: time_seconds, cpu_cores, memory_bytes, "
                                     "requests_per_second; and the service's external metrics: jobs_waiting)"),
        ("time_seconds,jobs_waiting\n0,3\n60,three\n", "line 3: jobs_waiting: 'three' is not a number"),
        ("time_seconds,jobs_waiting\n0,1e12\n", "line 2: jobs_waiting: '1e12' is more than 1e+09"),
        ("time_seconds,cpu_cores\n0,1\n", "the service scales to 0 replicas and back on its external metrics"),
    ],
    ids=["unknown-column", "non-numeric", "absurd-value", "scale-to-zero-without-a-column"],
)  # fmt: skip
def test_cli_bad_trace_exits_2_with_one_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = write_trace(tmp_path, content)
    assert run(["simulate", "-c", str(config), "--service", "jobs", "--trace", str(path)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"autoscaler: {path}: {message}")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_as_a_process_a_bad_external_column_is_one_line_and_exit_2(tmp_path: Path, config: Path) -> None:
    trace = write_trace(tmp_path, "time_seconds,jobs_waiting\n0,3\n60,lots\n")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    result = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "simulate", "-c", str(config), "--service", "jobs", "--trace", str(trace)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == EXIT_USAGE
    assert result.stderr.splitlines() == [f"autoscaler: {trace}: line 3: jobs_waiting: 'lots' is not a number"]
    assert result.stdout == ""
