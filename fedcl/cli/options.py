"""What the ``fedcl`` commands that run experiments share: flags, config, checks.

Their flags, the config they resolve to, and the checks made before anything starts.

Every configuration key is a flag with the same kebab-case name as its TOML key
(:func:`fedcl.config.keys`); precedence is defaults < ``--config FILE`` < flags. The
keys of a strategy or a scenario are flags where the command line (or its ``--config``
file) names it: :func:`named_sections` reads which before the parser is built.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from fedcl.config import SECTIONS, RunConfig, Section, keys, parse_bool, read_toml, sections_of
from fedcl.config.sections import RunKeys
from fedcl.errors import FedclError

# Where argparse keeps the sections whose flags a command has (set_defaults).
_SECTIONS_DEST = "fedcl_sections"
# The commands that take the run options.
RUN_COMMANDS = ("run", "compare", "local")


def named_sections(argv: Sequence[str]) -> tuple[type[Section], ...]:
    """Return the sections of the strategies and scenarios ``argv`` names.

    Read from ``--strategy``, ``--strategies`` (each entry's strategy), ``--scenario``,
    ``--scenarios`` and the ``--config`` file (defaults where none is named): the flags
    of their keys are added to the parser. An unknown name is an error here, with the
    registry's did-you-mean.
    """
    # start-up: imported where a command needs it (module docstring)
    # start-up: imported where a command needs it (module docstring)
    from fedcl.entries import VARIANT, parse_list
    from fedcl.plugins import SCENARIOS, STRATEGIES
    from fedcl.scenarios import scenario_class

    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--strategy", "--strategies", "--scenario", "--scenarios", "--config"):
        pre.add_argument(flag)
    named, _ = pre.parse_known_args(argv)
    file = read_toml(named.config) if named.config else {}
    strategies = [named.strategy or file.get("strategy") or RunKeys.strategy]
    if named.strategies:
        every = parse_list(named.strategies, STRATEGIES.builtin)
        strategies += [entry.split(VARIANT)[0] for entry in every]
    scenarios = [named.scenario or file.get("scenario") or RunKeys.scenario]
    if named.scenarios:
        every = parse_list(named.scenarios, SCENARIOS.builtin)
        scenarios += [entry.split(VARIANT)[0] for entry in every]
    owners = [STRATEGIES.load(str(name)) for name in strategies]
    return sections_of(*owners, *(scenario_class(str(name)) for name in scenarios))


def add_run_options(
    parser: argparse.ArgumentParser,
    out_help: str = "",
    sections: tuple[type[Section], ...] = (),
) -> None:
    """Add ``--config``, ``--verbose`` and one flag per key (the core's and ``sections``').

    ``out_help``: what ``--out`` means for this command, if not a run directory.
    """
    parser.set_defaults(**{_SECTIONS_DEST: sections})
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
    for key in keys(*sections):
        kind = type(key.default)
        groups[key.section].add_argument(
            f"--{key.name}",
            dest=key.dest,
            type=kind if kind is not bool else _parse_bool,
            default=argparse.SUPPRESS,  # absent flags do not override the file
            metavar=kind.__name__.upper(),
            help=_flag_help(key.name, key.help, key.default, out_help),
        )


def _flag_help(name: str, text: str, default: Any, out_help: str) -> str:
    if name == "out" and out_help:
        return out_help
    return text if "(default" in text else f"{text} (default: {default!r})"


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """Add ``--overwrite``: replace a run the output directory holds."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out if it holds one (default: refuse, never overwrite)",
    )


def add_resume(parser: argparse.ArgumentParser) -> None:
    """Add ``--resume RUN_DIR``: continue a killed run (:func:`resumed_config`)."""
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help=(
            "continue a killed or interrupted run from RUN_DIR/checkpoint.pt with its own "
            "config.toml (no other options); ends as the uninterrupted run would"
        ),
    )


