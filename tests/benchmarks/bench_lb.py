"""Benchmark: what the load balancer costs. wrk (Debian's) against one demo-app replica (1 core)
directly and through its HAProxy load balancer, with keep-alive and with `Connection: close`,
side by side in one run on the same replica; prints requests/s, p99 latency, failures and the
ratios (LB / direct). Goals (issue "Fast at 200 replicas"): throughput >= 0.8x direct and p99
<= 2x direct, no timeouts.

Two paths: /work?cpu_ms=1 (each request does 1 ms of CPU work in the replica, as a service does)
and /healthz (no work at all: pure proxying; on a 2-core machine wrk, HAProxy and the replica
then share the cores, and the figures follow how fast one Python replica answers that day).

"failed" counts timeouts, connect and write errors and non-2xx answers. wrk also counts a
server's close after `Connection: close` as a read error; those requests were answered, so they
are shown apart ("closes").

    .venv/bin/python tests/benchmarks/bench_lb.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import time
import uuid

import docker

from autoscaler.docker.backend import DockerBackend
from autoscaler.engine.ports import LoadBalancerSpec, ReplicaSpec
from autoscaler.lb.haproxy import HAProxyRuntime
from benchkit import remove_all

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, seconds: int, connections: int, close: bool) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s", url]
    if close:
        command[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"\s99%\s+([0-9.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    connect, read, write, timeout = (int(g) for g in errors.groups()) if errors else (0, 0, 0, 0)
    return {
        "rps": rps,
        "p99": float(value) * UNITS[unit],
        "timeouts": float(timeout),
        "failed": float(connect + write + timeout + (int(non2xx.group(1)) if non2xx else 0)),
        "closes": float(read),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    client = docker.from_env()
    service = f"benchlb{uuid.uuid4().hex[:6]}"
    network = f"autoscaler-{service}"
    backend = DockerBackend(client)
    try:
        backend.networks.ensure_network(service, network)
        port = free_port()
        lb, _ = backend.load_balancers.ensure_load_balancer(
            LoadBalancerSpec(service, "autoscaler-haproxy:latest", network, "127.0.0.1", port, "/healthz"))
        runtime = HAProxyRuntime(lb.admin_socket)
        while not runtime.ping():
            time.sleep(0.1)
        replica = backend.containers.start_replica(
            ReplicaSpec(service, "autoscaler-demo-app:latest", 8000, network, 1.0, 256 * 1024 * 1024),
            backend.containers.new_replica_name(service))
        runtime.add_server(replica.name, replica.ip, 8000)  # type: ignore[arg-type]
        runtime.enable_health(replica.name)
        while not runtime.servers()[replica.name].check_passed:
            time.sleep(0.1)
        runtime.set_ready(replica.name)
        print(f"wrk -t2 -c{args.connections} -d{args.seconds}s, one replica (1 core), one run each")
        print("via: direct = the replica's address; LB = the published port (what clients use); "
              "LB-ip = the load balancer's own address")
        print(f"{'path':<15} {'mode':<18} {'via':<7} {'req/s':>8} {'p99':>9} {'timeouts':>8} {'failed':>6} {'closes':>7}"
              "  LB / direct")
        for path in ("/work?cpu_ms=1", "/healthz"):
            direct_url = f"http://{replica.ip}:8000{path}"
            lb_url = f"http://127.0.0.1:{port}{path}"
            lb_ip = client.api.inspect_container(lb.id)["NetworkSettings"]["Networks"][network]["IPAddress"]
            lb_direct_url = f"http://{lb_ip}:8080{path}"
            wrk(direct_url, 2, args.connections, False)  # warm-up
            for close in (False, True):
                mode = "Connection: close" if close else "keep-alive"
                direct = wrk(direct_url, args.seconds, args.connections, close)
                through = wrk(lb_url, args.seconds, args.connections, close)
                # The same load balancer at its own address: without docker-proxy, which carries
                # every new connection to a port published on loopback.
                unproxied = wrk(lb_direct_url, args.seconds, args.connections, close)
                for name, r in (("direct", direct), ("LB", through), ("LB-ip", unproxied)):
                    print(f"{path:<15} {mode:<18} {name:<7} {r['rps']:>8.0f} {r['p99'] * 1000:>7.1f}ms "
                          f"{r['timeouts']:>8.0f} {r['failed']:>6.0f} {r['closes']:>7.0f}", end="")
                    print(f"  throughput {r['rps'] / direct['rps']:.2f}x, p99 {r['p99'] / direct['p99']:.2f}x"
                          if name != "direct" else "")
        stats = {row.split(",")[1]: row.split(",") for row in runtime.command("show stat -1 4 -1").splitlines()[1:]}
        header = runtime.command("show stat -1 4 -1").splitlines()[0][2:].split(",")
        row = dict(zip(header, stats[replica.name]))
        print(f"HAProxy to the replica: {row.get('connect')} connections opened, {row.get('reuse')} reused, "
              f"{row.get('stot')} sessions")
    finally:
        remove_all(client, service)


if __name__ == "__main__":
    main()
