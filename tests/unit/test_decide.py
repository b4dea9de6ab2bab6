"""`autoscaler decide`: one evaluation of a snapshot file with no history, through the CLI.

Configs and snapshots are real files under tmp_path; main() runs in-process (argparse errors
arrive as SystemExit), and one case runs `python -m autoscaler.cli` to see the real stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autoscaler.cli import EXIT_OK, EXIT_USAGE, main
from autoscaler.config import MAX_REPLICAS

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

CONFIG = """\
[services.web]
image = "demo:latest"
port = 8000
cpu_limit = 0.5
memory_limit = "256MiB"
min_replicas = 1
max_replicas = 10

[services.web.load_balancer]
publish = "127.0.0.1:18080"

[services.web.policy]
target_cpu_percent = 50
tolerance = 0.1
"""

MEMORY = "target_memory_percent = 50\n"
RPS = "target_requests_per_second_per_replica = 10\n"
RESPONSE_TIME = "target_response_time_ms = 200\n"
STEP_CPU = """\
strategy = "step"

[[services.web.policy.steps]]
metric = "cpu"
upper = 20
adjustment = "-1"

[[services.web.policy.steps]]
metric = "cpu"
lower = 80
adjustment = "+2"
"""
STEP = STEP_CPU + """
[[services.web.policy.steps]]
metric = "queue"
lower = 100
adjustment = "+50%"
"""
SCHEDULE = """\

[[services.web.schedule]]
name = "business-hours"
cron = "0 8 * * mon-fri"
timezone = "Europe/Berlin"
duration_seconds = 36000
min_replicas = 3
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # AUTOSCALER_* variables of the shell running the tests would change the configs.
    for key in list(os.environ):
        if key.upper().startswith("AUTOSCALER_"):
            monkeypatch.delenv(key)


def replica(name: str, cpu: float | None = 50.0, **fields: Any) -> dict[str, Any]:
    return {"name": name, "ready": True, "age_seconds": 900, "cpu_percent": cpu, **fields}


def write_files(directory: Path, policy: str = "", snapshot: Any = None, *, tail: str = "") -> tuple[Path, Path]:
    """The config (CONFIG + policy lines + tail) and the snapshot; a str snapshot is written as is."""
    config = directory / "config.toml"
    config.write_text(CONFIG + policy + tail)
    path = directory / "snapshot.json"
    path.write_text(snapshot if isinstance(snapshot, str) else json.dumps(snapshot))
    return config, path


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refuses usage errors this way
        return int(exc.code or 0)


# --- decisions ------------------------------------------------------------------------------

