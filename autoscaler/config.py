"""Daemon configuration: one TOML file plus ``AUTOSCALER_*`` environment overrides.

This module only validates. Building runtime objects (Docker clients, HAProxy sessions, cron
jobs) happens elsewhere, from the frozen ``Settings`` returned by ``load_config``.

Precedence, highest first: keyword overrides > environment > TOML file > model defaults.
Environment variables use the prefix ``AUTOSCALER_`` and ``__`` between nesting levels, e.g.
``AUTOSCALER_SERVICES__WEB__MAX_REPLICAS=3``; they are deep-merged into the file, so one
variable changes one key and leaves the rest of the service table alone.
"""

import ipaddress
import os
import re
import tomllib
import types
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

__all__ = [
    "ConfigError",
    "DaemonConfig",
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "LoadBalancerConfig",
    "MAX_METRIC_VALUE",
    "MAX_REPLICAS",
    "PolicyConfig",
    "ScalingBehavior",
    "ScalingRule",
    "ScheduleWindow",
    "ServiceConfig",
    "Settings",
    "StepRule",
    "check_image_reference",
    "load_config",
    "parse_host_port",
    "parse_size",
]


class ConfigError(Exception):
    """The configuration cannot be used; ``messages`` holds one ``"<dotted.path>: <problem>"`` each."""

    def __init__(self, messages: list[str] | str) -> None:
        self.messages: list[str] = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("\n".join(self.messages))


# --- bounds ---------------------------------------------------------------------------------
# Every number the daemon acts on has a range. A value outside it is a typo or a unit mistake
# (milliseconds for seconds, bytes for MiB), and `validate` names it instead of `run` failing
# half-way through creating containers, or the daemon scheduling absurd work.

# Per service. Far beyond what one engine runs behind one HAProxy, and it bounds the work of a
# cycle (one stats call and a few HAProxy commands per replica) and of `decide` and `simulate`.
MAX_REPLICAS = 1000
# Below this a cycle (stats of every replica, HAProxy's state) cannot finish before the next.
MIN_INTERVAL_SECONDS = 0.1
# An autoscaler that looks less than once an hour does not scale anything.
MAX_INTERVAL_SECONDS = 3600.0
# Stop grace, start-up, drain and initialization: a replica stuck for an hour is broken.
MAX_TIMEOUT_SECONDS = 3600
# Docker refuses NanoCpus below 0.01 cores; 1024 cores is more than any single host has.
MIN_CPU_LIMIT_CORES = 0.01
MAX_CPU_LIMIT_CORES = 1024.0
# Docker: "Minimum memory limit allowed is 6MB" (6 MiB); 64 TiB is more than any host has.
MIN_MEMORY_LIMIT_BYTES = 6 * 1024**2
MAX_MEMORY_LIMIT_BYTES = 64 * 1024**4
# Failed metric cycles before the fallback: 10,000 x 5 s is already about 14 hours.
MAX_FAILURE_THRESHOLD = 10_000
# A schedule window open longer than a month would be the service's own bounds.
MAX_WINDOW_SECONDS = 31 * 86_400
# A percent rule or step of +10,000 % (x101 per period) is already no limit at all.
MAX_PERCENT_CHANGE = 10_000
# Requests per second, response times in ms, step thresholds: far above any real reading, low
# enough that sums and ratios of readings stay finite floats (decide uses it for readings too).
MAX_METRIC_VALUE = 1e9
# The HPA accepts any tolerance >= 0; past 1000 (act only beyond 1001x the target) it is a typo.
MAX_TOLERANCE = 1000.0
# SIGTERM gives up on the step in progress after this; init systems kill at 90 s by default.
MAX_SHUTDOWN_TIMEOUT_SECONDS = 300.0
# Restart backoff of a failing replica: the first delay, and the cap of a day.
MAX_BACKOFF_INITIAL_SECONDS = 3600.0
MAX_BACKOFF_SECONDS = 86_400.0
# A config of a hundred services is about 100 KiB; anything near this is not a config.
MAX_CONFIG_BYTES = 1024**2
# AF_UNIX socket paths hold at most 107 bytes. Each load balancer's socket is
# "<dir>/autoscaler-<service>-lb.sock", up to 61 bytes after the directory with a service name
# of 41 characters, which leaves 46 for the directory.
MAX_ADMIN_SOCKET_DIR_BYTES = 46


