"""Log set-up: one line per event, as text or as one JSON object per line.

Structured fields (service, replica, current, desired, reason, dry_run) are passed with
`extra=` and end up as JSON keys or as key=value pairs after the text message.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        service = getattr(record, "service", None)
        if service is not None:
            line = line.replace(record.levelname.ljust(7) + " ", f"{record.levelname:<7} [{service}] ", 1)
        pairs = [
            f"{name}={getattr(record, name)}"
            for name in ("current", "desired", "reason")
            if getattr(record, name, None) is not None
        ]
        return f"{line}  ({' '.join(pairs)})" if pairs else line


def setup_logging(log_format: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Docker SDK's HTTP library logs every connection at debug level.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
