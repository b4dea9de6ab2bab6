"""Workers and external metrics in the config: every bad input is one line naming its field,
and the worker configs of the issue load as written.

Files are written as TOML under tmp_path and read with load_config, as test_config.py does; a
worker ("jobs") has no [load_balancer] and scales on a Redis list unless a case says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import ExternalMetric, load_config
from test_config import REMOVE, _toml_value, config_errors

WORKER: dict[str, Any] = {"image": "worker:1", "cpu_limit": 0.5, "memory_limit": "128MiB"}
WEB: dict[str, Any] = {"image": "demo:latest", "port": 8000, "cpu_limit": 0.5, "memory_limit": "256MiB"}
LB: dict[str, Any] = {"publish": "127.0.0.1:8080"}
REDIS: dict[str, Any] = {"url": "redis://redis:6379/0", "list": "jobs"}
PROMETHEUS: dict[str, Any] = {"url": "http://prometheus:9090", "query": "sum(jobs_waiting)"}
METRIC: dict[str, Any] = {"name": "jobs_waiting", "target_average_value": 5, "redis": REDIS}

JOBS = "services.jobs"
M0 = "services.jobs.policy.metrics.0"


def _value(value: Any) -> str:
    """A TOML value; dicts become inline tables."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_value(item)}" for key, item in value.items() if item is not REMOVE) + " }"
    return _toml_value(value)


def _keys(keys: dict[str, Any]) -> str:
    return "".join(f"{key} = {_value(value)}\n" for key, value in keys.items() if value is not REMOVE)


def write(
    tmp_path: Path,
    *,
    service: str = "jobs",
    keys: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    lb: dict[str, Any] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    policy: dict[str, Any] | None = None,
    tail: str = "",
) -> Path:
    """One service: a worker by default (base WORKER, no load balancer, METRIC), or with ``lb``
    a service behind a load balancer; ``keys`` override or REMOVE the base's keys."""
    text = f"[services.{service}]\n" + _keys({**(base if base is not None else WORKER), **(keys or {})})
    if lb is not None:
        text += f"[services.{service}.load_balancer]\n" + _keys(lb)
    if policy:
        text += f"[services.{service}.policy]\n" + _keys(policy)
    for metric in metrics if metrics is not None else [METRIC]:
        text += f"[[services.{service}.policy.metrics]]\n" + _keys(metric)
    path = tmp_path / "config.toml"
    path.write_text(text + tail)
    return path


def metric(**keys: Any) -> dict[str, Any]:
    """METRIC with ``keys`` on top (REMOVE leaves one out)."""
    return {**METRIC, **keys}


def secret(tmp_path: Path, name: str, mode: int) -> str:
    path = tmp_path / name
    path.write_text("s3cret\n")
    os.chmod(path, mode)
    return str(path)


# --- refused: one line, naming the field ----------------------------------------------------

