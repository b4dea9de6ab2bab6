"""The daemon's own settings: its interval, logging, metrics endpoint, Swarm agents and the lease."""

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from autoscaler.config.values import (
    MAX_ADMIN_SOCKET_DIR_BYTES,
    MAX_INTERVAL_SECONDS,
    MAX_SHUTDOWN_TIMEOUT_SECONDS,
    MAX_TIMEOUT_SECONDS,
    MIN_INTERVAL_SECONDS,
    ConfigModel,
    HostPort,
    ImageReference,
    Loc,
    parse_host_port,
    raise_problems,
    shown,
)


def _check_socket_dir(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{shown(value)} must be an absolute path, e.g. '/run/autoscaler'")
    if not value.isprintable() or any(char.isspace() for char in value):
        raise ValueError(f"{shown(value)} must not contain whitespace or control characters")
    if len(value.encode()) > MAX_ADMIN_SOCKET_DIR_BYTES:
        raise ValueError(
            f"{shown(value)} is longer than {MAX_ADMIN_SOCKET_DIR_BYTES} bytes: "
            "a socket path in it would not fit a Unix socket address (107 bytes)"
        )
    return value


class DaemonConfig(ConfigModel):
    interval_seconds: float = Field(5.0, ge=MIN_INTERVAL_SECONDS, le=MAX_INTERVAL_SECONDS)
    metrics_listen: HostPort = "127.0.0.1:9464"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Decide and log, but never start, stop or re-route anything.
    dry_run: bool = False
    # How the daemon reaches each load balancer's admin API and exporter: "published" = the
    # ports the engine publishes on the host's loopback (daemon on the host); "network" = the
    # container by name on the service's network (daemon in a container on that network).
    load_balancer_access: Literal["published", "network"] = "published"
    # On SIGTERM the daemon abandons the step in progress after this many seconds.
    shutdown_timeout_seconds: float = Field(10.0, gt=0, le=MAX_SHUTDOWN_TIMEOUT_SECONDS)
    # Directory of each load balancer's private admin socket. None: /run/autoscaler when
    # writable, else $XDG_RUNTIME_DIR/autoscaler or /tmp/autoscaler-<uid>.
    admin_socket_dir: Annotated[str, AfterValidator(_check_socket_dir)] | None = None
    # Swarm services: the port on each node where `autoscaler agent` (a global service) serves
    # the CPU and memory of that node's tasks (published with mode=host).
    swarm_agent_port: int = Field(9101, ge=1, le=65535)
    # The image the agent runs from (the project's own image; it must be on every node).
    swarm_agent_image: ImageReference = "autoscaler:latest"
    # One daemon per service (Kubernetes leader election's three numbers and defaults): the
    # lease expires lease_duration_seconds after its holder's last renewal; the holder renews
    # every lease_retry_period_seconds and stops acting once lease_renew_deadline_seconds
    # passed without a renewal (before the lease can expire and be taken by another daemon).
    lease_duration_seconds: float = Field(15.0, gt=0, le=MAX_TIMEOUT_SECONDS)
    lease_renew_deadline_seconds: float = Field(10.0, gt=0, le=MAX_TIMEOUT_SECONDS)
    lease_retry_period_seconds: float = Field(2.0, gt=0, le=MAX_TIMEOUT_SECONDS)

    @model_validator(mode="after")
    def _check_lease(self) -> "DaemonConfig":
        problems: list[tuple[Loc, str]] = []
        if self.lease_renew_deadline_seconds >= self.lease_duration_seconds:
            problems.append((("lease_renew_deadline_seconds",),
                             f"must be < lease_duration_seconds ({self.lease_duration_seconds:g}): the holder must "
                             "stop acting before the lease can expire and be taken"))
        if self.lease_retry_period_seconds >= self.lease_renew_deadline_seconds:
            problems.append((("lease_retry_period_seconds",),
                             f"must be < lease_renew_deadline_seconds ({self.lease_renew_deadline_seconds:g}): "
                             "renewals must come more often than the deadline"))
        raise_problems(problems)
        return self

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        return parse_host_port(self.metrics_listen)
