"""Where settings come from: the TOML file and the ``AUTOSCALER_*`` environment of the current
``load_config`` call, each read by pydantic-settings' standard source with our limits."""

import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, EnvSettingsSource, TomlConfigSettingsSource

from autoscaler.config.values import MAX_CONFIG_BYTES


@dataclass(frozen=True)
class LoadRequest:
    toml_file: Path
    environ: Mapping[str, str]


# settings_customise_sources is a classmethod with no per-call arguments; a context variable
# carries the file and environment of the current load_config() call without a class per file.
LOAD_REQUEST: ContextVar[LoadRequest | None] = ContextVar("autoscaler_config_load_request", default=None)


class EnvSource(EnvSettingsSource):
    """The standard env source, reading an injected mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {(key if self.case_sensitive else key.lower()): value for key, value in self._environ.items()}


class TomlProblem(Exception):
    """The file is TOML only in name: too large, or with values tomllib cannot hold."""


class TomlSource(TomlConfigSettingsSource):
    """The standard TOML source, reading at most MAX_CONFIG_BYTES and failing cleanly."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]
        with open(file_path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise TomlProblem(f"larger than {MAX_CONFIG_BYTES // 1024**2} MiB; no config is that large")
        text = data.decode("utf-8")
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            raise
        except ValueError as exc:
            # int() refuses more than 4300 digits, and tomllib lets that ValueError out as is.
            match = re.search(r"[0-9_]{4300,}", text)
            if match is None:
                raise TomlProblem(f"invalid TOML: {exc}") from None
            line = text.count("\n", 0, match.start()) + 1
            raise TomlProblem(f"invalid TOML: a number with more than 4300 digits (line {line})") from None
        except RecursionError:
            raise TomlProblem("invalid TOML: arrays or inline tables nested too deeply") from None
