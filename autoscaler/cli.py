"""Command line: argument parsing -> settings -> run. Exit codes: 0 ok, 1 runtime failure,
2 bad config or usage. Errors are one clear message each, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from autoscaler import __version__
from autoscaler.config import ConfigError, Settings, load_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


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
    return parser


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


COMMANDS = {"run": cmd_run, "validate": cmd_validate}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
