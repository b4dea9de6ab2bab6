"""`simulate(..., workers=2)`: a long replay in two halves side by side, with the rows of one run.

The child process replays the second half from a warm-up before it; its rows are kept only from
a step where both halves' states have the same key. These tests lower the length from which a
replay is split (100,000 steps in use) so that small traces take that path, and compare every
row and the summary with the sequential replay: where the halves join, where they never do, and
where the child fails.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

import autoscaler.simulate as simulate_module
from autoscaler.cli import EXIT_OK, EXIT_USAGE, main
from autoscaler.model import History, TimedValue
from autoscaler.simulate import Result, Trace, simulate
from test_simulate import IDENTITY_POLICIES, clean_environment, noisy_trace, service
from test_simulate_external import JOBS, worker

__all__ = ["clean_environment"]  # the autouse fixture, imported to apply here too

ROWS = 6000


@pytest.fixture(autouse=True)
def split_small_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulate_module, "PARALLEL_MIN_STEPS", 100)
    monkeypatch.setattr(simulate_module, "_WARMUP_MIN_STEPS", 50)


def joined_at(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """Where each split replay took the child's rows from (None: nowhere), as it returns it."""
    seen: list[int | None] = []
    real = simulate_module._replay_in_halves

    def spy(setup: Any, steps: int) -> tuple[list[simulate_module.Row], int | None]:
        rows, joined = real(setup, steps)
        seen.append(joined)
        return rows, joined

    monkeypatch.setattr(simulate_module, "_replay_in_halves", spy)
    return seen


def same(a: Result, b: Result) -> bool:
    """Equal rows and summaries. NaN (no CPU figure) equals nothing, itself included, so rows
    are compared with it written as a string."""

    def plain(result: Result) -> list[tuple[object, ...]]:
        return [tuple("nan" if value != value else value for value in row) for row in result.rows]

    return plain(a) == plain(b) and a.summary == b.summary and a.external == b.external


def both(trace: Trace, config: Any, interval: float, startup: float = 20.0) -> tuple[Result, Result]:
    return (
        simulate(trace, "web", config, interval, startup_seconds=startup, workers=1),
        simulate(trace, "web", config, interval, startup_seconds=startup, workers=2),
    )


@pytest.mark.parametrize("interval", [1.0, 5.0], ids=["interval-1", "interval-5"])
@pytest.mark.parametrize("overrides", IDENTITY_POLICIES.values(), ids=list(IDENTITY_POLICIES))
def test_halves_give_the_rows_of_one_replay(monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any], interval: float) -> None:
    joins = joined_at(monkeypatch)
    trace = noisy_trace(ROWS, seed=11, memory="target_memory_percent" in overrides)
    config = service(max_replicas=12, **overrides)
    one, halves = both(trace, config, interval)
    assert same(halves, one)
    assert one.summary.scale_events > 0
    # The swing goes from 0.1 to 2.6 cores every 20 minutes: the child's state has forgotten its
    # start long before the middle, so its rows are used, from the middle on.
    [joined] = joins
    steps = len(one.rows)
    assert joined is not None and steps // 2 <= joined < steps


def test_halves_with_a_schedule_and_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    joins = joined_at(monkeypatch)
    window = {"name": "every-hour", "cron": "0 * * * *", "duration_seconds": 600, "min_replicas": 4}
    one, halves = both(noisy_trace(ROWS * 2, seed=3), service(max_replicas=12, schedule=(window,)), 1.0, startup=45.0)
    assert same(halves, one)
    assert joins[0] is not None


def test_halves_of_a_worker_that_scales_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    joins = joined_at(monkeypatch)
    # A queue that fills for 5 minutes of every 20 and is empty otherwise: 0 -> N -> 0 each time.
    times = [float(t) for t in range(ROWS)]
    jobs = [float(40 if t % 1200 < 300 else 0) for t in range(ROWS)]
    trace = Trace(times, None, external={JOBS: jobs})
    config = worker(max_replicas=8, scale_to_zero_after_seconds=60)
    one, halves = both(trace, config, 1.0, startup=5.0)
    assert same(halves, one)
    assert one.summary.reasons["scale_to_zero"] > 1
    assert joins[0] is not None


def test_halves_that_never_join_give_the_rows_of_one_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    joins = joined_at(monkeypatch)
    # A burst at the start takes the service to 20 replicas, and with scale-down disabled it
    # stays there; the child, starting at 1 replica after the burst, settles on 2. No state
    # ever matches: this process replays the rest itself.
    times = [float(t) for t in range(ROWS)]
    cores = [8.0 if t < 60 else 0.4 for t in range(ROWS)]
    config = service(max_replicas=20, scale_down={"select": "disabled"})
    one, halves = both(Trace(times, cores), config, 1.0, startup=0.0)
    assert same(halves, one)
    assert one.rows[-1][3] == 20
    assert joins == [None]


