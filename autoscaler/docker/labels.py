"""Ownership by label: nothing stops, removes or reconfigures a container, network or Swarm
service that does not carry autoscaler.managed=true and the service's autoscaler.service label."""

from __future__ import annotations

LABEL_MANAGED = "autoscaler.managed"
LABEL_SERVICE = "autoscaler.service"
LABEL_ROLE = "autoscaler.role"
LABEL_PUBLISH = "autoscaler.publish"
LABEL_PORT = "autoscaler.port"  # the port a replica listens on (it keeps it across config reloads)
LABEL_VERSION = "autoscaler.version"  # ReplicaSpec.version of what the replica was made from
LABEL_LB_SPEC = "autoscaler.lb-spec"  # hash of what a load balancer was created from
ROLE_REPLICA = "replica"
ROLE_LOAD_BALANCER = "load-balancer"


def owner_labels(service: str, role: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_SERVICE: service, LABEL_ROLE: role}


def label_filter(service: str, role: str) -> dict[str, list[str]]:
    return {"label": [f"{k}={v}" for k, v in owner_labels(service, role).items()]}


def is_owned(labels: dict[str, str] | None, service: str) -> bool:
    labels = labels or {}
    return labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_SERVICE) == service
