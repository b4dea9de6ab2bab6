"""The command line: exit codes 0 / 1 / 2 and one clear message per problem, never a traceback.

Most cases call autoscaler.cli.main() in-process; a few run `python -m autoscaler.cli` and
`python -m autoscaler` to see exactly what reaches stderr. Nothing here needs a Docker engine: `run` is pointed at a socket
that does not exist.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from autoscaler.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
NO_DOCKER = "unix:///nonexistent/docker.sock"

BASE = """\
[daemon]
metrics_listen = "127.0.0.1:{metrics_port}"

[services.web]
image = "demo:latest"
port = 8000
cpu_limit = 0.5
memory_limit = "256MiB"
min_replicas = 1
max_replicas = 4

[services.web.load_balancer]
publish = "127.0.0.1:{publish_port}"

[services.web.policy]
target_cpu_percent = 60
"""


def write_config(directory: Path, *edits: tuple[str, str], append: str = "", metrics_port: int | None = None) -> Path:
    text = BASE.format(metrics_port=metrics_port or free_port(), publish_port=free_port())
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = directory / "config.toml"
    path.write_text(text + append)
    return path


@contextlib.contextmanager
def preserved_root_logging() -> Iterator[None]:
    """`run` installs its own root handler; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quieted = {name: logging.getLogger(name).level for name in ("urllib3", "docker", "apscheduler")}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, previous in quieted.items():
            logging.getLogger(name).setLevel(previous)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # AUTOSCALER_* variables would be merged into every config these tests load.
    for key in os.environ:
        if key.upper().startswith("AUTOSCALER_"):
            monkeypatch.delenv(key)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- validate ----------------------------------------------------------------------------------


def test_validate_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(EXAMPLE)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "ok (1 service(s): web)" in out
    assert err == ""


BAD_CONFIGS = [
    pytest.param([("port = 8000", "port = 8000\nreplicas = 3")], "", "services.web.replicas: unknown key",
                 id="unknown-key"),
    pytest.param([("max_replicas = 4", "max_replicas = 0")], "", "services.web.max_replicas: must be >= 1",
                 id="max-below-1"),
    pytest.param([("min_replicas = 1", "min_replicas = 3"), ("max_replicas = 4", "max_replicas = 2")], "",
                 "services.web.max_replicas: must be >= min_replicas (3)", id="max-below-min"),
    pytest.param([("target_cpu_percent = 60", "target_cpu_percent = 0")], "",
                 "services.web.policy.target_cpu_percent: must be > 0", id="target-0"),
    pytest.param([("target_cpu_percent = 60", "target_cpu_percent = 150")], "",
                 "services.web.policy.target_cpu_percent: must be <= 100", id="target-150"),
    pytest.param([('"256MiB"', '"12XB"')], "", "services.web.memory_limit: '12XB' is not a valid size",
                 id="memory-unit"),
    pytest.param([], "\n[services.web\n", "invalid TOML", id="toml-syntax"),
    # What `run` could not honour, each named by its field.
    pytest.param([("max_replicas = 4", "max_replicas = true")], "",
                 "services.web.max_replicas: must be a number, not a boolean (got True)", id="bool-replicas"),
    pytest.param([("min_replicas = 1", f"min_replicas = {2**63 - 1}")], "",
                 "services.web.min_replicas: must be <= 1000 (got 9223372036854775807)", id="int64-replicas"),
    pytest.param([("[daemon]", "[daemon]\ninterval_seconds = inf")], "",
                 "daemon.interval_seconds: must be a finite number (got inf)", id="inf-interval"),
    pytest.param([("cpu_limit = 0.5", "cpu_limit = 1e12")], "",
                 "services.web.cpu_limit: must be between 0.01 (Docker's minimum) and 1024 cores (got 1e+12)", id="cpu-1e12"),
    pytest.param([('"256MiB"', '"99999999TiB"')], "",
                 "services.web.memory_limit: must be between 6MiB (Docker's minimum) and 64TiB (got '99999999TiB')",
                 id="memory-99999999TiB"),
    pytest.param([("port = 8000", 'port = 8000\nnetwork = "host"')], "",
                 "services.web.network: 'host' is one of Docker's predefined networks", id="network-host"),
    pytest.param([("[services.web.load_balancer]", '[services.web.load_balancer]\nimage = "a b"')], "",
                 "services.web.load_balancer.image: 'a b' is not a valid image reference: contains whitespace",
                 id="lb-image-space"),
    pytest.param([("[daemon]", "[daemon]\ninterval_seconds = " + "9" * 5000)], "",
                 "invalid TOML: a number with more than 4300 digits (line 2)", id="5000-digit-number"),
]


@pytest.mark.parametrize(("edits", "append", "message"), BAD_CONFIGS)
def test_validate_rejects_a_bad_config_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edits: list[tuple[str, str]], append: str, message: str
) -> None:
    path = write_config(tmp_path, *edits, append=append)

    assert main(["validate", "-c", str(path)]) == EXIT_USAGE

    out, err = capsys.readouterr()
    assert out == ""
    assert f"invalid config {path}" in err
    assert message in err
    assert "Traceback" not in err


def test_validate_reports_every_problem_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(
        tmp_path, ("target_cpu_percent = 60", "target_cpu_percent = 150"), ('"256MiB"', '"12XB"'),
        ("port = 8000", "port = 8000\nreplicas = 3"),
    )
    assert main(["validate", "-c", str(path)]) == EXIT_USAGE
    problems = [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]
    assert sorted(p.split(":")[0] for p in problems) == [
        "services.web.memory_limit", "services.web.policy.target_cpu_percent", "services.web.replicas",
    ]


