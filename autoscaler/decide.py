"""`autoscaler decide`: one evaluation of a snapshot file, with no history, explained.

The snapshot file is read with pydantic so that a bad file gets the same kind of message as a
bad config: the field path and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoscaler.config import ServiceConfig, format_validation_error
from autoscaler.model import Decision, History, ReplicaSample, ServiceSnapshot
from autoscaler.policy.evaluate import evaluate
from autoscaler.policy.schedule import bounds_at

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class SnapshotError(ValueError):
    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("\n".join(messages))


class ReplicaInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    name: str = Field(min_length=1)
    ready: bool
    age_seconds: NonNegative
    cpu_percent: NonNegative | None = None
    memory_percent: NonNegative | None = None
    requests_per_second: NonNegative | None = None
    response_time_ms: NonNegative | None = None


class SnapshotInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: list[ReplicaInput]
    queue_current: NonNegative | None = None


def read_snapshot(path: str | os.PathLike[str], service: str) -> ServiceSnapshot:
    try:
        with open(path, encoding="utf-8") as handle:
            raw: Any = json.load(handle)
    except OSError as exc:
        raise SnapshotError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SnapshotError([f"{path}: not valid JSON ({exc})"]) from None
    try:
        parsed = SnapshotInput.model_validate(raw)
    except ValidationError as exc:
        raise SnapshotError([f"{path}: {line}" for line in format_validation_error(exc)]) from None
    names = [r.name for r in parsed.replicas]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SnapshotError([f"{path}: replicas: duplicate name(s) {', '.join(duplicates)}"])
    return ServiceSnapshot(
        service,
        tuple(ReplicaSample(**r.model_dump()) for r in parsed.replicas),
        parsed.queue_current,
    )


def decide(service_name: str, service: ServiceConfig, snapshot: ServiceSnapshot, at: datetime) -> tuple[Decision, dict[str, Any]]:
    bounds = bounds_at(service, at)
    decision, _ = evaluate(snapshot, service.policy, bounds, History(), 0.0)
    document = {
        "service": service_name,
        "current_replicas": decision.current,
        "desired_replicas": decision.desired,
        "reason": decision.reason,
        "message": decision.message,
        "recommendation": decision.recommendation,
        "bounds": {"min_replicas": bounds.min_replicas, "max_replicas": bounds.max_replicas, "source": bounds.source},
        "metrics": [
            {
                "metric": str(p.metric),
                "utilization": p.utilization,
                "target": None if math.isnan(p.target) else p.target,
                "proposal": p.proposal,
                "message": p.message,
            }
            for p in decision.proposals
        ],
    }
    return decision, document


def render_text(document: dict[str, Any]) -> str:
    d = document
    lines = [
        f"service {d['service']}: {d['current_replicas']} -> {d['desired_replicas']} ({d['reason']})",
        f"  {d['message']}",
        f"  bounds: min {d['bounds']['min_replicas']}, max {d['bounds']['max_replicas']} ({d['bounds']['source']})",
        "  per metric:",
    ]
    for m in d["metrics"] or []:
        utilization = "missing" if m["utilization"] is None else f"{m['utilization']:.4g}"
        target = "-" if m["target"] is None else f"{m['target']:g}"
        proposal = "none" if m["proposal"] is None else str(m["proposal"])
        lines.append(
            f"    {m['metric']:<20} value {utilization:>8}  target {target:>6}  proposal {proposal:>4}   {m['message']}"
        )
    if not d["metrics"]:
        lines.append("    (no metric could be evaluated)")
    return "\n".join(lines)