DECISIONS = [
    # (policy lines, replicas, queue, current, desired, reason, text in the message)
    ("", [replica("web-1", 90), replica("web-2", 90)], None, 2, 4, "scale_up", "cpu 90% > target 50% -> 2 -> 4"),
    ("", [replica("web-1", 54), replica("web-2", 54)], None, 2, 2, "within_tolerance", "within tolerance"),
    ("", [replica("web-1", 55), replica("web-2", 55)], None, 2, 2, "within_tolerance", "within tolerance"),
    ("", [replica(f"web-{i}", 10) for i in range(4)], None, 4, 1, "scale_down", "cpu 10% < target 50% -> 4 -> 1"),
    # 2 x 80% alone would ask for 4; the starting replica counted as 0 brings it to 53% (hold).
    (
        "", [replica("web-1", 80), replica("web-2", 80), replica("web-3", 5, ready=False)], None,
        3, 3, "hold", "1 not ready counted as 0",
    ),
    # Younger than initialization_seconds (30 s): its CPU is a start-up spike, not load.
    (
        "", [replica("web-1", 80), replica("web-2", 80), replica("web-3", 100, age_seconds=10)], None,
        3, 3, "hold", "1 not ready counted as 0",
    ),
    # 3 x 10% alone would shrink to 1; the silent replica counted as 100% leaves 32.5% -> 3.
    (
        "", [replica("web-1", 10), replica("web-2", 10), replica("web-3", 10), replica("web-4", None)], None,
        4, 3, "scale_down", "1 missing counted as 100%",
    ),
    (
        MEMORY, [replica("web-1", 50, memory_percent=100), replica("web-2", 50, memory_percent=100)], None,
        2, 4, "scale_up", "memory 100% > target 50%",
    ),
    # Up beats hold beats down: cpu asks for 1, memory (in its band) for 2.
    (
        MEMORY, [replica("web-1", 10, memory_percent=50), replica("web-2", 10, memory_percent=50)], None,
        2, 2, "within_tolerance", "memory 50% = target 50%",
    ),
    (
        RPS, [replica("web-1", 50, requests_per_second=30), replica("web-2", 50, requests_per_second=30)], None,
        2, 6, "scale_up", "requests_per_second 30 rps > target 10 rps",
    ),
    (
        RESPONSE_TIME, [replica("web-1", 50, response_time_ms=400), replica("web-2", 50, response_time_ms=400)], None,
        2, 4, "scale_up", "response_time_ms 400 ms > target 200 ms",
    ),
    (STEP, [replica("web-1", 90), replica("web-2", 90)], None, 2, 4, "scale_up", "step cpu >= 80 -> +2"),
    (STEP_CPU, [replica(f"web-{i}", 10) for i in range(3)], None, 3, 2, "scale_down", "step cpu < 20 -> -1"),
    # A band metric with no reading forbids the scale-down: it may be the one under load.
    (STEP, [replica(f"web-{i}", 10) for i in range(3)], None, 3, 3, "missing_metrics_hold", "queue has no reading"),
    # Up beats hold beats down: the queue (no band matches) holds, so cpu's -1 loses.
    (STEP, [replica(f"web-{i}", 10) for i in range(3)], 0, 3, 3, "hold", "queue 0: no step matches"),
    (STEP, [replica("web-1", 50), replica("web-2", 50)], 150, 2, 3, "scale_up", "step queue >= 100 -> +50%"),
    (STEP, [replica("web-1", 50), replica("web-2", 50)], None, 2, 2, "hold", "no step matches"),
]


@pytest.mark.parametrize(
    ("policy", "replicas", "queue", "current", "desired", "reason", "message"),
    DECISIONS,
    ids=[
        "scale-up-cpu-above-target",
        "hold-within-tolerance",
        "hold-on-the-tolerance-edge",
        "scale-down-at-once-without-history",
        "not-ready-counted-as-0-on-scale-up",
        "young-replica-counted-as-0-on-scale-up",
        "missing-counted-as-100-on-scale-down",
        "memory-beats-cpu",
        "memory-hold-beats-cpu-down",
        "requests-per-second-target",
        "response-time-target",
        "step-up",
        "step-down",
        "step-down-held-while-a-metric-is-missing",
        "step-hold-beats-down",
        "step-queue-percent",
        "step-no-band-holds",
    ],
)
def test_decide(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    policy: str,
    replicas: list[dict[str, Any]],
    queue: float | None,
    current: int,
    desired: int,
    reason: str,
    message: str,
) -> None:
    config, snapshot = write_files(tmp_path, policy, {"replicas": replicas, "queue_current": queue})
    code = run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot), "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    document = json.loads(out)
    assert (document["current_replicas"], document["desired_replicas"], document["reason"]) == (current, desired, reason)
    assert message in document["message"]


SCHEDULED = [
    ("2026-01-05T09:00:00+01:00", 3, "below_min", 3, "schedule business-hours"),  # Monday 09:00 Berlin
    ("2026-01-05T08:00:00Z", 3, "below_min", 3, "schedule business-hours"),  # same instant, in UTC
    ("2026-01-05T07:59:59+01:00", 1, "within_tolerance", 1, "config"),  # a second before it opens
    ("2026-01-05T18:00:00+01:00", 1, "within_tolerance", 1, "config"),  # closed at fire + duration
    ("2026-01-10T09:00:00+01:00", 1, "within_tolerance", 1, "config"),  # Saturday
    ("2026-01-05T07:00:00", 3, "below_min", 3, "schedule business-hours"),  # no offset: read as UTC
]