def test_a_child_that_fails_costs_time_not_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    joins = joined_at(monkeypatch)
    real = simulate_module._run
    parent = os.getpid()

    def failing_in_the_child(*args: Any, **kwargs: Any) -> simulate_module._Run:
        if os.getpid() != parent:
            raise MemoryError("the child ran out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(simulate_module, "_run", failing_in_the_child)
    one, halves = both(noisy_trace(ROWS, seed=2), service(max_replicas=12), 1.0)
    assert same(halves, one)
    assert joins == [None]


def test_an_interrupted_replay_leaves_no_child_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    children: list[int] = []
    real_start = simulate_module._Child.start.__func__  # type: ignore[attr-defined]
    real_run = simulate_module._run
    parent = os.getpid()

    def start(cls: type[simulate_module._Child], *args: Any) -> simulate_module._Child:
        child = real_start(cls, *args)
        children.append(child.pid)
        return child

    def interrupted(*args: Any, **kwargs: Any) -> simulate_module._Run:
        if os.getpid() == parent:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(simulate_module._Child, "start", classmethod(start))
    monkeypatch.setattr(simulate_module, "_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simulate(noisy_trace(ROWS, seed=2), "web", service(), 1.0, workers=2)
    [pid] = children
    with pytest.raises(ChildProcessError):  # reaped: no such child any more
        os.waitpid(pid, os.WNOHANG)


def test_cli_jobs_1_and_2_write_the_same_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = noisy_trace(ROWS, seed=9)
    trace_path = tmp_path / "trace.csv"
    rows = "".join(f"{t:g},{cores:.4f}\n" for t, cores in zip(trace.times, trace.cpu_cores or []))
    trace_path.write_text("time_seconds,cpu_cores\n" + rows)
    config = tmp_path / "config.toml"
    config.write_text(
        '[daemon]\ninterval_seconds = 1\n\n[services.web]\nimage = "demo:latest"\nport = 8000\ncpu_limit = 0.5\nmemory_limit = \"256MiB\"\n'
        'max_replicas = 12\n\n[services.web.load_balancer]\npublish = "127.0.0.1:18080"\n\n'
        "[services.web.policy]\ntarget_cpu_percent = 50\n"
    )
    outputs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"timeline-{jobs}.csv"
        argv = ["simulate", "--config", str(config), "--service", "web", "--trace", str(trace_path), "--out", str(out)]
        assert main([*argv, "--jobs", jobs]) == EXIT_OK
        outputs.append((out.read_bytes(), capsys.readouterr().out.replace(str(out), "OUT")))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].count(b"\n") == ROWS + 1


@pytest.mark.parametrize("jobs", ["0", "3", "two"])
def test_cli_refuses_jobs_other_than_1_or_2(jobs: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--config", "c.toml", "--service", "web", "--trace", "t.csv", "--jobs", jobs])
    assert exit_info.value.code == EXIT_USAGE
    assert "--jobs" in capsys.readouterr().err


def test_the_state_key_ignores_what_no_later_step_reads() -> None:
    # Replicas ready and past initialization are told apart by nothing the policy reads, and
    # history older than the longest window or rate period is never read again.
    trace = noisy_trace(100, seed=1)
    config = service(scale_down_stabilization_seconds=300)
    setup = simulate_module._setup(
        trace, "web", config, config.policy, 1.0, 10.0, simulate_module.DEFAULT_START, 100
    )
    Replica = simulate_module._Replica
    now = 1000.0
    old = [Replica(-math.inf, -math.inf), Replica(100.0, 110.0)]
    young = Replica(995.0, 1005.0)
    a = simulate_module._state_key(setup, [*old, young], History((TimedValue(600.0, 9), TimedValue(990.0, 3))), now)
    b = simulate_module._state_key(setup, [Replica(50.0, 60.0), Replica(70.0, 80.0), young],
                                   History((TimedValue(700.0, 3), TimedValue(990.0, 3))), now)
    c = simulate_module._state_key(setup, [*old, Replica(996.0, 1006.0)], History((TimedValue(990.0, 3),)), now)
    d = simulate_module._state_key(setup, old + [young], History((TimedValue(701.0, 9), TimedValue(990.0, 3))), now)
    assert a == b  # the old replicas and the entries at 600 and 700 (older than 1000 - 300) are forgotten
    assert a != c  # a starting replica's times are kept
    assert a != d  # an entry at 701 is still inside the down window


def test_the_state_key_holds_the_rest_of_what_the_policy_reads() -> None:
    # Scale events inside the longest rate period, the failure streak up to failure_threshold,
    # and when the external metrics were last active: each can change a later decision.
    config = service(fallback_replicas=2, failure_threshold=3)
    setup = simulate_module._setup(
        noisy_trace(100, seed=1), "web", config, config.policy, 1.0, 0.0, simulate_module.DEFAULT_START, 100
    )
    now = 1000.0

    def key(history: History) -> tuple[object, ...]:
        return simulate_module._state_key(setup, [], history, now)

    base = key(History())
    assert key(History(scale_up_events=(TimedValue(990.0, 1),))) != base
    assert key(History(scale_down_events=(TimedValue(990.0, 1),))) != base
    assert key(History(scale_down_events=(TimedValue(600.0, 1),))) == base  # older than the 300 s window
    assert key(History(consecutive_failures=1)) != base
    assert key(History(consecutive_failures=3)) == key(History(consecutive_failures=30))
    assert key(History(consecutive_failures=2)) != key(History(consecutive_failures=3))
    assert key(History(last_active_seconds=990.0)) != base
