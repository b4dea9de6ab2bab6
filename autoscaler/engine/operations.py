"""Docker calls that take a while (create + start, stop + remove) run here, off the control loop.

The loop submits an operation and goes on; the outcome waits in a queue until the loop's next
step collects it, so every decision about a replica is still made by the loop itself, in one
thread. Worker threads are daemonic: a shutdown that gives up on an operation does not wait
for it (a restarted daemon adopts whatever it left).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    kind: str  # "start" | "remove"
    key: str  # the replica's name
    value: Any = None
    error: Exception | None = None
    context: dict[str, Any] = field(default_factory=dict)


class Operations:
    def __init__(self, name: str, workers: int = 32, notify: Callable[[], None] | None = None) -> None:
        self._tasks: queue.SimpleQueue[tuple[str, str, Callable[[], Any], dict[str, Any]] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_flight: dict[str, dict[str, dict[str, Any]]] = {}  # kind -> key -> context
        self._idle = threading.Condition(self._lock)
        self._notify = notify
        self._threads = [
            threading.Thread(target=self._work, name=f"ops-{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, kind: str, key: str, fn: Callable[[], Any], **context: Any) -> None:
        with self._lock:
            self._in_flight.setdefault(kind, {})[key] = context
        self._tasks.put((kind, key, fn, context))

    def in_flight(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._in_flight.get(kind, {}))

    def busy(self) -> bool:
        with self._lock:
            return any(self._in_flight.values())

    def completed(self) -> list[Outcome]:
        """Outcomes not collected yet, oldest first. Their keys are no longer in flight."""
        outcomes = []
        while True:
            try:
                outcomes.append(self._done.get_nowait())
            except queue.Empty:
                return outcomes

    def wait_idle(self, timeout_seconds: float) -> bool:
        """Waits until no operation runs; False if some still do after the timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self._idle:
            while any(self._in_flight.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            kind, key, fn, context = task
            try:
                outcome = Outcome(kind, key, value=fn(), context=context)
            except Exception as exc:  # handed to the loop, which logs and counts it
                outcome = Outcome(kind, key, error=exc, context=context)
            self._done.put(outcome)
            with self._idle:
                self._in_flight.get(kind, {}).pop(key, None)
                self._idle.notify_all()
            if self._notify is not None:
                self._notify()