@pytest.mark.parametrize(
    ("at", "desired", "reason", "min_replicas", "source"),
    SCHEDULED,
    ids=["window-open", "window-open-utc", "before-open", "closed", "weekend", "naive-is-utc"],
)
def test_decide_at_applies_the_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], at: str, desired: int, reason: str, min_replicas: int, source: str
) -> None:
    config, snapshot = write_files(tmp_path, "", {"replicas": [replica("web-1", 50)]}, tail=SCHEDULE)
    code = run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot), "--json", "--at", at])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    document = json.loads(out)
    assert (document["desired_replicas"], document["reason"]) == (desired, reason)
    assert document["bounds"] == {"min_replicas": min_replicas, "max_replicas": 10, "source": source}


def test_json_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = write_files(tmp_path)
    code = run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(FIXTURES / "decide_snapshot.json"), "--json"])
    out, err = capsys.readouterr()
    assert (code, err) == (EXIT_OK, "")
    # Two replicas at 72.5% and 97.5% pool to 85%: ceil(2 x 85 / 50) = 4.
    assert json.loads(out) == {
        "service": "web",
        "current_replicas": 2,
        "desired_replicas": 4,
        "reason": "scale_up",
        "message": "cpu 85% > target 50% -> 2 -> 4",
        "recommendation": 4,
        "bounds": {"min_replicas": 1, "max_replicas": 10, "source": "config"},
        "metrics": [
            {"metric": "cpu", "utilization": 85.0, "target": 50.0, "proposal": 4, "message": "cpu 85% > target 50%"}
        ],
    }


def test_json_document_of_step_strategy_has_no_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, snapshot = write_files(tmp_path, STEP, {"replicas": [replica("web-1", 90)], "queue_current": None})
    assert run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot), "--json"]) == EXIT_OK
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert [(m["metric"], m["utilization"], m["target"], m["proposal"]) for m in metrics] == [
        ("cpu", 90.0, None, 3),
        ("queue", None, None, None),
    ]


def test_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = write_files(tmp_path)
    code = run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(FIXTURES / "decide_snapshot.json")])
    out, err = capsys.readouterr()
    assert (code, err) == (EXIT_OK, "")
    lines = out.splitlines()
    assert lines[0] == "service web: 2 -> 4 (scale_up)"
    assert lines[1] == "  cpu 85% > target 50% -> 2 -> 4"
    assert lines[2] == "  bounds: min 1, max 10 (config)"
    assert lines[4].split() == ["cpu", "value", "85", "target", "50", "proposal", "4", "cpu", "85%", ">", "target", "50%"]


# --- bad input ------------------------------------------------------------------------------

GOOD = {"replicas": [replica("web-1", 50)]}

HUGE_INT = '{"replicas": [{"name": "a", "ready": true, "age_seconds": ' + "9" * 5000 + "}]}"
LONG_FLOAT = '{"replicas": [{"name": "a", "ready": true, "age_seconds": 1, "cpu_percent": 0.' + "1" * 200 + "}]}"
DEEP = "[" * 100_000 + "]" * 100_000

