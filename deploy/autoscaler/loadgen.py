"""Demo load generator: phases of closed-loop CPU load through the load balancer, with a line
of progress every 2 s (replicas from the daemon's /status, requests sent and failed).

python3 deploy/loadgen.py --lb 127.0.0.1:8088 --status http://127.0.0.1:9465/status --service demo

With --worker-service and --redis it also drives a queue worker (deploy/demo-app/worker.py): a
burst of --jobs unique job ids pushed onto the list at --jobs-at seconds, a second progress line
(the worker's replicas, jobs waiting, in hand and done), and at the end, once the worker is back
at 0 replicas, the check that every job was done exactly once (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any


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


def service_status(status_url: str, service: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(status_url, timeout=3) as r:
            s: dict[str, Any] = json.load(r)["services"][service]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None
    return s


def replicas(status_url: str, service: str) -> str:
    s = service_status(status_url, service)
    if s is None:
        return "daemon not answering"
    return describe_replicas(s)


def describe_replicas(s: dict[str, Any]) -> str:
    counts = s.get("replicas", {})
    decision = s.get("last_decision") or {}
    return (
        f"ready={counts.get('ready', 0)} starting={counts.get('starting', 0)} "
        f"draining={counts.get('draining', 0)} desired={decision.get('desired', '?')}"
    )


class Jobs:
    """The worker's side of the demo: a burst of jobs onto a Redis list, what became of them, and
    the check that each was done exactly once. The worker moves a job to its own processing list
    while it works on it and records it done in one transaction (HINCRBY <list>:done <job> 1,
    INCR <list>:done_count), so a job lost or done twice shows in <list>:done."""

    def __init__(self, url: str, key: str, count: int, push_at_seconds: float) -> None:
        import redis  # only this part of the demo needs it (a dependency of the project)

        self.errors = (redis.exceptions.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
        self.key = key
        self.ids = [f"job-{index:04d}" for index in range(1, count + 1)]
        self.push_at_seconds = push_at_seconds
        self.pushed = False
        self.replicas_seen: list[int] = []
        # What an earlier run left in this queue would spoil the count.
        self.client.delete(key, f"{key}:done", f"{key}:done_count", *self.client.scan_iter(f"{key}:processing:*"))

    def push(self) -> None:
        self.client.lpush(self.key, *self.ids)
        self.pushed = True

    def counts(self) -> tuple[int, int, int]:
        """(waiting, in hand, done)."""
        waiting = int(self.client.llen(self.key))
        in_hand = sum(int(self.client.llen(k)) for k in self.client.scan_iter(f"{self.key}:processing:*"))
        done = int(self.client.get(f"{self.key}:done_count") or 0)
        return waiting, in_hand, done

    def tick(self, elapsed: float, status: dict[str, Any] | None) -> None:
        if not self.pushed and elapsed >= self.push_at_seconds:
            try:
                self.push()
                print(f"jobs:    --- a burst of {len(self.ids)} jobs onto the list {self.key!r} ---", flush=True)
            except self.errors as exc:
                print(f"jobs:    could not push the jobs ({exc}); trying again", flush=True)
        if status is not None:
            ready = int(status.get("replicas", {}).get("ready", 0))
            if not self.replicas_seen or self.replicas_seen[-1] != ready:
                self.replicas_seen.append(ready)
        try:
            waiting, in_hand, done = self.counts()
            queue = f"{waiting} jobs waiting, {in_hand} in hand, {done} of {len(self.ids) if self.pushed else 0} done"
        except self.errors as exc:
            queue = f"redis not answering ({exc})"
        workers = "daemon not answering" if status is None else describe_replicas(status)
        print(f"jobs:    t={elapsed:5.1f}s  {workers}  | {queue}", flush=True)

    def settled(self, status: dict[str, Any] | None) -> bool:
        """Every job done and the worker back at 0 replicas."""
        if status is None or not self.pushed:
            return False
        counts = status.get("replicas", {})
        if any(counts.get(state, 0) for state in ("ready", "starting", "draining")):
            return False
        try:
            waiting, in_hand, done = self.counts()
        except self.errors:
            return False
        return waiting == 0 and in_hand == 0 and done >= len(self.ids)

    def check(self) -> list[str]:
        """What is wrong with the jobs' outcome; empty when each was done exactly once."""
        try:
            recorded = {str(job): int(n) for job, n in self.client.hgetall(f"{self.key}:done").items()}
            waiting, in_hand, done = self.counts()
        except self.errors as exc:
            return [f"cannot read the outcome from Redis ({exc})"]
        pushed = set(self.ids)
        problems = []
        missing = [job for job in self.ids if job not in recorded]
        if missing:
            problems.append(f"{len(missing)} never done: {', '.join(missing[:10])}")
        repeated = [f"{job} ({n} times)" for job, n in sorted(recorded.items()) if job in pushed and n != 1]
        if repeated:
            problems.append(f"{len(repeated)} done more than once: {', '.join(repeated[:10])}")
        unknown = sorted(set(recorded) - pushed)
        if unknown:
            problems.append(f"{len(unknown)} done that were never pushed: {', '.join(unknown[:10])}")
        if done != len(self.ids):
            problems.append(f"done_count is {done}, {len(self.ids)} were pushed")
        if waiting or in_hand:
            problems.append(f"{waiting} still waiting, {in_hand} still in a worker's hand")
        return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lb", default="127.0.0.1:8088")
    parser.add_argument("--status", default="http://127.0.0.1:9465/status")
    parser.add_argument("--service", default="demo")
    parser.add_argument("--heavy-seconds", type=float, default=40)
    parser.add_argument("--settle-seconds", type=float, default=50)
    parser.add_argument("--forever", action="store_true", help="repeat the phases until stopped")
    parser.add_argument("--worker-service", help="the worker service to show next to the web one")
    parser.add_argument("--redis", help="redis://host:port/db of the worker's queue (with --worker-service)")
    parser.add_argument("--job-list", default="jobs", help="the list the worker takes jobs from")
    parser.add_argument("--jobs", type=int, default=80, help="how many jobs the burst pushes")
    parser.add_argument("--jobs-at", type=float, default=26, help="seconds after the start to push them")
    parser.add_argument("--worker-settle-seconds", type=float, default=90,
                        help="after the phases, how long to wait for the worker to finish and go back to 0")
    args = parser.parse_args()
    if (args.worker_service is None) != (args.redis is None):
        parser.error("--worker-service and --redis go together")
    if args.worker_service is not None and args.forever:
        parser.error("the worker's burst is pushed once: not with --forever")

    jobs = None if args.redis is None else Jobs(args.redis, args.job_list, args.jobs, args.jobs_at)
    load = Load(args.lb)
    threads = [threading.Thread(target=load.worker, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    phases = [("idle", 0, 6.0), ("heavy: 4 clients burning CPU", 4, args.heavy_seconds),
              ("idle again", 0, args.settle_seconds)]
    started = time.monotonic()
    try:
        while True:
            run_phases(load, phases, started, args, jobs)
            if not args.forever:
                break
        jobs_ok = True if jobs is None else finish_jobs(jobs, started, args)
    except KeyboardInterrupt:
        print("loadgen: interrupted", flush=True)
        return 130
    load.stop.set()
    for t in threads:
        t.join(30)
    print(f"loadgen: done: {load.sent} requests sent, {load.failed} failed", flush=True)
    return 0 if load.failed == 0 and jobs_ok else 1


def finish_jobs(jobs: Jobs, started: float, args: argparse.Namespace) -> bool:
    """Waits for the worker to finish the jobs and go back to 0 replicas, then checks them."""
    deadline = time.monotonic() + args.worker_settle_seconds
    status = service_status(args.status, args.worker_service)
    if not jobs.settled(status):
        print(f"jobs:    --- waiting up to {args.worker_settle_seconds:.0f}s for the worker to finish and go to 0 ---",
              flush=True)
    while not jobs.settled(status) and time.monotonic() < deadline:
        time.sleep(2)
        status = service_status(args.status, args.worker_service)
        jobs.tick(time.monotonic() - started, status)
    seen = " -> ".join(str(n) for n in jobs.replicas_seen)
    print(f"jobs:    {args.worker_service} ready replicas seen: {seen}", flush=True)
    ok = True
    if not jobs.settled(status):
        print(f"jobs:    FAILED: the worker did not finish and go back to 0 within {args.worker_settle_seconds:.0f}s",
              flush=True)
        ok = False
    problems = jobs.check()
    if problems:
        print(f"jobs:    FAILED: {'; '.join(problems)}", flush=True)
        return False
    print(f"jobs:    every one of the {len(jobs.ids)} jobs was done exactly once", flush=True)
    return ok


def run_phases(
    load: Load, phases: list[tuple[str, int, float]], started: float, args: argparse.Namespace, jobs: Jobs | None
) -> None:
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
            if jobs is not None:
                jobs.tick(time.monotonic() - started, service_status(args.status, args.worker_service))


if __name__ == "__main__":
    sys.exit(main())
