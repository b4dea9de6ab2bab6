"""Command line: argument parsing -> settings -> run. Exit codes: 0 ok, 1 runtime failure,
2 bad config or usage. Errors are one clear message each, never a traceback."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone

from autoscaler import __version__
from autoscaler.config import ConfigError, ServiceConfig, Settings, load_config, parse_host_port

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# The agent's port: next to node_exporter's 9100, as cAdvisor-style exporters usually are.
DEFAULT_AGENT_LISTEN = "0.0.0.0:9101"


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML config file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscaler",
        description="Horizontal autoscaler for Docker container replicas behind HAProxy.",
    )
    parser.add_argument("--version", action="version", version=f"autoscaler {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    _add_config(run)
    run.add_argument("--dry-run", action="store_true", help="decide, log and export metrics; change nothing")

    validate = sub.add_parser("validate", help="check a config file (exit 0 ok, 2 invalid)")
    _add_config(validate)

    decide = sub.add_parser("decide", help="evaluate one snapshot with no history and explain the decision")
    _add_config(decide)
    decide.add_argument("--service", required=True, help="service name in the config")
    decide.add_argument("--snapshot", required=True, metavar="SNAPSHOT.json", help="replicas and their readings")
    decide.add_argument("--at", type=_timestamp, metavar="ISO8601",
                        help="time for scheduled bounds, e.g. 2026-11-30T09:00:00+01:00 (default: now)")
    decide.add_argument("--json", action="store_true", help="print one JSON object")

    simulate = sub.add_parser("simulate", help="replay a demand trace through the policy, offline")
    _add_config(simulate)
    simulate.add_argument("--service", required=True, help="service name in the config")
    simulate.add_argument("--trace", required=True, metavar="TRACE.csv",
                          help="columns time_seconds, cpu_cores [, memory_bytes, requests_per_second] "
                               "[, one per external metric, named like it]")
    simulate.add_argument("--out", metavar="TIMELINE.csv", help="write one row per step")
    simulate.add_argument("--plot", metavar="CHART.png", help="draw demand, capacity and replicas (matplotlib)")
    simulate.add_argument("--startup-seconds", type=_non_negative, default=0.0, metavar="S",
                          help="seconds from a scale-up decision until the new replica is ready (default 0)")
    simulate.add_argument("--start", type=_timestamp, metavar="ISO8601",
                          help="wall time of the trace's time 0, for schedules (default 2026-01-05T00:00Z, a Monday)")
    simulate.add_argument("--jobs", type=int, choices=(1, 2), default=_default_jobs(), metavar="{1,2}",
                          help="processes for a long replay: 2 replays its halves side by side, with the same "
                               "result (default: 2 where two CPUs are free to this process, else 1)")

    down = sub.add_parser("down", help="remove what the daemon made for its services (replicas, load balancer, "
                                       "network); refused while a daemon runs for them")
    _add_config(down)
    down.add_argument("--service", action="append", metavar="NAME", help="only this service (repeatable; default: all)")

    status = sub.add_parser("status", help="show the running daemon's services, replicas and last decisions")
    status.add_argument("--url", default="http://127.0.0.1:9464", help="the daemon's metrics_listen address")
    status.add_argument("--json", action="store_true", help="print the raw /status document")

    agent = sub.add_parser("agent", help="serve this Swarm node's task CPU and memory to the daemon "
                                         "(run it as a global Swarm service)")
    agent.add_argument("--listen", default=DEFAULT_AGENT_LISTEN, metavar="HOST:PORT",
                       help=f"address of /metrics (default {DEFAULT_AGENT_LISTEN})")
    return parser


def _default_jobs() -> int:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 if usable >= 2 else 1


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


# --at and --start: schedules look a window's length (up to 31 days) around these times, and a
# replay runs up to 317 years from --start; all of it must stay inside datetime's years 1-9999.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=timezone.utc)


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-30T09:00:00+00:00)") from None
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not EARLIEST_TIME <= value <= LATEST_TIME:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 1970-01-01 and 9000-01-01")
    return value


def _error(message: str) -> int:
    print(f"autoscaler: {message}", file=sys.stderr)
    return EXIT_USAGE


def _load_service(args: argparse.Namespace) -> tuple[Settings, ServiceConfig] | None:
    """The config and its --service, or None after saying what is wrong."""
    settings = _load(args.config)
    if settings is None:
        return None
    service = settings.services.get(args.service)
    if service is None:
        _error(f"unknown service {args.service!r} (the config has: {', '.join(settings.services)})")
        return None
    return settings, service


def _load(path: str) -> Settings | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"autoscaler: invalid config {path}:", file=sys.stderr)
        for line in exc.messages:
            print(f"  {line}", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_USAGE
    names = ", ".join(settings.services)
    print(f"{args.config}: ok ({len(settings.services)} service(s): {names})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_USAGE
    # Imported here so that `validate` and `--help` do not pay for the Docker SDK.
    from autoscaler.engine.daemon import Daemon, StartupError
    from autoscaler.logs import setup_logging

    setup_logging(settings.daemon.log_format, settings.daemon.log_level)
    daemon = Daemon(settings, config_path=args.config, dry_run=args.dry_run)
    try:
        daemon.serve()
    except StartupError as exc:
        logging.getLogger("autoscaler").error("cannot start: %s", exc)
        return exc.exit_code
    return EXIT_OK


def cmd_decide(args: argparse.Namespace) -> int:
    from autoscaler.decide import SnapshotError, decide, read_snapshot, render_text

    loaded = _load_service(args)
    if loaded is None:
        return EXIT_USAGE
    _, service = loaded
    try:
        snapshot = read_snapshot(args.snapshot, args.service, [metric.name for metric in service.policy.metrics])
    except SnapshotError as exc:
        for line in exc.messages:
            _error(line)
        return EXIT_USAGE
    _, document = decide(args.service, service, snapshot, args.at or datetime.now(timezone.utc))
    print(json.dumps(document, indent=2) if args.json else render_text(document))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from autoscaler.simulate import DEFAULT_START, TraceError, plot, read_trace, simulate, write_timeline

    loaded = _load_service(args)
    if loaded is None:
        return EXIT_USAGE
    settings, service = loaded
    # Checked before the replay, so a missing plotter does not cost a long run first.
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        return _error("--plot needs matplotlib: pip install 'autoscaler[plot]'")
    try:
        trace = read_trace(args.trace, [metric.name for metric in service.policy.metrics])
    except TraceError as exc:
        return _error(str(exc))
    interval = settings.daemon.interval_seconds
    try:
        result = simulate(
            trace, args.service, service, interval, args.startup_seconds, args.start or DEFAULT_START, args.jobs
        )
    except TraceError as exc:  # a replay too long to run, refused before it allocates
        return _error(f"{args.trace}: {exc}")
    s = result.summary
    print(
        # ",.15g": "g" alone turns a two-week trace into "1.2096e+06 s".
        f"simulated {args.service}: {s.simulated_seconds:,.15g} s in {s.steps} steps of {interval:g} s "
        f"(startup {args.startup_seconds:g} s, {len(trace)} trace rows)"
    )
    for note in result.notes:
        print(f"  note: {note}")
    average = s.replica_seconds / s.simulated_seconds if s.simulated_seconds else 0.0
    print(f"  replica-seconds (cost):   {s.replica_seconds:,.0f}  (mean {average:.2f} replicas)")
    if trace.cpu_cores is None:
        print("  seconds above target:     n/a (the trace has no cpu_cores column)")
    else:
        above = s.seconds_above_target / s.simulated_seconds * 100 if s.simulated_seconds else 0.0
        print(f"  seconds above target:     {s.seconds_above_target:,.0f}  ({above:.1f} % of the time)")
        print(f"  peak cpu utilization:     {s.peak_utilization_percent:.1f} %")
    print(f"  scale events:             {s.scale_events}  ({s.scale_ups} up, {s.scale_downs} down)")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items(), key=lambda kv: -kv[1]))
    print(f"  decisions by reason:      {reasons}")
    try:
        if args.out:
            write_timeline(result, args.out)
            print(f"  timeline: {args.out}")
        if args.plot:
            plot(result, service, args.plot, f"{args.service}: {args.trace}")
            print(f"  chart: {args.plot}")
    except OSError as exc:
        print(f"autoscaler: cannot write output: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_USAGE
    names = args.service or list(settings.services)
    unknown = [n for n in names if n not in settings.services]
    if unknown:
        return _error(f"unknown service(s) {', '.join(map(repr, unknown))} (the config has: {', '.join(settings.services)})")
    from autoscaler.docker.backend import DockerBackend
    from autoscaler.down import DownError, down
    from autoscaler.engine.ports import BackendError

    try:
        backend = DockerBackend.from_env(admin_socket_dir=settings.daemon.admin_socket_dir)
    except BackendError as exc:
        print(f"autoscaler: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        for line in down(settings, names, backend):
            print(line)
    except DownError as exc:
        print(f"autoscaler: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        backend.close()
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from autoscaler.status import StatusError, fetch_status, render_status

    try:
        document = fetch_status(args.url)
    except StatusError as exc:
        print(f"autoscaler: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(document, indent=2) if args.json else render_status(document))
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    try:
        host, port = parse_host_port(args.listen)
    except ValueError as exc:
        return _error(f"--listen: {exc}")
    # Imported here so that the other commands do not pay for the Docker SDK.
    from autoscaler.logs import setup_logging
    from autoscaler.swarm.agent import run_agent

    setup_logging("text", "info")
    return run_agent(host, port)


COMMANDS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "decide": cmd_decide,
    "simulate": cmd_simulate,
    "status": cmd_status,
    "down": cmd_down,
    "agent": cmd_agent,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
