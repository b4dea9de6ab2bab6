"""The whole configuration (``Settings``) and ``load_config``, which reads it and turns every
validation error into one ``"<dotted.path>: <problem>"`` line.

Precedence, highest first: keyword overrides > environment > TOML file > model defaults.
Environment variables use the prefix ``AUTOSCALER_`` and ``__`` between nesting levels, e.g.
``AUTOSCALER_SERVICES__WEB__MAX_REPLICAS=3``; they are deep-merged into the file, so one
variable changes one key and leaves the rest of the service table alone.
"""

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from autoscaler.config.daemon import DaemonConfig
from autoscaler.config.service import ServiceConfig
from autoscaler.config.sources import (
    LOAD_REQUEST,
    EnvSource,
    LoadRequest,
    TomlProblem,
    TomlSource,
)
from autoscaler.config.values import Loc, raise_problems, refuse_boolean, shown


class ConfigError(Exception):
    """The configuration cannot be used; ``messages`` holds one ``"<dotted.path>: <problem>"`` each."""

    def __init__(self, messages: list[str] | str) -> None:
        self.messages: list[str] = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("\n".join(self.messages))


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

    # As on ConfigModel: BaseSettings is not one, so the rule is repeated for fields added here.
    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_boolean(cls, value, info)

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
        request = LOAD_REQUEST.get()
        if request is None:
            return (init_settings, env_settings)
        return (
            init_settings,
            EnvSource(settings_cls, request.environ),
            TomlSource(settings_cls, toml_file=request.toml_file),
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
            if service.load_balancer is None:
                continue  # a worker listens nowhere
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
        raise_problems(problems)
        return self

    def network_for(self, name: str) -> str:
        """The Docker network of service ``name``: its ``network``, else ``autoscaler-<name>``
        (a load balancer reaches its replicas by name there) or, for a worker, Docker's
        default ``bridge`` (nothing needs to reach a worker)."""
        service = self.services[name]
        if service.network:
            return service.network
        return "bridge" if service.is_worker and service.backend != "swarm" else f"autoscaler-{name}"


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
        limit_text = f"{limit:g}" if isinstance(limit, float) else str(limit)  # "> 0", not "> 0.0"
        return f"must be {symbol} {limit_text} (got {shown(error['input'])})"
    if kind == "int_parsing_size":
        # pydantic's own words ("Unable to parse input string...") say nothing of a float input.
        return f"far too large a number (got {shown(error['input'])})"
    if kind == "finite_number":
        return f"must be a finite number (got {shown(error['input'])})"
    if kind == "literal_error":
        return f"must be {ctx['expected']} (got {shown(error['input'])})"
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
    token = LOAD_REQUEST.set(LoadRequest(toml_file, os.environ if environ is None else environ))
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except TomlProblem as exc:
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
        LOAD_REQUEST.reset(token)
