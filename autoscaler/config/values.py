"""What every config model shares: the bounds, the scalar parsers and field types, the model
base, and the reporting of problems that span several fields."""

import ipaddress
import re
import types
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

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


# Docker's names of containers, networks and volumes.
DOCKER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", re.ASCII)


def shown(value: Any, limit: int = 60) -> str:
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
        raise ValueError(f"{shown(text)} is not a valid size ({_SIZE_HELP}")
    sign, number, unit = match.groups()
    if len(number) > _MAX_SIZE_DIGITS:
        raise ValueError(f"{shown(text)} is not a valid size: far too large")
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
        raise ValueError(f"{shown(value)} is not a valid image reference: {problem} ({_IMAGE_HELP})")
    return value


ImageReference = Annotated[str, AfterValidator(check_image_reference)]


# --- cross-field problems -------------------------------------------------------------------

Loc = tuple[str | int, ...]


def raise_problems(problems: list[tuple[Loc, str]]) -> None:
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


def refuse_boolean(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    # pydantic reads true as 1 and false as 0 for numbers: `max_replicas = true` would quietly
    # mean one replica. "true" and "false" are how booleans arrive from the environment.
    if info.field_name is not None and _is_number_field(model, info.field_name):
        if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
            raise ValueError(f"must be a number, not a boolean (got {value!r})")
    return value


class ConfigModel(BaseModel):
    # allow_inf_nan=False: `inf` and `nan` are valid TOML floats, and "inf" a valid env value.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_boolean(cls, value, info)
