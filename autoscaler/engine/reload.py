"""What a config reload changes, and which of those changes only a restart can apply.

A reload either applies every changed key or refuses as a whole, naming each key that needs a
restart; nothing is ever "reloaded" but silently ignored.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from autoscaler.config import Settings

# (dotted-path pattern, why a running daemon cannot apply it)
RESTART_ONLY: tuple[tuple[str, str], ...] = (
    ("daemon.dry_run", "switching between dry run and acting mid-flight could leave half-made changes"),
    ("daemon.load_balancer_access", "it changes how every load balancer is reached"),
    ("daemon.admin_socket_dir", "the load balancers' admin sockets live there"),
    ("daemon.lease_*", "the lease held now was taken with them"),
    ("services.*.network", "replicas and the load balancer are attached to it when created"),
    ("services.*.load_balancer", "a service gains or loses its load balancer (a worker becomes an HTTP service, or back)"),
    ("services.*.load_balancer.*", "the load balancer is created from it"),
    ("services.*.health_path", "the load balancer's health check is set when it is created"),
)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys; lists and scalars are leaves."""
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            result.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return result
    return {prefix: value}


def changes(old: Settings, new: Settings) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every key that differs; a service added or
    removed shows up as the service's own key."""
    result: list[tuple[str, Any, Any]] = []
    for name in sorted(set(old.services) ^ set(new.services)):
        result.append((f"services.{name}", "absent" if name not in old.services else "present",
                       "absent" if name not in new.services else "present"))
    before = flatten(old.model_dump(mode="json"))
    after = flatten(new.model_dump(mode="json"))
    removed = {f"services.{n}" for n in set(old.services) ^ set(new.services)}
    for key in sorted(set(before) | set(after)):
        if any(key == r or key.startswith(r + ".") for r in removed):
            continue
        if before.get(key) != after.get(key):
            result.append((key, before.get(key), after.get(key)))
    return result


def restart_reason(key: str) -> str | None:
    """Why `key` cannot change without a restart, or None if a reload applies it."""
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "services":
        return "adding or removing a service needs its network, load balancer and lease"
    for pattern, why in RESTART_ONLY:
        if fnmatchcase(key, pattern):
            return why
    return None


def describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
