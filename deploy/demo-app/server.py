"""Demo service for the autoscaler: a stdlib HTTP server whose /work burns CPU on request.

GET /healthz          -> {"status": "ok", "hostname": ...}
GET /work?cpu_ms=N    -> burns about N ms of CPU time, then {"hostname": ..., "cpu_ms": N}
GET /alloc?mb=N       -> holds N MiB for the request's duration (memory-target demos, OOM tests)
Every response is JSON with the container's hostname, so clients can see which replica served.
"""

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HOSTNAME = socket.gethostname()
# Set on SIGTERM: finish what is in flight, take nothing new, close idle connections.
STOPPING = threading.Event()
CONNECTIONS: set["Handler"] = set()
CONNECTIONS_LOCK = threading.Lock()
MAX_CPU_MS = 10_000
MAX_ALLOC_MB = 4096


def burn_cpu(cpu_ms: float) -> None:
    # Measured in process CPU time, not wall time, so a CPU-throttled replica still does
    # the same amount of work per request and its utilisation rises, as a real service's would.
    deadline = time.process_time() + cpu_ms / 1000.0
    x = 0
    while time.process_time() < deadline:
        for i in range(2000):
            x += i * i


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1: connections stay open between requests (the load balancer reuses them).
    protocol_version = "HTTP/1.1"
    server_version = "autoscaler-demo/1"
    # One write per response: headers and body leave in one packet. Unbuffered, the body would
    # wait for the ACK of the headers (Nagle), which the client delays by up to 40 ms.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    timeout = 60  # an idle keep-alive connection is closed after a minute

    def setup(self) -> None:
        super().setup()
        self.busy = False
        with CONNECTIONS_LOCK:
            CONNECTIONS.add(self)

    def finish(self) -> None:
        with CONNECTIONS_LOCK:
            CONNECTIONS.discard(self)
        super().finish()

    def _reply(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self.busy = True
        try:
            self._get()
        finally:
            self.busy = False
            if STOPPING.is_set():
                self.close_connection = True  # answered; no further request on this one

    def _get(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            self._reply(200, {"status": "ok", "hostname": HOSTNAME})
            return
        if url.path == "/work":
            try:
                cpu_ms = float(parse_qs(url.query).get("cpu_ms", ["0"])[0])
            except ValueError:
                self._reply(400, {"error": "cpu_ms must be a number", "hostname": HOSTNAME})
                return
            cpu_ms = max(0.0, min(cpu_ms, MAX_CPU_MS))
            burn_cpu(cpu_ms)
            self._reply(200, {"hostname": HOSTNAME, "cpu_ms": cpu_ms})
            return
        if url.path == "/alloc":
            try:
                mb = int(parse_qs(url.query).get("mb", ["0"])[0])
            except ValueError:
                self._reply(400, {"error": "mb must be an integer", "hostname": HOSTNAME})
                return
            mb = max(0, min(mb, MAX_ALLOC_MB))
            # Touch every page, so the memory is really used (and counted by the cgroup).
            block = bytearray(mb * 1024 * 1024)
            for offset in range(0, len(block), 4096):
                block[offset] = 1
            self._reply(200, {"hostname": HOSTNAME, "allocated_mb": mb})
            return
        if url.path == "/":
            self._reply(200, {"hostname": HOSTNAME, "endpoints": ["/healthz", "/work?cpu_ms=N", "/alloc?mb=N"]})
            return
        self._reply(404, {"error": "not found", "hostname": HOSTNAME})

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the container log


class Server(ThreadingHTTPServer):
    # The stdlib's default listen backlog is 5: a burst of new connections overflows it and
    # each overflowing client waits a second for its SYN to be retried.
    request_queue_size = 1024
    # On stop, server_close() waits for the requests in flight instead of cutting them off.
    daemon_threads = False
    block_on_close = True


def close_idle_connections() -> None:
    """While stopping, keeps closing the connections that wait for a next request, including
    any accepted after the signal: their threads see the end of input and end."""
    while True:
        with CONNECTIONS_LOCK:
            idle = [handler for handler in CONNECTIONS if not handler.busy]
        for handler in idle:
            try:
                handler.connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        time.sleep(0.2)


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    # One thread per connection share one interpreter lock; by default a thread that wants it
    # waits up to 5 ms for a thread burning CPU in /work. With 16 busy connections a 1 ms
    # request then waited 15 x 5 ms (p99 75-85 ms). Handing the lock over every 0.5 ms shares
    # the CPU in small slices, as a service with a pool of workers would.
    sys.setswitchinterval(0.0005)
    server = Server(("0.0.0.0", port), Handler)

    def stop(signum: int, frame: object) -> None:
        # No new connections (the accept loop ends), requests in flight finish (server_close
        # joins their threads), and idle keep-alive connections are closed now: their threads
        # wait in readline() and see the end of input.
        STOPPING.set()
        threading.Thread(target=server.shutdown, daemon=True).start()
        threading.Thread(target=close_idle_connections, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"demo app {HOSTNAME} listening on :{port}", file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main()
