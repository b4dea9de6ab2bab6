"""Daemon wiring without Docker: config reload (SIGHUP) and the status and readiness documents."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.config import load_config
from autoscaler.engine.daemon import Daemon
from autoscaler.logs import setup_logging
from autoscaler.telemetry import Telemetry

CONFIG = """
[daemon]
interval_seconds = 5

[services.web]
image = "autoscaler-demo-app:latest"
port = 8000
cpu_limit = 0.5
memory_limit = "256MiB"
max_replicas = {max_replicas}

[services.web.load_balancer]
publish = "127.0.0.1:8080"
"""


class NoTemplate:
    def resolve_template(self, config: object) -> None:
        return None


class RecordingController:
    def __init__(self) -> None:
        self.configs: list[object] = []
        self.target = NoTemplate()

    def update_config(self, config: object, template: object = None) -> None:
        self.configs.append(config)


@pytest.fixture
def daemon(tmp_path: Path) -> tuple[Daemon, Path, RecordingController, CollectorRegistry]:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(max_replicas=4))
    registry = CollectorRegistry()
    d = Daemon(load_config(path, environ={}), config_path=path, telemetry=Telemetry(registry))
    controller = RecordingController()
    d.controllers = {"web": controller}  # type: ignore[dict-item]
    return d, path, controller, registry


def reloads(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("autoscaler_config_reloads_total", {"result": result}) or 0.0


def test_a_valid_config_takes_effect(daemon) -> None:  # type: ignore[no-untyped-def]
    d, path, controller, registry = daemon
    path.write_text(CONFIG.format(max_replicas=6))
    assert d.reload() is True
    assert d.settings.services["web"].max_replicas == 6
    assert [c.max_replicas for c in controller.configs] == [6]  # type: ignore[attr-defined]
    assert reloads(registry, "success") == 1


@pytest.mark.parametrize(
    "text",
    [
        CONFIG.format(max_replicas=0),
        CONFIG.format(max_replicas=4) + "\nbogus = 1\n",
        "[daemon\n",
        CONFIG.format(max_replicas=4).replace("[services.web]", "[services.api]").replace("services.web.", "services.api."),
    ],
    ids=["invalid-value", "unknown-key", "toml-syntax", "service-set-changed"],
)
def test_an_invalid_config_is_rejected_and_the_old_one_stays(daemon, text: str, caplog) -> None:  # type: ignore[no-untyped-def]
    d, path, controller, registry = daemon
    before = d.settings
    path.write_text(text)
    assert d.reload() is False
    assert d.settings is before
    assert controller.configs == []
    assert reloads(registry, "failure") == 1
    assert "config reload rejected" in caplog.text


def test_sighup_requests_a_reload_that_the_main_loop_performs(daemon) -> None:  # type: ignore[no-untyped-def]
    d, path, controller, _ = daemon
    path.write_text(CONFIG.format(max_replicas=7))
    d.handle_reload(signal.SIGHUP, None)  # the handler only sets a flag
    assert controller.configs == []

    def stop_when_reloaded() -> None:
        while not controller.configs:
            threading.Event().wait(0.05)
        d.should_exit.set()

    threading.Thread(target=stop_when_reloaded, daemon=True).start()
    d.main_loop()
    assert d.settings.services["web"].max_replicas == 7


def test_readiness_reports_what_is_missing(daemon) -> None:  # type: ignore[no-untyped-def]
    d, *_ = daemon

    class NotYet:
        last_decision_at = None

    d.controllers = {"web": NotYet()}  # type: ignore[dict-item]
    code, _, body = d.readiness()
    assert code == 503
    assert b"web: not evaluated yet" in body
    assert b"docker: engine not reachable" in body


# --- a reload applies every changed key or refuses, naming the key ------------------------------

RESTART_ONLY_CASES = [
    ("health_path = \"/ready\"\n", "services.web.health_path"),
    ("network = \"other\"\n", "services.web.network"),
]


@pytest.mark.parametrize(("extra", "key"), RESTART_ONLY_CASES, ids=["health_path", "network"])
def test_a_change_that_needs_a_restart_refuses_the_whole_reload_naming_the_key(daemon, extra: str, key: str, caplog) -> None:  # type: ignore[no-untyped-def]
    d, path, controller, registry = daemon
    before = d.settings
    text = CONFIG.format(max_replicas=6).replace("memory_limit = \"256MiB\"\n", "memory_limit = \"256MiB\"\n" + extra)
    path.write_text(text)
    assert d.reload() is False
    assert d.settings is before, "nothing applied, not even max_replicas"
    assert controller.configs == []
    assert f"{key} changed, which needs a restart" in caplog.text
    assert reloads(registry, "failure") == 1


@pytest.mark.parametrize(
    ("daemon_table", "key"),
    [("[daemon]\ninterval_seconds = 5\ndry_run = true\n", "daemon.dry_run"),
     ("[daemon]\ninterval_seconds = 5\nload_balancer_access = \"network\"\n", "daemon.load_balancer_access"),
     ("[daemon]\ninterval_seconds = 5\nadmin_socket_dir = \"/run/other\"\n", "daemon.admin_socket_dir")],
    ids=["dry_run", "load_balancer_access", "admin_socket_dir"],
)
def test_daemon_keys_that_need_a_restart_are_named(daemon, daemon_table: str, key: str, caplog) -> None:  # type: ignore[no-untyped-def]
    d, path, _, _ = daemon
    path.write_text(CONFIG.format(max_replicas=4).replace("[daemon]\ninterval_seconds = 5\n", daemon_table))
    assert d.reload() is False
    assert key in caplog.text


def test_daemon_keys_a_reload_can_apply_are_applied_and_listed(daemon, capsys) -> None:  # type: ignore[no-untyped-def]
    d, path, controller, _ = daemon
    path.write_text(CONFIG.format(max_replicas=4).replace(
        "[daemon]\ninterval_seconds = 5\n",
        "[daemon]\ninterval_seconds = 2\nshutdown_timeout_seconds = 4\nlog_level = \"debug\"\n",
    ))
    try:
        assert d.reload() is True
        assert d.settings.daemon.interval_seconds == 2
        assert d.settings.daemon.shutdown_timeout_seconds == 4
        assert logging.getLogger().level == logging.DEBUG, "the log level is applied, not just stored"
        # The reload re-created the log handler (on stderr), so the line is read from there.
        logged = capsys.readouterr().err
        for key in ("daemon.interval_seconds", "daemon.shutdown_timeout_seconds", "daemon.log_level"):
            assert key in logged
    finally:
        setup_logging("text", "info")


def test_a_second_signal_exits_at_once(daemon, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    d, *_ = daemon
    exits: list[int] = []
    monkeypatch.setattr("os._exit", exits.append)
    d.handle_exit(signal.SIGTERM, None)
    assert d.should_exit.is_set() and exits == []
    d.handle_exit(signal.SIGTERM, None)
    assert exits == [1]


def test_passes_that_overrun_their_interval_are_one_line_each_way_not_one_per_skipped_run(caplog) -> None:  # type: ignore[no-untyped-def]
    from apscheduler.schedulers.background import BackgroundScheduler

    from autoscaler.engine.daemon import OverrunLog

    release = threading.Event()
    runs: list[int] = []

    def slow_pass() -> None:
        runs.append(1)
        if len(runs) == 1:
            release.wait(10)  # the first pass hangs until the test lets it go

    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
    OverrunLog(lambda: 0.05).attach(scheduler)
    caplog.set_level(logging.INFO)
    scheduler.add_job(slow_pass, "interval", id="web", seconds=0.05)
    scheduler.start()
    try:
        def lines(text: str) -> list[logging.LogRecord]:
            return [r for r in caplog.records if text in r.getMessage()]

        deadline = threading.Event()
        for _ in range(200):  # hang guard only: the first skipped run comes within an interval or two
            if lines("still running"):
                break
            deadline.wait(0.05)
        deadline.wait(0.3)  # several more intervals are skipped meanwhile
        release.set()
        for _ in range(200):
            if lines("fit their interval again"):
                break
            deadline.wait(0.05)
    finally:
        release.set()
        scheduler.shutdown(wait=True)
    (started,) = lines("still running")
    (ended,) = lines("fit their interval again")
    assert started.service == "web" and ended.service == "web"  # type: ignore[attr-defined]
    skipped = int(ended.getMessage().split("; ")[1].split()[0])
    assert skipped >= 1, ended.getMessage()
    assert not lines("maximum number of running instances"), "APScheduler's per-run warning is not shown"