# id -> (write() arguments, the exact dotted path, text of the message)
REFUSED: dict[str, tuple[dict[str, Any], str, str]] = {
    # Targets: exactly one kind, and an activation the target can reach.
    "no-target": (
        {"metrics": [metric(target_average_value=REMOVE)]}, M0,
        "set exactly one target: target_average_value (a total split across replicas",
    ),
    "both-targets": ({"metrics": [metric(target_value=10)]}, M0, "set exactly one target"),
    "activation-above-average-target": (
        {"metrics": [metric(activation=10)]}, f"{M0}.activation",
        "10 is above the target (5): the service would never start while the metric asks for replicas",
    ),
    "activation-above-value-target": (
        {"metrics": [metric(target_average_value=REMOVE, target_value=2, activation=2.5)]}, f"{M0}.activation",
        "2.5 is above the target (2)",
    ),
    "activation-negative": ({"metrics": [metric(activation=-1)]}, f"{M0}.activation", "must be >= 0 (got -1)"),
    "target-zero": ({"metrics": [metric(target_average_value=0)]}, f"{M0}.target_average_value", "must be > 0 (got 0)"),
    "target-value-over-1e9": ({"metrics": [metric(target_value=1e10, target_average_value=REMOVE)]},
                              f"{M0}.target_value", "must be <= 1e+09"),
    # PromQL: not empty, brackets that pair up outside quoted strings.
    "query-empty": ({"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": ""})]},
                    f"{M0}.prometheus.query", "at least 1 character"),
    "query-blank": ({"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": "  \n "})]},
                    f"{M0}.prometheus.query", "is empty"),
    "query-paren-never-closed": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": "sum(rate(jobs_total[5m])"})]},
        f"{M0}.prometheus.query", "is not balanced: '(' at character 4 is never closed",
    ),
    "query-brace-never-closed": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": 'jobs_waiting{queue="mail"'})]},
        f"{M0}.prometheus.query", "'{' at character 13 is never closed",
    ),
    "query-closes-nothing": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": "sum(jobs))"})]},
        f"{M0}.prometheus.query", "')' at character 10 closes nothing",
    ),
    "query-crossed-brackets": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": "sum(jobs[5m)]"})]},
        f"{M0}.prometheus.query", "')' at character 12 closes nothing",
    ),
    "query-string-never-closed": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": 'jobs{queue="mail}'})]},
        f"{M0}.prometheus.query", 'a string opened with " is never closed',
    ),
    "query-too-long": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": "x" * 4097})]},
        f"{M0}.prometheus.query", "at most 4096 characters",
    ),
    "prometheus-url-not-http": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "url": "prometheus:9090"})]},
        f"{M0}.prometheus.url", "String should match pattern",
    ),
    "prometheus-url-password": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "url": "http://ops:pw@prometheus:9090"})]},
        f"{M0}.prometheus.url", "holds a password: put it in a file and name it in password_file",
    ),
    "prometheus-timeout-61": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "timeout_seconds": 61})]},
        f"{M0}.prometheus.timeout_seconds", "must be <= 60",
    ),
    "prometheus-username-without-password-file": (
        {"metrics": [metric(redis=REMOVE, prometheus={**PROMETHEUS, "username": "ops"})]},
        f"{M0}.prometheus.password_file", "basic auth needs both username and password_file",
    ),
    # Redis URLs: the scheme, a host, no password, a numeric database.
    "redis-url-http": (
        {"metrics": [metric(redis={**REDIS, "url": "http://redis:6379"})]}, f"{M0}.redis.url",
        "'http://redis:6379' is not a Redis URL: expected redis://host[:port][/db]",
    ),
    "redis-url-no-slashes": (
        {"metrics": [metric(redis={**REDIS, "url": "redis:6379"})]}, f"{M0}.redis.url", "'redis:6379' names no host",
    ),
    "redis-url-no-host": (
        {"metrics": [metric(redis={**REDIS, "url": "redis:///0"})]}, f"{M0}.redis.url",
        "'redis:///0' names no host (redis://host[:port][/db])",
    ),
    "redis-url-port-only": (
        {"metrics": [metric(redis={**REDIS, "url": "redis://:6379/0"})]}, f"{M0}.redis.url", "names no host",
    ),
    "redis-url-password": (
        {"metrics": [metric(redis={**REDIS, "url": "redis://:hunter2@redis:6379/0"})]}, f"{M0}.redis.url",
        "holds a password: put it in a file and name it in password_file",
    ),
    "redis-url-user-and-password": (
        {"metrics": [metric(redis={**REDIS, "url": "rediss://app:hunter2@redis/0"})]}, f"{M0}.redis.url",
        "holds a password",
    ),
    "redis-url-database-name": (
        {"metrics": [metric(redis={**REDIS, "url": "redis://redis:6379/jobs"})]}, f"{M0}.redis.url",
        "the database after the host must be a number (got 'jobs')",
    ),
    "redis-url-port-name": (
        {"metrics": [metric(redis={**REDIS, "url": "redis://redis:port/0"})]}, f"{M0}.redis.url",
        "'redis://redis:port/0' is not a Redis URL (",
    ),
    "redis-unix-without-path": (
        {"metrics": [metric(redis={**REDIS, "url": "unix://"})]}, f"{M0}.redis.url", "names no socket path",
    ),
    "redis-list-and-stream": (
        {"metrics": [metric(redis={**REDIS, "stream": "events", "consumer_group": "workers"})]}, f"{M0}.redis",
        "set list (its length) or stream with consumer_group (its pending entries), not both",
    ),
    "redis-no-key": (
        {"metrics": [metric(redis={"url": REDIS["url"]})]}, f"{M0}.redis", "set list (its length) or stream",
    ),
    "redis-stream-without-group": (
        {"metrics": [metric(redis={"url": REDIS["url"], "stream": "events"})]}, f"{M0}.redis.consumer_group",
        "a stream's pending entries are counted for one consumer group: name it",
    ),
    "redis-list-with-group": (
        {"metrics": [metric(redis={**REDIS, "consumer_group": "workers"})]}, f"{M0}.redis.consumer_group",
        "only used with stream",
    ),
    "redis-username-without-password-file": (
        {"metrics": [metric(redis={**REDIS, "username": "app"})]}, f"{M0}.redis.password_file",
        "username needs password_file",
    ),
    # Sources: exactly one.
    "no-source": ({"metrics": [metric(redis=REMOVE)]}, M0, "set exactly one source: prometheus = { url, query }"),
    "both-sources": ({"metrics": [metric(prometheus=PROMETHEUS)]}, M0, "set exactly one source"),
    # Names: unique, not a built-in metric's, usable as a label.
    "duplicate-name": (
        {"metrics": [METRIC, metric(redis=REMOVE, prometheus=PROMETHEUS)]}, "services.jobs.policy.metrics.1.name",
        "duplicate metric name (also metrics.0)",
    ),
    "builtin-name-cpu": ({"metrics": [metric(name="cpu")]}, f"{M0}.name", "'cpu' is a built-in metric"),
    "builtin-name-queue": ({"metrics": [metric(name="queue")]}, f"{M0}.name", "'queue' is a built-in metric"),
    "builtin-name-rps": (
        {"metrics": [metric(name="requests_per_second")]}, f"{M0}.name", "'requests_per_second' is a built-in metric",
    ),
    "name-upper-case": (
        {"metrics": [metric(name="JobsWaiting")]}, f"{M0}.name", "must be lower case letters, digits and underscores",
    ),
    "name-with-dash": ({"metrics": [metric(name="jobs-waiting")]}, f"{M0}.name", "lower case"),
    "unknown-metric-key": ({"metrics": [metric(target=5)]}, f"{M0}.target", "unknown key"),
    "metrics-with-step-strategy": (
        {"policy": {"strategy": "step"},
         "tail": '[[services.jobs.policy.steps]]\nmetric = "cpu"\nlower = 80\nadjustment = "+1"\n'},
        "services.jobs.policy.metrics", 'external metrics are used with strategy = "target"',
    ),
    "scale-to-zero-after-3601": (
        {"policy": {"scale_to_zero_after_seconds": 3601}}, "services.jobs.policy.scale_to_zero_after_seconds",
        "must be <= 3600",
    ),
    # Workers and services with a load balancer: each key where it means something.
    "worker-with-health-path": (
        {"keys": {"health_path": "/healthz"}}, "services.jobs.health_path",
        "is the load balancer's HTTP check, and this worker has none",
    ),
    "worker-with-port": (
        {"keys": {"port": 8000}}, "services.jobs.port",
        "only used by a load balancer: add [services.NAME.load_balancer] with publish, or remove port",
    ),
    "load-balancer-without-port": (
        {"service": "web", "base": WEB, "keys": {"port": REMOVE}, "lb": LB, "metrics": []}, "services.web.port",
        "the port the replicas listen on is required with [load_balancer]",
    ),
    "healthcheck-with-load-balancer": (
        {"service": "web", "base": WEB, "keys": {"healthcheck": {"test": ["CMD", "true"]}}, "lb": LB, "metrics": []},
        "services.web.healthcheck", "a service with a load balancer is checked by it on health_path",
    ),
    # min_replicas = 0: only a worker that an external metric wakes up.
    "zero-on-http-service": (
        {"service": "web", "base": WEB, "keys": {"min_replicas": 0}, "lb": LB}, "services.web.min_replicas",
        "0 needs a way to hold requests while a replica starts",
    ),
    "zero-without-external-metric": (
        {"keys": {"min_replicas": 0}, "metrics": []}, "services.jobs.min_replicas",
        "0 needs an external metric ([[services.NAME.policy.metrics]]) to wake the service up",
    ),
    "schedule-zero-without-external-metric": (
        {"metrics": [], "tail": '[[services.jobs.schedule]]\nname = "night"\ncron = "0 22 * * *"\n'
                                'duration_seconds = 3600\nmin_replicas = 0\n'},
        "services.jobs.schedule.0.min_replicas", "0 only for a worker with an external metric",
    ),
    "schedule-zero-on-http-service": (
        {"service": "web", "base": WEB, "lb": LB, "metrics": [],
         "tail": '[[services.web.schedule]]\nname = "night"\ncron = "0 22 * * *"\nduration_seconds = 3600\n'
                 'min_replicas = 0\n'},
        "services.web.schedule.0.min_replicas", "0 only for a worker with an external metric",
    ),
    # Docker HEALTHCHECK tests.
    "healthcheck-none": (
        {"keys": {"healthcheck": {"test": ["NONE"]}}}, "services.jobs.healthcheck.test",
        "must start with \"CMD\" (a program and its arguments) or \"CMD-SHELL\" (one shell command), got 'NONE'",
    ),
    "healthcheck-empty-list": ({"keys": {"healthcheck": {"test": []}}}, "services.jobs.healthcheck.test", "at least 1 item"),
    "healthcheck-cmd-alone": (
        {"keys": {"healthcheck": {"test": ["CMD"]}}}, "services.jobs.healthcheck.test", "CMD needs a command after it",
    ),
    "healthcheck-cmd-blank": (
        {"keys": {"healthcheck": {"test": ["CMD", " "]}}}, "services.jobs.healthcheck.test", "CMD needs a command",
    ),
    "healthcheck-empty-string": (
        {"keys": {"healthcheck": {"test": ""}}}, "services.jobs.healthcheck.test", "CMD-SHELL needs a command after it",
    ),
    "healthcheck-shell-two-strings": (
        {"keys": {"healthcheck": {"test": ["CMD-SHELL", "pgrep", "worker"]}}}, "services.jobs.healthcheck.test",
        "CMD-SHELL takes one string, the shell command",
    ),
    "healthcheck-nul": (
        {"keys": {"healthcheck": {"test": ["CMD", "a\0b"]}}}, "services.jobs.healthcheck.test", "contains a NUL character",
    ),
    "healthcheck-interval-0": (
        {"keys": {"healthcheck": {"test": "true", "interval_seconds": 0}}}, "services.jobs.healthcheck.interval_seconds",
        "must be >= 0.001",
    ),
    "healthcheck-retries-0": (
        {"keys": {"healthcheck": {"test": "true", "retries": 0}}}, "services.jobs.healthcheck.retries", "must be >= 1",
    ),
    "healthcheck-unknown-key": (
        {"keys": {"healthcheck": {"test": "true", "start_interval_seconds": 1}}},
        "services.jobs.healthcheck.start_interval_seconds", "unknown key",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("files", "path", "message"), REFUSED.values(), ids=list(REFUSED))
