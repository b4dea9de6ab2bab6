"""Prometheus's HTTP API, the one place the daemon talks to it: instant PromQL queries, with
basic auth or a bearer token read from a file at each query (so a rotated token is picked up).

`PrometheusAPI.query` is used by the Swarm tasks' CPU and memory source (swarm/sources.py) and
by `PrometheusMetric`, an external metric: any query whose result is one number (a vector of
one series, or a scalar).
"""

from __future__ import annotations

import base64
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from autoscaler.config import PrometheusQuery
from autoscaler.engine.ports import SourceError

# A query's answer for one number is a few hundred bytes; a vector of tasks a few per task.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# How long an error from Prometheus may be quoted in a message.
MAX_QUOTED_CHARS = 200


def short(text: str) -> str:
    """One line of at most MAX_QUOTED_CHARS, for a log message."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_QUOTED_CHARS else line[: MAX_QUOTED_CHARS - 3] + "..."


def reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return short(str(exc.reason))
    if isinstance(exc, TimeoutError):
        return "timed out"
    return short(str(exc) or type(exc).__name__)


def _prometheus_error(exc: urllib.error.HTTPError) -> str:
    """Prometheus explains a bad query in the body of its 400/422."""
    try:
        document = json.loads(exc.read(MAX_RESPONSE_BYTES))
        return f": {short(str(document['error']))}"
    except Exception:  # a body that says nothing useful is simply not quoted
        return ""


def read_secret(path: Path, what: str) -> str:
    """A credential from its file, read at each use (a rotated one is picked up)."""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SourceError(f"cannot read the {what} file {str(path)!r} ({exc.strerror or exc})") from exc


class PrometheusAPI:
    """Instant queries against one Prometheus (`/api/v1/query`)."""

    def __init__(
        self,
        url: str,
        timeout_seconds: float,
        bearer_token_file: Path | None = None,
        username: str | None = None,
        password_file: Path | None = None,
    ) -> None:
        self.url = url
        self._endpoint = url.rstrip("/") + "/api/v1/query"
        self._timeout_seconds = timeout_seconds
        self._bearer_token_file = bearer_token_file
        self._username = username
        self._password_file = password_file
        # Prometheus is reached where the config says, not through an HTTP(S)_PROXY meant for
        # the outside world.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _headers(self) -> dict[str, str]:
        if self._bearer_token_file is not None:
            return {"Authorization": f"Bearer {read_secret(self._bearer_token_file, 'bearer token')}"}
        if self._username is not None and self._password_file is not None:
            password = read_secret(self._password_file, "password")
            token = base64.b64encode(f"{self._username}:{password}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        return {}

    def query(self, query: str, where: str) -> dict[str, Any]:
        """The `data` of a successful instant query. Raises SourceError, one line that starts
        with `where`, for anything else."""
        try:
            headers = self._headers()
        except SourceError as exc:
            raise SourceError(f"{where}: {exc}") from exc
        request = urllib.request.Request(f"{self._endpoint}?{urllib.parse.urlencode({'query': query})}", headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout_seconds) as response:
                document = json.loads(response.read(MAX_RESPONSE_BYTES))
        except urllib.error.HTTPError as exc:
            raise SourceError(f"{where}: {reason(exc)}{_prometheus_error(exc)}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"{where}: cannot reach {self.url} ({reason(exc)})") from exc
        except ValueError as exc:  # JSON and Unicode errors
            raise SourceError(f"{where}: the answer is not JSON ({short(str(exc))})") from exc
        if not isinstance(document, dict):
            raise SourceError(f"{where}: the answer is not a Prometheus API document")
        if document.get("status") != "success":
            error = document.get("error") or document.get("status")
            raise SourceError(f"{where}: {short(str(error))}")
        data = document.get("data")
        if not isinstance(data, dict):
            raise SourceError(f"{where}: the answer has no data")
        return data


def one_number(where: str, data: dict[str, Any]) -> float:
    """The number of an instant query's result: a scalar, or a vector of exactly one series."""
    result_type = data.get("resultType")
    result = data.get("result")
    try:
        if result_type == "scalar":
            text = result[1]  # type: ignore[index]
        elif result_type == "vector":
            if not isinstance(result, list):
                raise SourceError(f"{where}: the result is not a list of series")
            if not result:
                raise SourceError(f"{where}: no data (the query matched no series)")
            if len(result) > 1:
                labels = ", ".join(short(json.dumps(item.get("metric") or {}, sort_keys=True)) for item in result[:3])
                raise SourceError(
                    f"{where}: {len(result)} series ({labels}{', ...' if len(result) > 3 else ''}), expected one: "
                    "aggregate them in the query, e.g. sum(...)"
                )
            text = result[0]["value"][1]
        elif result_type == "string":
            raise SourceError(f"{where}: returned a string ({short(str(result))!r}), not a number")
        else:
            raise SourceError(f"{where}: returned a {result_type or 'missing'} result, not a number "
                              "(a range vector? use an instant query)")
        value = float(text)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise SourceError(f"{where}: the result is not [timestamp, value] ({short(repr(exc))})") from exc
    if not math.isfinite(value):
        raise SourceError(f"{where}: the value is {text} (no number to scale on)")
    return value


class PrometheusMetric:
    """An external metric from one PromQL query (ExternalSource)."""

    def __init__(self, name: str, config: PrometheusQuery) -> None:
        self._where = f"metric {name}: prometheus query {short(config.query)!r}"
        self._query = config.query
        self._api = PrometheusAPI(config.url, config.timeout_seconds, config.bearer_token_file,
                                  config.username, config.password_file)

    def read(self) -> float:
        return one_number(self._where, self._api.query(self._query, self._where))

    def close(self) -> None:
        pass