def _shown(value: Any, limit: int = 60) -> str:
    """repr() for a message: cut short, and safe for ints too long for str() (> 4300 digits)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return "a number with more than 4300 digits" if isinstance(value, int) else f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- scalar parsers -------------------------------------------------------------------------

# Docker's own flags (`--memory 512m`) treat single letters as powers of 1024, so we do too;
# the spelled-out SI units stay decimal so "100MB" means what a datasheet means.
_SIZE_MULTIPLIERS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
# 30 digits of bytes is 10^30 B; past this the number is noise, not a size.
_MAX_SIZE_DIGITS = 30
_SIZE_RE = re.compile(r"(-?)(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)", re.IGNORECASE | re.ASCII)
_SIZE_HELP = (
    "use e.g. 256MiB, 1GiB, 512m); accepted units: B, KiB/MiB/GiB/TiB and k/m/g/t "
    "(powers of 1024), KB/MB/GB/TB (powers of 1000), or a plain number of bytes"
)


def parse_size(text: str | int) -> int:
    """Return a memory size in bytes; ``int`` input is already bytes. Raises ``ValueError``."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"{text!r} is not a valid size ({_SIZE_HELP}")
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"{text!r} is not a valid size: must be at least 1 byte")
        return text
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None or match.group(3).lower() not in _SIZE_MULTIPLIERS:
        raise ValueError(f"{_shown(text)} is not a valid size ({_SIZE_HELP}")
    sign, number, unit = match.groups()
    if len(number) > _MAX_SIZE_DIGITS:
        raise ValueError(f"{_shown(text)} is not a valid size: far too large")
    # Decimal keeps "1.5GiB" exact; a fraction of a byte is dropped, as Docker does.
    size = int(Decimal(number) * _SIZE_MULTIPLIERS[unit.lower()])
    if sign or size <= 0:
        raise ValueError(f"{text!r} is not a valid size: must be at least 1 byte")
    return size


_HOST_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE | re.ASCII)
_PORT_RE = re.compile(r"[0-9]{1,5}")


def _is_host(host: str) -> bool:
    # All-numeric names would be read as (possibly broken) IPv4 addresses by resolvers.
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_HOST_LABEL_RE.fullmatch(label) for label in host.split("."))


def parse_host_port(text: str) -> tuple[str, int]:
    """Split ``"host:port"`` or ``"[ipv6]:port"``; the host is returned without brackets."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a valid host:port (expected a string like '127.0.0.1:8080')")
    prefix = f"{text!r} is not a valid host:port"
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{prefix}: expected '[ipv6]:port', e.g. '[::1]:8080'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{prefix}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{prefix}: expected 'host:port', e.g. '127.0.0.1:8080'")
        if ":" in host:
            raise ValueError(f"{prefix}: put IPv6 addresses in brackets, e.g. '[::1]:8080'")
        if not host:
            raise ValueError(f"{prefix}: the host is empty (use 0.0.0.0 to listen everywhere)")
        if not _is_host(host):
            raise ValueError(f"{prefix}: {host!r} is not an IPv4 address or host name")
    if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{prefix}: port must be a number between 1 and 65535")
    return host, int(port_text)


def _check_host_port(value: str) -> str:
    parse_host_port(value)
    return value


HostPort = Annotated[str, AfterValidator(_check_host_port)]


# Docker's reference grammar (github.com/distribution/reference, regexp.go):
#   reference := name [":" tag] ["@" digest];  name := [domain "/"] path-component ["/" path-component]*
# The path is lowercase; the domain (registry host[:port]) may not be.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
# The digest algorithms registered in opencontainers/go-digest, each with its hex length.
_DIGEST = r"sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}"
_IMAGE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>[\w][\w.-]{{0,127}}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_IMAGE_NAME_MAX = 255  # distribution/reference NameTotalLengthMax
_IMAGE_HELP = "expected [registry[:port]/]name[:tag][@sha256:<64 hex>], e.g. 'nginx:1.27' or 'registry.local:5000/team/app:2'"


def check_image_reference(value: str) -> str:
    """``value`` if Docker can pull or run it by that reference; otherwise ``ValueError`` saying why."""
    if not value:
        raise ValueError(f"must be a non-empty image reference ({_IMAGE_HELP})")
    problem = None
    # Longer than any valid reference (name 255, tag 128, digest 135): not worth matching.
    if len(value) > _IMAGE_NAME_MAX + 1 + 128 + 1 + 135:
        problem = "far too long"
    elif any(char.isspace() for char in value):
        problem = "contains whitespace"
    else:
        match = _IMAGE_RE.fullmatch(value)
        if match is None:
            lowered = _IMAGE_RE.fullmatch(value.lower())
            problem = "the repository name must be lowercase" if lowered else "malformed"
        elif len(match.group("name")) > _IMAGE_NAME_MAX:
            problem = f"the name is longer than {_IMAGE_NAME_MAX} characters"
    if problem is not None:
        raise ValueError(f"{_shown(value)} is not a valid image reference: {problem} ({_IMAGE_HELP})")
    return value


ImageReference = Annotated[str, AfterValidator(check_image_reference)]


# --- cross-field problems -------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _raise_problems(problems: list[tuple[Loc, str]]) -> None:
    """Report every cross-field problem of one model at once, each under its own sub-path.

    A validator can raise only one error, and pydantic would file it under the model's own
    path; carrying (sub-path, message) pairs in the error context lets ``load_config`` print
    ``services.web.max_replicas: ...`` instead of ``services.web: ...``.
    """
    if problems:
        summary = "; ".join(f"{'.'.join(map(str, loc)) or '<model>'}: {text}" for loc, text in problems)
        raise PydanticCustomError("config_problems", "{summary}", {"summary": summary, "problems": problems})


def _plain_types(annotation: Any) -> frozenset[Any]:
    """The types a field's annotation accepts at its top level, through Annotated and unions."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _plain_types(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return frozenset().union(*(_plain_types(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return frozenset(type(arg) for arg in get_args(annotation))
    return frozenset([annotation])


