"""CPU and memory percentages from Docker stats documents. Pure: recorded JSON in, numbers out.

One-shot stats carry no previous sample, so CPU % comes from two of the daemon's own readings:
the change in the container's cumulative CPU time over the change in the host's, times the
host's CPUs, is the number of cores used; divided by the replica's own limit it is a percent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from autoscaler.engine.ports import StatsReading


class StatsFormatError(ValueError):
    """The engine answered with a stats document we cannot read."""


def parse_docker_time(text: str) -> float:
    """Docker's RFC 3339 times as epoch seconds. Docker writes nanoseconds
    ("2026-11-28T21:40:01.123456789Z"); Python parses microseconds. Raises ValueError."""
    head, _, frac = text.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{frac}+00:00").timestamp()


def parse_stats(doc: dict[str, Any]) -> StatsReading:
    try:
        cpu = doc["cpu_stats"]
        total = int(cpu["cpu_usage"]["total_usage"])
        system = cpu.get("system_cpu_usage")
        online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
        read_at = parse_docker_time(doc["read"])
        memory = doc.get("memory_stats") or {}
        used: int | None = None
        limit: int | None = None
        if "usage" in memory:
            stats = memory.get("stats") or {}
            # cgroup v1 reports total_inactive_file, v2 inactive_file; docker CLI subtracts it.
            inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
            usage = int(memory["usage"])
            used = usage - int(inactive) if int(inactive) < usage else usage
            limit = int(memory["limit"]) if memory.get("limit") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise StatsFormatError(f"unreadable stats document: {exc!r}") from exc
    return StatsReading(
        cpu_total_ns=total,
        system_cpu_ns=int(system) if system is not None else None,
        online_cpus=int(online),
        read_at_seconds=read_at,
        memory_used_bytes=used,
        memory_limit_bytes=limit,
    )


def cpu_cores_used(previous: StatsReading, current: StatsReading) -> float | None:
    """Cores used between two readings; None when they cannot be compared (restart, same tick)."""
    cpu_delta = current.cpu_total_ns - previous.cpu_total_ns
    if cpu_delta < 0:
        return None  # counter reset: the container restarted
    if current.system_cpu_ns is not None and previous.system_cpu_ns is not None:
        system_delta = current.system_cpu_ns - previous.system_cpu_ns
        if system_delta <= 0:
            return None
        return cpu_delta / system_delta * current.online_cpus
    wall_delta_ns = (current.read_at_seconds - previous.read_at_seconds) * 1e9
    if wall_delta_ns <= 0:
        return None
    return cpu_delta / wall_delta_ns


def cpu_percent(
    previous: StatsReading, current: StatsReading, cpu_limit_cores: float | None
) -> float | None:
    """Percent of the replica's own CPU limit; of the host's CPUs when it has no limit."""
    cores = cpu_cores_used(previous, current)
    if cores is None:
        return None
    limit = cpu_limit_cores if cpu_limit_cores else float(current.online_cpus)
    return cores / limit * 100.0


def memory_percent(reading: StatsReading, memory_limit_bytes: int | None = None) -> float | None:
    """Percent of the replica's memory limit (the configured one when given)."""
    limit = memory_limit_bytes or reading.memory_limit_bytes
    if reading.memory_used_bytes is None or not limit:
        return None
    return reading.memory_used_bytes / limit * 100.0
