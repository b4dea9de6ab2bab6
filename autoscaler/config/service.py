"""One scaled service: its replicas (image, limits, timeouts), where they run and are measured,
its load balancer, policy and schedule."""

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from autoscaler.config.container import ContainerFields, TemplateConfig
from autoscaler.config.policy import PolicyConfig
from autoscaler.config.schedule import ScheduleWindow
from autoscaler.config.values import (
    DOCKER_NAME_RE,
    MAX_BACKOFF_INITIAL_SECONDS,
    MAX_BACKOFF_SECONDS,
    MAX_CPU_LIMIT_CORES,
    MAX_MEMORY_LIMIT_BYTES,
    MAX_REPLICAS,
    MAX_TIMEOUT_SECONDS,
    MIN_CPU_LIMIT_CORES,
    MIN_MEMORY_LIMIT_BYTES,
    ConfigModel,
    HostPort,
    ImageReference,
    Loc,
    parse_host_port,
    parse_size,
    raise_problems,
    shown,
)



# Docker's predefined networks: no Docker DNS between containers there ("bridge"), or no
# network of the container's own at all ("host", "none"); "default" is reserved.
_PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none", "default"})


# The project's HAProxy image; its shell also runs the lease (see lease_image).
DEFAULT_LB_IMAGE = "autoscaler-haproxy:latest"


class LoadBalancerConfig(ConfigModel):
    image: ImageReference = DEFAULT_LB_IMAGE
    # On a Swarm the port is published with mode=host on the load balancer's node (the host
    # part then only says where clients connect; the node listens on every address).
    publish: HostPort
    algorithm: Literal["roundrobin", "leastconn", "random", "first"] = "roundrobin"
    # Swarm only: the node (id or hostname) that runs the load balancer; None = the manager the
    # daemon talks to (the daemon reaches the load balancer's admin socket on its own node).
    node: str | None = Field(None, min_length=1, max_length=128)
    # Opt-in, as Envoy's per_try_timeout: a request without a response after this long is tried
    # again on another replica (idempotent methods only: GET, HEAD, OPTIONS, PUT, DELETE), so
    # that a replica that vanishes mid-request (a node that dies, a network that goes) costs a
    # delay, not a failed request. Unset: one try, up to HAProxy's 60 s server timeout.
    per_try_timeout_seconds: Annotated[float, Field(ge=0.01, le=MAX_TIMEOUT_SECONDS)] | None = None

    @property
    def publish_host_port(self) -> tuple[str, int]:
        return parse_host_port(self.publish)


class HealthcheckConfig(ConfigModel):
    """A Docker HEALTHCHECK for each replica, replacing the image's (Docker runs it; a replica of
    a service without a load balancer is ready once Docker says it is healthy)."""

    # ["CMD", "prog", "arg"...] runs a program, ["CMD-SHELL", "cmd"] a shell command; a plain
    # string is a shell command.
    test: list[str] = Field(min_length=1, max_length=256)
    interval_seconds: float = Field(5.0, ge=0.001, le=MAX_TIMEOUT_SECONDS)
    timeout_seconds: float = Field(3.0, ge=0.001, le=MAX_TIMEOUT_SECONDS)
    retries: int = Field(3, ge=1, le=1000)
    start_period_seconds: float = Field(0.0, ge=0, le=MAX_TIMEOUT_SECONDS)

    @field_validator("test", mode="before")
    @classmethod
    def _shell_string(cls, value: Any) -> Any:
        return ["CMD-SHELL", value] if isinstance(value, str) else value

    @field_validator("test")
    @classmethod
    def _check_test(cls, value: list[str]) -> list[str]:
        if value[0] not in ("CMD", "CMD-SHELL"):
            raise ValueError(
                f"must start with \"CMD\" (a program and its arguments) or \"CMD-SHELL\" (one shell command), "
                f"got {shown(value[0])}; to turn off the image's check, leave healthcheck unset and the image as is"
            )
        if len(value) < 2 or not all(part.strip() for part in value[1:2]):
            raise ValueError(f"{value[0]} needs a command after it")
        if value[0] == "CMD-SHELL" and len(value) != 2:
            raise ValueError("CMD-SHELL takes one string, the shell command")
        if any("\0" in part for part in value):
            raise ValueError("contains a NUL character")
        return value