def test_refused_in_one_line_naming_the_field(tmp_path: Path, files: dict[str, Any], path: str, message: str) -> None:
    lines = config_errors(write(tmp_path, **files))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: "), lines
    assert message in lines[0], lines


# Credentials files: id -> (the source's key, the file's mode or None for no file, the text)
SECRET_FILES: dict[str, tuple[str, str, int | None, str]] = {
    "redis-password-missing": ("redis", "password_file", None, "does not exist"),
    "redis-password-world-readable": (
        "redis", "password_file", 0o644,
        "is readable by every user of this machine (mode 644): chmod o-r",
    ),
    "redis-password-world-readable-only": ("redis", "password_file", 0o604, "(mode 604)"),
    "prometheus-token-missing": ("prometheus", "bearer_token_file", None, "does not exist"),
    "prometheus-token-world-readable": ("prometheus", "bearer_token_file", 0o666, "readable by every user"),
    "prometheus-password-world-readable": ("prometheus", "password_file", 0o755, "readable by every user"),
}


@pytest.mark.parametrize(("source", "key", "mode", "message"), SECRET_FILES.values(), ids=list(SECRET_FILES))
def test_a_credentials_file_must_exist_and_be_private(
    tmp_path: Path, source: str, key: str, mode: int | None, message: str
) -> None:
    path = str(tmp_path / "absent") if mode is None else secret(tmp_path, "secret", mode)
    table = {**(REDIS if source == "redis" else PROMETHEUS), key: path}
    if key == "password_file":
        table["username"] = "app"
    other = "prometheus" if source == "redis" else "redis"
    lines = config_errors(write(tmp_path, metrics=[metric(**{other: REMOVE, source: table})]))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{M0}.{source}.{key}: {path!r} "), lines
    assert message in lines[0], lines


