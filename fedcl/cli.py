"""The ``fedcl`` command line.

Every :class:`~fedcl.config.RunConfig` field is a flag of ``fedcl run`` with the same
kebab-case name as its TOML key; precedence is defaults < ``--config FILE`` < flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

from fedcl.config import RunConfig, key_of
from fedcl.errors import FedclError

EXIT_USAGE = 2  # bad input: a message, no traceback


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in fields(RunConfig):
        default = f.default
        assert default is not MISSING  # every field has a default (see RunConfig)
        kind = type(default)
        parser.add_argument(
            f"--{key_of(f.name)}",
            dest=f.name,
            type=kind if kind is not bool else _parse_bool,
            default=argparse.SUPPRESS,  # absent flags do not override the file
            metavar=kind.__name__.upper(),
            help=f"{f.metadata['help']} (default: {default!r})",
        )


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``fedcl`` argument parser (sub-commands: ``run``)."""
    parser = argparse.ArgumentParser(
        prog="fedcl",
        description=(
            "Federated-continual learning simulation for histopathology segmentation: "
            "simulated hospitals (Flower clients) train a segmentation network on "
            "their own H&E tiles; a Flower server aggregates their updates."
        ),
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run one federated experiment (Flower simulation on Ray)",
        description=(
            "Run one federated experiment on the built-in synthetic histology and "
            "write a run directory (config.toml, metrics.jsonl, summary.json, "
            "checkpoint.pt, dice.png)."
        ),
    )
    run.add_argument(
        "--config",
        metavar="FILE.toml",
        help="TOML file with the same keys as these flags (kebab-case)",
    )
    run.add_argument("--verbose", action="store_true", help="show Flower's own per-round log lines")
    _add_config_flags(run)
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < ``--config`` file < flags, validated, with a run directory."""
    config = RunConfig.from_toml(args.config) if args.config else RunConfig()
    overrides: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)
    }
    try:
        config = config.replace(**overrides)
    except FedclError as err:
        raise FedclError(f"command line: {err}") from None
    return config.with_run_dir()


def _run(args: argparse.Namespace) -> int:
    from fedcl.progress import RoundProgress
    from fedcl.simulation import simulate
    from fedcl.strategies import check_strategy

    config = resolve_config(args)
    check_strategy(config.strategy)  # fail before Ray starts
    with RoundProgress(config) as progress:
        simulate(config, callbacks=[progress.update], verbose=args.verbose)
    progress.print_summary()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedcl`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except FedclError as err:
        if args.debug:
            raise
        print(f"fedcl: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
