"""The ``fedcl`` command line.

Every :class:`~fedcl.config.RunConfig` field is a flag of ``fedcl run`` with the same
kebab-case name as its TOML key; precedence is defaults < ``--config FILE`` < flags.

The command line imports what a command needs where it runs (``fedcl.cli.options`` and
``fedcl.cli.deploy`` do the same): ``--help`` and a typo are answered in a second,
before torch, Ray and Flower load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from fedcl.cli.deploy import add_commands as add_deploy_commands
from fedcl.cli.deploy import deploy
from fedcl.cli.interrupt import INTERRUPTED, on_interrupt
from fedcl.cli.options import (
    RUN_COMMANDS,
    Parser,
    add_overwrite,
    add_resume,
    add_run_options,
    check_fresh,
    chosen_keys,
    named_sections,
    preflight,
    resolve_config,
    resumed_config,
)
from fedcl.config import Section
from fedcl.configure import from_run_dir
from fedcl.errors import FedclError

EXIT_USAGE = 2  # bad input: a message, no traceback
EXIT_FAILED = 1  # the run itself failed (e.g. the ServerApp raised in a deployment)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (deploy local: after stopping its processes)


def build_parser(sections: tuple[type[Section], ...] = ()) -> argparse.ArgumentParser:
    """Build the ``fedcl`` argument parser (sub-commands: run, compare, report, deploy).

    ``sections``: the strategies' and scenarios' sections whose keys are flags too
    (:func:`~fedcl.cli.options.named_sections`).
    """
    parser = Parser(
        prog="fedcl",
        description=(
            "Federated-continual learning simulation for histopathology segmentation: "
            "simulated hospitals (Flower clients) train a segmentation network on "
            "their own H&E tiles; a Flower server aggregates their updates."
        ),
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_command(commands, sections)
    _add_compare_command(commands, sections)
    _add_report_command(commands)
    add_deploy_commands(commands, sections)
    return parser


# Every command that takes the run options says where a strategy's own flags are.
OWN_FLAGS = (
    "A strategy's or scenario's own options are flags where it is named: fedcl run "
    "--strategy dbc --help lists DBC's; every option: docs/options.md."
)


def _add_run_command(commands: Any, sections: tuple[type[Section], ...]) -> None:
    run = commands.add_parser(
        "run",
        help="run one federated experiment (Flower simulation on Ray)",
        description=(
            "Run one federated experiment on the built-in synthetic histology and "
            "write a run directory (config.toml, metrics.jsonl, summary.json, "
            "checkpoint.pt, dice.png)."
        ),
        epilog=OWN_FLAGS,
    )
    add_resume(run)
    add_overwrite(run)
    add_run_options(run, sections=sections)


def _add_compare_command(commands: Any, sections: tuple[type[Section], ...]) -> None:
    compare = commands.add_parser(
        "compare",
        help="run several strategies on one scenario and seeds; write a table",
        description=(
            "Run every strategy x seed pair (each as fedcl run, into OUT/<strategy>-s<seed>) "
            "with the same options, then write OUT/results.md, OUT/results.csv (mean and "
            "std over seeds), OUT/per-seed.csv (every run), OUT/paired.csv (paired "
            "differences against --baseline) and OUT/comparison.png. Runs already complete "
            "are kept and interrupted ones resumed, so running the same command again "
            "continues."
        ),
        epilog=OWN_FLAGS,
    )
    compare.add_argument(
        "--strategies",
        required=True,
        metavar="A,B,...",
        help=(
            "comma-separated strategy names; 'all' = every built-in; a name may carry "
            "settings of its own, e.g. dbc+dbc-consolidation=off+dbc-steps=20 (a row each)"
        ),
    )
    compare.add_argument(
        "--seeds",
        default="0",
        metavar="0,1,...",
        help=(
            "comma-separated seeds (default: 0); choose constants on the tuning seeds 0,1,2 "
            "and report on others, e.g. 10,11,12,13,14 (docs/evaluation.md)"
        ),
    )
    _add_baseline(compare)
    compare.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help=(
            "make N runs at once, each in a process of its own on the study's Ray (this "
            "machine's, or the cluster --ray-address names); each run's output goes to "
            "<run directory>.log (default: 1, one after another)"
        ),
    )
    compare.add_argument(
        "--scenarios",
        metavar="A,B,...",
        help=(
            "comma-separated scenarios ('all' = the four built-ins), each into "
            "OUT/<scenario> with its own table, and OUT/results.md with all of them "
            "(default: the one --scenario / --config names); a name may carry settings "
            "of its own, e.g. client-drift+drift-kind=annotation (a table each)"
        ),
    )
    add_run_options(
        compare,
        out_help=(
            "comparison directory (default: runs/compare-<scenarios>-<digest of the "
            "command's settings>: the same command again continues the same comparison)"
        ),
        sections=sections,
    )


def _add_report_command(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="rebuild a run's summary and plots (or a comparison's table) from its files",
        description=(
            "For a run directory: rewrite summary.json, dice.png, dice_matrix.png (staged) and "
            "dbc.png from config.toml and metrics.jsonl. For a fedcl compare directory: "
            "rewrite results.md, results.csv, per-seed.csv, paired.csv and comparison.png "
            "from its runs."
        ),
    )
    report.add_argument("dir", metavar="DIR", help="run or comparison directory")
    _add_baseline(report)


def _add_baseline(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        metavar="LABEL",
        help=(
            "entry the tables pair every other against: per seed, entry minus baseline, "
            "mean and 95 %% interval (default: fedavg where the comparison has it)"
        ),
    )


def _run(args: argparse.Namespace) -> int:

    config = resumed_config(args) if args.resume else resolve_config(args)
    if not args.resume:
        check_fresh(config, args.overwrite)
    preflight(config)  # bad input answers in seconds, before Ray starts
    # start-up: imported where a command needs it (module docstring)
    from fedcl.cli.runs import simulate_with_progress
    from fedcl.simulation import local_ray

    with local_ray(config):
        simulate_with_progress(config, args.verbose, resume=bool(args.resume))
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise FedclError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _compare(args: argparse.Namespace) -> int:

    # start-up: imported where a command needs it (module docstring)
    from fedcl.compare import path_safe, run_scenarios
    from fedcl.entries import parse_entry, parse_list
    from fedcl.plugins import SCENARIOS, STRATEGIES
    from fedcl.processes import local_cluster, terminate_raises
    from fedcl.strategies.catalog import check_strategy

    entries = [parse_entry(text) for text in parse_list(args.strategies, STRATEGIES.builtin)]
    seeds = _int_list(args.seeds, "--seeds")
    named = parse_list(args.scenarios, SCENARIOS.builtin) if args.scenarios else []
    scenarios = [parse_entry(text, SCENARIOS) for text in named]  # before Ray starts
    if not entries or not seeds:
        raise FedclError("--strategies and --seeds must each name at least one value")
    for entry in entries:
        check_strategy(entry.name)  # every name, before the first run starts
    labels = [path_safe(e.label) for e in entries]
    if args.baseline is not None and path_safe(args.baseline) not in labels:
        raise FedclError(
            f"--baseline {args.baseline!r} is not one of --strategies: {', '.join(labels)}"
        )
    if not hasattr(args, "out"):
        # named after what it runs, not when: the same command continues its comparison

        settings = resolve_config(args).replace(out="").to_mapping()
        command = [settings, [e.label for e in entries], seeds, [s.label for s in scenarios]]
        digest = hashlib.sha256(json.dumps(command, sort_keys=True).encode()).hexdigest()[:8]
        name = path_safe("+".join(named) if named else str(settings["scenario"]))
        args.out = f"runs/compare-{name}-{digest}"
        if Path(args.out).exists():
            print(f"fedcl compare: continuing {args.out} (finished runs are kept)")
    if args.parallel < 1:
        raise FedclError(f"--parallel must be at least 1, got {args.parallel}")
    base = resolve_config(args)
    preflight(base)
    out = Path(base.out)
    with ExitStack() as stack:
        # one Ray head for every run (unless the config names a cluster): Ray's start
        # and stop cost 3-5 s per run on 2 cores
        stack.enter_context(terminate_raises())  # SIGTERM, too, stops the shared head
        cluster = "" if base.ray_address else stack.enter_context(local_cluster())
        # start-up: imported where a command needs it (module docstring)
        from fedcl.cli.runs import simulate_with_progress, start
        from fedcl.simulation import warm_hospitals

        if args.parallel == 1:
            # and the same hospitals' processes for every run: their start-up (torch and
            # MONAI loaded) was most of a small run's time
            stack.enter_context(warm_hospitals())
        run_scenarios(
            base,
            scenarios,
            entries,
            seeds,
            out,
            lambda config, resume: simulate_with_progress(config, args.verbose, resume, cluster),
            baseline=args.baseline,
            # rounds chosen by neither flag nor file: stages x rounds-per-stage where staged
            unset=() if "rounds" in chosen_keys(args) else ("rounds",),
            parallel=args.parallel,
            start=lambda run: start(run, base.ray_address or cluster, args.parallel),
        )
    print((out / "results.md").read_text())
    return 0


def _report(args: argparse.Namespace) -> int:

    # start-up: imported where a command needs it (module docstring)
    from fedcl.compare import comparison_dirs, write_comparison, write_overview
    from fedcl.recorder import read_metrics, write_report

    directory = Path(args.dir)
    if (directory / "metrics.jsonl").exists():
        if args.baseline is not None:
            raise FedclError(
                f"--baseline pairs the entries of a comparison; {str(directory)!r} is one run"
            )
        config = from_run_dir(directory)
        # start-up: imported where a command needs it (module docstring)
        from fedcl.progress import summary_lines

        summary = write_report(config, read_metrics(directory), directory)
        print("\n".join(summary_lines(summary, str(directory), lead="run")))
        print(f"rewrote {directory / 'summary.json'} and the plots")
    elif any(directory.glob("*/summary.json")):
        write_comparison(directory, args.baseline)
        print((directory / "results.md").read_text())
    elif scenarios := comparison_dirs(directory):
        for scenario in scenarios:
            write_comparison(scenario, args.baseline)
        write_overview(directory)
        print((directory / "results.md").read_text())
    else:
        raise FedclError(
            f"{str(directory)!r} is neither a run directory (metrics.jsonl) nor a "
            "comparison directory (runs with summary.json, or one sub-directory per scenario)"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedcl`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # which strategies' and scenarios' keys are flags: those the command names
        runs = any(command in argv for command in RUN_COMMANDS)
        parser = build_parser(named_sections(argv) if runs else ())
    except FedclError as err:
        print(f"fedcl: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    # start-up: imported where a command needs it (module docstring)
    from fedcl.deploy.local import DeploymentError

    commands = {"run": _run, "compare": _compare, "report": _report, "deploy": deploy}
    try:
        return commands[args.command](args)
    except (FedclError, DeploymentError) as err:
        if args.debug:
            raise
        print(f"fedcl: error: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, FedclError) else EXIT_FAILED
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("fedcl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def command() -> None:
    """Run the ``fedcl`` executable: :func:`main`, then exit with its code.

    After Ctrl-C a simulation's threads may wait forever for hospitals whose Ray is
    gone, and Python joins every thread before it exits: an interrupted command leaves
    without joining them (its clean-up has run by then).
    """
    signal.signal(signal.SIGINT, on_interrupt)
    code = main()
    if code == EXIT_INTERRUPTED or INTERRUPTED.is_set():
        code = EXIT_INTERRUPTED
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    command()