@cache
def _is_number_field(model: type[BaseModel], field_name: str) -> bool:
    kinds = _plain_types(model.model_fields[field_name].annotation)
    return bool(kinds & {int, float}) and bool not in kinds


def _refuse_boolean(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    # pydantic reads true as 1 and false as 0 for numbers: `max_replicas = true` would quietly
    # mean one replica. "true" and "false" are how booleans arrive from the environment.
    if info.field_name is not None and _is_number_field(model, info.field_name):
        if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
            raise ValueError(f"must be a number, not a boolean (got {value!r})")
    return value


class _Model(BaseModel):
    # allow_inf_nan=False: `inf` and `nan` are valid TOML floats, and "inf" a valid env value.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_boolean(cls, value, info)


# --- daemon and load balancer ---------------------------------------------------------------


def _check_socket_dir(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{_shown(value)} must be an absolute path, e.g. '/run/autoscaler'")
    if not value.isprintable() or any(char.isspace() for char in value):
        raise ValueError(f"{_shown(value)} must not contain whitespace or control characters")
    if len(value.encode()) > MAX_ADMIN_SOCKET_DIR_BYTES:
        raise ValueError(
            f"{_shown(value)} is longer than {MAX_ADMIN_SOCKET_DIR_BYTES} bytes: "
            "a socket path in it would not fit a Unix socket address (107 bytes)"
        )
    return value


class DaemonConfig(_Model):
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
        _raise_problems(problems)
        return self

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        return parse_host_port(self.metrics_listen)


class LoadBalancerConfig(_Model):
    image: ImageReference = "autoscaler-haproxy:latest"
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


# --- scaling behavior (Kubernetes HPA v2 semantics) ------------------------------------------


class ScalingRule(_Model):
    """At most ``value`` replicas (or percent of current replicas) per ``period_seconds``."""

    type: Literal["replicas", "percent"]
    # At most MAX_REPLICAS for "replicas" (checked below), MAX_PERCENT_CHANGE for "percent".
    value: int = Field(gt=0, le=MAX_PERCENT_CHANGE)
    # The HPA caps periods at 30 minutes; it also bounds how much scale history we keep.
    period_seconds: int = Field(gt=0, le=1800)

    @model_validator(mode="after")
    def _check_value(self) -> "ScalingRule":
        if self.type == "replicas" and self.value > MAX_REPLICAS:
            _raise_problems([(("value",), f"must be <= {MAX_REPLICAS}, the most replicas a service may have (got {self.value})")])
        return self


class ScalingBehavior(_Model):
    """One direction of the HPA ``behavior`` block; ``None`` fields mean "use the default"."""

    stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    # Which rule wins when several apply: "max" allows the biggest change, "min" the smallest,
    # "disabled" forbids scaling in this direction altogether.
    select: Literal["max", "min", "disabled"] = "max"
    # An empty list would mean "no limit" for one reader and "never scale" for another.
    rules: Annotated[list[ScalingRule], Field(min_length=1)] | None = None

    def with_defaults(self, defaults: "ScalingBehavior") -> "ScalingBehavior":
        """Fill unset fields from ``defaults`` (``select`` is always set: both defaults are "max")."""
        return ScalingBehavior(
            stabilization_seconds=(
                self.stabilization_seconds if self.stabilization_seconds is not None else defaults.stabilization_seconds
            ),
            select=self.select,
            rules=list(self.rules if self.rules is not None else defaults.rules or []),
        )


# The HPA defaults: react to load at once (up to 4 pods or doubling per 15 s), but only shrink
# after the recommendation has stayed low for 5 minutes.
DEFAULT_SCALE_UP = ScalingBehavior(
    stabilization_seconds=0,
    select="max",
    rules=[
        ScalingRule(type="replicas", value=4, period_seconds=15),
        ScalingRule(type="percent", value=100, period_seconds=15),
    ],
)
DEFAULT_SCALE_DOWN = ScalingBehavior(
    stabilization_seconds=300,
    select="max",
    rules=[ScalingRule(type="percent", value=100, period_seconds=15)],
)


# --- step scaling ---------------------------------------------------------------------------

MetricName = Literal["cpu", "memory", "requests_per_second", "response_time_ms", "queue"]

_ADJUSTMENT_RE = re.compile(r"([+-])([0-9]+)(%?)|0%?", re.ASCII)
# Step thresholds compare with readings, which are >= 0 and at most MAX_METRIC_VALUE.
Threshold = Annotated[float, Field(ge=0, le=MAX_METRIC_VALUE)]


class StepRule(_Model):
    """When ``lower <= metric < upper``, change the replica count by ``adjustment``."""

    metric: MetricName
    lower: Threshold | None = None
    upper: Threshold | None = None
    # "+2" / "-1" change the count; "+50%" / "-25%" change it relative to the current count.
    adjustment: str

    @field_validator("adjustment", mode="before")
    @classmethod
    def _check_adjustment(cls, value: Any) -> Any:
        # TOML reads `adjustment = +2` as the integer 2; that is unambiguous, so accept it.
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:+d}" if value else "0"
        match = _ADJUSTMENT_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{_shown(value)} is not a valid adjustment (use e.g. '+2', '-1', '+50%', '-25%' or '0')")
        value = value.strip()
        sign, digits, percent = match.groups()
        if digits is None:
            return value  # "0" or "0%"
        # len() first: int() of thousands of digits is slow, and refused past 4300.
        amount = int(digits) if len(digits) <= 9 else MAX_PERCENT_CHANGE + MAX_REPLICAS + 1
        if percent and sign == "-" and amount > 100:
            raise ValueError(f"{_shown(value)} would remove more than 100% of the replicas")
        if percent and amount > MAX_PERCENT_CHANGE:
            raise ValueError(f"{_shown(value)} is more than {MAX_PERCENT_CHANGE}% of the replicas")
        if not percent and amount > MAX_REPLICAS:
            raise ValueError(f"{_shown(value)} is more than {MAX_REPLICAS} replicas, the most a service may have")
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> "StepRule":
        if self.lower is None and self.upper is None:
            _raise_problems([((), "set lower, upper or both (lower is inclusive, upper exclusive)")])
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            _raise_problems([(("upper",), f"must be > lower ({self.lower:g})")])
        return self

    @property
    def adjustment_value(self) -> int:
        """Signed amount: replicas, or percent of the current replicas if ``adjustment_is_percent``."""
        return int(self.adjustment.rstrip("%"))

    @property
    def adjustment_is_percent(self) -> bool:
        return self.adjustment.endswith("%")

    def contains(self, value: float) -> bool:
        return (self.lower is None or value >= self.lower) and (self.upper is None or value < self.upper)

    def overlaps(self, other: "StepRule") -> bool:
        if self.metric != other.metric:
            return False
        inf = float("inf")
        lower_a, upper_a = self.lower if self.lower is not None else -inf, self.upper if self.upper is not None else inf
        lower_b, upper_b = other.lower if other.lower is not None else -inf, other.upper if other.upper is not None else inf
        return lower_a < upper_b and lower_b < upper_a


# --- scheduled capacity ---------------------------------------------------------------------


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')") from None
    return value


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_WEEKDAY_PART = re.compile(r"(\*|[a-z0-9]+)(?:-([a-z0-9]+))?(?:/([0-9]+))?", re.ASCII)


def _weekday_number(token: str) -> int | None:
    if token.isdigit():
        number = int(token)
        return number if 0 <= number <= 7 else None
    return _WEEKDAYS.index(token) if token in _WEEKDAYS else None


def _crontab_weekdays(field: str) -> str:
    """The day-of-week field spelled with names.

    APScheduler 3 numbers weekdays from Monday = 0, crontab from Sunday = 0 (and 7); names mean
    the same to both. Without this, "1-5" would run Tuesday to Saturday.
    """
    if not any(char.isdigit() for char in field):
        return field  # "*", names: already unambiguous
    days: set[int] = set()
    for part in field.lower().split(","):
        match = _WEEKDAY_PART.fullmatch(part)
        if match is None:
            return field
        first, last, step = match.groups()
        if first == "*":
            if last is not None:
                return field
            low, high = 0, 6
        else:
            low_number = _weekday_number(first)
            high_number = _weekday_number(last) if last is not None else (7 if step else low_number)
            if low_number is None or high_number is None or low_number > high_number:
                return field
            low, high = low_number, high_number
        days.update(day % 7 for day in range(low, high + 1, int(step or 1)))
    if not days:
        return field
    return ",".join(_WEEKDAYS[day] for day in sorted(days))


def crontab_trigger(cron: str, timezone: str) -> CronTrigger:
    """An APScheduler trigger that fires as crontab would (weekday numbers as crontab's)."""
    fields = cron.split()
    if len(fields) == 5:
        fields[4] = _crontab_weekdays(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=ZoneInfo(timezone))


class ScheduleWindow(_Model):
    """From each ``cron`` firing, for ``duration_seconds``, override the replica bounds."""

    name: str = Field(min_length=1)
    cron: str
    duration_seconds: int = Field(gt=0, le=MAX_WINDOW_SECONDS)
    # Scale-to-zero is not supported: with no replica there is nothing to measure.
    min_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = None
    max_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = None
    timezone: Annotated[str, AfterValidator(_check_timezone)] = "UTC"

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        # The zone does not change what parses, so the syntax check can run without it and
        # report a bad cron and a bad timezone independently.
        try:
            crontab_trigger(value, "UTC")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{value!r} is not a valid 5-field crontab expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> "ScheduleWindow":
        if self.min_replicas is None and self.max_replicas is None:
            _raise_problems([((), "set min_replicas, max_replicas or both")])
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            _raise_problems([(("max_replicas",), f"must be >= min_replicas ({self.min_replicas})")])
        return self


# --- policy ---------------------------------------------------------------------------------

Percent = Annotated[float, Field(gt=0, le=100)]
MetricTarget = Annotated[float, Field(gt=0, le=MAX_METRIC_VALUE)]
# As the HPA: any tolerance >= 0. A scale-down tolerance >= 1 turns ratio-based scale-down off
# (every ratio below the target is then within it); that is a valid choice, not an error.
Tolerance = Annotated[float, Field(ge=0, le=MAX_TOLERANCE)]


class PolicyConfig(_Model):
    strategy: Literal["target", "step"] = "target"
    # Utilisation is measured against the service's cpu_limit / memory_limit. TOML has no
    # null, so the CPU target cannot be switched off from the file: it is always active with
    # the "target" strategy (default 60) alongside any other target you set.
    target_cpu_percent: Percent | None = 60.0
    target_memory_percent: Percent | None = None
    target_requests_per_second_per_replica: MetricTarget | None = None
    target_response_time_ms: MetricTarget | None = None
    # No scaling while |current/target - 1| <= tolerance, so noise does not cause flapping.
    tolerance: Tolerance = 0.1
    tolerance_up: Tolerance | None = None
    tolerance_down: Tolerance | None = None
    # Replicas younger than this are left out of CPU averages: start-up spikes are not load.
    initialization_seconds: float = Field(30.0, ge=0, le=MAX_TIMEOUT_SECONDS)
    # Shorthand for scale_down.stabilization_seconds, the knob people most often change.
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    drain_timeout_seconds: float = Field(30.0, ge=0, le=MAX_TIMEOUT_SECONDS)
    # Consecutive failed metric reads before fallback_replicas (if set) takes over.
    failure_threshold: int = Field(3, ge=1, le=MAX_FAILURE_THRESHOLD)
    fallback_replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] | None = None
    scale_up: ScalingBehavior | None = None
    scale_down: ScalingBehavior | None = None
    steps: list[StepRule] = []

    @model_validator(mode="after")
    def _check_policy(self) -> "PolicyConfig":
        problems: list[tuple[Loc, str]] = []
        if self.strategy == "target" and not self.targets():
            problems.append(((), 'strategy "target" needs at least one target_* setting'))
        if self.strategy == "step" and not self.steps:
            problems.append((("steps",), 'strategy "step" needs at least one [[...policy.steps]] rule'))
        if self.strategy != "step" and self.steps:
            # Silently ignoring rules the user wrote would be worse than refusing to start.
            problems.append((("steps",), 'steps are only used with strategy = "step"'))
        for index, step in enumerate(self.steps):
            for earlier in range(index):
                if step.overlaps(self.steps[earlier]):
                    problems.append((("steps", index), f"overlaps steps.{earlier} for metric {step.metric!r}"))
        shorthand = self.scale_down_stabilization_seconds
        explicit = self.scale_down.stabilization_seconds if self.scale_down is not None else None
        if shorthand is not None and explicit is not None and shorthand != explicit:
            problems.append(
                (
                    ("scale_down_stabilization_seconds",),
                    f"conflicts with scale_down.stabilization_seconds ({shorthand} != {explicit}); set only one",
                )
            )
        _raise_problems(problems)
        return self

    def targets(self) -> dict[str, float]:
        """The configured targets keyed by the metric names used in step rules."""
        candidates = {
            "cpu": self.target_cpu_percent,
            "memory": self.target_memory_percent,
            "requests_per_second": self.target_requests_per_second_per_replica,
            "response_time_ms": self.target_response_time_ms,
        }
        return {metric: target for metric, target in candidates.items() if target is not None}

    @property
    def effective_tolerance_up(self) -> float:
        return self.tolerance if self.tolerance_up is None else self.tolerance_up

    @property
    def effective_tolerance_down(self) -> float:
        return self.tolerance if self.tolerance_down is None else self.tolerance_down

    def effective_scale_up(self) -> ScalingBehavior:
        return (self.scale_up or ScalingBehavior()).with_defaults(DEFAULT_SCALE_UP)

    def effective_scale_down(self) -> ScalingBehavior:
        behavior = self.scale_down or ScalingBehavior()
        if behavior.stabilization_seconds is None and self.scale_down_stabilization_seconds is not None:
            behavior = behavior.model_copy(update={"stabilization_seconds": self.scale_down_stabilization_seconds})
        return behavior.with_defaults(DEFAULT_SCALE_DOWN)


