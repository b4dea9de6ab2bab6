"""Where the daemon gets the CPU and memory of Swarm tasks, which a manager cannot read itself:
the `autoscaler agent` on every node (scraped concurrently), or an existing Prometheus (PromQL).

Both answer task id -> StatsReading | None. A task no source reported is None (missing, never
0 %); CPU percentages come from two of the daemon's readings, as with Docker stats. Nothing here
talks to Docker: the endpoints to scrape are given by the caller (the Swarm backend).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from autoscaler.config import PrometheusSourceConfig
# SourceError is re-exported: the Swarm backend catches it.
from autoscaler.engine.ports import SourceError as SourceError
from autoscaler.engine.ports import StatsReading
from autoscaler.sources.prometheus import PrometheusAPI, reason, short

log = logging.getLogger("autoscaler.swarm")

TASK_ID_LABEL = "container_label_com_docker_swarm_task_id"
CPU_SERIES = "container_cpu_usage_seconds_total"
MEMORY_SERIES = "container_memory_working_set_bytes"
MEMORY_LIMIT_SERIES = "container_spec_memory_limit_bytes"
ENGINE_UP_SERIES = "autoscaler_agent_engine_up"

# Scrapes run in parallel up to this many nodes; beyond, they queue behind each other.
MAX_PARALLEL_SCRAPES = 64
# An agent's page is a few hundred bytes per task: anything near this is not an agent.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024




class _AgentPage(NamedTuple):
    readings: dict[str, StatsReading]
    engine_up: bool | None  # None: the page does not say (cAdvisor, or an older agent)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _parse_agent_page(text: str, scraped_at_seconds: float) -> _AgentPage:
    cpu_seconds: dict[str, float] = {}
    memory_bytes: dict[str, float] = {}
    limit_bytes: dict[str, float] = {}
    by_name = {CPU_SERIES: cpu_seconds, MEMORY_SERIES: memory_bytes, MEMORY_LIMIT_SERIES: limit_bytes}
    engine_up: bool | None = None
    try:
        for family in text_string_to_metric_families(text):
            # By sample name, not family: the parser groups untyped and suffixed names its own way.
            for sample in family.samples:
                if sample.name == ENGINE_UP_SERIES:
                    engine_up = sample.value == 1
                    continue
                target = by_name.get(sample.name)
                task_id = sample.labels.get(TASK_ID_LABEL)
                if target is not None and task_id:
                    target[task_id] = float(sample.value)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise SourceError(f"not in the Prometheus text format: {_short(str(exc) or type(exc).__name__)}") from exc
    readings = {}
    for task_id, seconds in cpu_seconds.items():
        if not math.isfinite(seconds) or seconds < 0:
            continue  # no CPU reading: the task is missing rather than at some made-up value
        memory = _finite(memory_bytes.get(task_id, math.nan))
        limit = _finite(limit_bytes.get(task_id, math.nan))
        readings[task_id] = StatsReading(
            cpu_total_ns=round(seconds * 1e9),
            system_cpu_ns=None,  # CPU % comes from the wall time between two readings
            online_cpus=1,
            read_at_seconds=scraped_at_seconds,
            memory_used_bytes=None if memory is None else int(memory),
            # cAdvisor writes 0 for "no limit".
            memory_limit_bytes=int(limit) if limit else None,
        )
    return _AgentPage(readings, engine_up)


def parse_agent_metrics(text: str, scraped_at_seconds: float) -> dict[str, StatsReading]:
    """Task id -> reading from an agent's (or cAdvisor's) /metrics page. Series without a task
    id label are ignored; a task without a CPU series has no reading. Raises SourceError when
    the text is not in the Prometheus text format."""
    return _parse_agent_page(text, scraped_at_seconds).readings


_short = short
_reason = reason


# Agents are reached on the nodes' own addresses: an HTTP(S)_PROXY meant for the outside world
# must not route them.
_AGENT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AgentSource:
    """Scrapes every node's agent at once and merges their tasks.

    `endpoints` is asked on every read (nodes come and go): (node id, base URL such as
    http://10.0.0.2:9101). An agent that does not answer, answers garbage or cannot read its
    engine leaves its tasks missing; that is logged once when it starts and once when it ends,
    and `on_agent(node, ok)` is called on every read for a gauge."""

    def __init__(
        self,
        endpoints: Callable[[], list[tuple[str, str]]],
        timeout_seconds: float = 2.0,
        on_agent: Callable[[str, bool], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoints = endpoints
        self._timeout_seconds = timeout_seconds
        self._on_agent = on_agent
        self._clock = clock
        self._pool = ThreadPoolExecutor(MAX_PARALLEL_SCRAPES, thread_name_prefix="agent-scrape")
        self._lock = threading.Lock()  # reads of several services may overlap
        self._errors: dict[str, str] = {}  # node -> why its agent failed, while it does

    @property
    def last_errors(self) -> dict[str, str]:
        """Node -> error text, for the agents that failed on the last read."""
        with self._lock:
            return dict(self._errors)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _scrape(self, base_url: str) -> _AgentPage:
        url = base_url.rstrip("/") + "/metrics"
        try:
            with _AGENT_OPENER.open(url, timeout=self._timeout_seconds) as response:
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"{url}: {_reason(exc)}") from exc
        if len(body) > MAX_RESPONSE_BYTES:
            raise SourceError(f"{url}: answered more than {MAX_RESPONSE_BYTES} bytes: is that an autoscaler agent?")
        try:
            page = _parse_agent_page(body.decode("utf-8"), self._clock())
        except (SourceError, UnicodeDecodeError) as exc:
            raise SourceError(f"{url}: {_reason(exc)}") from exc
        if page.engine_up is False:
            raise SourceError(f"{url}: the agent cannot read its node's Docker engine")
        return page

    def read(self, task_ids: list[str]) -> dict[str, StatsReading | None]:
        """Readings of these tasks; None for those no agent reported. Failing agents never
        raise here; only `endpoints()` itself can (the caller's "metrics failed this cycle")."""
        endpoints = self._endpoints()
        futures = [(node, self._pool.submit(self._scrape, url)) for node, url in endpoints]
        # urllib's timeout is per socket operation; a slow trickle is cut off here as a whole.
        deadline = time.monotonic() + self._timeout_seconds + 1.0
        merged: dict[str, StatsReading] = {}
        outcomes: dict[str, str | None] = {}  # node -> None (ok) or the error
        for node, future in futures:
            try:
                page = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeoutError:
                future.cancel()
                outcomes[node] = f"no answer within {self._timeout_seconds:g}s"
                continue
            except SourceError as exc:
                outcomes[node] = str(exc)
                continue
            except Exception as exc:  # one agent's surprise must not cost the other nodes' tasks
                outcomes[node] = _reason(exc)
                continue
            outcomes[node] = None
            for task_id, reading in page.readings.items():
                # A task runs on one node; should two agents claim it (a stale page), keep the newest.
                known = merged.get(task_id)
                if known is None or reading.read_at_seconds >= known.read_at_seconds:
                    merged[task_id] = reading
        self._record(outcomes)
        return {task_id: merged.get(task_id) for task_id in task_ids}

    def _record(self, outcomes: dict[str, str | None]) -> None:
        with self._lock:
            for node, error in outcomes.items():
                failing_before = node in self._errors
                if error is None:
                    if failing_before:
                        log.info("agent on node %s is back", node)
                        del self._errors[node]
                else:
                    if not failing_before:
                        log.warning("agent on node %s is failing, its tasks are missing: %s", node, error)
                    self._errors[node] = error
            # Nodes that left the swarm: forget them, so that one coming back starts afresh.
            for node in [n for n in self._errors if n not in outcomes]:
                del self._errors[node]
        if self._on_agent is not None:
            for node, error in outcomes.items():
                self._on_agent(node, error is None)


class PrometheusSource:
    """Task readings from PromQL: the CPU query gives cumulative CPU seconds per task (a counter),
    the memory query the working set; both label each series with the task id (task_label)."""

    def __init__(self, config: PrometheusSourceConfig, swarm_service_name: str) -> None:
        self._config = config
        self._api = PrometheusAPI(config.url, config.timeout_seconds)
        self.cpu_query = _format_query("cpu_query", config.cpu_query, swarm_service_name)
        self.memory_query = _format_query("memory_query", config.memory_query, swarm_service_name)
        # An instant query stamps every result with the evaluation time, not with when the
        # sample was scraped; two cycles between the same two scrapes would see 0 % and then
        # double. timestamp() gives each series' own scrape time (for a plain selector).
        self.cpu_timestamp_query = f"timestamp({self.cpu_query})"

    def read(self, task_ids: list[str]) -> dict[str, StatsReading | None]:
        """Raises SourceError (one line, naming the query) when a query fails."""
        queries = [("cpu_query", self.cpu_query), ("cpu_query", self.cpu_timestamp_query),
                   ("memory_query", self.memory_query)]
        # All three at once: a cycle waits for the slowest, not for their sum.
        with ThreadPoolExecutor(len(queries), thread_name_prefix="prometheus-query") as pool:
            results = list(pool.map(lambda q: self._vector(*q), queries))
        cpu_seconds, scraped_at, memory_bytes = results
        readings: dict[str, StatsReading | None] = {}
        for task_id in task_ids:
            cpu = cpu_seconds.get(task_id)
            if cpu is None:
                readings[task_id] = None
                continue
            value, evaluated_at = cpu
            stamped = scraped_at.get(task_id)
            memory = memory_bytes.get(task_id)
            readings[task_id] = StatsReading(
                cpu_total_ns=round(value * 1e9),
                system_cpu_ns=None,
                online_cpus=1,
                read_at_seconds=stamped[0] if stamped is not None else evaluated_at,
                memory_used_bytes=None if memory is None else int(memory[0]),
                memory_limit_bytes=None,  # the service's configured limit applies
            )
        return readings

    def _vector(self, field: str, query: str) -> dict[str, tuple[float, float]]:
        """Task id -> (value, the result's timestamp) of one instant query."""
        where = f"prometheus {field} {query!r}"
        return _parse_vector(where, self._api.query(query, where), self._config.task_label)


def _format_query(field: str, template: str, service: str) -> str:
    try:
        return template.format(service=service)
    except (KeyError, IndexError, ValueError) as exc:
        raise SourceError(
            f"prometheus {field} {template!r}: cannot put the service name in it ({exc!r}); "
            "write PromQL's own braces doubled, {{ and }}, and the service as {service}"
        ) from exc


def _parse_vector(where: str, data: dict[str, Any], task_label: str) -> dict[str, tuple[float, float]]:
    result_type = data.get("resultType")
    if result_type != "vector":
        raise SourceError(f"{where}: returned a {result_type or 'missing'} result, not an instant vector")
    series = data.get("result")
    if not isinstance(series, list):
        raise SourceError(f"{where}: the result is not a list of series")
    values: dict[str, tuple[float, float]] = {}
    labelled = 0
    try:
        # Sorted by labels so that duplicate series of one task (the same target scraped by two
        # jobs) resolve the same way on every cycle, instead of alternating between them.
        for item in sorted(series, key=lambda s: sorted(s["metric"].items())):
            task_id = item["metric"].get(task_label)
            if not task_id:
                continue
            labelled += 1
            timestamp, text = item["value"]
            value = float(text)
            if not math.isfinite(value):
                raise SourceError(f"{where}: task {task_id} has the value {text}")
            values.setdefault(task_id, (value, float(timestamp)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SourceError(f"{where}: a series is not [timestamp, value] with labels ({_short(repr(exc))})") from exc
    if series and not labelled:
        raise SourceError(f"{where}: no series has the label {task_label!r} (keep it in the query's result)")
    return values
