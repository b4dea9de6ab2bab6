"""Demo worker for the autoscaler: takes jobs from a Redis list, spends CPU on each, and on
SIGTERM finishes the job in hand before it exits (so a scale-in loses no job).

Environment:
  REDIS_URL       redis://host:port/db of the queue (required)
  JOB_LIST        the list producers LPUSH job ids onto (default "jobs")
  JOB_CPU_MS      CPU time spent on each job, in ms (default 500)

Each job moves atomically (BLMOVE) from JOB_LIST to this worker's own processing list, and is
recorded done in one transaction that removes it from there: HINCRBY <JOB_LIST>:done <job> 1
(so a test can see that every job was done exactly once) and INCR <JOB_LIST>:done_count; a job
that was in hand when SIGTERM came also counts in <JOB_LIST>:finished_after_stop_signal.
How a worker should handle SIGTERM: stop taking new work, finish (or hand back) what it holds,
exit; the autoscaler waits the service's stop_timeout_seconds before it kills.
"""

import os
import signal
import socket
import sys
import time

import redis

HOSTNAME = socket.gethostname()
STOPPING = False


def on_sigterm(signum: int, frame: object) -> None:
    global STOPPING
    STOPPING = True  # checked between jobs: the job in hand is finished first


def burn_cpu(cpu_ms: float) -> None:
    deadline = time.process_time() + cpu_ms / 1000.0
    x = 0
    while time.process_time() < deadline:
        for i in range(2000):
            x += i * i


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    url = os.environ.get("REDIS_URL")
    if not url:
        print("worker: REDIS_URL is not set", file=sys.stderr)
        return 2
    jobs = os.environ.get("JOB_LIST", "jobs")
    cpu_ms = float(os.environ.get("JOB_CPU_MS", "500"))
    processing = f"{jobs}:processing:{HOSTNAME}"
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    done = 0
    print(f"worker {HOSTNAME}: taking jobs from {jobs!r}", flush=True)
    while not STOPPING:
        try:
            # A job left in our own list by an earlier run of this container comes first.
            job = client.lindex(processing, -1) or client.blmove(jobs, processing, 1, "RIGHT", "LEFT")
        except redis.exceptions.ConnectionError as exc:
            print(f"worker {HOSTNAME}: redis not reachable ({exc}); retrying", flush=True)
            time.sleep(1)
            continue
        if job is None:
            continue
        stopping_before = STOPPING
        burn_cpu(cpu_ms)
        with client.pipeline(transaction=True) as pipe:
            pipe.hincrby(f"{jobs}:done", job, 1)
            pipe.incr(f"{jobs}:done_count")
            if STOPPING and not stopping_before:
                pipe.incr(f"{jobs}:finished_after_stop_signal")
            pipe.lrem(processing, 1, job)
            pipe.execute()
        done += 1
        if STOPPING and not stopping_before:
            print(f"worker {HOSTNAME}: stop signal during job {job.decode(errors='replace')}: finished it", flush=True)
    print(f"worker {HOSTNAME}: stopping after {done} job(s), none left in hand", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