# --- service --------------------------------------------------------------------------------

_DOCKER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", re.ASCII)


# Docker's predefined networks: no Docker DNS between containers there ("bridge"), or no
# network of the container's own at all ("host", "none"); "default" is reserved.
_PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none", "default"})


class PrometheusSourceConfig(_Model):
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


class ServiceConfig(_Model):
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
    image: ImageReference
    # The port the application listens on inside each replica; HAProxy connects to it.
    port: int = Field(ge=1, le=65535)
    command: list[str] = []
    env: dict[str, str] = {}
    # None: a per-service network named "autoscaler-<service>" (see Settings.network_for).
    network: str | None = None
    # CPU cores per replica; utilisation percentages are relative to this.
    cpu_limit: float
    # Bytes per replica; the file may say "256MiB", "1GiB", "512m" (see parse_size).
    memory_limit: int
    health_path: str = "/healthz"
    min_replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    max_replicas: int = Field(8, ge=1, le=MAX_REPLICAS)
    # Docker's stop timeout is whole seconds.
    stop_timeout_seconds: int = Field(10, ge=0, le=MAX_TIMEOUT_SECONDS)
    startup_timeout_seconds: float = Field(60.0, gt=0, le=MAX_TIMEOUT_SECONDS)
    # A replica that keeps failing is retried after backoff_initial_seconds, doubling up to
    # backoff_max_seconds (as CrashLoopBackOff), so a broken image does not spin the engine.
    backoff_initial_seconds: float = Field(1.0, gt=0, le=MAX_BACKOFF_INITIAL_SECONDS)
    backoff_max_seconds: float = Field(60.0, gt=0, le=MAX_BACKOFF_SECONDS)
    load_balancer: LoadBalancerConfig
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
        if not _DOCKER_NAME_RE.fullmatch(value):
            raise ValueError(f"{_shown(value)} is not a valid Docker network name")
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
            raise ValueError(f"invalid variable name(s) {_shown(bad)}: must be non-empty and contain no '='")
        bad = [name for name, text in value.items() if "\0" in text]
        if bad:
            raise ValueError(f"value(s) of {_shown(bad)} contain a NUL character, which no environment can hold")
        return value

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _parse_memory_limit(cls, value: Any) -> int:
        size = parse_size(value)
        if not MIN_MEMORY_LIMIT_BYTES <= size <= MAX_MEMORY_LIMIT_BYTES:
            raise ValueError(f"must be between 6MiB (Docker's minimum) and 64TiB (got {_shown(value)})")
        return size

    @field_validator("health_path")
    @classmethod
    def _check_health_path(cls, value: str) -> str:
        # isprintable: a control character would end HAProxy's check request line early.
        if not value.startswith("/") or any(char.isspace() for char in value) or not value.isprintable():
            raise ValueError(f"{_shown(value)} must start with '/' and contain no spaces or control characters")
        return value

    @property
    def effective_metrics_source(self) -> str:
        if self.metrics_source is not None:
            return self.metrics_source
        return "agent" if self.backend == "swarm" else "docker"

    @model_validator(mode="after")
    def _check_bounds(self) -> "ServiceConfig":
        problems: list[tuple[Loc, str]] = []
        if self.backend != "swarm":
            if self.swarm_service is not None:
                problems.append((("swarm_service",), 'only used with backend = "swarm"'))
            if self.metrics_source in ("agent", "prometheus"):
                problems.append((("metrics_source",), f'"{self.metrics_source}" reads Swarm tasks: use it with backend = "swarm"'))
            if self.load_balancer.node is not None:
                problems.append((("load_balancer", "node"), 'only used with backend = "swarm"'))
        elif self.metrics_source == "docker":
            problems.append((("metrics_source",), 'a manager cannot read the stats of tasks on other nodes: '
                             'use "agent" or "prometheus" with backend = "swarm"'))
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
            if low > high:
                field = "min_replicas" if window.min_replicas is not None else "max_replicas"
                problems.append(
                    (("schedule", index, field), f"window bounds {low}..{high} are empty (min_replicas > max_replicas)")
                )
        _raise_problems(problems)
        return self