def test_validate_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["validate", "-c", str(missing)]) == EXIT_USAGE
    assert f"{missing}: file not found" in capsys.readouterr().err


# --- run ---------------------------------------------------------------------------------------


def test_run_refuses_a_bad_config_before_touching_docker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    touched: list[object] = []
    monkeypatch.setattr(docker, "from_env", lambda *a, **kw: touched.append((a, kw)))
    path = write_config(tmp_path, ("target_cpu_percent = 60", "target_cpu_percent = 0"))

    with preserved_root_logging():
        assert main(["run", "-c", str(path)]) == EXIT_USAGE

    assert touched == []
    assert "services.web.policy.target_cpu_percent: must be > 0" in capsys.readouterr().err


def test_run_without_a_docker_engine_exits_1_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    metrics_port = free_port()
    path = write_config(tmp_path, metrics_port=metrics_port)

    with preserved_root_logging():
        assert main(["run", "-c", str(path)]) == EXIT_FAILURE

    err = capsys.readouterr().err
    assert "cannot start" in err and "the Docker engine is not reachable" in err
    assert "Traceback" not in err
    assert port_is_free(metrics_port), "nothing was left listening"


# --- usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["validate"], ["validate", "-c", str(EXAMPLE), "--frobnicate"], ["run", "--dry-run"]],
    ids=["no-subcommand", "unknown-subcommand", "missing-config", "unknown-flag", "run-without-config"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == EXIT_USAGE
    assert "usage: autoscaler" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("9101", "expected 'host:port'"),
        ("0.0.0.0:0", "port must be a number between 1 and 65535"),
        ("0.0.0.0:99999", "port must be a number between 1 and 65535"),
        (":9101", "the host is empty"),
        ("::1:9101", "put IPv6 addresses in brackets"),
    ],
    ids=["no-host", "port-zero", "port-too-big", "empty-host", "bare-ipv6"],
)
def test_agent_refuses_a_bad_listen_address_in_one_line(
    listen: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "--listen", listen]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoscaler: --listen: ") and message in err


def test_agent_without_a_docker_engine_exits_1_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    port = free_port()
    with preserved_root_logging():
        assert main(["agent", "--listen", f"127.0.0.1:{port}"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot start: the Docker engine is not reachable" in err
    assert "Traceback" not in err
    assert port_is_free(port)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == EXIT_OK
    assert capsys.readouterr().out.startswith("autoscaler ")


# --- as a process: what really reaches stderr --------------------------------------------------

# id -> (command, config edits, exit code, message on stderr)
PROCESS_CASES = {
    "validate-bad-config": (
        "validate", [("max_replicas = 4", "max_replicas = 0")], EXIT_USAGE, "services.web.max_replicas: must be >= 1",
    ),
    "validate-boolean-replicas": (
        "validate", [("max_replicas = 4", "max_replicas = true")], EXIT_USAGE,
        "services.web.max_replicas: must be a number, not a boolean (got True)",
    ),
    "validate-deep-nesting": (
        "validate", [("[daemon]", "x = " + "[" * 100_000 + "]" * 100_000 + "\n[daemon]")], EXIT_USAGE,
        "invalid TOML: arrays or inline tables nested too deeply",
    ),
    "run-without-docker": ("run", [], EXIT_FAILURE, "the Docker engine is not reachable"),
}


# `python -m autoscaler` (autoscaler/__main__.py) must behave exactly as the console script.
MODULES = ["autoscaler.cli", "autoscaler"]


def process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTOSCALER_")}
    env["DOCKER_HOST"] = NO_DOCKER
    return env


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[int, str]]:
    """Runs every case of PROCESS_CASES under each module side by side: (exit code, stderr)."""
    running = {}
    for case, (command, edits, _, _) in PROCESS_CASES.items():
        path = write_config(tmp_path_factory.mktemp(case), *edits)
        for module in MODULES:
            running[case, module] = subprocess.Popen(
                [sys.executable, "-m", module, command, "-c", str(path)],
                cwd=ROOT, env=process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
    results = {}
    for key, process in running.items():
        _, err = process.communicate(timeout=30)
        results[key] = (process.returncode, err)
    return results


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", PROCESS_CASES)
def test_python_m_autoscaler_cli(processes: dict[tuple[str, str], tuple[int, str]], case: str, module: str) -> None:
    _, _, code, message = PROCESS_CASES[case]
    returncode, err = processes[case, module]
    assert returncode == code, err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "code", "stdout"), [
    (["--version"], EXIT_OK, "autoscaler 0.1.0"),
    (["validate", "--config", str(EXAMPLE)], EXIT_OK, ": ok (1 service(s): web)"),
    ([], EXIT_USAGE, ""),
    (["frobnicate"], EXIT_USAGE, ""),
], ids=["version", "validate-ok", "no-command", "unknown-command"])
def test_python_m_autoscaler_is_the_autoscaler_command(argv: list[str], code: int, stdout: str) -> None:
    result = subprocess.run([sys.executable, "-m", "autoscaler", *argv], cwd=ROOT, env=process_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == code, result.stderr
    assert stdout in result.stdout
    assert "Traceback" not in result.stderr
    if code == EXIT_USAGE:
        assert result.stderr.startswith("usage: autoscaler "), result.stderr
