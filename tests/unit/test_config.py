import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from autoscaler.config import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    ConfigError,
    DaemonConfig,
    LoadBalancerConfig,
    PolicyConfig,
    ScalingBehavior,
    ScalingRule,
    ScheduleWindow,
    ServiceConfig,
    Settings,
    StepRule,
    _plain_types,
    check_image_reference,
    load_config,
    parse_host_port,
    parse_size,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"

MiB = 1024**2
GiB = 1024**3


# --- helpers --------------------------------------------------------------------------------

REMOVE = object()  # marks a default key to leave out of the generated file

WEB_DEFAULTS: dict[str, Any] = {
    "image": "demo:latest",
    "port": 8000,
    "cpu_limit": 0.5,
    "memory_limit": "256MiB",
}
LB_DEFAULTS: dict[str, Any] = {"publish": "127.0.0.1:8080"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return repr(value)


def _table(header: str, keys: dict[str, Any]) -> str:
    lines = [f"[{header}]"] + [f"{key} = {_toml_value(value)}" for key, value in keys.items() if value is not REMOVE]
    return "\n".join(lines) + "\n"


def write_config(
    tmp_path: Path,
    *,
    top: str = "",
    web: dict[str, Any] | None = None,
    lb: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    tail: str = "",
) -> Path:
    """A valid one-service file; dicts override (or REMOVE) keys, ``top``/``tail`` are raw TOML."""
    text = (
        top
        + "\n"
        + _table("services.web", {**WEB_DEFAULTS, **(web or {})})
        + _table("services.web.load_balancer", {**LB_DEFAULTS, **(lb or {})})
        + _table("services.web.policy", policy or {})
        + tail
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def config_errors(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={} if environ is None else environ)
    assert str(caught.value) == "\n".join(caught.value.messages)
    return caught.value.messages


# --- parse_size -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256MiB", 256 * MiB),
        ("1GiB", GiB),
        ("512KiB", 512 * 1024),
        ("1.5GiB", 1536 * MiB),
        ("100MB", 100 * 10**6),
        ("1kb", 1000),
        ("1G", GiB),
        ("512m", 512 * MiB),
        ("64k", 64 * 1024),
        ("256mib", 256 * MiB),
        (" 256 MiB ", 256 * MiB),
        ("2b", 2),
        ("1048576", 1048576),
        (1048576, 1048576),
    ],
    ids=[
        "MiB", "GiB", "KiB", "fractional-GiB", "decimal-MB", "decimal-kb-lowercase", "docker-G", "docker-m",
        "docker-k", "case-insensitive", "spaces", "bytes-suffix", "digits-string", "int",
    ],
)  # fmt: skip
def test_parse_size_accepts(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["12XB", "", "-5MiB", "0", "0MiB", "MiB", "1.5.5G", "1e3", "0.1B", 0, -1, True],
    ids=[
        "unknown-unit", "empty", "negative", "zero", "zero-with-unit", "no-number", "two-dots", "exponent",
        "under-one-byte", "int-zero", "int-negative", "bool",
    ],
)  # fmt: skip
def test_parse_size_rejects(text: Any) -> None:
    with pytest.raises(ValueError, match="not a valid size"):
        parse_size(text)


def test_parse_size_error_lists_units() -> None:
    with pytest.raises(ValueError) as caught:
        parse_size("12XB")
    message = str(caught.value)
    assert message.startswith("'12XB' is not a valid size (use e.g. 256MiB, 1GiB, 512m)")
    for unit in ("KiB", "MiB", "GiB", "KB", "MB", "GB", "k/m/g"):
        assert unit in message


# --- parse_host_port ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:80", ("::1", 80)),
        ("[fe80::1]:9000", ("fe80::1", 9000)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("lb-1.example.com:443", ("lb-1.example.com", 443)),
    ],
    ids=["ipv4", "ipv6-loopback", "ipv6-link-local", "wildcard-min-port", "hostname-max-port", "fqdn"],
)
def test_parse_host_port_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "127.0.0.1:", ":8080", "::1:80",
        "[::1]80", "[not-v6]:80", "256.1.1.1:80", "bad_host:80", "host:-1", "", "127.0.0.1:\uff18\uff10",
    ],
    ids=[
        "no-port", "port-zero", "port-too-big", "port-name", "empty-port", "empty-host", "unbracketed-ipv6",
        "bracket-no-colon", "bracketed-non-ipv6", "bad-ipv4", "underscore-host", "negative-port", "empty",
        "fullwidth-digits",
    ],
)  # fmt: skip
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid host:port"):
        parse_host_port(text)


# --- files that load ------------------------------------------------------------------------


def test_example_file_loads() -> None:
    settings = load_config(EXAMPLE, environ={})
    web = settings.services["web"]
    assert web.image == "autoscaler-demo-app:latest"
    assert web.port == 8000
    assert web.cpu_limit == 0.5
    assert web.memory_limit == 256 * MiB
    assert settings.network_for("web") == "autoscaler-web"
    assert web.load_balancer.image == "autoscaler-haproxy:latest"
    assert web.load_balancer.publish_host_port == ("127.0.0.1", 8080)
    assert web.policy.targets() == {"cpu": 60.0, "memory": 80.0}
    assert web.policy.effective_scale_up() == DEFAULT_SCALE_UP
    assert web.policy.effective_scale_down() == DEFAULT_SCALE_DOWN
    assert [window.name for window in web.schedule] == ["business-hours"]


def test_example_step_block_is_valid_when_uncommented(tmp_path: Path) -> None:
    # The commented step example is documentation; make sure it stays loadable.
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# [[services.web.policy.steps]]")
    out = lines[:start]
    for index in range(start, len(lines)):
        if not lines[index].startswith("#"):
            out.extend(lines[index:])
            break
        out.append(lines[index][2:] if lines[index].startswith("# ") else "")
    text = "\n".join(out).replace('strategy = "target"', 'strategy = "step"', 1)
    path = tmp_path / "steps.toml"
    path.write_text(text)
    steps = load_config(path, environ={}).services["web"].policy.steps
    assert [(step.adjustment_value, step.adjustment_is_percent) for step in steps] == [(-1, False), (1, False), (50, True)]


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    settings = load_config(write_config(tmp_path), environ={})
    assert settings.daemon.interval_seconds == 5
    assert settings.daemon.metrics_host_port == ("127.0.0.1", 9464)
    assert (settings.daemon.log_format, settings.daemon.log_level, settings.daemon.dry_run) == ("text", "info", False)
    web = settings.services["web"]
    assert (web.min_replicas, web.max_replicas, web.health_path) == (1, 8, "/healthz")
    assert web.load_balancer.algorithm == "roundrobin"
    assert web.policy.strategy == "target"
    assert web.policy.targets() == {"cpu": 60.0}
    assert (web.policy.effective_tolerance_up, web.policy.effective_tolerance_down) == (0.1, 0.1)
    assert settings.network_for("web") == "autoscaler-web"


