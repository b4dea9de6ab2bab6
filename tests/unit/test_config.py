import json
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    ConfigError,
    PolicyConfig,
    ScalingBehavior,
    ScalingRule,
    Settings,
    StepRule,
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
        ({"policy": {"tolerance": 1.0}}, "services.web.policy.tolerance", "must be < 1"),
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
        ({"web": {"image": REMOVE}}, "services.web.image", "required key is missing"),
        ({"lb": {"publish": REMOVE}}, "services.web.load_balancer.publish", "required key is missing"),
        ({"web": {"image": ""}}, "services.web.image", "non-empty image reference"),
        ({"tail": SECOND_SERVICE.format(publish="127.0.0.1:8080")}, "services.api.load_balancer.publish", "service 'web'"),
        ({"tail": SECOND_SERVICE.format(publish="0.0.0.0:8080")}, "services.api.load_balancer.publish", "127.0.0.1:8080"),
        ({"lb": {"publish": "127.0.0.1:9464"}}, "services.web.load_balancer.publish", "metrics endpoint"),
        ({"tail": SECOND_SERVICE.replace("services.api", "services.Api").format(publish="127.0.0.1:8081")}, "services.Api", "invalid service name"),
    ],
    ids=[
        "unknown-top-level", "unknown-service-key", "unknown-daemon-key", "unknown-policy-key", "max-below-min",
        "target-zero", "target-101", "target-negative", "tolerance-one", "bad-size", "port-zero", "health-path",
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