def test_a_directory_is_no_credentials_file(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    lines = config_errors(write(tmp_path, metrics=[metric(redis={**REDIS, "password_file": str(folder)})]))
    assert lines == [f"{M0}.redis.password_file: {str(folder)!r} is not a regular file"]


def test_bearer_token_and_basic_auth_together_are_refused(tmp_path: Path) -> None:
    token, password = secret(tmp_path, "token", 0o600), secret(tmp_path, "password", 0o600)
    prometheus = {**PROMETHEUS, "bearer_token_file": token, "username": "ops", "password_file": password}
    lines = config_errors(write(tmp_path, metrics=[metric(redis=REMOVE, prometheus=prometheus)]))
    assert len(lines) == 1 and lines[0].startswith(f"{M0}.prometheus.bearer_token_file: use either a bearer token"), lines


# --- accepted -------------------------------------------------------------------------------

BALANCED_QUERIES = [
    'sum(jobs_waiting{queue="mail"})',
    'sum(rate(jobs_done_total{queue=~"mail|sms"}[5m]))',
    'jobs_waiting{queue="a}b"}',  # a brace inside a string closes nothing
    "count(up{job='(('})",
    'jobs{l="a\\"}"}',  # an escaped quote does not end the string
    "jobs{l=`a\\`}",  # a raw string has no escapes
    "sum(jobs) # a comment (with an unclosed paren",
    "scalar(sum(jobs))",
]


@pytest.mark.parametrize(
    "query", BALANCED_QUERIES,
    ids=["label", "nested-range", "brace-in-string", "parens-in-single-quotes", "escaped-quote", "raw-string",
         "comment", "scalar"],
)  # fmt: skip
def test_balanced_queries_load(tmp_path: Path, query: str) -> None:
    path = write(tmp_path, metrics=[metric(redis=REMOVE, prometheus={**PROMETHEUS, "query": query})])
    prometheus = load_config(path, environ={}).services["jobs"].policy.metrics[0].prometheus
    assert prometheus is not None and prometheus.query == query


def test_a_worker_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path), environ={})
    jobs = settings.services["jobs"]
    assert jobs.is_worker
    assert (jobs.port, jobs.load_balancer, jobs.healthcheck, jobs.network) == (None, None, None, None)
    assert settings.network_for("jobs") == "bridge", "nothing needs to reach a worker: Docker's default network"
    assert jobs.lease_image == "autoscaler-haproxy:latest"
    assert jobs.policy.scale_to_zero_after_seconds == 300
    [external] = jobs.policy.metrics
    assert (external.name, external.target, external.per_replica, external.activation) == ("jobs_waiting", 5, True, 0)
    assert external.source_kind == "redis"
    assert external.describe_source() == "redis list 'jobs'"