def test_env_overrides_deep_merge_with_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, web={"max_replicas": 6}, policy={"target_memory_percent": 75})
    environ = {
        "AUTOSCALER_DAEMON__INTERVAL_SECONDS": "2",
        "AUTOSCALER_SERVICES__WEB__MAX_REPLICAS": "3",
        "autoscaler_services__web__policy__target_cpu_percent": "70",  # names are case-insensitive
        "AUTOSCALER_SERVICES__WEB__COMMAND": '["serve", "--fast"]',
        "AUTOSCALER_SERVICES__WEB__MEMORY_LIMIT": "512m",
        "UNRELATED": "ignored",
    }
    settings = load_config(path, environ=environ)
    web = settings.services["web"]
    assert settings.daemon.interval_seconds == 2.0
    assert web.max_replicas == 3
    assert web.image == "demo:latest"  # the rest of the table survives
    assert web.load_balancer.publish == "127.0.0.1:8080"
    assert web.policy.target_cpu_percent == 70.0
    assert web.policy.target_memory_percent == 75.0
    assert web.command == ["serve", "--fast"]
    assert web.memory_limit == 512 * MiB


def test_keyword_overrides_beat_environment(tmp_path: Path) -> None:
    settings = load_config(
        write_config(tmp_path),
        environ={"AUTOSCALER_DAEMON__DRY_RUN": "false", "AUTOSCALER_DAEMON__LOG_LEVEL": "debug"},
        overrides={"daemon": {"dry_run": True}},
    )
    assert settings.daemon.dry_run is True
    assert settings.daemon.log_level == "debug"


@pytest.mark.parametrize(
    ("policy", "tail", "expected_up", "expected_down"),
    [
        ({}, "", DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN),
        (
            {"scale_down_stabilization_seconds": 60},
            "",
            DEFAULT_SCALE_UP,
            ScalingBehavior(stabilization_seconds=60, select="max", rules=DEFAULT_SCALE_DOWN.rules),
        ),
        (
            {},
            '[services.web.policy.scale_up]\nselect = "disabled"\n',
            ScalingBehavior(stabilization_seconds=0, select="disabled", rules=DEFAULT_SCALE_UP.rules),
            DEFAULT_SCALE_DOWN,
        ),
        (
            {},
            "[services.web.policy.scale_down]\nstabilization_seconds = 30\n"
            '[[services.web.policy.scale_down.rules]]\ntype = "replicas"\nvalue = 1\nperiod_seconds = 60\n',
            DEFAULT_SCALE_UP,
            ScalingBehavior(
                stabilization_seconds=30, select="max", rules=[ScalingRule(type="replicas", value=1, period_seconds=60)]
            ),
        ),
    ],
    ids=["hpa-defaults", "stabilization-shorthand", "scale-up-disabled-keeps-rules", "custom-scale-down"],
)
def test_effective_behaviors(
    tmp_path: Path,
    policy: dict[str, Any],
    tail: str,
    expected_up: ScalingBehavior,
    expected_down: ScalingBehavior,
) -> None:
    settings = load_config(write_config(tmp_path, policy=policy, tail=tail), environ={})
    assert settings.services["web"].policy.effective_scale_up() == expected_up
    assert settings.services["web"].policy.effective_scale_down() == expected_down


def test_hpa_default_values() -> None:
    assert DEFAULT_SCALE_UP == ScalingBehavior(
        stabilization_seconds=0,
        select="max",
        rules=[
            ScalingRule(type="replicas", value=4, period_seconds=15),
            ScalingRule(type="percent", value=100, period_seconds=15),
        ],
    )
    assert DEFAULT_SCALE_DOWN == ScalingBehavior(
        stabilization_seconds=300, select="max", rules=[ScalingRule(type="percent", value=100, period_seconds=15)]
    )


def test_separate_tolerances() -> None:
    policy = PolicyConfig(tolerance=0.2, tolerance_down=0.05)
    assert (policy.effective_tolerance_up, policy.effective_tolerance_down) == (0.2, 0.05)


@pytest.mark.parametrize(
    ("adjustment", "value", "is_percent"),
    [("+2", 2, False), ("-1", -1, False), ("+50%", 50, True), ("-25%", -25, True), ("0", 0, False), (3, 3, False)],
    ids=["plus", "minus", "plus-percent", "minus-percent", "zero", "toml-integer"],
)
def test_step_adjustment_parsing(adjustment: str | int, value: int, is_percent: bool) -> None:
    rule = StepRule(metric="cpu", lower=80, adjustment=adjustment)  # type: ignore[arg-type]
    assert (rule.adjustment_value, rule.adjustment_is_percent) == (value, is_percent)


def test_step_bounds_are_lower_inclusive_upper_exclusive() -> None:
    rule = StepRule(metric="cpu", lower=70, upper=90, adjustment="+1")
    assert [rule.contains(value) for value in (69.9, 70, 89.9, 90)] == [False, True, True, False]


# --- files that do not load -----------------------------------------------------------------

STEP = '[[services.web.policy.steps]]\nmetric = "cpu"\n'
SECOND_SERVICE = (
    '[services.api]\nimage = "api:1"\nport = 9000\ncpu_limit = 1\nmemory_limit = "1GiB"\n'
    '[services.api.load_balancer]\npublish = "{publish}"\n'
)
WINDOW = '[[services.web.schedule]]\nname = "peak"\nduration_seconds = 3600\n'


