"""The ``fedcl`` command line.

Every :class:`~fedcl.config.RunConfig` field is a flag of ``fedcl run`` with the same
kebab-case name as its TOML key; precedence is defaults < ``--config FILE`` < flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any, NoReturn

from fedcl.config import SECTIONS, RunConfig, key_of, parse_bool, read_toml
from fedcl.errors import FedclError

EXIT_USAGE = 2  # bad input: a message, no traceback
EXIT_FAILED = 1  # the run itself failed (e.g. the ServerApp raised in a deployment)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (deploy local: after stopping its processes)


def _add_run_options(parser: argparse.ArgumentParser, out_help: str = "") -> None:
    """Add ``--config``, ``--verbose`` and one flag per RunConfig field.

    ``out_help``: what ``--out`` means for this command, if not a run directory.
    """
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="TOML file with the same keys as these flags (kebab-case), e.g. a scenario",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show Flower's own per-round log lines"
    )
    groups = {
        name: parser.add_argument_group(f"{name} options", description)
        for name, description in SECTIONS.items()
    }
    for f in fields(RunConfig):
        default = f.default
        assert default is not MISSING  # every field has a default (see RunConfig)
        kind = type(default)
        groups[f.metadata["section"]].add_argument(
            f"--{key_of(f.name)}",
            dest=f.name,
            type=kind if kind is not bool else _parse_bool,
            default=argparse.SUPPRESS,  # absent flags do not override the file
            metavar=kind.__name__.upper(),
            help=_flag_help(f.name, f.metadata["help"], default, out_help),
        )


def _flag_help(name: str, text: str, default: Any, out_help: str) -> str:
    if name == "out" and out_help:
        return out_help
    return text if "(default" in text else f"{text} (default: {default!r})"


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out if it holds one (default: refuse, never overwrite)",
    )


def _check_fresh(config: RunConfig, overwrite: bool) -> None:
    """Refuse to write a run into a directory that holds one, unless asked to."""
    from pathlib import Path

    out = Path(config.out)
    held = [n for n in ("config.toml", "metrics.jsonl", "checkpoint.pt") if (out / n).exists()]
    if held and not overwrite:
        raise FedclError(
            f"{str(out)!r} already holds a run ({', '.join(held)}): continue it with "
            f"--resume {out}, replace it with --overwrite, or choose another --out"
        )


def _parse_bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _Parser(argparse.ArgumentParser):
    """An argument parser whose "unrecognized arguments" error suggests the flag meant."""

    def error(self, message: str) -> NoReturn:
        """Exit 2 with ``message``, and a did-you-mean for a misspelt flag."""
        if message.startswith("unrecognized arguments:"):
            import difflib

            known = sorted(_option_strings(self))
            for token in message.split(":", 1)[1].split():
                flag = token.split("=", 1)[0]
                if flag.startswith("--"):
                    close = difflib.get_close_matches(flag, known, n=1)
                    if close:
                        message += f" (did you mean {close[0]}?)"
                        break
        super().error(message)


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--flag`` of ``parser`` and of its sub-commands."""
    found: set[str] = set()
    for action in parser._actions:
        found |= {s for s in action.option_strings if s.startswith("--")}
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def build_parser() -> argparse.ArgumentParser:
    """Build the ``fedcl`` argument parser (sub-commands: run, compare, report)."""
    parser = _Parser(
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
        "--resume",
        metavar="RUN_DIR",
        help=(
            "continue a killed or interrupted run from RUN_DIR/checkpoint.pt with its own "
            "config.toml (no other options); ends as the uninterrupted run would"
        ),
    )
    _add_overwrite(run)
    _add_run_options(run)

    compare = commands.add_parser(
        "compare",
        help="run several strategies on one scenario and seeds; write a table",
        description=(
            "Run every strategy x seed pair (each as fedcl run, into OUT/<strategy>-s<seed>) "
            "with the same options, then write OUT/results.md, OUT/results.csv (mean and "
            "std over seeds) and OUT/comparison.png. Runs already complete are kept and "
            "interrupted ones resumed, so running the same command again continues."
        ),
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
        "--seeds", default="0", metavar="0,1,...", help="comma-separated seeds (default: 0)"
    )
    compare.add_argument(
        "--scenarios",
        metavar="A,B,...",
        help=(
            "comma-separated scenarios ('all' = the four built-ins), each into "
            "OUT/<scenario> with its own table, and OUT/results.md with all of them "
            "(default: the one --scenario / --config names)"
        ),
    )
    _add_run_options(
        compare,
        out_help=(
            "comparison directory (default: runs/compare-<scenarios>-<digest of the "
            "command's settings>: the same command again continues the same comparison)"
        ),
    )

    report = commands.add_parser(
        "report",
        help="rebuild a run's summary and plots (or a comparison's table) from its files",
        description=(
            "For a run directory: rewrite summary.json, dice.png, dice_matrix.png (staged) and "
            "dbc.png from config.toml and metrics.jsonl. For a fedcl compare directory: "
            "rewrite results.md, results.csv and comparison.png from its runs."
        ),
    )
    report.add_argument("dir", metavar="DIR", help="run or comparison directory")
    _add_deploy_commands(commands)
    return parser


