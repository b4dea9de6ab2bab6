"""`autoscaler status`: reads the running daemon's /status document and prints it as a table."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class StatusError(Exception):
    pass


def fetch_status(url: str, timeout_seconds: float = 5.0) -> dict[str, Any]:
    endpoint = url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_seconds) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        raise StatusError(f"{endpoint} answered {exc.code}: is that an autoscaler daemon?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(
            f"cannot reach the daemon at {endpoint} ({reason}); is it running, and is --url its "
            "daemon.metrics_listen address?"
        ) from None
    except ValueError:
        raise StatusError(f"{endpoint} did not answer JSON: is that an autoscaler daemon?") from None
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise StatusError(f"{endpoint} answered a document without services: is that an autoscaler daemon?")
    return document


UNITS = {"cpu": "%", "memory": "%", "requests_per_second": " rps", "response_time_ms": " ms", "queue": ""}
TARGET_KEYS = {
    "cpu": "cpu_percent",
    "memory": "memory_percent",
    "requests_per_second": "requests_per_second_per_replica",
    "response_time_ms": "response_time_ms",
}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _value(value: float | None, unit: str) -> str:
    return "missing" if value is None else f"{value:.4g}{unit}"


def _external_lines(metric: dict[str, Any], utilization: dict[str, Any]) -> list[str]:
    """An external metric: its value against its target (per replica for kind "average", the
    HPA's AverageValue), activation, proposal and source; a second line when the source fails."""
    target = metric.get("target")
    kind = metric.get("kind", "?")
    per_replica = " per replica" if kind == "average" else ""
    target_text = "-" if target is None else f"{target:g}{per_replica} ({kind})"
    activation = metric.get("activation")
    proposal = "none" if utilization.get("proposal") is None else utilization["proposal"]
    lines = [(
        f"  {metric.get('name', '?'):<11} {_value(metric.get('value'), ''):>9} / target {target_text}  "
        f"activation {'-' if activation is None else f'{activation:g}'}  proposal {proposal}  "
        f"from {metric.get('source', '?')}"
    )]
    if metric.get("error"):
        lines.append(f"  {'':<11} source error: {metric['error']}")
    return lines


def render_status(document: dict[str, Any]) -> str:
    lines = [
        f"autoscaler {document.get('version', '?')}"
        + ("  [DRY RUN: nothing is changed]" if document.get("dry_run") else "")
        + f"  every {document.get('interval_seconds', '?')}s"
    ]
    for name, s in sorted(document["services"].items()):
        replicas = s.get("replicas", {})
        lines.append("")
        lines.append(f"{name}  (worker: no load balancer)" if s.get("worker") else f"{name}")
        lines.append(
            f"  replicas    ready {replicas.get('ready', 0)}  starting {replicas.get('starting', 0)}  "
            f"draining {replicas.get('draining', 0)}   desired {s.get('desired_replicas', '?')}   "
            f"min/max {s.get('min_replicas')}/{s.get('max_replicas')} ({s.get('bounds_source', 'config')})"
        )
        targets = s.get("targets", {})
        utilization = s.get("utilization", {})
        externals = s.get("external_metrics") or []
        external_names = {m.get("name") for m in externals}
        for metric, u in sorted(utilization.items()):
            if metric in external_names:
                continue  # shown below with its source
            unit = UNITS.get(metric, "")
            target = u.get("target")
            if target is None:
                target = targets.get(TARGET_KEYS.get(metric, ""), None)
            target_text = "-" if target is None else f"{target:g}{unit}"
            proposal = "none" if u.get("proposal") is None else u["proposal"]
            lines.append(f"  {metric:<11} {_value(u.get('value'), unit):>9} / target {target_text:<8} proposal {proposal}")
        for m in externals:
            lines.extend(_external_lines(m, utilization.get(m.get("name")) or {}))
        decision = s.get("last_decision")
        if decision:
            lines.append(f"  last        {decision['reason']} {_age(decision.get('age_seconds'))}: {decision['message']}")
        else:
            lines.append("  last        no decision yet")
        lb = s.get("load_balancer") or {}
        if lb:
            lines.append(f"  clients     http://{lb.get('publish')}  (load balancer {lb.get('name')})")
        for warning in s.get("warnings", []):
            lines.append(f"  WARNING     {warning}")
    return "\n".join(lines)