@pytest.mark.parametrize(
    ("files", "path", "fragment"),
    [
        ({"top": "foo = 1"}, "foo", "unknown key"),
        ({"web": {"foo": 1}}, "services.web.foo", "unknown key"),
        ({"top": "[daemon]\nintervall_seconds = 1"}, "daemon.intervall_seconds", "unknown key"),
        ({"policy": {"target_cpu": 50}}, "services.web.policy.target_cpu", "unknown key"),
        ({"web": {"min_replicas": 4, "max_replicas": 2}}, "services.web.max_replicas", "must be >= min_replicas (4)"),
        ({"policy": {"target_cpu_percent": 0}}, "services.web.policy.target_cpu_percent", "must be > 0"),
        ({"policy": {"target_cpu_percent": 101}}, "services.web.policy.target_cpu_percent", "must be <= 100"),
        ({"policy": {"target_memory_percent": -5}}, "services.web.policy.target_memory_percent", "must be > 0"),
        ({"policy": {"tolerance": 1001}}, "services.web.policy.tolerance", "must be <= 1000"),
        (
            {"web": {"memory_limit": "12XB"}},
            "services.web.memory_limit",
            "'12XB' is not a valid size (use e.g. 256MiB, 1GiB, 512m)",
        ),
        ({"web": {"port": 0}}, "services.web.port", "must be >= 1"),
        ({"web": {"health_path": "healthz"}}, "services.web.health_path", "must start with '/'"),
        ({"lb": {"publish": "127.0.0.1"}}, "services.web.load_balancer.publish", "not a valid host:port"),
        ({"lb": {"publish": "127.0.0.1:99999"}}, "services.web.load_balancer.publish", "between 1 and 65535"),
        ({"lb": {"algorithm": "fastest"}}, "services.web.load_balancer.algorithm", "must be 'roundrobin'"),
        ({"top": '[daemon]\nmetrics_listen = "nowhere"'}, "daemon.metrics_listen", "not a valid host:port"),
        ({"top": '[daemon]\nlog_level = "verbose"'}, "daemon.log_level", "got 'verbose'"),
        ({"tail": WINDOW + 'cron = "61 * * * *"\nmin_replicas = 2\n'}, "services.web.schedule.0.cron", "crontab"),
        ({"tail": WINDOW + 'cron = "0 8 * *"\nmin_replicas = 2\n'}, "services.web.schedule.0.cron", "5-field"),
        (
            {"tail": WINDOW + 'cron = "0 8 * * *"\nmin_replicas = 2\ntimezone = "Mars/Olympus"\n'},
            "services.web.schedule.0.timezone",
            "unknown time zone 'Mars/Olympus'",
        ),
        ({"tail": WINDOW + 'cron = "0 8 * * *"\n'}, "services.web.schedule.0", "set min_replicas, max_replicas or both"),
        (
            {"tail": WINDOW + 'cron = "0 8 * * *"\nmin_replicas = 20\n'},
            "services.web.schedule.0.min_replicas",
            "min_replicas > max_replicas",
        ),
        ({"policy": {"strategy": "step"}, "tail": STEP + 'adjustment = "+1"\n'}, "services.web.policy.steps.0", "set lower, upper"),
        (
            {"policy": {"strategy": "step"}, "tail": STEP + 'lower = 90\nupper = 80\nadjustment = "+1"\n'},
            "services.web.policy.steps.0.upper",
            "must be > lower (90)",
        ),
        (
            {"policy": {"strategy": "step"}, "tail": STEP + 'lower = 80\nadjustment = "+x"\n'},
            "services.web.policy.steps.0.adjustment",
            "'+x' is not a valid adjustment",
        ),
        (
            {"policy": {"strategy": "step"}, "tail": STEP + 'lower = 80\nadjustment = "-150%"\n'},
            "services.web.policy.steps.0.adjustment",
            "more than 100%",
        ),
        (
            {"policy": {"strategy": "step"}, "tail": STEP + 'lower = 80\nadjustment = "+1"\n' + STEP + 'lower = 90\nadjustment = "+2"\n'},
            "services.web.policy.steps.1",
            "overlaps steps.0",
        ),
        ({"policy": {"strategy": "step"}}, "services.web.policy.steps", 'strategy "step" needs at least one'),
        ({"tail": STEP + 'lower = 80\nadjustment = "+1"\n'}, "services.web.policy.steps", 'only used with strategy = "step"'),
        (
            {"web": {"min_replicas": 2, "max_replicas": 4}, "policy": {"fallback_replicas": 5}},
            "services.web.policy.fallback_replicas",
            "must be between min_replicas (2) and max_replicas (4)",
        ),
        (
            {"policy": {"scale_down_stabilization_seconds": 60}, "tail": "[services.web.policy.scale_down]\nstabilization_seconds = 30\n"},
            "services.web.policy.scale_down_stabilization_seconds",
            "conflicts with scale_down.stabilization_seconds",
        ),
        (
            {"tail": "[services.web.policy.scale_up]\nrules = []\n"},
            "services.web.policy.scale_up.rules",
            "at least 1 item",
        ),
        ({"web": {"image": REMOVE}}, "services.web.image", "set image, or template"),
        ({"lb": {"publish": REMOVE}}, "services.web.load_balancer.publish", "required key is missing"),
        ({"web": {"image": ""}}, "services.web.image", "non-empty image reference"),
        ({"tail": SECOND_SERVICE.format(publish="127.0.0.1:8080")}, "services.api.load_balancer.publish", "service 'web'"),
        ({"tail": SECOND_SERVICE.format(publish="0.0.0.0:8080")}, "services.api.load_balancer.publish", "127.0.0.1:8080"),
        ({"lb": {"publish": "127.0.0.1:9464"}}, "services.web.load_balancer.publish", "metrics endpoint"),
        ({"tail": SECOND_SERVICE.replace("services.api", "services.Api").format(publish="127.0.0.1:8081")}, "services.Api", "invalid service name"),
    ],
    ids=[
        "unknown-top-level", "unknown-service-key", "unknown-daemon-key", "unknown-policy-key", "max-below-min",
        "target-zero", "target-101", "target-negative", "tolerance-over-1000", "bad-size", "port-zero", "health-path",
        "publish-no-port", "publish-port-range", "bad-algorithm", "bad-metrics-listen", "bad-log-level",
        "cron-bad-value", "cron-four-fields", "bad-timezone", "window-without-bounds", "window-min-above-service-max",
        "step-no-bounds", "step-lower-above-upper", "step-bad-adjustment", "step-remove-too-much",
        "steps-overlap", "step-strategy-without-steps", "steps-with-target-strategy", "fallback-outside-bounds",
        "stabilization-conflict", "empty-rules", "missing-image", "missing-publish", "empty-image",
        "duplicate-publish", "wildcard-publish-clash", "publish-clashes-with-metrics", "bad-service-name",
    ],
)  # fmt: skip
def test_bad_file_reports_dotted_path(tmp_path: Path, files: dict[str, Any], path: str, fragment: str) -> None:
    messages = config_errors(write_config(tmp_path, **files))
    matching = [message for message in messages if message.startswith(f"{path}: ")]
    assert matching, messages
    assert any(fragment in message for message in matching), messages