class RolloutConfig(ConfigModel):
    """A rolling update when what the replicas are made from changes (a Kubernetes
    Deployment's RollingUpdate): at most max_surge replicas above the count to keep, at most
    max_unavailable below it, each new replica ready before an old one drains."""

    max_surge: int = Field(1, ge=0, le=MAX_REPLICAS)
    max_unavailable: int = Field(0, ge=0, le=MAX_REPLICAS)
    # Replicas of the new version that fail (exit, or never pass their check) before the
    # rollout stops and rolls back (as ECS's deployment circuit breaker).
    failure_threshold: int = Field(2, ge=1, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _check_progress(self) -> "RolloutConfig":
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise_problems([(("max_surge",), "0 with max_unavailable 0 could never replace a replica: "
                             "allow one extra (max_surge = 1, the default) or one fewer (max_unavailable = 1)")])
        return self


class PrometheusSourceConfig(ConfigModel):
    """metrics_source = "prometheus": PromQL against a Prometheus that scrapes cAdvisor (or the
    agent). Each query returns one series per task, labelled with the task's id; `{service}` is
    replaced by the Swarm service's name."""

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://\S+$")]
    # A counter: each task's cumulative CPU seconds (the daemon takes the rate between cycles).
    cpu_query: str = Field(
        'container_cpu_usage_seconds_total{{container_label_com_docker_swarm_service_name="{service}"}}',
        min_length=1, max_length=4096,
    )
    # A gauge: each task's memory in use, without inactive page cache.
    memory_query: str = Field(
        'container_memory_working_set_bytes{{container_label_com_docker_swarm_service_name="{service}"}}',
        min_length=1, max_length=4096,
    )
    # The label that carries the task id in both queries' results.
    task_label: str = Field("container_label_com_docker_swarm_task_id", min_length=1, max_length=256)
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @field_validator("cpu_query", "memory_query")
    @classmethod
    def _check_template(cls, value: str) -> str:
        # PromQL's own braces are doubled ({{ }}); {service} is the only placeholder.
        try:
            value.format(service="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"not a query template ({exc}): write PromQL's braces doubled, e.g. "
                "'metric{{container_label_com_docker_swarm_service_name=\"{service}\"}}'"
            ) from None
        return value


class ServiceConfig(ContainerFields):
    # Where the replicas run: "containers" on one engine (the daemon starts and removes them),
    # or "swarm": a replicated Swarm service whose replica count the daemon sets.
    backend: Literal["containers", "swarm"] = "containers"
    # Swarm only: adopt this existing service (it must carry the label autoscaler.service=<name>)
    # instead of creating "autoscaler-<name>".
    swarm_service: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    # Where CPU and memory come from: "docker" (cgroup files, else the Docker API: one engine),
    # "agent" (autoscaler agent on every Swarm node), "prometheus" (PromQL). None: docker for
    # containers, agent for swarm.
    metrics_source: Literal["docker", "agent", "prometheus"] | None = None
    prometheus: PrometheusSourceConfig | None = None
    # What the replicas are made from: an image (with command, env, limits and compose's fields
    # below), or a template: a container the user already runs (by name, or as a compose
    # service), whose whole configuration the replicas copy (keys set here override it).
    image: ImageReference | None = None
    template: TemplateConfig | None = None
    # Where the image comes from: "missing" pulls it when the engine does not have it, "always"
    # pulls it when a replica first needs it (a moving tag is read from the registry), "never"
    # only uses the engine's. A pulled image is pinned by digest, so every replica started from
    # this `image` runs the same bytes (autoscaler/docker/images.py). Containers only: a
    # Swarm's nodes pull their tasks' images themselves.
    pull: Literal["missing", "always", "never"] = "missing"
    # A pull that has not finished by then is abandoned: a failed start, backed off.
    pull_timeout_seconds: float = Field(300.0, gt=0, le=MAX_TIMEOUT_SECONDS)
    # With pull = "always": how often the tag is pulled again; a new digest behind it is a new
    # version, rolled out (see "Rolling updates").
    pull_check_seconds: float = Field(60.0, ge=1, le=86_400)
    # The port the application listens on inside each replica; HAProxy connects to it. A
    # service with neither port nor [load_balancer] is a worker (see is_worker).
    port: int | None = Field(None, ge=1, le=65535)
    command: list[str] = []
    env: dict[str, str] = {}
    # None: a per-service network named "autoscaler-<service>" (see Settings.network_for).
    network: str | None = None
    # CPU cores per replica; utilisation percentages are relative to this.
    cpu_limit: float
    # Bytes per replica; the file may say "256MiB", "1GiB", "512m" (see parse_size).
    memory_limit: int
    # The load balancer's HTTP check. Workers are checked by Docker: `healthcheck` or the image's.
    health_path: str = "/healthz"
    healthcheck: HealthcheckConfig | None = None
    # 0 only for a worker with an external metric (KEDA's activation wakes it up).
    min_replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    max_replicas: int = Field(8, ge=1, le=MAX_REPLICAS)
    # Docker's stop timeout is whole seconds.
    stop_timeout_seconds: int = Field(10, ge=0, le=MAX_TIMEOUT_SECONDS)
    startup_timeout_seconds: float = Field(60.0, gt=0, le=MAX_TIMEOUT_SECONDS)
    # A replica that keeps failing is retried after backoff_initial_seconds, doubling up to
    # backoff_max_seconds (as CrashLoopBackOff), so a broken image does not spin the engine.
    backoff_initial_seconds: float = Field(1.0, gt=0, le=MAX_BACKOFF_INITIAL_SECONDS)
    backoff_max_seconds: float = Field(60.0, gt=0, le=MAX_BACKOFF_SECONDS)
    # None: a worker, with no load balancer (its replicas take work from a queue, not requests).
    load_balancer: LoadBalancerConfig | None = None
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    schedule: list[ScheduleWindow] = []

    @field_validator("network")
    @classmethod
    def _check_network(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.lower() in _PREDEFINED_NETWORKS:
            raise ValueError(
                f"{value!r} is one of Docker's predefined networks: the load balancer reaches the replicas "
                "by name, which needs a user-defined bridge network with Docker's DNS "
                "(leave network unset to get 'autoscaler-<service>', or name your own)"
            )
        if not DOCKER_NAME_RE.fullmatch(value):
            raise ValueError(f"{shown(value)} is not a valid Docker network name")
        return value

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str]) -> list[str]:
        # Arguments reach execve() as C strings: a NUL cannot be passed, Docker refuses it.
        bad = [index for index, argument in enumerate(value) if "\0" in argument]
        if bad:
            raise ValueError(f"argument(s) {bad} contain a NUL character")
        return value

    @field_validator("cpu_limit")
    @classmethod
    def _check_cpu_limit(cls, value: float) -> float:
        if not MIN_CPU_LIMIT_CORES <= value <= MAX_CPU_LIMIT_CORES:
            raise ValueError(
                f"must be between {MIN_CPU_LIMIT_CORES:g} (Docker's minimum) and {MAX_CPU_LIMIT_CORES:g} cores "
                f"(got {value:g})"
            )
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _stringify_env(cls, value: Any) -> Any:
        # Container environments are strings; `PORT = 8000` in TOML obviously means "8000".
        if isinstance(value, Mapping):
            return {
                key: str(item) if isinstance(item, (int, float)) and not isinstance(item, bool) else item
                for key, item in value.items()
            }
        return value

    @field_validator("env")
    @classmethod
    def _check_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not name or "=" in name or "\0" in name]
        if bad:
            raise ValueError(f"invalid variable name(s) {shown(bad)}: must be non-empty and contain no '='")
        bad = [name for name, text in value.items() if "\0" in text]
        if bad:
            raise ValueError(f"value(s) of {shown(bad)} contain a NUL character, which no environment can hold")
        return value

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _parse_memory_limit(cls, value: Any) -> int:
        size = parse_size(value)
        if not MIN_MEMORY_LIMIT_BYTES <= size <= MAX_MEMORY_LIMIT_BYTES:
            raise ValueError(f"must be between 6MiB (Docker's minimum) and 64TiB (got {shown(value)})")
        return size

    @field_validator("health_path")
    @classmethod
    def _check_health_path(cls, value: str) -> str:
        # isprintable: a control character would end HAProxy's check request line early.
        if not value.startswith("/") or any(char.isspace() for char in value) or not value.isprintable():
            raise ValueError(f"{shown(value)} must start with '/' and contain no spaces or control characters")
        return value

    @property
    def is_worker(self) -> bool:
        """No load balancer: a replica is ready when it runs (and Docker says it is healthy,
        where a check is defined) and leaves by its stop signal."""
        return self.load_balancer is None

    @property
    def lease_image(self) -> str:
        """The image whose shell loop holds the service's lease (docker/lease.py): the load
        balancer's, which must be on the engine anyway, or for a worker the default one."""
        return self.load_balancer.image if self.load_balancer is not None else DEFAULT_LB_IMAGE

    @property
    def effective_metrics_source(self) -> str:
        if self.metrics_source is not None:
            return self.metrics_source
        return "agent" if self.backend == "swarm" else "docker"

    @model_validator(mode="after")
    def _check_bounds(self) -> "ServiceConfig":
        problems: list[tuple[Loc, str]] = []
        if (self.image is None) == (self.template is None):
            problems.append((("image",), "set image, or template = { container = ... } (or { compose_project, "
                             "compose_service }) to copy a container you run: one of the two, not both"
                             if self.image is None else
                             "a template names the image already (its container's); remove image, or the template"))
        if self.backend == "swarm":
            fields = self.compose_fields_set() + (["template"] if self.template is not None else [])
            if fields:
                problems.append(((fields[0],), 'with backend = "swarm", describe the replicas in your own Swarm service '
                                 'and adopt it (swarm_service): the compose fields and templates are for containers'))
        if self.load_balancer is not None and self.port is None:
            problems.append((("port",), "the port the replicas listen on is required with [load_balancer] (HAProxy connects to it)"))
        if self.load_balancer is None:
            if self.port is not None:
                problems.append((("port",), "only used by a load balancer: add [services.NAME.load_balancer] with "
                                 "publish, or remove port for a worker (a service without a load balancer)"))
            if "health_path" in self.model_fields_set:
                problems.append((("health_path",), "is the load balancer's HTTP check, and this worker has none: "
                                 "check a worker with healthcheck = { test = [\"CMD\", ...] } (or the image's HEALTHCHECK)"))
        elif self.healthcheck is not None:
            problems.append((("healthcheck",), "a service with a load balancer is checked by it on health_path; "
                             "healthcheck is for workers"))
        if self.min_replicas == 0:
            if self.load_balancer is not None:
                problems.append((("min_replicas",), "0 needs a way to hold requests while a replica starts, which "
                                 "the load balancer does not have: use 1 or more for an HTTP service"))
            elif not self.policy.metrics:
                problems.append((("min_replicas",), "0 needs an external metric ([[services.NAME.policy.metrics]]) "
                                 "to wake the service up: with CPU and memory only, nothing would measure at 0"))
        if self.backend != "swarm":
            if self.swarm_service is not None:
                problems.append((("swarm_service",), 'only used with backend = "swarm"'))
            if self.metrics_source in ("agent", "prometheus"):
                problems.append((("metrics_source",), f'"{self.metrics_source}" reads Swarm tasks: use it with backend = "swarm"'))
            if self.load_balancer is not None and self.load_balancer.node is not None:
                problems.append((("load_balancer", "node"), 'only used with backend = "swarm"'))
        else:
            if self.metrics_source == "docker":
                problems.append((("metrics_source",), 'a manager cannot read the stats of tasks on other nodes: '
                                 'use "agent" or "prometheus" with backend = "swarm"'))
            for key in ("pull", "pull_timeout_seconds", "pull_check_seconds"):
                if key in self.model_fields_set:
                    problems.append(((key,), 'only used with backend = "containers": a Swarm\'s nodes pull '
                                     'their tasks\' images themselves'))
        if self.effective_metrics_source == "prometheus" and self.prometheus is None:
            problems.append((("prometheus",), 'metrics_source = "prometheus" needs [services.NAME.prometheus] with its url'))
        if self.prometheus is not None and self.effective_metrics_source != "prometheus":
            problems.append((("prometheus",), 'only used with metrics_source = "prometheus"'))
        if self.max_replicas < self.min_replicas:
            problems.append((("max_replicas",), f"must be >= min_replicas ({self.min_replicas})"))
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            problems.append(
                (("backoff_max_seconds",), f"must be >= backoff_initial_seconds ({self.backoff_initial_seconds:g})")
            )
        fallback = self.policy.fallback_replicas
        if fallback is not None and not self.min_replicas <= fallback <= self.max_replicas:
            problems.append(
                (
                    ("policy", "fallback_replicas"),
                    f"must be between min_replicas ({self.min_replicas}) and max_replicas ({self.max_replicas})",
                )
            )
        seen: dict[str, int] = {}
        for index, window in enumerate(self.schedule):
            if window.name in seen:
                problems.append((("schedule", index, "name"), f"duplicate window name (also schedule.{seen[window.name]})"))
            seen.setdefault(window.name, index)
            # A window overrides one bound; the other still comes from the service.
            low = window.min_replicas if window.min_replicas is not None else self.min_replicas
            high = window.max_replicas if window.max_replicas is not None else self.max_replicas
            if window.min_replicas == 0 and self.min_replicas > 0 and (
                self.load_balancer is not None or not self.policy.metrics
            ):
                problems.append((("schedule", index, "min_replicas"), "0 only for a worker with an external metric "
                                 "(as min_replicas)"))
            if low > high:
                field = "min_replicas" if window.min_replicas is not None else "max_replicas"
                problems.append(
                    (("schedule", index, field), f"window bounds {low}..{high} are empty (min_replicas > max_replicas)")
                )
        raise_problems(problems)
        return self