def _add_deploy_commands(commands: Any) -> None:
    deploy = commands.add_parser(
        "deploy",
        help="multi-process deployment: SuperLink + one SuperNode per hospital",
        description=(
            "Deploy fedcl as separate Flower processes: try it on this machine with "
            "`fedcl deploy local`, or write the docker compose files that run the same "
            "topology in containers."
        ),
    )
    targets = deploy.add_subparsers(dest="target", required=True, metavar="TARGET")
    local = targets.add_parser(
        "local",
        help="run one experiment on SuperLink/SuperNode processes on 127.0.0.1",
        description=(
            "Start flower-superlink, one flower-supernode per hospital and their "
            "flower-superexec processes on 127.0.0.1 with the docker-compose.yml flags, "
            "submit the fedcl app, wait for the run's final status, and stop every "
            "process. Writes the same run directory as fedcl run, plus OUT/deployment/ "
            "(each process's log)."
        ),
    )
    local.add_argument(
        "--hospitals", dest="clients", type=int, default=argparse.SUPPRESS, metavar="N",
        help="number of hospitals, one SuperNode each (same as --clients)",
    )  # fmt: skip
    local.add_argument(
        "--tls", action="store_true", help="generate a throwaway CA and use TLS everywhere"
    )
    _add_overwrite(local)
    _add_run_options(local)
    compose = targets.add_parser(
        "compose",
        help="print the docker compose file for N hospitals",
        description="Print docker-compose.yml (or its TLS variant) for N hospitals.",
    )
    compose.add_argument("--hospitals", type=int, default=3, metavar="N")
    compose.add_argument("--tls", action="store_true", help="the TLS variant")
    compose.add_argument(
        "--network", choices=("bridge", "host"), default="bridge",  # topology.NETWORKS
        help="bridge (default): a compose network, services by name; host: the host's "
        "network, every daemon on 127.0.0.1 with its own port (scripts/compose_check.py)",
    )  # fmt: skip
    certs = targets.add_parser(
        "certs",
        help="write a throwaway CA + server certificate for the TLS compose file",
        description=(
            "Write ca.pem, server.pem and server.key into DIR (default ./certificates), "
            "valid for every service name of an N-hospital compose deployment."
        ),
    )
    certs.add_argument("dir", nargs="?", default="certificates", metavar="DIR")
    certs.add_argument("--hospitals", type=int, default=3, metavar="N")


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < ``--config`` file < flags, validated, with a run directory."""
    values = {}
    if args.config:
        values = read_toml(args.config)
        RunConfig.from_mapping(values, source=str(args.config))  # its own errors name it
    flags: dict[str, Any] = {
        key_of(f.name): getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)
    }
    return RunConfig.from_mapping(values | flags, source="command line").with_run_dir()


def _simulate_with_progress(
    config: RunConfig, verbose: bool, resume: bool = False, cluster: str = ""
) -> None:
    from fedcl.progress import RoundProgress
    from fedcl.simulation import simulate

    with RoundProgress(config) as progress:
        simulate(
            config, callbacks=[progress.update], verbose=verbose, resume=resume, cluster=cluster
        )
    progress.print_summary()


def _resumed_config(args: argparse.Namespace) -> RunConfig:
    from pathlib import Path

    from fedcl.recorder import read_checkpoint

    given = [f"--{key_of(f.name)}" for f in fields(RunConfig) if hasattr(args, f.name)]
    if args.config or given:
        options = ", ".join(given + (["--config"] if args.config else []))
        raise FedclError(
            f"--resume continues a run with its own config.toml; drop {options} "
            "(start a new run to change settings)"
        )
    run_dir = Path(args.resume)
    if not (run_dir / "config.toml").is_file():
        raise FedclError(f"{str(run_dir)!r} is not a run directory: it has no config.toml")
    config = RunConfig.from_run_dir(run_dir).replace(out=str(run_dir))
    read_checkpoint(run_dir)  # missing or damaged: an error now, before Ray starts
    return config


def _run(args: argparse.Namespace) -> int:

    config = _resumed_config(args) if args.resume else resolve_config(args)
    if not args.resume:
        _check_fresh(config, args.overwrite)
    _preflight(config)  # bad input answers in seconds, before Ray starts
    from fedcl.simulation import local_ray

    with local_ray(config):
        _simulate_with_progress(config, args.verbose, resume=bool(args.resume))
    return 0


def _preflight(config: RunConfig) -> None:
    """Fail on bad input now, with a clear message, not after Ray or a deployment starts."""
    from fedcl.data.real import check_layout
    from fedcl.plugins import MODELS, STRATEGIES

    STRATEGIES.check(config.strategy)  # a typo answered before torch loads
    MODELS.check(config.model)
    check_layout(config)  # so are a wrong data path, a missing mask, too few sites
    if config.strategy not in STRATEGIES.builtin:
        from fedcl.strategies import check_strategy

        check_strategy(config.strategy)  # a plug-in: importable, a Flower Strategy
    from fedcl.scenarios import check_data
    from fedcl.training import resolve_device

    resolve_device(config.device)  # cuda requested but absent
    check_data(config)  # unreadable images, bad masks, too few tiles


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise FedclError(f"{flag} must be comma-separated integers, got {text!r}") from None


def _compare(args: argparse.Namespace) -> int:
    from contextlib import ExitStack
    from pathlib import Path

    from fedcl.compare import parse_entry, parse_list, run_scenarios
    from fedcl.config import SCENARIOS
    from fedcl.processes import local_cluster, terminate_raises
    from fedcl.strategies import STRATEGIES, check_strategy

    entries = [parse_entry(text) for text in parse_list(args.strategies, list(STRATEGIES))]
    seeds = _int_list(args.seeds, "--seeds")
    scenarios = parse_list(args.scenarios, SCENARIOS) if args.scenarios else []
    if not entries or not seeds:
        raise FedclError("--strategies and --seeds must each name at least one value")
    for entry in entries:
        check_strategy(entry.strategy)  # every name, before the first run starts
    if not hasattr(args, "out"):
        # named after what it runs, not when: the same command continues its comparison
        import hashlib
        import json

        settings = resolve_config(args).replace(out="").to_mapping()
        command = [settings, [e.label for e in entries], seeds, scenarios]
        digest = hashlib.sha256(json.dumps(command, sort_keys=True).encode()).hexdigest()[:8]
        name = "+".join(scenarios) if scenarios else str(settings["scenario"])
        args.out = f"runs/compare-{name}-{digest}"
        if Path(args.out).exists():
            print(f"fedcl compare: continuing {args.out} (finished runs are kept)")
    base = resolve_config(args)
    _preflight(base)
    out = Path(base.out)
    with ExitStack() as stack:
        # one Ray head for every run (unless the config names a cluster): Ray's start
        # and stop cost 3-5 s per run on 2 cores
        stack.enter_context(terminate_raises())  # SIGTERM, too, stops the shared head
        cluster = "" if base.ray_address else stack.enter_context(local_cluster())
        run_scenarios(
            base,
            scenarios,
            entries,
            seeds,
            out,
            lambda config, resume: _simulate_with_progress(config, args.verbose, resume, cluster),
        )
    print((out / "results.md").read_text())
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedcl.compare import comparison_dirs, write_comparison, write_overview
    from fedcl.recorder import read_metrics, write_report

    directory = Path(args.dir)
    if (directory / "metrics.jsonl").exists():
        config = RunConfig.from_run_dir(directory)
        from fedcl.progress import summary_lines

        summary = write_report(config, read_metrics(directory), directory)
        print("\n".join(summary_lines(summary, str(directory), lead="run")))
        print(f"rewrote {directory / 'summary.json'} and the plots")
    elif any(directory.glob("*/summary.json")):
        write_comparison(directory)
        print((directory / "results.md").read_text())
    elif scenarios := comparison_dirs(directory):
        for scenario in scenarios:
            write_comparison(scenario)
        write_overview(directory)
        print((directory / "results.md").read_text())
    else:
        raise FedclError(
            f"{str(directory)!r} is neither a run directory (metrics.jsonl) nor a "
            "comparison directory (runs with summary.json, or one sub-directory per scenario)"
        )
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedcl.deploy import topology

    if args.target == "compose":
        _check_hospitals(args.hospitals)
        sys.stdout.write(topology.render_compose(args.hospitals, args.tls, args.network))
        return 0
    if args.target == "certs":
        from fedcl.deploy.certs import write_certificates

        _check_hospitals(args.hospitals)
        names = [s.name for s in topology.services(args.hospitals, topology.compose_network())]
        tls = write_certificates(Path(args.dir), names)
        print(f"wrote {tls.ca}, {tls.cert}, {tls.key}")
        # Flower's images run as user app: the daemons must be able to read the key.
        print(f"for docker compose: sudo chown -R 49999:49999 {args.dir}")
        return 0
    return _deploy_local(args)


def _check_hospitals(hospitals: int) -> None:
    if hospitals < 1:
        raise FedclError(f"--hospitals must be >= 1, got {hospitals}")


def _deploy_local(args: argparse.Namespace) -> int:
    from fedcl.deploy.local import deploy_local
    from fedcl.progress import RoundProgress

    config = resolve_config(args)
    _check_fresh(config, args.overwrite)
    _preflight(config)
    starting = "starting the SuperLink, SuperNodes and apps..."
    with RoundProgress(config, command="fedcl deploy local", starting=starting) as progress:
        deploy_local(config, tls=args.tls, on_record=progress.update)
    progress.print_summary()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedcl`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from fedcl.deploy.local import DeploymentError

    commands = {"run": _run, "compare": _compare, "report": _report, "deploy": _deploy}
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


if __name__ == "__main__":
    sys.exit(main())
