"""External metrics: a number from outside the replicas (a Prometheus query, a Redis queue's
length) with a target, as the HPA's External metrics and KEDA's scalers.

A metric's target is either a *total* to split across the replicas (`target_average_value`,
the HPA's AverageValue and KEDA's default: desired = ceil(value / target)) or a value the
metric should have (`target_value`, the HPA's Value: desired = ceil(ready x value / target)).
Credentials are never in the TOML: they are read from files that only their owner can read.
"""

import os
import re
import stat
import urllib.parse
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from autoscaler.config.values import (
    MAX_METRIC_VALUE,
    ConfigModel,
    Loc,
    raise_problems,
    shown,
)

# A Prometheus label value and a log field: lower case, digits and underscores.
METRIC_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}", re.ASCII)
# The built-in metrics' names: an external metric may not take one (reasons, labels, columns).
BUILTIN_METRICS = frozenset({"cpu", "memory", "requests_per_second", "response_time_ms", "queue"})
MAX_QUERY_CHARS = 4096
MAX_SOURCE_TIMEOUT_SECONDS = 60.0

MetricValue = Annotated[float, Field(gt=0, le=MAX_METRIC_VALUE)]
SourceTimeout = Annotated[float, Field(gt=0, le=MAX_SOURCE_TIMEOUT_SECONDS)]


def check_secret_file(value: Path) -> Path:
    """A credentials file must exist, be a regular file, and not be readable by everyone."""
    try:
        info = value.stat()
    except FileNotFoundError:
        raise ValueError(f"{str(value)!r} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{str(value)!r} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{str(value)!r} is not a regular file")
    if info.st_mode & stat.S_IROTH:
        raise ValueError(
            f"{str(value)!r} is readable by every user of this machine (mode {stat.S_IMODE(info.st_mode):o}): "
            f"chmod o-r {value}"
        )
    if not os.access(value, os.R_OK):
        raise ValueError(f"{str(value)!r} is not readable by this user")
    return value


# A credentials file: it exists and is not readable by everyone (check_secret_file).
SecretFile = Annotated[Path, AfterValidator(check_secret_file)]


def unbalanced(query: str) -> str | None:
    """Why a PromQL query's brackets do not pair up, or None when they do. Quoted strings (',
    ", `) are skipped, with their escapes; the query itself is Prometheus's to judge."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []
    quote: str | None = None
    index = 0
    while index < len(query):
        char = query[index]
        if quote is not None:
            if char == "\\" and quote != "`":
                index += 2
                continue
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == "#":
            # A comment runs to the end of the line.
            end = query.find("\n", index)
            index = len(query) if end < 0 else end
            continue
        elif char in "([{":
            stack.append((char, index))
        elif char in closing:
            if not stack or stack[-1][0] != closing[char]:
                return f"{char!r} at character {index + 1} closes nothing"
            stack.pop()
        index += 1
    if quote is not None:
        return f"a string opened with {quote} is never closed"
    if stack:
        char, at = stack[-1]
        return f"{char!r} at character {at + 1} is never closed"
    return None


class PrometheusQuery(ConfigModel):
    """Any instant PromQL query that returns one number (one series, or a scalar)."""

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://\S+$")]
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    timeout_seconds: SourceTimeout = 5.0
    # One of: a bearer token, or basic auth with a user name and a password, each from a file.
    bearer_token_file: SecretFile | None = None
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password_file: SecretFile | None = None

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        if urllib.parse.urlsplit(value).password is not None:
            raise ValueError("holds a password: put it in a file and name it in password_file (with username)")
        return value

    @field_validator("query")
    @classmethod
    def _check_query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        problem = unbalanced(value)
        if problem is not None:
            raise ValueError(f"is not balanced: {problem}")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> "PrometheusQuery":
        problems: list[tuple[Loc, str]] = []
        if self.bearer_token_file is not None and (self.username is not None or self.password_file is not None):
            problems.append((("bearer_token_file",), "use either a bearer token or basic auth (username, password_file), not both"))
        if (self.username is None) != (self.password_file is None):
            missing = "password_file" if self.password_file is None else "username"
            problems.append(((missing,), "basic auth needs both username and password_file"))
        raise_problems(problems)
        return self


_REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisQueue(ConfigModel):
    """The length of a list, or the pending entries of a stream's consumer group (delivered to
    a consumer and not yet acknowledged, as KEDA's redis-streams scaler counts them)."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    list: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    stream: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    consumer_group: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    timeout_seconds: SourceTimeout = 5.0
    # Redis 6 ACL user (optional) and its password, from a file.
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password_file: SecretFile | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            parts = urllib.parse.urlsplit(value)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{shown(value)} is not a Redis URL ({exc})") from None
        if parts.scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"{shown(value)} is not a Redis URL: expected redis://host[:port][/db], rediss://... (TLS) "
                "or unix:///path/to/socket"
            )
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"{shown(value)} names no socket path (unix:///run/redis/redis.sock)")
        elif not parts.hostname:
            raise ValueError(f"{shown(value)} names no host (redis://host[:port][/db])")
        if parts.password is not None:
            raise ValueError("holds a password: put it in a file and name it in password_file")
        database = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        if database and not database.isdigit():
            raise ValueError(f"{shown(value)}: the database after the host must be a number (got {database!r})")
        del port  # read for its ValueError: a port that is not a number
        return value

    @model_validator(mode="after")
    def _check_key(self) -> "RedisQueue":
        problems: list[tuple[Loc, str]] = []
        if (self.list is None) == (self.stream is None):
            problems.append(((), "set list (its length) or stream with consumer_group (its pending entries), not both"))
        if self.stream is not None and self.consumer_group is None:
            problems.append((("consumer_group",), "a stream's pending entries are counted for one consumer group: name it"))
        if self.list is not None and self.stream is None and self.consumer_group is not None:
            problems.append((("consumer_group",), "only used with stream"))
        if self.username is not None and self.password_file is None:
            problems.append((("password_file",), "username needs password_file"))
        raise_problems(problems)
        return self

    @property
    def key(self) -> str:
        return self.list if self.list is not None else self.stream or ""