def resumed_config(args: argparse.Namespace) -> RunConfig:
    """Return the config of the run ``--resume`` names; refuse other options.

    Raises :class:`FedclError` if the directory holds no run or no readable checkpoint
    (now, before anything starts).
    """
    # start-up: imported where a command needs it (cli module docstring)
    from fedcl.configure import from_run_dir
    from fedcl.recorder import read_checkpoint

    given = [f"--{name}" for name in given_keys(args)]
    if args.config or given:
        options = ", ".join(given + (["--config"] if args.config else []))
        raise FedclError(
            f"--resume continues a run with its own config.toml; drop {options} "
            "(start a new run to change settings)"
        )
    run_dir = Path(args.resume)
    if not (run_dir / "config.toml").is_file():
        raise FedclError(f"{str(run_dir)!r} is not a run directory: it has no config.toml")
    config = from_run_dir(run_dir).replace(out=str(run_dir))
    read_checkpoint(run_dir)  # missing or damaged: an error now, before anything starts
    return config


def check_fresh(config: RunConfig, overwrite: bool) -> None:
    """Refuse to write a run into a directory that holds one, unless asked to."""
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


class Parser(argparse.ArgumentParser):
    """An argument parser whose "unrecognized arguments" error suggests the flag meant."""

    def error(self, message: str) -> NoReturn:
        """Exit 2 with ``message``: whose key an unknown flag is, or the flag meant."""
        if message.startswith("unrecognized arguments:"):
            known = sorted(_option_strings(self))
            for token in message.split(":", 1)[1].split():
                flag = token.split("=", 1)[0]
                if not flag.startswith("--"):
                    continue
                # start-up: the owners are looked up (torch loads) on this error only
                from fedcl.configure import builtin_keys, owners_of

                owners = owners_of(flag[2:])
                every = [f"--{k}" for k in sorted(builtin_keys())]
                meant = difflib.get_close_matches(flag, known, n=1) or [
                    f"{m}, a key of {' or '.join(owners_of(m[2:]))}"
                    for m in difflib.get_close_matches(flag, every, n=1)
                ]
                if owners:
                    message += f" ({flag} is a key of {' or '.join(owners)}: name it too)"
                elif meant:
                    message += f" (did you mean {meant[0]}?)"
                if owners or meant:
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


def given_keys(args: argparse.Namespace) -> dict[str, Any]:
    """Return the keys the command line's flags set (kebab-case name -> value)."""
    sections = getattr(args, _SECTIONS_DEST, ())
    return {k.name: getattr(args, k.dest) for k in keys(*sections) if hasattr(args, k.dest)}


def chosen_keys(args: argparse.Namespace) -> set[str]:
    """Return the config keys the user chose: by a flag or in the ``--config`` file."""
    chosen = set(given_keys(args))
    if args.config:
        chosen |= set(read_toml(args.config))
    return chosen


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < ``--config`` file < flags, validated, with a run directory.

    The config holds the sections of every strategy and scenario the command names
    (``fedcl compare`` runs several); keys of built-ins that the run does not use are
    accepted in the file (a study's shared file) and left out.
    """
    # start-up: imported where a command needs it (module docstring)
    from fedcl.configure import is_builtin_key, load_config

    sections = getattr(args, _SECTIONS_DEST, ())
    values = {}
    if args.config:
        values = read_toml(args.config)
        load_config(values, source=str(args.config), tolerate=is_builtin_key)  # names it
    return load_config(
        values | given_keys(args),
        source="command line",
        tolerate=is_builtin_key,
        also=sections,
    ).with_run_dir()


def preflight(config: RunConfig) -> None:
    """Fail on bad input now, with a clear message, not after Ray or a deployment starts."""
    # start-up: imported where a command needs it (module docstring)
    from fedcl.data.real import check_layout
    from fedcl.plugins import MODELS, STRATEGIES

    STRATEGIES.check(config.strategy)  # a typo answered before torch loads
    MODELS.check(config.model)
    check_layout(config)  # so are a wrong data path, a missing mask, too few sites
    if config.strategy not in STRATEGIES.builtin:
        # start-up: imported where a command needs it (module docstring)
        from fedcl.strategies.catalog import check_strategy

        check_strategy(config.strategy)  # a plug-in: importable, a Flower Strategy
    # start-up: imported where a command needs it (module docstring)
    from fedcl.data.reference import root_dataset
    from fedcl.scenarios.tiles import check_data
    from fedcl.training import resolve_device

    resolve_device(config.device)  # cuda requested but absent
    check_data(config)  # unreadable images, bad masks, too few tiles
    if config.server_data != "synthetic":
        # reads the reference set's tiles too, and counts both (real tiles: every round's)
        root_dataset(config, 1)