# (snapshot content: JSON value or raw text, text expected on stderr)
BAD_SNAPSHOTS = [
    ("{", "not valid JSON"),
    ("", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    ([GOOD], "expected a JSON object"),
    ({}, "replicas: required key is missing"),
    ({"replicas": {"web-1": {}}}, "replicas: Input should be a valid list"),
    ({"replicas": [{"name": "web-1", "age_seconds": 1}]}, "replicas.0.ready: required key is missing"),
    ({"replicas": [replica("web-1", ready="yes")]}, "replicas.0.ready: Input should be a valid boolean"),
    ({"replicas": [replica("web-1", ready=1)]}, "replicas.0.ready: Input should be a valid boolean"),
    ({"replicas": [replica("web-1", "high")]}, "replicas.0.cpu_percent: Input should be a valid number"),
    ({"replicas": [replica("web-1", age_seconds=True)]}, "replicas.0.age_seconds: Input should be a valid number"),
    ({"replicas": [replica("web-1", age_seconds="900")]}, "replicas.0.age_seconds: Input should be a valid number"),
    ({"replicas": [replica(7)]}, "replicas.0.name: Input should be a valid string"),
    ({"replicas": [replica("")]}, "replicas.0.name"),
    ({"replicas": [replica("web-1", -1)]}, "replicas.0.cpu_percent: must be >= 0 (got -1)"),
    ({"replicas": [replica("web-1", age_seconds=-5)]}, "replicas.0.age_seconds: must be >= 0"),
    ({"replicas": [replica("web-1", memory_percent=-0.5)]}, "replicas.0.memory_percent: must be >= 0"),
    ({"replicas": [replica("web-1", response_time_ms=-1)]}, "replicas.0.response_time_ms: must be >= 0"),
    (GOOD | {"queue_current": -1}, "queue_current: must be >= 0"),
    ('{"replicas": [{"name": "a", "ready": true, "age_seconds": 1, "cpu_percent": NaN}]}', "replicas.0.cpu_percent"),
    ('{"replicas": [{"name": "a", "ready": true, "age_seconds": Infinity}]}', "replicas.0.age_seconds"),
    ({"replicas": [replica("web-1", 1e308), replica("web-2", 1e308)]}, "replicas.0.cpu_percent: must be <= 1e+09"),
    (GOOD | {"replica": []}, "replica: unknown key"),
    ({"replicas": [replica("web-1", cpu=None, cpu_pct=5)]}, "replicas.0.cpu_pct: unknown key"),
    ({"replicas": [replica("web-1"), replica("web-2"), replica("web-1")]}, "replicas: duplicate name(s) web-1"),
    # Oversized and absurd input: one line each, before anything is built from it.
    (HUGE_INT, "line 1: a number 5000 characters long (99999999999999999999...); no reading needs more than 100"),
    (LONG_FLOAT, "line 1: a number 202 characters long"),
    ('{"replicas": [{"name": "a", "ready": true, "age_seconds": 1, "cpu_percent": 1e999}]}',
     "replicas.0.cpu_percent: must be a finite number (got inf)"),
    ({"replicas": [replica("web-1", age_seconds=1e12)]}, "replicas.0.age_seconds: must be <= 3.1536e+09 (got 1000000000000.0)"),
    (DEEP, "not valid JSON (nested far too deeply for a snapshot)"),
    ('{"replicas": ' + DEEP + "}", "not valid JSON (nested far too deeply for a snapshot)"),
    ({"replicas": [replica(f"web-{i}") for i in range(MAX_REPLICAS + 1)]}, "replicas: 1001 replicas; a service has at most 1000"),
    (" " * (16 * 1024**2) + "{}", "larger than 16 MiB, too large for a snapshot"),
]


@pytest.mark.parametrize(
    ("content", "message"),
    BAD_SNAPSHOTS,
    ids=[
        "malformed-json",
        "empty-file",
        "not-utf8",
        "not-an-object",
        "no-replicas-key",
        "replicas-not-a-list",
        "ready-missing",
        "ready-a-string",
        "ready-a-number",
        "cpu-a-string",
        "age-a-boolean",
        "age-a-numeric-string",
        "name-a-number",
        "name-empty",
        "negative-cpu",
        "negative-age",
        "negative-memory",
        "negative-response-time",
        "negative-queue",
        "nan",
        "infinity",
        "absurdly-large-reading",
        "unknown-top-level-key",
        "unknown-replica-key",
        "duplicate-names",
        "5000-digit-int",
        "200-digit-float",
        "float-overflow",
        "age-over-a-century",
        "nested-100000-deep",
        "replicas-nested-100000-deep",
        "1001-replicas",
        "over-16-MiB",
    ],
)
def test_bad_snapshot_exits_2_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: Any, message: str
) -> None:
    config, snapshot = write_files(tmp_path)
    if isinstance(content, bytes):
        snapshot.write_bytes(content)
    else:
        snapshot.write_text(content if isinstance(content, str) else json.dumps(content))
    code = run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot)])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert out == ""
    assert f"autoscaler: {snapshot}: " in err
    assert message in err


def test_every_problem_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, snapshot = write_files(tmp_path, "", {"replicas": [replica("web-1", -1, ready="no"), replica("web-2", extra=1)]})
    assert run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot)]) == EXIT_USAGE
    err = capsys.readouterr().err
    for field in ("replicas.0.ready", "replicas.0.cpu_percent", "replicas.1.extra"):
        assert field in err
    assert len(err.splitlines()) == 3