class ExternalMetric(ConfigModel):
    """One metric from outside the replicas, its source and its target."""

    name: str = Field(min_length=1, max_length=63)
    prometheus: PrometheusQuery | None = None
    redis: RedisQueue | None = None
    # A total to split across the replicas: desired = ceil(value / target_average_value)
    # (e.g. 5 jobs per worker).
    target_average_value: MetricValue | None = None
    # The value the metric should have, per replica already (e.g. a mean latency):
    # desired = ceil(ready replicas x value / target_value).
    target_value: MetricValue | None = None
    # KEDA's activation: from 0 replicas the service starts once the value is above this; it
    # goes back to 0 only after the value stayed at or below it (see scale_to_zero_after_seconds).
    activation: Annotated[float, Field(ge=0, le=MAX_METRIC_VALUE)] = 0.0

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not METRIC_NAME_RE.fullmatch(value):
            raise ValueError(f"{shown(value)} must be lower case letters, digits and underscores, starting with a letter")
        if value in BUILTIN_METRICS:
            raise ValueError(f"{value!r} is a built-in metric: give the external one another name")
        return value

    @model_validator(mode="after")
    def _check_metric(self) -> "ExternalMetric":
        problems: list[tuple[Loc, str]] = []
        if (self.prometheus is None) == (self.redis is None):
            problems.append(((), "set exactly one source: prometheus = { url, query } or redis = { url, list }"))
        if (self.target_average_value is None) == (self.target_value is None):
            problems.append(
                ((), "set exactly one target: target_average_value (a total split across replicas: "
                     "ceil(value / target)) or target_value (ceil(replicas x value / target))")
            )
        target = self.target
        if target is not None and self.activation > target:
            problems.append((("activation",), f"{self.activation:g} is above the target ({target:g}): "
                             "the service would never start while the metric asks for replicas"))
        raise_problems(problems)
        return self

    @property
    def target(self) -> float | None:
        return self.target_average_value if self.target_average_value is not None else self.target_value

    @property
    def per_replica(self) -> bool:
        """True for target_average_value (a total split across replicas)."""
        return self.target_average_value is not None

    @property
    def source_kind(self) -> str:
        return "prometheus" if self.prometheus is not None else "redis"

    def describe_source(self) -> str:
        if self.prometheus is not None:
            return f"prometheus {self.prometheus.query!r}"
        assert self.redis is not None
        kind = "list" if self.redis.list is not None else f"stream (group {self.redis.consumer_group})"
        return f"redis {kind} {self.redis.key!r}"


def metric_names_problems(metrics: "list[ExternalMetric]", loc: Loc) -> list[tuple[Loc, str]]:
    seen: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for index, metric in enumerate(metrics):
        if metric.name in seen:
            problems.append(((*loc, index, "name"), f"duplicate metric name (also {'.'.join(map(str, loc))}.{seen[metric.name]})"))
        seen.setdefault(metric.name, index)
    return problems