# --- top level ------------------------------------------------------------------------------

_SERVICE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,40}", re.ASCII)


def _check_service_name(name: str) -> str:
    # Names end up in container, network and HAProxy backend names and in metric labels.
    if not _SERVICE_NAME_RE.fullmatch(name):
        raise ValueError(
            "invalid service name (use 1-41 lowercase letters, digits, '_', '.' or '-', starting with a letter or digit)"
        )
    return name


ServiceName = Annotated[str, AfterValidator(_check_service_name)]

_WILDCARD_HOSTS = {"0.0.0.0", "::"}


def _binds_clash(first: tuple[str, int], second: tuple[str, int]) -> bool:
    (host_a, port_a), (host_b, port_b) = first, second
    return port_a == port_b and (host_a == host_b or host_a in _WILDCARD_HOSTS or host_b in _WILDCARD_HOSTS)


@dataclass(frozen=True)
class _LoadRequest:
    toml_file: Path
    environ: Mapping[str, str]


# settings_customise_sources is a classmethod with no per-call arguments; a context variable
# carries the file and environment of the current load_config() call without a class per file.
_LOAD_REQUEST: ContextVar[_LoadRequest | None] = ContextVar("autoscaler_config_load_request", default=None)


class _EnvSource(EnvSettingsSource):
    """The standard env source, reading an injected mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {(key if self.case_sensitive else key.lower()): value for key, value in self._environ.items()}


class _TomlProblem(Exception):
    """The file is TOML only in name: too large, or with values tomllib cannot hold."""


class _TomlSource(TomlConfigSettingsSource):
    """The standard TOML source, reading at most MAX_CONFIG_BYTES and failing cleanly."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]
        with open(file_path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise _TomlProblem(f"larger than {MAX_CONFIG_BYTES // 1024**2} MiB; no config is that large")
        text = data.decode("utf-8")
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            raise
        except ValueError as exc:
            # int() refuses more than 4300 digits, and tomllib lets that ValueError out as is.
            match = re.search(r"[0-9_]{4300,}", text)
            if match is None:
                raise _TomlProblem(f"invalid TOML: {exc}") from None
            line = text.count("\n", 0, match.start()) + 1
            raise _TomlProblem(f"invalid TOML: a number with more than 4300 digits (line {line})") from None
        except RecursionError:
            raise _TomlProblem("invalid TOML: arrays or inline tables nested too deeply") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTOSCALER_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )

    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    services: dict[ServiceName, ServiceConfig]

    # As on _Model: BaseSettings is not one, so the rule is repeated for fields added here.
    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_boolean(cls, value, info)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No dotenv and no secrets dir: one file plus the environment is the whole story.
        request = _LOAD_REQUEST.get()
        if request is None:
            return (init_settings, env_settings)
        return (
            init_settings,
            _EnvSource(settings_cls, request.environ),
            _TomlSource(settings_cls, toml_file=request.toml_file),
        )

    @field_validator("services")
    @classmethod
    def _check_not_empty(cls, value: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        if not value:
            raise ValueError("define at least one service, e.g. [services.web]")
        return value

    @model_validator(mode="after")
    def _check_listeners(self) -> "Settings":
        # Two listeners on one address would make the second load balancer (or the metrics
        # endpoint) fail at start-up, long after the config was "accepted".
        problems: list[tuple[Loc, str]] = []
        taken: list[tuple[tuple[str, int], str, str]] = [
            (self.daemon.metrics_host_port, "daemon.metrics_listen", self.daemon.metrics_listen)
        ]
        for name, service in self.services.items():
            bind = service.load_balancer.publish_host_port
            for other_bind, owner, address in taken:
                if _binds_clash(bind, other_bind):
                    what = "the metrics endpoint" if owner == "daemon.metrics_listen" else f"service {owner!r}"
                    problems.append(
                        (
                            ("services", name, "load_balancer", "publish"),
                            f"{service.load_balancer.publish} clashes with {address} used by {what}",
                        )
                    )
                    break
            taken.append((bind, name, service.load_balancer.publish))
        _raise_problems(problems)
        return self

    def network_for(self, name: str) -> str:
        """The Docker network of service ``name``: its ``network`` or ``autoscaler-<name>``."""
        return self.services[name].network or f"autoscaler-{name}"


# --- loading --------------------------------------------------------------------------------

_COMPARISONS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _dotted(loc: Loc) -> str:
    # "[key]" marks an error in a dict key (a service name); the name itself is the path.
    return ".".join(str(part) for part in loc if part != "[key]") or "<config>"


def _describe(error: Mapping[str, Any]) -> str:
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _COMPARISONS:
        symbol, bound = _COMPARISONS[kind]
        limit = ctx[bound]
        shown = f"{limit:g}" if isinstance(limit, float) else str(limit)  # "> 0", not "> 0.0"
        return f"must be {symbol} {shown} (got {_shown(error['input'])})"
    if kind == "int_parsing_size":
        # pydantic's own words ("Unable to parse input string...") say nothing of a float input.
        return f"far too large a number (got {_shown(error['input'])})"
    if kind == "finite_number":
        return f"must be a finite number (got {_shown(error['input'])})"
    if kind == "literal_error":
        return f"must be {ctx['expected']} (got {_shown(error['input'])})"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(error["msg"])


def format_validation_error(exc: ValidationError) -> list[str]:
    """One ``"<dotted.path>: <problem>"`` line per error, in pydantic's order."""
    messages: list[str] = []
    for error in exc.errors(include_url=False):
        if error["type"] == "config_problems":
            loc: Loc = tuple(error["loc"])
            messages.extend(f"{_dotted(loc + sub_loc)}: {text}" for sub_loc, text in error["ctx"]["problems"])
        else:
            messages.append(f"{_dotted(tuple(error['loc']))}: {_describe(error)}")
    return messages


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read and validate the TOML file at ``path`` with ``AUTOSCALER_*`` overrides from ``environ``.

    ``environ`` defaults to ``os.environ``; ``overrides`` (e.g. from CLI flags) beat both.
    Every problem found is raised together as one ``ConfigError``.
    """
    toml_file = Path(path)
    if not toml_file.exists():
        raise ConfigError(f"{path}: file not found")
    if not toml_file.is_file():
        raise ConfigError(f"{path}: not a regular file")
    token = _LOAD_REQUEST.set(_LoadRequest(toml_file, os.environ if environ is None else environ))
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except _TomlProblem as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        # The file's nesting is caught while reading it; this is a JSON value in the environment.
        raise ConfigError("environment: a list or table value is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    except SettingsError as exc:
        # Raised for environment values that should be JSON (lists, tables) but are not.
        raise ConfigError(
            f"environment: {exc} (list and table values must be JSON, "
            """e.g. AUTOSCALER_SERVICES__WEB__COMMAND='["serve", "--fast"]')"""
        ) from exc
    finally:
        _LOAD_REQUEST.reset(token)
