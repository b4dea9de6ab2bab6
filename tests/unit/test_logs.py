"""setup_logging: one line per event, as text or as one JSON object per line."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

import pytest

from autoscaler.logs import setup_logging

DECISION = {"service": "web", "current": 2, "desired": 4, "reason": "scale_up"}
MESSAGE = "cpu 102.5% > target 50% -> 2 -> 4"


@contextlib.contextmanager
def configured(log_format: str, level: str = "info") -> Iterator[logging.Logger]:
    """setup_logging() replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    quieted = {name: logging.getLogger(name).level for name in ("urllib3", "docker", "apscheduler")}
    try:
        setup_logging(log_format, level)
        yield logging.getLogger("autoscaler.engine")
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        for name, previous in quieted.items():
            logging.getLogger(name).setLevel(previous)


def test_json_is_one_object_per_line_with_the_decision_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with configured("json") as log:
        log.info(MESSAGE, extra=DECISION)
        log.warning("line one\nline two", extra={"service": "web", "replica": "autoscaler-web-1a2b3c"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("cycle failed", extra={"service": "web"})

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, "one line per event, also for multi-line messages and tracebacks"
    records = [json.loads(line) for line in lines]
    first = records[0]
    assert {"time", "level", "logger", "message", "service", "current", "desired", "reason"} <= first.keys()
    assert first["message"] == MESSAGE
    assert (first["level"], first["logger"]) == ("INFO", "autoscaler.engine")
    assert {k: first[k] for k in DECISION} == DECISION
    assert first["time"][:2] == "20" and "T" in first["time"]
    assert records[1]["message"] == "line one\nline two"
    assert records[1]["replica"] == "autoscaler-web-1a2b3c"
    assert records[2]["level"] == "ERROR" and "RuntimeError: boom" in records[2]["exc_info"]


def test_text_has_the_service_and_the_decision_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with configured("text") as log:
        log.info(MESSAGE, extra=DECISION)
        log.warning("no service here")

    first, second = capsys.readouterr().err.splitlines()
    assert "INFO    [web] " + MESSAGE in first
    assert first.endswith("(current=2 desired=4 reason=scale_up)")
    assert "reason=scale_up" in first
    assert "WARNING no service here" in second and "[" not in second and "(" not in second


@pytest.mark.parametrize(
    ("level", "shown"),
    [("debug", ["DEBUG", "INFO", "WARNING"]), ("info", ["INFO", "WARNING"]), ("warning", ["WARNING"]),
     ("error", [])],
)
def test_level(capsys: pytest.CaptureFixture[str], level: str, shown: list[str]) -> None:
    with configured("json", level) as log:
        log.debug("d")
        log.info("i")
        log.warning("w")
    assert [json.loads(line)["level"] for line in capsys.readouterr().err.splitlines()] == shown


def test_root_handlers_are_restored() -> None:
    before = logging.getLogger().handlers[:]
    with configured("text"):
        assert logging.getLogger().handlers != before
    assert logging.getLogger().handlers == before
