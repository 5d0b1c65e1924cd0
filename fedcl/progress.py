"""A live progress bar for a run: rounds done, mean Dice, seconds per round."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedcl.config import RunConfig
from fedcl.configure import server_tiles
from fedcl.metrics import MESSAGE_PHASES
from fedcl.scenarios import scenario_of


class RoundProgress:
    """Context manager showing a rich progress bar; :meth:`update` is a round callback."""

    def __init__(
        self,
        config: RunConfig,
        console: Console | None = None,
        command: str = "fedcl run",
        starting: str = "starting Ray and the hospitals...",
    ) -> None:
        self.config = config
        self.staged = scenario_of(config).staged
        self.command = command
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task("rounds", total=config.rounds, status=starting)

    def __enter__(self) -> RoundProgress:
        self.started = time.perf_counter()
        self.console.print(
            f"{self.command}: strategy={self.config.strategy} scenario={self.config.scenario} "
            f"clients={self.config.clients} rounds={self.config.rounds} "
            f"seed={self.config.seed} -> {self.config.out}"
        )
        for line in _provenance_lines(self.config):
            self.console.print("  " + line)
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, record: dict[str, Any]) -> None:
        """Show a completed round record (round 0 is the initial model)."""
        dice = record["dice"]
        status = f"Dice {dice:.3f}" if dice is not None else "Dice n/a"
        if self.staged:
            status = f"stage {record['stage'] + 1}/{self.config.stages} | {status}"
        decisions = (record.get("aggregation") or {}).get("decisions")
        if decisions:
            status += f" | rejected {sum(d != 'accepted' for d in decisions)}/{len(decisions)}"
        if record["round"] > 0:
            status += f" | {record['wall_seconds']:.1f} s/round"
        self.progress.update(self.task, completed=record["round"], status=status)

    def print_summary(self) -> None:
        """Print the run's summary.json in one or two lines, and where the time went."""
        summary = json.loads((Path(self.config.out) / "summary.json").read_text())
        for line in summary_lines(summary, self.config.out):
            self.console.print(line)
        total = time.perf_counter() - self.started
        rest = total - summary["wall_seconds"]
        if rest > 1:
            self.console.print(
                f"      {self.command} took {total:.0f} s in all: the rounds "
                f"{summary['wall_seconds']:.0f} s (the first includes the hospitals' "
                f"start-up), starting and stopping Ray or the Flower processes {rest:.0f} s"
            )


def summary_lines(summary: dict[str, Any], run_dir: str, lead: str = "done") -> list[str]:
    """Return a run's summary in one or two lines (``fedcl run``'s last, ``fedcl report``)."""
    own_dice = summary.get("final_dice_own_stats")
    own = "" if own_dice is None else f" ({_fmt(own_dice)} with own statistics)"
    first = (
        f"{lead}: final Dice {_fmt(summary['final_dice'])}{own} after {summary['rounds']} rounds "
        f"in {summary['wall_seconds']:.1f} s; run directory {run_dir}"
    )
    lines = [first]
    staged = len(summary["dice_matrix"]) > 1
    extra = (
        [
            f"{key} {_fmt(summary[key])}"
            for key in ("acc", "bwt", "forgetting")
            if summary[key] is not None and staged
        ]
        + [
            # with the statistics a hospital can re-estimate itself (fedcl.evaluation)
            f"{key.removesuffix('_own_stats')} {_fmt(summary[key])} with own statistics"
            for key in ("acc_own_stats", "forgetting_own_stats")
            if summary.get(key) is not None and staged
        ]
        + [
            f"detection {key} {_fmt(value)}"
            for key, value in summary["detection"].items()
            if value is not None
        ]
    )
    if extra:
        lines.append("      " + ", ".join(extra))
    timing = summary.get("hospital_seconds")
    if timing and timing.get("evaluation_share") is not None:
        lines.append(
            f"      a hospital's round: {timing.get('training', 0):.1f} s training, "
            f"{timing.get('evaluation', 0):.1f} s evaluating "
            f"({100 * timing['evaluation_share']:.0f} %), {timing.get('receive', 0):.1f} s "
            "receiving"
        )
        if all(timing.get(phase) is not None for phase in MESSAGE_PHASES):
            lines.append("      its messages: " + _messages(timing))
    return lines


def _messages(timing: dict[str, Any]) -> str:
    """Say where a hospital's messages spent their time: a deployment's or a simulation's way."""
    delivery, start, reply = (timing[phase] for phase in MESSAGE_PHASES)
    if start > 0:  # a ClientApp process per message (deployment)
        return f"{delivery:.1f} s delivery, {start:.1f} s ClientApp start, {reply:.1f} s reply"
    # workers that live on (simulation): the wait is for a free one
    return f"{delivery:.1f} s to a free worker, {reply:.1f} s back"


def _provenance_lines(config: RunConfig) -> list[str]:
    """Return what the run uses that a researcher should not have to guess."""
    # imported for real data only: the tiles' libraries
    from fedcl.scenarios.tiles import hospital_sources, provenance

    if config.data == "synthetic":
        return []
    sources = hospital_sources(config)
    lines = [
        f"data {config.data}: " + "; ".join(f"hospital {h} = {s}" for h, s in enumerate(sources))
    ]
    found = provenance(config)
    for server_set in server_tiles(config.strategy):
        lines.append(f"{server_set.replace('_', ' ')}: {found[server_set]}")
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