@pytest.mark.parametrize(
    ("keys", "network"),
    [
        ({}, "bridge"),
        ({"network": "jobs-net"}, "jobs-net"),
        ({"backend": "swarm"}, "autoscaler-jobs"),  # an overlay network of its own on a swarm
        ({"backend": "swarm", "network": "ops"}, "ops"),
    ],
    ids=["containers-no-network", "own-network", "swarm-no-network", "swarm-own-network"],
)
def test_network_of_a_worker(tmp_path: Path, keys: dict[str, Any], network: str) -> None:
    assert load_config(write(tmp_path, keys=keys), environ={}).network_for("jobs") == network


def test_a_service_with_a_load_balancer_keeps_its_own_network(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, service="web", base=WEB, lb=LB, metrics=[]), environ={})
    assert not settings.services["web"].is_worker
    assert settings.network_for("web") == "autoscaler-web"


@pytest.mark.parametrize(
    ("healthcheck", "test"),
    [
        ("pgrep -f worker", ["CMD-SHELL", "pgrep -f worker"]),
        (["CMD-SHELL", "test -f /tmp/alive"], ["CMD-SHELL", "test -f /tmp/alive"]),
        (["CMD", "/bin/check", "--quick"], ["CMD", "/bin/check", "--quick"]),
    ],
    ids=["plain-string-is-cmd-shell", "cmd-shell", "cmd"],
)
def test_healthcheck_tests_load(tmp_path: Path, healthcheck: Any, test: list[str]) -> None:
    path = write(tmp_path, keys={"healthcheck": {"test": healthcheck, "interval_seconds": 2, "start_period_seconds": 5}})
    check = load_config(path, environ={}).services["jobs"].healthcheck
    assert check is not None
    assert (check.test, check.interval_seconds, check.timeout_seconds, check.retries, check.start_period_seconds) == (
        test, 2, 3, 3, 5,
    )


