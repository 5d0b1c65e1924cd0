"""What the ``fedcl`` commands that run experiments share: flags, config, checks.

Their flags, the config they resolve to, and the checks made before anything starts.

Every configuration key is a flag with the same kebab-case name as its TOML key
(:func:`fedcl.config.keys`); precedence is defaults < ``--config FILE`` < flags.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from fedcl.config import SECTIONS, RunConfig, keys, parse_bool, read_toml
from fedcl.errors import FedclError


def add_run_options(parser: argparse.ArgumentParser, out_help: str = "") -> None:
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
    for key in keys():
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


def check_fresh(config: RunConfig, overwrite: bool) -> None:
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


class Parser(argparse.ArgumentParser):
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


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < ``--config`` file < flags, validated, with a run directory."""
    values = {}
    if args.config:
        values = read_toml(args.config)
        RunConfig.from_mapping(values, source=str(args.config))  # its own errors name it
    flags = {k.name: getattr(args, k.dest) for k in keys() if hasattr(args, k.dest)}
    return RunConfig.from_mapping(values | flags, source="command line").with_run_dir()


def preflight(config: RunConfig) -> None:
    """Fail on bad input now, with a clear message, not after Ray or a deployment starts."""
    from fedcl.data.real import check_layout
    from fedcl.plugins import MODELS, STRATEGIES

    STRATEGIES.check(config.strategy)  # a typo answered before torch loads
    MODELS.check(config.model)
    check_layout(config)  # so are a wrong data path, a missing mask, too few sites
    if config.strategy not in STRATEGIES.builtin:
        from fedcl.strategies.catalog import check_strategy

        check_strategy(config.strategy)  # a plug-in: importable, a Flower Strategy
    from fedcl.scenarios.tiles import check_data
    from fedcl.training import resolve_device

    resolve_device(config.device)  # cuda requested but absent
    check_data(config)  # unreadable images, bad masks, too few tiles
