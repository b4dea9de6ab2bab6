"""Redis, the one place the daemon talks to it: the length of a list (jobs waiting), or the
pending entries of a stream's consumer group (delivered and not yet acknowledged, as KEDA's
redis-streams scaler counts them), as an external metric (ExternalSource).

One client per metric, with its own connection pool: it reconnects by itself after an outage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
import redis.exceptions

from autoscaler.config import RedisQueue
from autoscaler.engine.ports import SourceError
from autoscaler.sources.prometheus import read_secret, short


def _password(path: Path | None, where: str) -> str | None:
    if path is None:
        return None
    try:
        return read_secret(path, "password")
    except SourceError as exc:
        raise SourceError(f"{where}: {exc}") from exc


class RedisMetric:
    """Reads one Redis key: LLEN of a list, or XPENDING's count for a stream's group."""

    def __init__(self, name: str, config: RedisQueue) -> None:
        self._config = config
        kind = "list" if config.list is not None else f"stream (group {config.consumer_group!r})"
        self._where = f"metric {name}: redis {kind} {short(config.key)!r} at {config.url}"
        self._client: redis.Redis | None = None

    def _connect(self) -> redis.Redis:
        if self._client is None:
            config = self._config
            self._client = redis.Redis.from_url(
                config.url,
                username=config.username,
                password=_password(config.password_file, self._where),
                socket_timeout=config.timeout_seconds,
                socket_connect_timeout=config.timeout_seconds,
                # One try: a failed read is this cycle's answer; the next cycle tries again.
                retry_on_timeout=False,
                decode_responses=True,
            )
        return self._client

    def read(self) -> float:
        config = self._config
        try:
            client = self._connect()
            if config.list is not None:
                length: Any = client.llen(config.list)
                return float(length)
            pending: Any = client.xpending(config.key, config.consumer_group or "")
            return float(pending["pending"])
        except redis.exceptions.ResponseError as exc:
            raise SourceError(f"{self._where}: {self._explain(exc)}") from exc
        except redis.exceptions.AuthenticationError as exc:
            raise SourceError(f"{self._where}: authentication failed ({short(str(exc))})") from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            self.close()  # a fresh pool next time, with the password file read again
            raise SourceError(f"{self._where}: cannot reach Redis ({short(str(exc)) or type(exc).__name__})") from exc
        except redis.exceptions.RedisError as exc:
            raise SourceError(f"{self._where}: {short(str(exc)) or type(exc).__name__}") from exc

    def _explain(self, exc: redis.exceptions.ResponseError) -> str:
        text = str(exc)
        if text.startswith("WRONGTYPE"):
            expected = "list" if self._config.list is not None else "stream"
            try:
                # decode_responses: a str, such as "hash" or "string".
                actual: Any = self._connect().type(self._config.key)
            except redis.exceptions.RedisError:
                actual = "another type"
            return f"the key holds a {actual!s}, not a {expected}"
        if text.startswith("NOGROUP"):
            return (f"no consumer group {self._config.consumer_group!r} on the stream "
                    "(or no such stream): create it with XGROUP CREATE ... MKSTREAM")
        if text.startswith("NOAUTH") or text.startswith("WRONGPASS"):
            return f"authentication failed ({short(text)})"
        return short(text)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except redis.exceptions.RedisError:
                pass