def test_every_error_is_reported(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        top="typo = 1",
        web={"memory_limit": "12XB", "port": 70000},
        lb={"publish": "nowhere"},
        policy={"target_cpu_percent": 101},
        tail=WINDOW + 'cron = "bad"\nmin_replicas = 1\ntimezone = "Nowhere/City"\n',
    )
    paths = {message.split(": ", 1)[0] for message in config_errors(path)}
    assert paths == {
        "typo",
        "services.web.memory_limit",
        "services.web.port",
        "services.web.load_balancer.publish",
        "services.web.policy.target_cpu_percent",
        "services.web.schedule.0.cron",
        "services.web.schedule.0.timezone",
    }


def test_every_cross_field_error_is_reported(tmp_path: Path) -> None:
    path = write_config(tmp_path, web={"min_replicas": 3, "max_replicas": 2}, policy={"fallback_replicas": 9})
    assert config_errors(path) == [
        "services.web.max_replicas: must be >= min_replicas (3)",
        "services.web.policy.fallback_replicas: must be between min_replicas (3) and max_replicas (2)",
    ]


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"AUTOSCALER_SERVICES__WEB__FOO": "1"}, "services.web.foo: unknown key"),
        ({"AUTOSCALER_SERVICES__WEB__MAX_REPLICAS": "many"}, "services.web.max_replicas: "),
        ({"AUTOSCALER_SERVICES__WEB__COMMAND": "serve"}, "environment: "),
    ],
    ids=["unknown-key", "not-a-number", "list-not-json"],
)
def test_bad_environment_override(tmp_path: Path, environ: dict[str, str], fragment: str) -> None:
    messages = config_errors(write_config(tmp_path), environ)
    assert any(message.startswith(fragment) for message in messages), messages


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[daemon]\ninterval_seconds = 5\nlog_level "info"\n')
    [message] = config_errors(path)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in message and "column" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert config_errors(path) == [f"{path}: file not found"]


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    assert config_errors(tmp_path) == [f"{tmp_path}: not a regular file"]


