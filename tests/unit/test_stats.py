"""CPU and memory percentages from recorded Docker stats documents."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from autoscaler.docker.stats import (
    StatsFormatError,
    cpu_cores_used,
    cpu_percent,
    memory_percent,
    parse_stats,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


# Recorded from a demo-app replica (cpu_limit 0.25, memory 128MiB) under /work?cpu_ms=50 load,
# two one-shot readings 2 s apart on Docker 20.10 / cgroup v1.
A = load("stats_cgroupv1_a.json")
B = load("stats_cgroupv1_b.json")


def cgroup_v2(doc: dict) -> dict:
    """The same document as a cgroup v2 host reports it: inactive_file, no total_* keys."""
    doc = copy.deepcopy(doc)
    stats = doc["memory_stats"]["stats"]
    doc["memory_stats"]["stats"] = {"inactive_file": stats["total_inactive_file"], "anon": stats["total_rss"]}
    return doc


def test_parse_recorded_document() -> None:
    reading = parse_stats(A)
    assert reading.cpu_total_ns == 6718926735
    assert reading.system_cpu_ns == 1417610000000
    assert reading.online_cpus == 2
    assert reading.memory_used_bytes == 28073984 - 6041600  # usage minus inactive page cache
    assert reading.memory_limit_bytes == 134217728


def test_cpu_percent_of_the_replicas_own_limit() -> None:
    a, b = parse_stats(A), parse_stats(B)
    cores = cpu_cores_used(a, b)
    assert cores == pytest.approx((7218752383 - 6718926735) / (b.system_cpu_ns - a.system_cpu_ns) * 2)
    # Saturated at its 0.25-core limit: about 100 % of its own limit, about 12.5 % of the host.
    assert cpu_percent(a, b, 0.25) == pytest.approx(cores / 0.25 * 100)
    assert 90 < cpu_percent(a, b, 0.25) < 105
    assert cpu_percent(a, b, None) == pytest.approx(cores / 2 * 100)


@pytest.mark.parametrize(
    ("limit_bytes", "expected"),
    [
        (None, (28073984 - 6041600) / 134217728 * 100),
        (256 * 1024 * 1024, (28073984 - 6041600) / (256 * 1024 * 1024) * 100),
    ],
    ids=["engine-limit", "configured-limit"],
)
def test_memory_percent(limit_bytes: int | None, expected: float) -> None:
    assert memory_percent(parse_stats(A), limit_bytes) == pytest.approx(expected)


def test_cgroup_v2_memory_subtracts_inactive_file() -> None:
    assert parse_stats(cgroup_v2(A)).memory_used_bytes == 28073984 - 6041600


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["cpu_stats"]["cpu_usage"].update(total_usage=0), None),  # restarted: counter reset
        (lambda d: d["cpu_stats"].update(system_cpu_usage=1417610000000), None),  # same tick
        (lambda d: d["cpu_stats"].pop("system_cpu_usage"), "wall"),  # falls back to timestamps
    ],
    ids=["counter-reset", "same-tick", "no-system-usage"],
)
def test_cpu_edge_cases(mutate, expected) -> None:
    a = copy.deepcopy(A)
    b = copy.deepcopy(B)
    mutate(b)
    if expected == "wall":
        a["cpu_stats"].pop("system_cpu_usage")
    result = cpu_cores_used(parse_stats(a), parse_stats(b))
    if expected is None:
        assert result is None
    else:
        wall = 2.007384  # seconds between the two "read" timestamps
        assert result == pytest.approx((7218752383 - 6718926735) / 1e9 / wall, rel=1e-3)


def test_container_without_memory_stats_is_missing_not_zero() -> None:
    doc = copy.deepcopy(A)
    doc["memory_stats"] = {}
    assert memory_percent(parse_stats(doc)) is None


@pytest.mark.parametrize(
    "doc",
    [{}, {"read": "x", "cpu_stats": {}}, {"read": "not a time", "cpu_stats": {"cpu_usage": {"total_usage": 1}}}],
    ids=["empty", "no-cpu-usage", "bad-timestamp"],
)
def test_unreadable_documents_raise_a_typed_error(doc: dict) -> None:
    with pytest.raises(StatsFormatError):
        parse_stats(doc)
