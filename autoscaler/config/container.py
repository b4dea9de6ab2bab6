"""What a replica container is made from, beyond image, command, env and limits: a template
(a container the user already runs, by name or as a compose service) or the common fields of
compose's service grammar, under their compose names.

Only validation here; the Docker structures are built in autoscaler/docker/template.py.
"""

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from autoscaler.config.values import DOCKER_NAME_RE, ConfigModel, Loc, raise_problems, shown

# Compose's project names: lower case letters, digits, dashes and underscores.
_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]*", re.ASCII)
_ENV_NAME_RE = re.compile(r"[^=\0\s][^=\0]*")
_SIGNAL_RE = re.compile(r"(SIG)?[A-Z][A-Z0-9+-]*|[0-9]{1,2}", re.ASCII)
_CAPABILITY_RE = re.compile(r"(CAP_)?[A-Z_]+|ALL", re.ASCII)
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", re.ASCII)

Name = Annotated[str, Field(min_length=1, max_length=255)]


class TemplateConfig(ConfigModel):
    """Replicas made from what the user already runs: `container` (a name or id, for `docker
    run` users), or `compose_project` with `compose_service` (as `docker compose` labels its
    containers). Re-read at start and on SIGHUP."""

    container: Name | None = None
    compose_project: Name | None = None
    compose_service: Name | None = None

    @model_validator(mode="after")
    def _check_source(self) -> "TemplateConfig":
        problems: list[tuple[Loc, str]] = []
        compose = self.compose_project is not None or self.compose_service is not None
        if (self.container is not None) == compose:
            problems.append(((), "name either container (a name or id) or compose_project with compose_service"))
        elif compose and (self.compose_project is None or self.compose_service is None):
            missing = "compose_project" if self.compose_project is None else "compose_service"
            problems.append(((missing,), "a compose service is named by its project and its service"))
        if self.compose_project is not None and not _PROJECT_RE.fullmatch(self.compose_project):
            problems.append((("compose_project",), f"{shown(self.compose_project)} is not a compose project name "
                             "(lower case letters, digits, '-' and '_')"))
        if self.container is not None and not DOCKER_NAME_RE.fullmatch(self.container):
            problems.append((("container",), f"{shown(self.container)} is not a container name or id"))
        raise_problems(problems)
        return self

    def describe(self) -> str:
        if self.container is not None:
            return f"container {self.container!r}"
        return f"compose service {self.compose_service!r} of project {self.compose_project!r}"


class NetworkAttachment(ConfigModel):
    """compose's `networks: {name: {aliases: [...]}}`."""

    aliases: list[Annotated[str, Field(min_length=1, max_length=253)]] = []


class LoggingConfig(ConfigModel):
    """compose's `logging: {driver, options}`."""

    driver: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.-]+$")]
    options: dict[str, str] = {}


def parse_volume(text: str) -> tuple[str | None, str, str]:
    """compose's short volume syntax: `[source:]target[:mode]` -> (source or None for an
    anonymous volume, target, mode). The source is an absolute host path (a bind) or a volume
    name; mode is "rw" or "ro" (with z/Z for SELinux)."""
    parts = text.split(":")
    if len(parts) == 1:
        source, target, mode = None, parts[0], "rw"
    elif len(parts) == 2:
        if parts[1] in ("ro", "rw") or not parts[1].startswith("/"):
            raise ValueError(f"{shown(text)}: write source:target[:ro|rw] (target an absolute path in the container)")
        source, target, mode = parts[0], parts[1], "rw"
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise ValueError(f"{shown(text)}: write source:target[:ro|rw]")
    if not target.startswith("/"):
        raise ValueError(f"{shown(text)}: the target {target!r} must be an absolute path in the container")
    if source is not None:
        if source.startswith("."):
            raise ValueError(f"{shown(text)}: a relative host path depends on where the daemon runs: use an absolute path")
        if not source.startswith("/") and not DOCKER_NAME_RE.fullmatch(source):
            raise ValueError(f"{shown(text)}: {source!r} is neither an absolute host path nor a volume name")
    if not set(mode.split(",")) <= {"ro", "rw", "z", "Z", "nocopy"}:
        raise ValueError(f"{shown(text)}: unknown mode {mode!r} (ro, rw, z, Z, nocopy)")
    return source, target, mode


