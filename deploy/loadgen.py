"""Demo load generator: phases of closed-loop CPU load through the load balancer, with a line
of progress every 2 s (replicas from the daemon's /status, requests sent and failed).

python3 deploy/loadgen.py --lb 127.0.0.1:8088 --status http://127.0.0.1:9465/status --service demo
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request


class Load:
    def __init__(self, lb: str) -> None:
        self.lb = lb
        self.lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.hosts: set[str] = set()
        self.workers = 0
        self.stop = threading.Event()

    def worker(self, index: int) -> None:
        # Workers below `self.workers` send CPU-heavy requests back to back; while idle,
        # worker 0 keeps a trickle of light requests going so failures would still show.
        while not self.stop.is_set():
            heavy = index < self.workers
            if not heavy and index != 0:
                self.stop.wait(0.1)
                continue
            self.request(20 if heavy else 1)
            if not heavy:
                self.stop.wait(0.2)

    def request(self, cpu_ms: int) -> None:
        try:
            with urllib.request.urlopen(f"http://{self.lb}/work?cpu_ms={cpu_ms}", timeout=30) as r:
                host = json.load(r)["hostname"]
        except (urllib.error.URLError, OSError, ValueError):
            with self.lock:
                self.sent += 1
                self.failed += 1
            return
        with self.lock:
            self.sent += 1
            self.hosts.add(host)


def replicas(status_url: str, service: str) -> str:
    try:
        with urllib.request.urlopen(status_url, timeout=3) as r:
            s = json.load(r)["services"][service]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return "daemon not answering"
    counts = s.get("replicas", {})
    decision = s.get("last_decision") or {}
    return (
        f"ready={counts.get('ready', 0)} starting={counts.get('starting', 0)} "
        f"draining={counts.get('draining', 0)} desired={decision.get('desired', '?')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lb", default="127.0.0.1:8088")
    parser.add_argument("--status", default="http://127.0.0.1:9465/status")
    parser.add_argument("--service", default="demo")
    parser.add_argument("--heavy-seconds", type=float, default=40)
    parser.add_argument("--settle-seconds", type=float, default=50)
    parser.add_argument("--forever", action="store_true", help="repeat the phases until stopped")
    args = parser.parse_args()

    load = Load(args.lb)
    threads = [threading.Thread(target=load.worker, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    phases = [("idle", 0, 6.0), ("heavy: 4 clients burning CPU", 4, args.heavy_seconds),
              ("idle again", 0, args.settle_seconds)]
    started = time.monotonic()
    while True:
        run_phases(load, phases, started, args)
        if not args.forever:
            break
    load.stop.set()
    for t in threads:
        t.join(30)
    print(f"loadgen: done: {load.sent} requests sent, {load.failed} failed", flush=True)
    return 0 if load.failed == 0 else 1


def run_phases(load: Load, phases: list[tuple[str, int, float]], started: float, args: argparse.Namespace) -> None:
    for name, workers, seconds in phases:
        print(f"loadgen: --- {name} for {seconds:.0f}s ---", flush=True)
        load.workers = workers
        with load.lock:
            load.hosts.clear()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(2)
            with load.lock:
                served = len(load.hosts)
            print(
                f"loadgen: t={time.monotonic() - started:5.1f}s  {replicas(args.status, args.service)}  "
                f"| {load.sent} requests, {load.failed} failed, answered by {served} replica(s) in this phase",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