# (argv after the config, text expected on stderr); {snapshot} and {tmp} are filled in.
BAD_USAGE = [
    (["--service", "web", "--snapshot", "{tmp}/missing.json"], "missing.json: cannot read"),
    (["--service", "web", "--snapshot", "{tmp}"], "cannot read"),
    (["--service", "api", "--snapshot", "{snapshot}"], "unknown service 'api' (the config has: web)"),
    (["--service", "web", "--snapshot", "{snapshot}", "--at", "tomorrow"], "argument --at: 'tomorrow' is not an ISO 8601 time"),
    (["--service", "web", "--snapshot", "{snapshot}", "--at", "2026-02-30T10:00:00"], "argument --at"),
    (["--snapshot", "{snapshot}"], "the following arguments are required: --service"),
]


@pytest.mark.parametrize(
    ("argv", "message"),
    BAD_USAGE,
    ids=["missing-snapshot-file", "snapshot-is-a-directory", "unknown-service", "bad-at", "impossible-date", "no-service"],
)
def test_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    config, snapshot = write_files(tmp_path, "", GOOD)
    filled = [a.format(snapshot=snapshot, tmp=tmp_path) for a in argv]
    assert run(["decide", "-c", str(config), *filled]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("config_text", "message"),
    [(None, "file not found"), (CONFIG.replace("max_replicas = 10", "max_replicas = 0"), "services.web.max_replicas")],
    ids=["missing-config", "invalid-config"],
)
def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str | None, message: str) -> None:
    _, snapshot = write_files(tmp_path, "", GOOD)
    config = tmp_path / "other.toml"
    if config_text is not None:
        config.write_text(config_text)
    assert run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot)]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_as_a_process_a_bad_snapshot_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    # Readings this large used to overflow to inf in the replica arithmetic and crash.
    config, snapshot = write_files(tmp_path, "", {"replicas": [replica("web-1", 1e308), replica("web-2", 1e308)]})
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    result = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr
    assert f"{snapshot}: replicas.0.cpu_percent: must be <= 1e+09" in result.stderr


def test_a_snapshot_of_max_replicas_replicas_is_decided(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1000 replicas at 10% of a 50% target: 100 are enough, and max_replicas (10) clamps below that.
    snapshot = {"replicas": [replica(f"web-{i}", 10) for i in range(MAX_REPLICAS)]}
    config, path = write_files(tmp_path, "", snapshot)
    assert run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(path), "--json"]) == EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert (document["current_replicas"], document["desired_replicas"]) == (MAX_REPLICAS, 10)


# id -> (snapshot text, the one line expected on stderr after "autoscaler: <file>: ")
NASTY_SNAPSHOTS = {
    "5000-digit-number": (HUGE_INT, "line 1: a number 5000 characters long"),
    "nested-100000-deep": (DEEP, "not valid JSON (nested far too deeply for a snapshot)"),
    "1001-replicas": (json.dumps({"replicas": [replica(f"w{i}") for i in range(1001)]}), "replicas: 1001 replicas"),
}


@pytest.mark.parametrize(("text", "message"), NASTY_SNAPSHOTS.values(), ids=list(NASTY_SNAPSHOTS))
def test_as_a_process_nasty_input_is_one_line_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    config, snapshot = write_files(tmp_path, "", text)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    result = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == EXIT_USAGE
    [line] = result.stderr.splitlines()
    assert line.startswith(f"autoscaler: {snapshot}: {message}")
    assert result.stdout == ""


@pytest.mark.parametrize(
    "at", ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", "1969-12-31T23:59:59+00:00"],
    ids=["year-1", "year-9999", "before-1970"],
)
def test_at_outside_the_calendar_a_schedule_can_use_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], at: str) -> None:
    # A schedule looks a window's length before --at: from year 1 that used to overflow.
    config, snapshot = write_files(tmp_path, "", GOOD, tail=SCHEDULE)
    assert run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(snapshot), "--at", at]) == EXIT_USAGE
    assert f"argument --at: '{at}' must be between 1970-01-01 and 9000-01-01" in capsys.readouterr().err
