"""Templates and compose's fields in the TOML: what validation refuses (one line naming the
field) and how a replica's create body is built from a template and the config on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import ConfigError, load_config
from autoscaler.docker.template import create_body
from autoscaler.engine.ports import ContainerFields, ContainerTemplate, HealthcheckSpec, ReplicaSpec
from autoscaler.engine.target import replica_spec

BASE = """
[services.web]
{keys}
port = 8000
cpu_limit = 0.5
memory_limit = "256MiB"

[services.web.load_balancer]
publish = "127.0.0.1:8080"
"""


def load(tmp_path: Path, keys: str) -> Any:
    path = tmp_path / "config.toml"
    path.write_text(BASE.format(keys=keys))
    return load_config(path, environ={})


def problems(tmp_path: Path, keys: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, keys)
    return caught.value.messages


BAD = {
    "image-and-template": ('image = "a:1"\ntemplate = { container = "web" }', "services.web.image", "remove image, or the template"),
    "neither": ("", "services.web.image", "set image, or template"),
    "template-both-kinds": ('template = { container = "w", compose_project = "p", compose_service = "s" }',
                           "services.web.template", "either container"),
    "template-project-only": ('template = { compose_project = "p" }', "services.web.template.compose_service",
                              "project and its service"),
    "template-bad-project": ('template = { compose_project = "Shop", compose_service = "web" }',
                             "services.web.template.compose_project", "not a compose project name"),
    "volume-relative": ('image = "a:1"\nvolumes = ["./data:/data"]', "services.web.volumes", "absolute path"),
    "volume-target-relative": ('image = "a:1"\nvolumes = ["data:data"]', "services.web.volumes", "source:target"),
    "volume-bad-mode": ('image = "a:1"\nvolumes = ["data:/data:rx"]', "services.web.volumes", "unknown mode"),
    "network-host": ('image = "a:1"\nnetworks = ["host"]', "services.web.networks", "cannot be added"),
    "label-ours": ('image = "a:1"\nlabels = { "autoscaler.service" = "x" }', "services.web.labels", "the daemon's own"),
    "label-compose": ('image = "a:1"\nlabels = { "com.docker.compose.project" = "x" }', "services.web.labels", "compose's"),
    "env-file-missing": ('image = "a:1"\nenv_file = ["/nonexistent/app.env"]', "services.web.env_file", "cannot be read"),
    "tmpfs-relative": ('image = "a:1"\ntmpfs = ["run"]', "services.web.tmpfs", "absolute path"),
    "cap-lower": ('image = "a:1"\ncap_add = ["net_admin"]', "services.web.cap_add", "capability names"),
    "extra-host": ('image = "a:1"\nextra_hosts = ["nohost"]', "services.web.extra_hosts", "host:ip"),
    "stop-signal": ('image = "a:1"\nstop_signal = "term"', "services.web.stop_signal", "not a signal"),
    "user": ('image = "a:1"\nuser = "a b"', "services.web.user", "pattern"),
    "rollout-stuck": ('image = "a:1"\nrollout = { max_surge = 0, max_unavailable = 0 }', "services.web.rollout.max_surge",
                      "could never replace a replica"),
    "rollout-threshold": ('image = "a:1"\nrollout = { failure_threshold = 0 }', "services.web.rollout.failure_threshold",
                          "must be >= 1"),
}


@pytest.mark.parametrize(("keys", "path", "fragment"), BAD.values(), ids=BAD.keys())
def test_bad_container_keys_are_refused_naming_the_field(tmp_path: Path, keys: str, path: str, fragment: str) -> None:
    messages = problems(tmp_path, keys)
    matching = [m for m in messages if m.startswith(f"{path}: ")]
    assert matching and any(fragment in m for m in matching), messages


def test_swarm_services_take_no_template_nor_compose_fields(tmp_path: Path) -> None:
    messages = problems(tmp_path, 'backend = "swarm"\nimage = "a:1"\nvolumes = ["data:/data"]')
    assert any(m.startswith("services.web.volumes: ") and "swarm_service" in m for m in messages), messages


def test_the_compose_fields_reach_the_spec_env_file_under_env(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("# comment\nA=from-file\nB=from-file\n\n")
    settings = load(tmp_path, f'''image = "a:1"
env = {{ B = "from-env" }}
env_file = ["{env_file}"]
volumes = ["data:/data:ro", "/srv/conf:/conf", "/scratch"]
networks = {{ backend = {{ aliases = ["api"] }} }}
labels = {{ team = "shop" }}
user = "1000:1000"
read_only = true
tmpfs = ["/run:size=16m"]
cap_add = ["NET_ADMIN"]
cap_drop = ["ALL"]
extra_hosts = ["db.internal:10.0.0.5"]
stop_signal = "SIGQUIT"
logging = {{ driver = "json-file", options = {{ max-size = "10m" }} }}''')
    spec = replica_spec("web", "autoscaler-web", settings.services["web"])
    assert spec.env == {"A": "from-file", "B": "from-env"}  # compose's order: environment wins
    body, more = create_body(spec)
    host = body["HostConfig"]
    assert host["Binds"] == ["data:/data:ro", "/srv/conf:/conf:rw"]
    assert body["Volumes"] == {"/scratch": {}}
    assert more == [("backend", ("api",))]
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"autoscaler-web": {}}}
    assert body["User"] == "1000:1000" and body["StopSignal"] == "SIGQUIT"
    assert host["ReadonlyRootfs"] is True and host["Tmpfs"] == {"/run": "size=16m"}
    assert host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["ALL"]
    assert host["ExtraHosts"] == ["db.internal:10.0.0.5"]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m"}}
    assert body["Labels"]["team"] == "shop" and body["Labels"]["autoscaler.service"] == "web"
    assert host["NanoCpus"] == int(0.5e9) and host["Memory"] == 256 * 1024**2 and host["Init"] is True


def template() -> ContainerTemplate:
    return ContainerTemplate(
        source="container 'shop_web_1'",
        image="sha256:" + "a" * 64,
        config={"Env": ["A=1", "PATH=/bin"], "Cmd": ["serve"], "Labels": {"shop.tier": "web"}, "User": "app",
                "Healthcheck": {"Test": ["CMD", "true"]}},
        host_config={"Binds": ["shop_data:/data:rw"], "CapAdd": ["SYS_TIME"], "NanoCpus": 2_000_000_000,
                     "CpuQuota": 50000, "CpuPeriod": 100000, "Memory": 1, "LogConfig": {"Type": "local", "Config": {}}},
        networks={"shop_front": ("web",), "shop_back": ("web",)},
        version="v1",
    )


def spec(**overrides: Any) -> ReplicaSpec:
    values: dict[str, Any] = {"service": "web", "image": "sha256:" + "a" * 64, "port": 8000, "network": "shop_front",
                              "cpu_limit_cores": 0.25, "memory_limit_bytes": 128 * 1024**2, "template": template()}
    values.update(overrides)
    return ReplicaSpec(**values)


def test_a_template_is_copied_with_the_config_on_top() -> None:
    body, more = create_body(spec(env={"A": "2", "B": "3"}, fields=ContainerFields(cap_add=("NET_ADMIN",)),
                                  healthcheck=HealthcheckSpec(("CMD", "check"), 1.0, 2.0, 3, 0.0)))
    assert body["Image"] == "sha256:" + "a" * 64
    assert body["Env"] == ["A=2", "PATH=/bin", "B=3"]  # the TOML's env over the template's
    assert body["Cmd"] == ["serve"] and body["User"] == "app"
    assert body["Healthcheck"]["Test"] == ["CMD", "check"]
    host = body["HostConfig"]
    assert host["Binds"] == ["shop_data:/data:rw"]  # the template's named volume, shared
    assert host["CapAdd"] == ["SYS_TIME", "NET_ADMIN"]
    assert host["NanoCpus"] == 250_000_000 and host["CpuQuota"] == 0 and host["CpuPeriod"] == 0  # ours, no conflict
    assert host["Memory"] == 128 * 1024**2 and host["RestartPolicy"] == {"Name": "no"}
    assert host["LogConfig"] == {"Type": "local", "Config": {}}
    # The service's network at create (with the template's aliases there), the others after.
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"shop_front": {"Aliases": ["web"]}}}
    assert more == [("shop_back", ("web",))]
    assert body["Labels"]["shop.tier"] == "web" and body["Labels"]["autoscaler.managed"] == "true"


def test_the_config_command_replaces_the_templates_and_a_volume_target_is_replaced() -> None:
    body, _ = create_body(spec(command=("worker", "--fast"), fields=ContainerFields(volumes=("other:/data",))))
    assert body["Cmd"] == ["worker", "--fast"]
    assert body["HostConfig"]["Binds"] == ["other:/data:rw"]
    assert template().config["Cmd"] == ["serve"], "the template itself is never changed"


def test_the_version_is_what_a_replica_is_made_of_not_how_its_image_is_fetched() -> None:
    from dataclasses import replace

    base = spec(template=None, image="registry.local/web:2")
    assert replace(base, pull="always", pull_timeout_seconds=5.0).version == base.version
    resolved = replace(base, image="registry.local/web@sha256:" + "b" * 64, resolved_from=base.version)
    assert resolved.version == base.version, "a start's resolved digest is the same version"
    assert replace(base, env={"A": "1"}).version != base.version
    assert replace(base, image="registry.local/web:3").version != base.version
