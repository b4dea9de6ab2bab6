"""`autoscaler decide` with external metrics: the snapshot's "external" object, the decisions
it leads to (scale to zero's activation included), the output, and bad input.

The worker here ("jobs") scales on jobs_waiting (5 per replica) and mean_job_seconds (a Value
target of 30), next to CPU at 50 %, between 0 and 10 replicas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autoscaler.cli import EXIT_OK, EXIT_USAGE
from test_decide import CONFIG as WEB_CONFIG
from test_decide import ROOT, clean_environment, replica, run

__all__ = ["clean_environment"]  # the autouse fixture, imported to apply here too

CONFIG = """\
[services.jobs]
image = "worker:1"
cpu_limit = 0.5
memory_limit = "128MiB"
min_replicas = 0
max_replicas = 10

[services.jobs.policy]
target_cpu_percent = 50

[[services.jobs.policy.metrics]]
name = "jobs_waiting"
target_average_value = 5
redis = { url = "redis://redis:6379/0", list = "jobs" }

[[services.jobs.policy.metrics]]
name = "mean_job_seconds"
target_value = 30
prometheus = { url = "http://prometheus:9090", query = "avg(job_seconds)" }
"""


def write(directory: Path, snapshot: Any, config: str = CONFIG) -> tuple[Path, Path]:
    config_path = directory / "config.toml"
    config_path.write_text(config)
    path = directory / "snapshot.json"
    path.write_text(snapshot if isinstance(snapshot, str) else json.dumps(snapshot))
    return config_path, path


def decide(tmp_path: Path, capsys: pytest.CaptureFixture[str], snapshot: Any, *extra: str) -> dict[str, Any]:
    config, path = write(tmp_path, snapshot)
    code = run(["decide", "-c", str(config), "--service", "jobs", "--snapshot", str(path), "--json", *extra])
    out, err = capsys.readouterr()
    assert (code, err) == (EXIT_OK, "")
    document: dict[str, Any] = json.loads(out)
    return document


def workers(count: int, cpu: float | None = 50.0) -> list[dict[str, Any]]:
    return [replica(f"jobs-{i}", cpu) for i in range(count)]


# (replicas, external object or None for no key, desired, reason, text in the message)
DECISIONS: dict[str, tuple[list[dict[str, Any]], dict[str, Any] | None, int, str, str]] = {
    # At 0 replicas only the activation values apply.
    "wakes-on-activation": ([], {"jobs_waiting": 12, "mean_job_seconds": 0}, 1, "activation",
                            "jobs_waiting 12 > activation 0 -> 0 -> 1"),
    "stays-at-zero": ([], {"jobs_waiting": 0, "mean_job_seconds": 0}, 0, "inactive",
                      "jobs_waiting 0 <= 0, mean_job_seconds 0 <= 0: staying at 0 -> 0 -> 0"),
    "null-holds-zero": ([], {"jobs_waiting": None, "mean_job_seconds": 0}, 0, "metrics_unavailable",
                        "jobs_waiting: no value (null in the snapshot: its source failed)): holding 0"),
    "absent-holds-zero": ([], {"mean_job_seconds": 0}, 0, "metrics_unavailable",
                          'jobs_waiting: no value (not in the snapshot\'s "external" object)'),
    "no-external-key-holds-zero": ([], None, 0, "metrics_unavailable", "mean_job_seconds: no value"),
    # With replicas, the largest proposal: ceil(30 / 5) = 6 beats CPU's 2.
    "queue-beats-cpu": (workers(2), {"jobs_waiting": 30, "mean_job_seconds": 30}, 6, "scale_up",
                        "jobs_waiting 30 (15 per replica) > target 5 per replica -> 2 -> 6"),
    # A Value target: ceil(2 x 60 / 30) = 4.
    "value-target": (workers(2), {"jobs_waiting": 10, "mean_job_seconds": 60}, 4, "scale_up",
                     "mean_job_seconds 60 > target 30 -> 2 -> 4"),
    "cpu-beats-queue": (workers(2, 90), {"jobs_waiting": 10, "mean_job_seconds": 30}, 4, "scale_up", "cpu 90%"),
    # A source that failed forbids the scale-down the others ask for.
    "null-holds-the-scale-down": (workers(4, 10), {"jobs_waiting": None, "mean_job_seconds": 3}, 4,
                                  "missing_metrics_hold", "not scaling down while jobs_waiting has no reading"),
    # No history: 1 (the policy's min while replicas run), never 0 (that takes
    # scale_to_zero_after_seconds of history).
    "no-history-never-to-zero": (workers(4, 10), {"jobs_waiting": 0, "mean_job_seconds": 0}, 1, "scale_down", "-> 4 -> 1"),
}  # fmt: skip


@pytest.mark.parametrize(("replicas", "external", "desired", "reason", "message"), DECISIONS.values(), ids=list(DECISIONS))
def test_decide_with_external_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], replicas: list[dict[str, Any]], external: dict[str, Any] | None,
    desired: int, reason: str, message: str,
) -> None:
    snapshot: dict[str, Any] = {"replicas": replicas}
    if external is not None:
        snapshot["external"] = external
    document = decide(tmp_path, capsys, snapshot)
    assert (document["current_replicas"], document["desired_replicas"], document["reason"]) == (
        len(replicas), desired, reason,
    )
    assert message in document["message"], document["message"]
    assert document["bounds"] == {"min_replicas": 0, "max_replicas": 10, "source": "config"}


def test_the_json_document_lists_external_proposals_and_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = decide(tmp_path, capsys, {"replicas": workers(2), "external": {"jobs_waiting": 30, "mean_job_seconds": None}})
    assert document["metrics"] == [
        {"metric": "cpu", "utilization": 50.0, "target": 50.0, "proposal": 2, "message": "cpu 50% = target 50%: within tolerance"},
        {"metric": "jobs_waiting", "utilization": 30.0, "target": 5.0, "proposal": 6,
         "message": "jobs_waiting 30 (15 per replica) > target 5 per replica"},
        {"metric": "mean_job_seconds", "utilization": None, "target": 30.0, "proposal": None,
         "message": "mean_job_seconds: no value (null in the snapshot: its source failed)"},
    ]
    assert document["external"] == {"jobs_waiting": 30.0, "mean_job_seconds": None}


def test_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, path = write(tmp_path, {"replicas": [], "external": {"jobs_waiting": 7.5, "mean_job_seconds": None}})
    assert run(["decide", "-c", str(config), "--service", "jobs", "--snapshot", str(path)]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "service jobs: 0 -> 1 (activation)"
    assert lines[1] == "  jobs_waiting 7.5 > activation 0 -> 0 -> 1"
    assert lines[-1] == "  external: jobs_waiting 7.5, mean_job_seconds null"


def test_a_service_without_external_metrics_has_no_external_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, path = write(tmp_path, {"replicas": [replica("web-1", 50)]}, WEB_CONFIG)
    assert run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(path), "--json"]) == EXIT_OK
    assert "external" not in json.loads(capsys.readouterr().out)


# --- bad input ------------------------------------------------------------------------------

# (snapshot, text expected on stderr after "autoscaler: <file>: ")
BAD: dict[str, tuple[Any, str]] = {
    "unknown-name": (
        {"replicas": [], "external": {"jobs": 3}},
        "external: unknown metric(s) 'jobs' (the service's external metrics are jobs_waiting, mean_job_seconds)",
    ),
    "many-unknown-names": (
        {"replicas": [], "external": {f"m{i}": 1 for i in range(8)}},
        "external: unknown metric(s) 'm0', 'm1', 'm2', 'm3', 'm4' and 3 more",
    ),
    "a-string": ({"replicas": [], "external": {"jobs_waiting": "many"}}, "external.jobs_waiting: Input should be a valid number"),
    "a-numeric-string": ({"replicas": [], "external": {"jobs_waiting": "3"}}, "external.jobs_waiting: Input should be a valid number"),
    "a-boolean": ({"replicas": [], "external": {"jobs_waiting": True}}, "external.jobs_waiting: Input should be a valid number"),
    "negative": ({"replicas": [], "external": {"jobs_waiting": -1}}, "external.jobs_waiting: must be >= 0 (got -1)"),
    "absurd": ({"replicas": [], "external": {"jobs_waiting": 1e10}}, "external.jobs_waiting: must be <= 1e+09"),
    "nan": ('{"replicas": [], "external": {"jobs_waiting": NaN}}', "external.jobs_waiting: must be a finite number"),
    "not-an-object": ({"replicas": [], "external": [3]}, "external: Input should be a valid dictionary"),
    "a-list-value": ({"replicas": [], "external": {"jobs_waiting": [3]}}, "external.jobs_waiting: Input should be a valid number"),
}  # fmt: skip


@pytest.mark.parametrize(("snapshot", "message"), BAD.values(), ids=list(BAD))
def test_bad_external_object_exits_2_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], snapshot: Any, message: str
) -> None:
    config, path = write(tmp_path, snapshot)
    assert run(["decide", "-c", str(config), "--service", "jobs", "--snapshot", str(path)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"autoscaler: {path}: {message}"), err
    assert "Traceback" not in err


def test_an_external_object_for_a_service_without_external_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, path = write(tmp_path, {"replicas": [replica("web-1", 50)], "external": {"jobs_waiting": 3}}, WEB_CONFIG)
    assert run(["decide", "-c", str(config), "--service", "web", "--snapshot", str(path)]) == EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        f"autoscaler: {path}: external: unknown metric(s) 'jobs_waiting' (service web has no external metrics "
        "([[services.web.policy.metrics]]))"
    ]


def test_every_problem_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = {"replicas": [replica("jobs-1", -1)], "external": {"jobs_waiting": "x", "typo": 1}}
    config, path = write(tmp_path, snapshot)
    assert run(["decide", "-c", str(config), "--service", "jobs", "--snapshot", str(path)]) == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    for field in ("replicas.0.cpu_percent: ", "external.jobs_waiting: ", "external: unknown metric(s) 'typo'"):
        assert any(f"{path}: {field}" in line for line in lines), lines


def test_as_a_process_an_unknown_name_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config, path = write(tmp_path, {"replicas": [], "external": {"queue_length": 3}})
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    result = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "decide", "-c", str(config), "--service", "jobs", "--snapshot", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == EXIT_USAGE
    assert result.stderr.splitlines() == [
        f"autoscaler: {path}: external: unknown metric(s) 'queue_length' "
        "(the service's external metrics are jobs_waiting, mean_job_seconds)"
    ]
    assert result.stdout == ""
