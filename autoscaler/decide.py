"""`autoscaler decide`: one evaluation of a snapshot file, with no history, explained.

The snapshot file is read with pydantic so that a bad file gets the same kind of message as a
bad config: the field path and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Collection
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoscaler.config import MAX_METRIC_VALUE, MAX_REPLICAS, ServiceConfig, format_validation_error
from autoscaler.config.values import shown
from autoscaler.model import Decision, ExternalReading, History, ReplicaSample, ServiceSnapshot
from autoscaler.policy.evaluate import evaluate
from autoscaler.policy.schedule import bounds_at

# Far above any real reading, low enough that pooled sums and ratios stay finite floats: a
# reading near 1e308 would overflow to inf in the replica arithmetic.
MAX_READING = MAX_METRIC_VALUE
Reading = Annotated[float, Field(ge=0, le=MAX_READING, allow_inf_nan=False)]
# A replica older than a century is a unit mistake (milliseconds for seconds).
MAX_AGE_SECONDS = 100 * 365 * 86_400
Age = Annotated[float, Field(ge=0, le=MAX_AGE_SECONDS, allow_inf_nan=False)]
# A snapshot of MAX_REPLICAS replicas is about 150 KiB; a file a hundred times larger is not one.
MAX_SNAPSHOT_BYTES = 16 * 1024**2
# A reading needs 17 significant digits and an exponent at most. Longer is noise, and int()
# refuses more than 4300 digits with a ValueError that json.loads lets out as is.
MAX_NUMBER_CHARS = 100


class SnapshotError(ValueError):
    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("\n".join(messages))


class _AbsurdNumber(Exception):
    """A JSON number too long to be a reading; raised from inside json.loads to stop it."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text[:20])


class ReplicaInput(BaseModel):
    # Strict: "ready": "no" or "age_seconds": true are mistakes in the file, not values to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    ready: bool
    age_seconds: Age
    cpu_percent: Reading | None = None
    memory_percent: Reading | None = None
    requests_per_second: Reading | None = None
    response_time_ms: Reading | None = None


class SnapshotInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    replicas: list[ReplicaInput] = Field(max_length=MAX_REPLICAS)
    queue_current: Reading | None = None
    # External metric name -> its value this cycle; null: its source failed.
    external: dict[str, Reading | None] | None = None


# Why an external metric has no value, in the decision's words ("jobs_waiting: <this>").
NULL_EXTERNAL = "no value (null in the snapshot: its source failed)"
ABSENT_EXTERNAL = 'no value (not in the snapshot\'s "external" object)'
# Unknown external names listed in a message, at most.
_SHOWN_NAMES = 5


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "an array" if isinstance(value, list) else "a string"


def _number(convert: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        if len(text) > MAX_NUMBER_CHARS:
            raise _AbsurdNumber(text)
        return convert(text)

    return parse


# Non-finite floats (1e999, NaN) are left to pydantic, which names the field they are in.
_parse_int, _parse_float = _number(int), _number(float)


def read_snapshot(
    path: str | os.PathLike[str], service: str, external_names: Collection[str] = ()
) -> ServiceSnapshot:
    """The snapshot in the file at ``path``; ``SnapshotError`` with one line per problem.

    Size, number lengths, nesting and the replica count are bounded before anything is built
    from them, so no file can cost more than a moment or escape as a traceback.
    external_names: the service's external metrics, in their order; the snapshot's "external"
    object may give each a value (a number, or null for a source that failed) and no other.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SNAPSHOT_BYTES + 1)
    except OSError as exc:
        raise SnapshotError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError([f"{path}: larger than {MAX_SNAPSHOT_BYTES // 1024**2} MiB, too large for a snapshot"])
    try:
        # utf-8-sig: editors on Windows save JSON with a byte-order mark.
        text = data.decode("utf-8-sig")
        raw: Any = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SnapshotError([f"{path}: not valid JSON ({exc})"]) from None
    except _AbsurdNumber as exc:
        line = text.count("\n", 0, max(text.find(exc.text), 0)) + 1
        raise SnapshotError(
            [f"{path}: line {line}: a number {len(exc.text)} characters long ({exc.text[:20]}...); "
             f"no reading needs more than {MAX_NUMBER_CHARS}"]
        ) from None
    except RecursionError:
        # A snapshot is three levels deep; json gives up near Python's recursion limit.
        raise SnapshotError([f"{path}: not valid JSON (nested far too deeply for a snapshot)"]) from None
    if not isinstance(raw, dict):
        raise SnapshotError([f"{path}: expected a JSON object with a \"replicas\" list, got {_json_kind(raw)}"])
    replicas = raw.get("replicas")
    if isinstance(replicas, list) and len(replicas) > MAX_REPLICAS:
        # Checked before validating them one by one: that is where the time would go.
        raise SnapshotError([f"{path}: replicas: {len(replicas)} replicas; a service has at most {MAX_REPLICAS}"])
    problems: list[str] = []
    external = raw.get("external")
    if isinstance(external, dict):
        # Checked before validating the values, which are then only the known ones: a typo in a
        # name is one line, and no file can make the validation long.
        known = set(external_names)
        unknown = [name for name in external if name not in known]
        if unknown:
            problems.append(f"{path}: external: {_unknown_names(unknown, service, external_names)}")
            raw = {**raw, "external": {k: v for k, v in external.items() if k in known}}
    try:
        parsed = SnapshotInput.model_validate(raw)
    except ValidationError as exc:
        raise SnapshotError([f"{path}: {line}" for line in format_validation_error(exc)] + problems) from None
    if problems:
        raise SnapshotError(problems)
    duplicates = sorted(name for name, count in Counter(r.name for r in parsed.replicas).items() if count > 1)
    if duplicates:
        raise SnapshotError([f"{path}: replicas: duplicate name(s) {', '.join(duplicates)}"])
    values = parsed.external or {}
    return ServiceSnapshot(
        service,
        tuple(ReplicaSample(**r.model_dump()) for r in parsed.replicas),
        parsed.queue_current,
        external=tuple(_reading(name, values) for name in external_names),
    )


def _reading(name: str, values: dict[str, float | None]) -> ExternalReading:
    value = values.get(name)
    if value is not None:
        return ExternalReading(name, value)
    return ExternalReading(name, None, NULL_EXTERNAL if name in values else ABSENT_EXTERNAL)


def _unknown_names(unknown: list[str], service: str, external_names: Collection[str]) -> str:
    listed = ", ".join(shown(name) for name in unknown[:_SHOWN_NAMES])
    if len(unknown) > _SHOWN_NAMES:
        listed += f" and {len(unknown) - _SHOWN_NAMES} more"
    known = (
        f"the service's external metrics are {', '.join(external_names)}" if external_names
        else f"service {service} has no external metrics ([[services.{service}.policy.metrics]])"
    )
    return f"unknown metric(s) {listed} ({known})"


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
    if snapshot.external:
        # What the external metrics read (null: no value), also where no proposal shows it: at
        # 0 replicas only their activation values decide.
        document["external"] = {r.name: r.value for r in snapshot.external}
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
    if "external" in d:
        values = ", ".join(f"{name} {'null' if value is None else f'{value:.4g}'}" for name, value in d["external"].items())
        lines.append(f"  external: {values}")
    return "\n".join(lines)
