"""Fixtures of the fault scenarios: real daemon processes, cleaned up by label, and the results
table (out/fault-results.md) that the README's reliability section is made from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faultkit import RESULTS, DaemonFactory


@pytest.fixture
def daemons(docker_client, service_name: str, tmp_path: Path) -> Iterator[DaemonFactory]:  # type: ignore[no-untyped-def]
    factory = DaemonFactory(service_name, tmp_path)
    yield factory
    for daemon in factory.started:
        daemon.kill()


_rows: list[dict[str, str]] = []


@pytest.fixture(scope="session")
def fault_results() -> Iterator[Callable[..., None]]:
    def record(scenario: str, recovery: str, failed_requests: str, containers: str, note: str = "") -> None:
        _rows.append({"scenario": scenario, "recovery": recovery, "failed": failed_requests,
                      "containers": containers, "note": note})
        print(f"\nfault: {scenario}: recovery {recovery}; failed requests {failed_requests}; "
              f"containers created {containers}{'; ' + note if note else ''}")

    yield record
    if _rows:
        RESULTS.parent.mkdir(exist_ok=True)
        lines = ["| scenario | recovery | failed requests | containers created | note |", "|---|---|---|---|---|"]
        lines += [f"| {r['scenario']} | {r['recovery']} | {r['failed']} | {r['containers']} | {r['note']} |" for r in _rows]
        RESULTS.write_text("\n".join(lines) + "\n")