def _metric_of(tmp_path: Path, **keys: Any) -> ExternalMetric:
    [external] = load_config(write(tmp_path, metrics=[metric(**keys)]), environ={}).services["jobs"].policy.metrics
    return external


def test_sources_that_load(tmp_path: Path) -> None:
    password = secret(tmp_path, "password", 0o600)
    token = secret(tmp_path, "token", 0o400)
    stream = _metric_of(tmp_path, redis={"url": "rediss://redis.internal:6380/2", "stream": "events",
                                         "consumer_group": "workers", "username": "app", "password_file": password})
    assert stream.redis is not None and stream.redis.key == "events"
    assert stream.describe_source() == "redis stream (group workers) 'events'"
    assert _metric_of(tmp_path, redis={"url": "unix:///run/redis/redis.sock", "list": "jobs"}).redis is not None
    assert _metric_of(tmp_path, redis={"url": "redis://app@redis", "list": "jobs"}).redis is not None  # a user, no password
    bearer = _metric_of(tmp_path, redis=REMOVE, prometheus={**PROMETHEUS, "bearer_token_file": token})
    assert bearer.prometheus is not None and bearer.prometheus.bearer_token_file == Path(token)
    basic = _metric_of(tmp_path, redis=REMOVE, prometheus={**PROMETHEUS, "username": "ops", "password_file": password})
    assert basic.source_kind == "prometheus" and basic.describe_source() == "prometheus 'sum(jobs_waiting)'"


@pytest.mark.parametrize(
    ("keys", "target", "per_replica", "activation"),
    [
        ({}, 5, True, 0),
        ({"target_average_value": REMOVE, "target_value": 0.5, "activation": 0.5}, 0.5, False, 0.5),
        ({"activation": 5}, 5, True, 5),  # at the target is allowed: only above it never starts
    ],
    ids=["average-value", "value-activation-at-target", "activation-at-target"],
)
def test_target_kinds_load(tmp_path: Path, keys: dict[str, Any], target: float, per_replica: bool, activation: float) -> None:
    external = _metric_of(tmp_path, **keys)
    assert (external.target, external.per_replica, external.activation) == (target, per_replica, activation)


def test_scale_to_zero_configs_load(tmp_path: Path) -> None:
    night = '[[services.jobs.schedule]]\nname = "night"\ncron = "0 22 * * *"\nduration_seconds = 3600\nmin_replicas = 0\n'
    settings = load_config(write(tmp_path, keys={"min_replicas": 0, "max_replicas": 20},
                                 policy={"scale_to_zero_after_seconds": 0, "fallback_replicas": 0}), environ={})
    assert settings.services["jobs"].min_replicas == 0
    assert settings.services["jobs"].policy.scale_to_zero_after_seconds == 0
    settings = load_config(write(tmp_path, keys={"min_replicas": 2}, tail=night), environ={})
    assert settings.services["jobs"].schedule[0].min_replicas == 0


def test_two_metrics_each_with_its_own_source(tmp_path: Path) -> None:
    latency = metric(name="mean_job_seconds", redis=REMOVE, prometheus=PROMETHEUS, target_average_value=REMOVE,
                     target_value=30)
    metrics = load_config(write(tmp_path, metrics=[METRIC, latency]), environ={}).services["jobs"].policy.metrics
    assert [(m.name, m.source_kind, m.per_replica) for m in metrics] == [
        ("jobs_waiting", "redis", True), ("mean_job_seconds", "prometheus", False),
    ]
