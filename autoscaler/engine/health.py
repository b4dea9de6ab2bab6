"""What `status` shows of a service beyond its decision, and the log-once-per-change rule."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

# Numbers and ids set aside, two messages about the same condition are the same news.
_VARYING = re.compile(r"\b[0-9a-f]{12,64}\b|\d+(?:\.\d+)?")


@dataclass
class ServiceHealth:
    """Conditions shown by `status`, each logged once when it changes."""

    engine_down_since: float | None = None  # wall clock
    engine_error: str = ""
    lb_down_since: float | None = None
    lb_error: str = ""
    standby_holder: str | None = None
    last_failure: str = ""
    last_failure_at: float | None = None  # wall clock
    stats_source: str | None = None  # cgroup | docker_api | mixed
    notes: dict[str, str] = field(default_factory=dict)  # last message per topic, for once-per-change logs

    def once(self, logger: logging.Logger, topic: str, level: int, message: str, *args: object,
             extra: dict[str, object] | None = None) -> None:
        """Logs a condition once per change, not once per pass ("next try in 4s" and "in 8s"
        are the same news)."""
        text = message % args if args else message
        key = _VARYING.sub("#", text)
        if self.notes.get(topic) != key:
            self.notes[topic] = key
            logger.log(level, "%s", text, extra=extra)
