"""Daemon configuration: one TOML file plus ``AUTOSCALER_*`` environment overrides.

This package only validates. Building runtime objects (Docker clients, HAProxy sessions, cron
triggers) happens elsewhere, from the frozen ``Settings`` returned by ``load_config``.

    values.py    bounds, scalar parsers and field types, the model base, cross-field problems
    policy.py    how a service scales: targets, steps, the HPA's behavior per direction
    schedule.py  cron windows over the replica bounds, and their crontab grammar
    service.py   one service: replicas, backend, metrics source, load balancer
    daemon.py    the daemon's own settings
    metrics.py   external metrics: Prometheus queries and Redis queues, their targets
    sources.py   the TOML file and the environment as pydantic-settings sources
    loader.py    Settings, load_config and the one-line-per-problem messages
"""

from autoscaler.config.daemon import DaemonConfig
from autoscaler.config.loader import (
    ConfigError,
    Settings,
    format_validation_error,
    load_config,
)
from autoscaler.config.metrics import ExternalMetric, PrometheusQuery, RedisQueue
from autoscaler.config.policy import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    PolicyConfig,
    ScalingBehavior,
    ScalingRule,
    StepRule,
)
from autoscaler.config.schedule import ScheduleWindow, crontab_expression
from autoscaler.config.service import (
    HealthcheckConfig,
    LoadBalancerConfig,
    PrometheusSourceConfig,
    ServiceConfig,
)
from autoscaler.config.values import (
    MAX_METRIC_VALUE,
    MAX_REPLICAS,
    MAX_WINDOW_SECONDS,
    check_image_reference,
    parse_host_port,
    parse_size,
)
from autoscaler.config.values import (
    # test_config reads what each field's annotation accepts through this package.
    _plain_types as _plain_types,
)

__all__ = [
    "ConfigError",
    "DaemonConfig",
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "ExternalMetric",
    "HealthcheckConfig",
    "LoadBalancerConfig",
    "MAX_METRIC_VALUE",
    "MAX_REPLICAS",
    "MAX_WINDOW_SECONDS",
    "PolicyConfig",
    "PrometheusQuery",
    "PrometheusSourceConfig",
    "RedisQueue",
    "ScalingBehavior",
    "ScalingRule",
    "ScheduleWindow",
    "ServiceConfig",
    "Settings",
    "StepRule",
    "check_image_reference",
    "crontab_expression",
    "format_validation_error",
    "load_config",
    "parse_host_port",
    "parse_size",
]
