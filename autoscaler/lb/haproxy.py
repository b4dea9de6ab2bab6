"""HAProxy's runtime API: add, health-check, drain and delete servers, read stats.

Membership changes only through the runtime API, never by a reload: a reload drops every
dynamically added server. The API is a unix socket that only the daemon can reach (see
deploy/haproxy/haproxy.cfg): one connection per command, about 1 ms each.
"""

from __future__ import annotations

import csv
import io
import socket

from autoscaler.engine.ports import BackendStat, MembershipError, ServerStat
from autoscaler.engine.ports import ServerBusy as PortServerBusy
from autoscaler.instrument import NULL_OBSERVER, CallObserver

__all__ = ["BACKEND", "BackendStat", "HAProxyError", "HAProxyRuntime", "ServerBusy", "ServerStat"]

BACKEND = "replicas"  # the backend name in deploy/haproxy/haproxy.cfg


class HAProxyError(MembershipError):
    def __init__(self, operation: str, message: str) -> None:
        self.operation = operation
        super().__init__(f"haproxy {operation}: {message}")


class ServerBusy(HAProxyError, PortServerBusy):
    """A server cannot be deleted yet: connections are still attached to it."""


def _int(value: str) -> int:
    return int(value) if value not in ("", None) else 0


class HAProxyRuntime:
    def __init__(
        self,
        socket_path: str,
        backend: str = BACKEND,
        timeout_seconds: float = 3.0,
        observer: CallObserver = NULL_OBSERVER,
    ) -> None:
        self.socket_path = socket_path
        self.backend = backend
        self.timeout_seconds = timeout_seconds
        self._observer = observer

    def command(self, line: str, operation: str = "command") -> str:
        with self._observer.call("haproxy", operation):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(self.timeout_seconds)
                    sock.connect(self.socket_path)
                    sock.sendall(line.encode() + b"\n")
                    chunks = []
                    while chunk := sock.recv(65536):
                        chunks.append(chunk)
            except OSError as exc:
                raise HAProxyError(operation, f"runtime API at {self.socket_path}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace").strip()

    def ping(self) -> bool:
        try:
            return "Name: HAProxy" in self.command("show info", "ping")
        except HAProxyError:
            return False

    # --- stats ----------------------------------------------------------------------------

    def _stat_rows(self) -> list[dict[str, str]]:
        text = self.command("show stat -1 6 -1", "show_stat")  # 2 = backends, 4 = servers
        if not text.startswith("# "):
            raise HAProxyError("show_stat", f"unexpected answer: {text[:200]!r}")
        rows = csv.DictReader(io.StringIO(text[2:]))
        return [row for row in rows if row.get("pxname") == self.backend]

    def servers(self) -> dict[str, ServerStat]:
        return self._servers(self._stat_rows())

    def _servers(self, rows: list[dict[str, str]]) -> dict[str, ServerStat]:
        result = {}
        for row in rows:
            if row["svname"] == "BACKEND":
                continue
            rtime = row.get("rtime")
            result[row["svname"]] = ServerStat(
                name=row["svname"],
                address=row.get("addr", ""),
                status=row["status"],
                check_status=row.get("check_status", "").lstrip("* "),
                sessions_current=_int(row["scur"]),
                sessions_total=_int(row["stot"]),
                request_rate=float(_int(row.get("rate", ""))),
                response_time_ms=float(rtime) if rtime and _int(row["stot"]) else None,
                queue_current=_int(row["qcur"]),
                http_5xx_total=_int(row.get("hrsp_5xx", "")),
            )
        return result

    def snapshot(self) -> tuple[BackendStat, dict[str, ServerStat]]:
        rows = self._stat_rows()
        backend = next((r for r in rows if r["svname"] == "BACKEND"), None)
        if backend is None:
            raise HAProxyError("show_stat", f"backend {self.backend!r} not found")
        rtime = backend.get("rtime")
        stat = BackendStat(
            queue_current=_int(backend["qcur"]),
            sessions_current=_int(backend["scur"]),
            request_rate=float(_int(backend.get("rate", ""))),
            response_time_ms=float(rtime) if rtime and _int(backend["stot"]) else None,
        )
        return stat, self._servers(rows)

    # --- membership -----------------------------------------------------------------------

    def _expect(self, operation: str, line: str, ok: tuple[str, ...] = ("",)) -> None:
        answer = self.command(line, operation)
        if answer not in ok:
            raise HAProxyError(operation, f"{line!r} -> {answer!r}")

    def add_server(
        self,
        name: str,
        address: str,
        port: int,
        check_interval_ms: int = 1000,
        transition_interval_ms: int = 100,
        rise: int = 1,
        fall: int = 2,
        idle_connections: int = 256,
    ) -> None:
        """Adds the server in maintenance with an HTTP health check (the backend's httpchk).

        Dynamic servers inherit no default-server settings, so everything is spelled out:
        - checks every check_interval_ms while it serves, every transition_interval_ms while it
          is down or changing state (`downinter`, `fastinter`): a new replica is seen healthy
          within a tenth of a second of answering;
        - one passing check is enough to be UP (`rise 1`, as a Kubernetes readiness probe's
          successThreshold), two failing ones take it down (`fall 2`);
        - keep-alive to the server: HAProxy 2.6 keeps no idle server connection of a dynamic
          server unless both the pool size and its purge delay are set, so without them every
          request opens a new connection (measured: 840 req/s against 14,800 with them).
        """
        self._expect(
            "add_server",
            f"add server {self.backend}/{name} {address}:{port} check inter {check_interval_ms} "
            f"fastinter {transition_interval_ms} downinter {transition_interval_ms} rise {rise} fall {fall} "
            f"pool-max-conn {idle_connections} pool-purge-delay 5s",
            ok=("New server registered.",),
        )

    def enable_health(self, name: str) -> None:
        self._expect("enable_health", f"enable health {self.backend}/{name}")

    def set_ready(self, name: str) -> None:
        self._expect("set_ready", f"set server {self.backend}/{name} state ready")

    def set_drain(self, name: str) -> None:
        self._expect("set_drain", f"set server {self.backend}/{name} state drain")

    def set_health_down(self, name: str) -> None:
        """Out of rotation now, with its checks still running: it comes back by itself once
        they pass again (`state maint` would stop the checks of a server that was serving)."""
        self._expect("set_health_down", f"set server {self.backend}/{name} health down")

    def set_maint(self, name: str) -> None:
        self._expect("set_maint", f"set server {self.backend}/{name} state maint")

    def shutdown_sessions(self, name: str) -> None:
        self._expect("shutdown_sessions", f"shutdown sessions server {self.backend}/{name}")

    def delete_server(self, name: str, force: bool = False) -> None:
        """maint -> delete. A server must be in maintenance with no connections to be deleted.

        While connections remain (requests HAProxy is still retrying elsewhere, idle keep-alive
        connections) the delete is refused with ServerBusy, to be tried again later; force=True
        closes them first (a drain that timed out).
        """
        self.set_maint(name)
        answer = self.command(f"del server {self.backend}/{name}", "del_server")
        if answer == "Server deleted.":
            return
        if "still has" in answer or "connections" in answer:
            if not force:
                raise ServerBusy("del_server", f"{name}: connections still attached")
            self.shutdown_sessions(name)
            answer = self.command(f"del server {self.backend}/{name}", "del_server")
            if answer == "Server deleted.":
                return
        raise HAProxyError("del_server", f"{name}: {answer!r}")