def read_env_file(path: Path) -> dict[str, str]:
    """compose's env_file: KEY=VALUE lines; blank lines and lines starting with # are skipped;
    a bare KEY is not supported (it would copy the daemon's own environment into the replicas)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{str(path)!r} cannot be read ({exc.strerror or exc})") from None
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = stripped.partition("=")
        if not equals or not _ENV_NAME_RE.fullmatch(name.strip()):
            raise ValueError(f"{str(path)!r} line {number}: expected NAME=value")
        if "\0" in value:
            raise ValueError(f"{str(path)!r} line {number}: a NUL character")
        env[name.strip()] = value
    return env


class ContainerFields(ConfigModel):
    """The common fields of compose's service grammar, under compose's names, for replicas
    described in the TOML. They also override a template's values."""

    volumes: list[Annotated[str, Field(min_length=1, max_length=4096)]] = []
    # Extra networks (the service's own `network` is always joined): a list, or compose's map
    # with aliases.
    networks: list[Name] | dict[str, NetworkAttachment] = []
    labels: dict[str, str] = {}
    user: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$")] | None = None
    env_file: list[Path] = []
    read_only: bool = False
    tmpfs: list[Annotated[str, Field(min_length=1, max_length=1024)]] = []
    cap_add: list[str] = []
    cap_drop: list[str] = []
    extra_hosts: list[str] = []
    stop_signal: str | None = None
    logging: LoggingConfig | None = None

    @field_validator("volumes")
    @classmethod
    def _check_volumes(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_volume(text)
        return value

    @field_validator("networks")
    @classmethod
    def _check_networks(cls, value: list[str] | dict[str, NetworkAttachment]) -> list[str] | dict[str, NetworkAttachment]:
        names = list(value)
        bad = [n for n in names if not DOCKER_NAME_RE.fullmatch(n) or n.lower() in ("host", "none", "default")]
        if bad:
            raise ValueError(f"{shown(bad)}: not network names a replica can join (host, none and default cannot be added)")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        ours = [k for k in value if k.startswith("autoscaler.") or k.startswith("com.docker.compose.")]
        if ours:
            raise ValueError(f"{shown(ours)}: autoscaler.* labels are the daemon's own and com.docker.compose.* "
                             "compose's; a replica must carry neither from the config")
        return value

    @field_validator("env_file")
    @classmethod
    def _check_env_files(cls, value: list[Path]) -> list[Path]:
        for path in value:
            read_env_file(path)
        return value

    @field_validator("tmpfs")
    @classmethod
    def _check_tmpfs(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not t.split(":", 1)[0].startswith("/")]
        if bad:
            raise ValueError(f"{shown(bad)}: each is an absolute path in the container, optionally :options")
        return value

    @field_validator("cap_add", "cap_drop")
    @classmethod
    def _check_caps(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if not _CAPABILITY_RE.fullmatch(c)]
        if bad:
            raise ValueError(f"{shown(bad)}: capability names such as NET_ADMIN or CAP_SYS_TIME (or ALL)")
        return value

    @field_validator("extra_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, sep, address = entry.replace("=", ":", 1).partition(":")
            if not sep or not _HOST_RE.fullmatch(host) or not address:
                raise ValueError(f"{shown(entry)}: write host:ip, e.g. 'db.internal:10.0.0.5'")
        return value

    @field_validator("stop_signal")
    @classmethod
    def _check_signal(cls, value: str | None) -> str | None:
        if value is not None and not _SIGNAL_RE.fullmatch(value):
            raise ValueError(f"{shown(value)} is not a signal (e.g. SIGTERM, SIGQUIT, SIGINT or a number)")
        return value

    def compose_fields_set(self) -> list[str]:
        return [name for name in ContainerFields.model_fields if name in self.model_fields_set]

    def network_aliases(self) -> dict[str, tuple[str, ...]]:
        if isinstance(self.networks, dict):
            return {name: tuple(attachment.aliases) for name, attachment in self.networks.items()}
        return {name: () for name in self.networks}

    def file_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for path in self.env_file:
            env.update(read_env_file(path))
        return env