def test_no_services(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("[daemon]\ndry_run = true\n")
    assert config_errors(path) == ["services: required key is missing"]
    path.write_text("services = {}\n")
    assert config_errors(path) == ["services: define at least one service, e.g. [services.web]"]


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_config(write_config(tmp_path), environ={})
    with pytest.raises(Exception, match="frozen"):
        settings.services["web"].max_replicas = 99  # type: ignore[misc]
    assert isinstance(settings, Settings)


# --- bounds: `validate` refuses every value `run` cannot honour, naming the field --------------

RULE = "[[services.web.policy.scale_up.rules]]\n"
STEP_POLICY = {"strategy": "step"}
DAEMON = "[daemon]\n"
HEX64 = "0123456789abcdef" * 4


def window(**keys: Any) -> str:
    """A schedule window table; ``keys`` override or add to a valid one."""
    return _table("[services.web.schedule]", {"name": "peak", "cron": "0 8 * * *", "duration_seconds": 3600, **keys})


def step(**keys: Any) -> str:
    return _table("[services.web.policy.steps]", {"metric": "cpu", "lower": 80, "adjustment": "+1", **keys})


def rule(**keys: Any) -> str:
    return _table("[services.web.policy.scale_up.rules]", {"type": "replicas", "value": 4, "period_seconds": 15, **keys})


# id -> (write_config arguments, exact dotted path, text of the message)
REFUSED: dict[str, tuple[dict[str, Any], str, str]] = {
    # Booleans: pydantic alone would read `true` as 1 and `false` as 0.
    "bool-max-replicas": ({"web": {"max_replicas": True}}, "services.web.max_replicas", "must be a number, not a boolean (got True)"),
    "bool-min-replicas": ({"web": {"min_replicas": False}}, "services.web.min_replicas", "must be a number, not a boolean (got False)"),
    "bool-port": ({"web": {"port": True}}, "services.web.port", "not a boolean"),
    "bool-cpu-limit": ({"web": {"cpu_limit": True}}, "services.web.cpu_limit", "not a boolean"),
    "bool-memory-limit": ({"web": {"memory_limit": True}}, "services.web.memory_limit", "True is not a valid size"),
    "bool-stop-timeout": ({"web": {"stop_timeout_seconds": True}}, "services.web.stop_timeout_seconds", "not a boolean"),
    "bool-backoff": ({"web": {"backoff_initial_seconds": True}}, "services.web.backoff_initial_seconds", "not a boolean"),
    "bool-interval": ({"top": DAEMON + "interval_seconds = true"}, "daemon.interval_seconds", "not a boolean (got True)"),
    "bool-shutdown": ({"top": DAEMON + "shutdown_timeout_seconds = false"}, "daemon.shutdown_timeout_seconds", "not a boolean"),
    "bool-target": ({"policy": {"target_cpu_percent": True}}, "services.web.policy.target_cpu_percent", "not a boolean"),
    "bool-tolerance": ({"policy": {"tolerance_down": True}}, "services.web.policy.tolerance_down", "not a boolean"),
    "bool-failure-threshold": ({"policy": {"failure_threshold": True}}, "services.web.policy.failure_threshold", "not a boolean"),
    "bool-fallback": ({"policy": {"fallback_replicas": True}}, "services.web.policy.fallback_replicas", "not a boolean"),
    "bool-stabilization": (
        {"policy": {"scale_down_stabilization_seconds": True}}, "services.web.policy.scale_down_stabilization_seconds", "not a boolean",
    ),
    "bool-rule-value": ({"tail": rule(value=True)}, "services.web.policy.scale_up.rules.0.value", "not a boolean"),
    "bool-rule-period": ({"tail": rule(period_seconds=True)}, "services.web.policy.scale_up.rules.0.period_seconds", "not a boolean"),
    "bool-window-duration": ({"tail": window(duration_seconds=True, min_replicas=2)}, "services.web.schedule.0.duration_seconds", "not a boolean"),
    "bool-window-min": ({"tail": window(min_replicas=True)}, "services.web.schedule.0.min_replicas", "not a boolean"),
    "bool-step-lower": ({"policy": STEP_POLICY, "tail": step(lower=True)}, "services.web.policy.steps.0.lower", "not a boolean"),
    # inf and nan are valid TOML floats.
    "inf-interval": ({"top": DAEMON + "interval_seconds = inf"}, "daemon.interval_seconds", "must be a finite number (got inf)"),
    "nan-cpu-limit": ({"web": {"cpu_limit": math.nan}}, "services.web.cpu_limit", "must be a finite number (got nan)"),
    "inf-max-replicas": ({"web": {"max_replicas": math.inf}}, "services.web.max_replicas", "finite number"),
    "inf-target-rps": (
        {"policy": {"target_requests_per_second_per_replica": math.inf}},
        "services.web.policy.target_requests_per_second_per_replica", "must be a finite number (got inf)",
    ),
    "minus-inf-tolerance": ({"policy": {"tolerance": -math.inf}}, "services.web.policy.tolerance", "must be a finite number (got -inf)"),
    "nan-drain": ({"policy": {"drain_timeout_seconds": math.nan}}, "services.web.policy.drain_timeout_seconds", "finite number"),
    "inf-step-upper": ({"policy": STEP_POLICY, "tail": step(upper=math.inf)}, "services.web.policy.steps.0.upper", "finite number"),
    "nan-backoff-max": ({"web": {"backoff_max_seconds": math.nan}}, "services.web.backoff_max_seconds", "finite number"),
    # Replicas: at most MAX_REPLICAS (1000) wherever a count is set.
    "max-replicas-1001": ({"web": {"max_replicas": 1001}}, "services.web.max_replicas", "must be <= 1000 (got 1001)"),
    "min-replicas-int64": (
        {"web": {"min_replicas": 2**63 - 1}}, "services.web.min_replicas", "must be <= 1000 (got 9223372036854775807)",
    ),
    "window-min-1001": ({"tail": window(min_replicas=1001)}, "services.web.schedule.0.min_replicas", "must be <= 1000"),
    "window-max-1001": ({"tail": window(max_replicas=1001)}, "services.web.schedule.0.max_replicas", "must be <= 1000"),
    "fallback-1001": ({"policy": {"fallback_replicas": 1001}}, "services.web.policy.fallback_replicas", "must be <= 1000"),
    "rule-replicas-1001": (
        {"tail": rule(value=1001)}, "services.web.policy.scale_up.rules.0.value",
        "must be <= 1000, the most replicas a service may have (got 1001)",
    ),
    "rule-percent-10001": ({"tail": rule(type="percent", value=10001)}, "services.web.policy.scale_up.rules.0.value", "must be <= 10000"),
    "rule-period-1801": ({"tail": rule(period_seconds=1801)}, "services.web.policy.scale_up.rules.0.period_seconds", "must be <= 1800"),
    "adjustment-1001": (
        {"policy": STEP_POLICY, "tail": step(adjustment="+1001")}, "services.web.policy.steps.0.adjustment",
        "'+1001' is more than 1000 replicas",
    ),
    "adjustment-10001-percent": (
        {"policy": STEP_POLICY, "tail": step(adjustment="+10001%")}, "services.web.policy.steps.0.adjustment",
        "'+10001%' is more than 10000% of the replicas",
    ),
    "adjustment-5000-digits": (
        {"policy": STEP_POLICY, "tail": step(adjustment="-" + "9" * 5000)}, "services.web.policy.steps.0.adjustment",
        "is more than 1000 replicas",
    ),
    # Times.
    "interval-3601": ({"top": DAEMON + "interval_seconds = 3601"}, "daemon.interval_seconds", "must be <= 3600 (got 3601)"),
    "interval-0.05": ({"top": DAEMON + "interval_seconds = 0.05"}, "daemon.interval_seconds", "must be >= 0.1 (got 0.05)"),
    "stop-timeout-3601": ({"web": {"stop_timeout_seconds": 3601}}, "services.web.stop_timeout_seconds", "must be <= 3600"),
    "startup-timeout-3601": ({"web": {"startup_timeout_seconds": 3601}}, "services.web.startup_timeout_seconds", "must be <= 3600"),
    "drain-timeout-3601": ({"policy": {"drain_timeout_seconds": 3601}}, "services.web.policy.drain_timeout_seconds", "must be <= 3600"),
    "initialization-3601": ({"policy": {"initialization_seconds": 3601}}, "services.web.policy.initialization_seconds", "must be <= 3600"),
    "window-over-31-days": (
        {"tail": window(duration_seconds=31 * 86400 + 1, min_replicas=2)}, "services.web.schedule.0.duration_seconds",
        "must be <= 2678400",
    ),
    "shutdown-0": ({"top": DAEMON + "shutdown_timeout_seconds = 0"}, "daemon.shutdown_timeout_seconds", "must be > 0 (got 0)"),
    "lease-renew-deadline-not-below-duration": (
        {"top": DAEMON + "lease_duration_seconds = 10\nlease_renew_deadline_seconds = 10"},
        "daemon.lease_renew_deadline_seconds", "must be < lease_duration_seconds (10)",
    ),
    "lease-retry-not-below-renew-deadline": (
        {"top": DAEMON + "lease_retry_period_seconds = 12"}, "daemon.lease_retry_period_seconds",
        "must be < lease_renew_deadline_seconds (10)",
    ),
    "lease-duration-0": ({"top": DAEMON + "lease_duration_seconds = 0"}, "daemon.lease_duration_seconds", "must be > 0"),
    "shutdown-301": ({"top": DAEMON + "shutdown_timeout_seconds = 301"}, "daemon.shutdown_timeout_seconds", "must be <= 300"),
    "backoff-initial-0": ({"web": {"backoff_initial_seconds": 0}}, "services.web.backoff_initial_seconds", "must be > 0"),
    "backoff-initial-3601": ({"web": {"backoff_initial_seconds": 3601}}, "services.web.backoff_initial_seconds", "must be <= 3600"),
    "backoff-max-86401": ({"web": {"backoff_max_seconds": 86401}}, "services.web.backoff_max_seconds", "must be <= 86400"),
    "backoff-max-below-initial": (
        {"web": {"backoff_initial_seconds": 10, "backoff_max_seconds": 5}}, "services.web.backoff_max_seconds",
        "must be >= backoff_initial_seconds (10)",
    ),
    # Resources, as Docker takes them.
    "cpu-1e12": (
        {"web": {"cpu_limit": 1e12}}, "services.web.cpu_limit", "must be between 0.01 (Docker's minimum) and 1024 cores (got 1e+12)",
    ),
    "cpu-0.001": ({"web": {"cpu_limit": 0.001}}, "services.web.cpu_limit", "(got 0.001)"),
    "memory-99999999TiB": (
        {"web": {"memory_limit": "99999999TiB"}}, "services.web.memory_limit",
        "must be between 6MiB (Docker's minimum) and 64TiB (got '99999999TiB')",
    ),
    "memory-1MiB": ({"web": {"memory_limit": "1MiB"}}, "services.web.memory_limit", "(got '1MiB')"),
    "memory-bytes-below-6MiB": ({"web": {"memory_limit": 6 * MiB - 1}}, "services.web.memory_limit", "(got 6291455)"),
    "memory-40-digits": ({"web": {"memory_limit": "1" * 40 + "MiB"}}, "services.web.memory_limit", "not a valid size: far too large"),
    # Policy numbers.
    "failure-threshold-10001": ({"policy": {"failure_threshold": 10001}}, "services.web.policy.failure_threshold", "must be <= 10000"),
    "target-rps-1e10": (
        {"policy": {"target_requests_per_second_per_replica": 1e10}},
        "services.web.policy.target_requests_per_second_per_replica", "must be <= 1e+09",
    ),
    "target-response-time-1e10": (
        {"policy": {"target_response_time_ms": 1e10}}, "services.web.policy.target_response_time_ms", "must be <= 1e+09",
    ),
    "tolerance-negative": ({"policy": {"tolerance": -0.1}}, "services.web.policy.tolerance", "must be >= 0 (got -0.1)"),
    "tolerance-up-1001": ({"policy": {"tolerance_up": 1001}}, "services.web.policy.tolerance_up", "must be <= 1000"),
    "step-lower-1e10": ({"policy": STEP_POLICY, "tail": step(lower=1e10)}, "services.web.policy.steps.0.lower", "must be <= 1e+09"),
    "step-upper-negative": ({"policy": STEP_POLICY, "tail": step(lower=REMOVE, upper=-1)}, "services.web.policy.steps.0.upper", "must be >= 0"),
    # Docker's predefined networks have no DNS between containers, or no network at all.
    "network-host": ({"web": {"network": "host"}}, "services.web.network", "'host' is one of Docker's predefined networks"),
    "network-bridge": ({"web": {"network": "bridge"}}, "services.web.network", "user-defined bridge network"),
    "network-none": ({"web": {"network": "none"}}, "services.web.network", "leave network unset to get 'autoscaler-<service>'"),
    "network-default": ({"web": {"network": "default"}}, "services.web.network", "predefined"),
    "network-Host": ({"web": {"network": "Host"}}, "services.web.network", "predefined"),
    # Image references, by Docker's grammar.
    "image-space": ({"web": {"image": "a b"}}, "services.web.image", "'a b' is not a valid image reference: contains whitespace"),
    "image-uppercase": ({"web": {"image": "Nginx:1.27"}}, "services.web.image", "the repository name must be lowercase"),
    "image-empty-tag": ({"web": {"image": "nginx:"}}, "services.web.image", "'nginx:' is not a valid image reference: malformed"),
    "image-tag-dash-first": ({"web": {"image": "nginx:-1"}}, "services.web.image", "not a valid image reference"),
    "image-tag-129": ({"web": {"image": "nginx:" + "a" * 129}}, "services.web.image", "not a valid image reference"),
    "image-double-slash": ({"web": {"image": "team//app"}}, "services.web.image", "not a valid image reference"),
    "image-leading-dash": ({"web": {"image": "-app"}}, "services.web.image", "not a valid image reference"),
    "image-trailing-dot": ({"web": {"image": "app."}}, "services.web.image", "not a valid image reference"),
    "image-three-underscores": ({"web": {"image": "a___b"}}, "services.web.image", "not a valid image reference"),
    "image-url": ({"web": {"image": "https://registry.local/app"}}, "services.web.image", "not a valid image reference"),
    "image-name-256": ({"web": {"image": "a" * 256}}, "services.web.image", "the name is longer than 255 characters"),
    "image-digest-short": ({"web": {"image": "app@sha256:abc"}}, "services.web.image", "not a valid image reference"),
    "image-digest-md5": ({"web": {"image": "app@md5:" + HEX64[:32]}}, "services.web.image", "not a valid image reference"),
    "image-digest-uppercase": ({"web": {"image": "app@sha256:" + HEX64.upper()}}, "services.web.image", "not a valid image reference"),
    "lb-image-space": ({"lb": {"image": "a b"}}, "services.web.load_balancer.image", "'a b' is not a valid image reference"),
    "lb-image-empty": ({"lb": {"image": ""}}, "services.web.load_balancer.image", "must be a non-empty image reference"),
    # What no container can be given.
    "command-nul": ({"web": {"command": ["serve", "a\0b"]}}, "services.web.command", "argument(s) [1] contain a NUL character"),
    "env-nul": ({"tail": '[services.web.env]\nA = "x\\u0000y"\n'}, "services.web.env", "value(s) of ['A'] contain a NUL"),
    "health-path-control": ({"web": {"health_path": "/ok\x01"}}, "services.web.health_path", "no spaces or control characters"),
    "admin-socket-relative": (
        {"top": DAEMON + 'admin_socket_dir = "run/autoscaler"'}, "daemon.admin_socket_dir",
        "'run/autoscaler' must be an absolute path",
    ),
    "pull-unknown": ({"web": {"pull": "if-not-present"}}, "services.web.pull", "'missing', 'always' or 'never'"),
    "pull-timeout-0": ({"web": {"pull_timeout_seconds": 0}}, "services.web.pull_timeout_seconds", "must be > 0"),
    "pull-timeout-day": ({"web": {"pull_timeout_seconds": 86400}}, "services.web.pull_timeout_seconds", "3600"),
    "pull-on-swarm": (
        {"web": {"backend": "swarm", "pull": "always"}}, "services.web.pull", 'only used with backend = "containers"',
    ),
    "admin-socket-space": ({"top": DAEMON + 'admin_socket_dir = "/run/auto scaler"'}, "daemon.admin_socket_dir", "whitespace"),
    "admin-socket-nul": ({"top": DAEMON + 'admin_socket_dir = "/run/a\\u0000b"'}, "daemon.admin_socket_dir", "control characters"),
    "admin-socket-too-long": (
        {"top": DAEMON + f'admin_socket_dir = "/{"a" * 46}"'}, "daemon.admin_socket_dir", "is longer than 46 bytes",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("files", "path", "message"), REFUSED.values(), ids=list(REFUSED))
def test_refused_value_names_its_field(tmp_path: Path, files: dict[str, Any], path: str, message: str) -> None:
    lines = config_errors(write_config(tmp_path, **files))
    assert any(line.startswith(f"{path}: ") and message in line for line in lines), lines


# id -> (write_config arguments, dotted attribute path, the value it loads as)
ACCEPTED: dict[str, tuple[dict[str, Any], str, Any]] = {
    "replicas-1000": ({"web": {"min_replicas": 1000, "max_replicas": 1000}}, "services.web.max_replicas", 1000),
    "interval-3600": ({"top": DAEMON + "interval_seconds = 3600"}, "daemon.interval_seconds", 3600),
    "interval-0.1": ({"top": DAEMON + "interval_seconds = 0.1"}, "daemon.interval_seconds", 0.1),
    "cpu-0.01": ({"web": {"cpu_limit": 0.01}}, "services.web.cpu_limit", 0.01),
    "cpu-1024": ({"web": {"cpu_limit": 1024}}, "services.web.cpu_limit", 1024),
    "memory-6MiB": ({"web": {"memory_limit": "6MiB"}}, "services.web.memory_limit", 6 * MiB),
    "memory-64TiB": ({"web": {"memory_limit": "64TiB"}}, "services.web.memory_limit", 64 * 1024**4),
    "stop-timeout-3600": ({"web": {"stop_timeout_seconds": 3600}}, "services.web.stop_timeout_seconds", 3600),
    "tolerance-0": ({"policy": {"tolerance": 0}}, "services.web.policy.tolerance", 0),
    "tolerance-1": ({"policy": {"tolerance": 1.0}}, "services.web.policy.tolerance", 1.0),
    # A scale-down tolerance >= 1 turns ratio-based scale-down off, as in the HPA.
    "tolerance-down-5": ({"policy": {"tolerance_down": 5}}, "services.web.policy.effective_tolerance_down", 5),
    "tolerance-1000": ({"policy": {"tolerance_up": 1000}}, "services.web.policy.tolerance_up", 1000),
    "failure-threshold-10000": ({"policy": {"failure_threshold": 10000}}, "services.web.policy.failure_threshold", 10000),
    "fallback-1000": (
        {"web": {"max_replicas": 1000}, "policy": {"fallback_replicas": 1000}}, "services.web.policy.fallback_replicas", 1000,
    ),
    "window-31-days": (
        {"tail": window(duration_seconds=31 * 86400, max_replicas=1000)}, "services.web.schedule.0.duration_seconds", 31 * 86400,
    ),
    "adjustment-1000": ({"policy": STEP_POLICY, "tail": step(adjustment="-1000")}, "services.web.policy.steps.0.adjustment", "-1000"),
    "adjustment-10000-percent": (
        {"policy": STEP_POLICY, "tail": step(adjustment="+10000%")}, "services.web.policy.steps.0.adjustment", "+10000%",
    ),
    "step-upper-1e9": ({"policy": STEP_POLICY, "tail": step(lower=0, upper=1e9)}, "services.web.policy.steps.0.upper", 1e9),
    "rule-replicas-1000": ({"tail": rule(value=1000)}, "services.web.policy.scale_up.rules.0.value", 1000),
    "rule-percent-10000": ({"tail": rule(type="percent", value=10000)}, "services.web.policy.scale_up.rules.0.value", 10000),
    "shutdown-300": ({"top": DAEMON + "shutdown_timeout_seconds = 300"}, "daemon.shutdown_timeout_seconds", 300),
    "admin-socket-dir": ({"top": DAEMON + 'admin_socket_dir = "/run/autoscaler"'}, "daemon.admin_socket_dir", "/run/autoscaler"),
    "backoff-equal": (
        {"web": {"backoff_initial_seconds": 5, "backoff_max_seconds": 5}}, "services.web.backoff_max_seconds", 5,
    ),
    "backoff-day": ({"web": {"backoff_max_seconds": 86400}}, "services.web.backoff_max_seconds", 86400),
    "pull-always": ({"web": {"pull": "always", "pull_timeout_seconds": 3600}}, "services.web.pull", "always"),
    "pull-never": ({"web": {"pull": "never"}}, "services.web.pull", "never"),
    "network-own": ({"web": {"network": "hostnet"}}, "services.web.network", "hostnet"),
    "lb-image-registry": (
        {"lb": {"image": "registry.local:5000/ops/haproxy:2.9"}}, "services.web.load_balancer.image",
        "registry.local:5000/ops/haproxy:2.9",
    ),
}  # fmt: skip


def _attribute(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = value[part] if isinstance(value, dict) else value[int(part)] if part.isdigit() else getattr(value, part)
    return value


@pytest.mark.parametrize(("files", "path", "expected"), ACCEPTED.values(), ids=list(ACCEPTED))
def test_values_at_the_bounds_load(tmp_path: Path, files: dict[str, Any], path: str, expected: Any) -> None:
    assert _attribute(load_config(write_config(tmp_path, **files), environ={}), path) == expected


def test_the_longest_admin_socket_dir_leaves_room_for_every_socket(tmp_path: Path) -> None:
    directory = "/" + "a" * 45
    settings = load_config(write_config(tmp_path, top=DAEMON + f'admin_socket_dir = "{directory}"'), environ={})
    assert settings.daemon.admin_socket_dir == directory
    # The longest socket path: a 41-character service's load balancer; AF_UNIX holds 107 bytes.
    assert len(f"{directory}/autoscaler-{'s' * 41}-lb.sock".encode()) == 107


def test_new_keys_have_valid_defaults(tmp_path: Path) -> None:
    settings = load_config(write_config(tmp_path), environ={})
    assert (settings.daemon.shutdown_timeout_seconds, settings.daemon.admin_socket_dir) == (10, None)
    web = settings.services["web"]
    assert (web.backoff_initial_seconds, web.backoff_max_seconds) == (1, 60)
    assert (web.pull, web.pull_timeout_seconds) == ("missing", 300)


@pytest.mark.parametrize(
    "reference",
    [
        "nginx", "nginx:1.27", "library/nginx:latest", "docker.io/library/nginx:1.27-alpine",
        "registry.example.com:5000/team/app:v2.1_rc", "localhost/app", "localhost:5000/app", "[::1]:5000/app:1",
        "Registry.Example.com/app", "a__b.c-d---e/f_g", "app@sha256:" + HEX64, "app:1@sha256:" + HEX64,
        "app@sha512:" + HEX64 * 2, "a" * 255, "app:" + "T" * 128, HEX64,
    ],
    ids=[
        "name", "tag", "path", "docker-hub-full", "registry-port-path", "localhost", "localhost-port", "ipv6-registry",
        "uppercase-registry", "separators", "digest", "tag-and-digest", "sha512", "name-255", "tag-128", "image-id",
    ],
)  # fmt: skip
def test_image_references_docker_accepts(reference: str) -> None:
    assert check_image_reference(reference) == reference


def test_worst_case_image_reference_is_refused_quickly() -> None:
    # Many ways to split a long run of letters into domain components: the regex must not
    # backtrack through all of them.
    started = time.perf_counter()
    for reference in ("a" * 500 + "!", "a-" * 250 + "/", "a." * 250 + ":"):
        with pytest.raises(ValueError, match="not a valid image reference"):
            check_image_reference(reference)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AUTOSCALER_SERVICES__WEB__MAX_REPLICAS": "true"}, "services.web.max_replicas: must be a number, not a boolean (got 'true')"),
        ({"AUTOSCALER_DAEMON__INTERVAL_SECONDS": "False"}, "daemon.interval_seconds: must be a number, not a boolean (got 'False')"),
        ({"AUTOSCALER_DAEMON__INTERVAL_SECONDS": "inf"}, "daemon.interval_seconds: must be a finite number (got 'inf')"),
        ({"AUTOSCALER_SERVICES__WEB__CPU_LIMIT": "nan"}, "services.web.cpu_limit: must be a finite number (got 'nan')"),
        ({"AUTOSCALER_SERVICES__WEB__MAX_REPLICAS": "1001"}, "services.web.max_replicas: must be <= 1000 (got '1001')"),
        ({"AUTOSCALER_SERVICES__WEB__NETWORK": "host"}, "services.web.network: 'host' is one of Docker's predefined networks"),
        (
            {"AUTOSCALER_SERVICES__WEB__COMMAND": "[" * 50_000 + "]" * 50_000},
            "environment: a list or table value is nested too deeply",
        ),
    ],
    ids=["bool-int", "bool-float", "inf", "nan", "replicas-1001", "network-host", "json-nested-50000"],
)  # fmt: skip
def test_environment_overrides_are_bounded_too(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    lines = config_errors(write_config(tmp_path), environ)
    assert any(line.startswith(message) for line in lines), lines


def _numeric_fields() -> list[tuple[type[BaseModel], str]]:
    models: list[type[BaseModel]] = [
        DaemonConfig, LoadBalancerConfig, ScalingRule, ScalingBehavior, StepRule, ScheduleWindow, PolicyConfig, ServiceConfig,
    ]
    return [
        (model, name)
        for model in models
        for name, info in model.model_fields.items()
        if {int, float} & _plain_types(info.annotation) and bool not in _plain_types(info.annotation)
    ]


NUMERIC_FIELDS = _numeric_fields()


@pytest.mark.parametrize(
    ("model", "field"), NUMERIC_FIELDS, ids=[f"{model.__name__}.{field}" for model, field in NUMERIC_FIELDS]
)
@pytest.mark.parametrize(
    "value", [True, 10**30, -(10**30), math.inf, math.nan], ids=["true", "huge", "huge-negative", "inf", "nan"]
)
def test_every_numeric_field_is_bounded(model: type[BaseModel], field: str, value: Any) -> None:
    # Whatever else is missing, the field itself must be among the problems.
    with pytest.raises(ValidationError) as caught:
        model.model_validate({field: value})
    assert field in {error["loc"][0] for error in caught.value.errors()}


def test_a_5000_digit_number_in_the_file_is_one_message(tmp_path: Path) -> None:
    path = write_config(tmp_path, tail=f"[daemon]\ninterval_seconds = {'9' * 5000}\n")
    line = path.read_text().splitlines().index("[daemon]") + 2
    assert config_errors(path) == [f"{path}: invalid TOML: a number with more than 4300 digits (line {line})"]


def test_deep_nesting_in_the_file_is_one_message(tmp_path: Path) -> None:
    path = write_config(tmp_path, top="x = " + "[" * 100_000 + "]" * 100_000)
    assert config_errors(path) == [f"{path}: invalid TOML: arrays or inline tables nested too deeply"]


def test_a_file_over_1_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    path = write_config(tmp_path, tail="# " + "x" * 1024**2 + "\n")
    assert config_errors(path) == [f"{path}: larger than 1 MiB; no config is that large"]


def test_long_values_are_cut_short_in_messages(tmp_path: Path) -> None:
    [line] = config_errors(write_config(tmp_path, top=DAEMON + f'log_level = "{"x" * 100_000}"'))
    assert line.startswith("daemon.log_level: must be 'debug', 'info', 'warning' or 'error' (got 'xxx")
    assert len(line) < 200
