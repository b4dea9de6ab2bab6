"""The one wrapper every external call goes through: latency, errors, by component and operation.

Modules that talk to Docker or HAProxy take a CallObserver; telemetry.py provides the real one
(Prometheus histograms and counters), tests and tools use NULL_OBSERVER.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ContextManager, Protocol


class CallObserver(Protocol):
    def call(self, component: str, operation: str) -> ContextManager[None]:
        """Times the block; an exception escaping it counts as an error of that operation."""
        ...


class _NullObserver:
    @contextlib.contextmanager
    def call(self, component: str, operation: str) -> Iterator[None]:
        yield


NULL_OBSERVER: CallObserver = _NullObserver()
