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
# Far above any real reading, low enough that pooled sums and ratios stay finite floats: a
# reading near 1e308 would overflow to inf in the replica arithmetic.
MAX_READING = 1e9
Reading = Annotated[float, Field(ge=0, le=MAX_READING, allow_inf_nan=False)]


class SnapshotError(ValueError):
    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("\n".join(messages))


class ReplicaInput(BaseModel):
    # Strict: "ready": "no" or "age_seconds": true are mistakes in the file, not values to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    ready: bool
    age_seconds: NonNegative
    cpu_percent: Reading | None = None
    memory_percent: Reading | None = None
    requests_per_second: Reading | None = None
    response_time_ms: Reading | None = None


class SnapshotInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    replicas: list[ReplicaInput]
    queue_current: Reading | None = None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "an array" if isinstance(value, list) else "a string"


def read_snapshot(path: str | os.PathLike[str], service: str) -> ServiceSnapshot:
    try:
        # utf-8-sig: editors on Windows save JSON with a byte-order mark.
        with open(path, encoding="utf-8-sig") as handle:
            raw: Any = json.load(handle)
    except OSError as exc:
        raise SnapshotError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SnapshotError([f"{path}: not valid JSON ({exc})"]) from None
    if not isinstance(raw, dict):
        raise SnapshotError([f"{path}: expected a JSON object with a \"replicas\" list, got {_json_kind(raw)}"])
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
