"""A live progress bar for a run: rounds done, mean Dice, seconds per round."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
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


class RoundProgress:
    """Context manager showing a rich progress bar; :meth:`update` is a round callback."""

    def __init__(self, config: RunConfig, console: Console | None = None) -> None:
        self.config = config
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
        self.task = self.progress.add_task(
            "rounds", total=config.rounds, status="starting Ray and the hospitals..."
        )

    def __enter__(self) -> RoundProgress:
        self.console.print(
            f"fedcl run: strategy={self.config.strategy} scenario={self.config.scenario} "
            f"clients={self.config.clients} rounds={self.config.rounds} "
            f"seed={self.config.seed} -> {self.config.out}"
        )
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def update(self, record: dict[str, Any]) -> None:
        """Show a completed round record (round 0 is the initial model)."""
        dice = record["dice"]
        status = f"Dice {dice:.3f}" if dice is not None else "Dice n/a"
        if record["round"] > 0:
            status += f" | {record['wall_seconds']:.1f} s/round"
        self.progress.update(self.task, completed=record["round"], status=status)

    def print_summary(self) -> None:
        """Print the run's summary.json in one line."""
        summary = json.loads((Path(self.config.out) / "summary.json").read_text())
        dice = summary["final_dice"]
        self.console.print(
            f"done: final Dice {dice if dice is None else round(dice, 4)} after "
            f"{summary['rounds']} rounds in {summary['wall_seconds']:.1f} s; "
            f"run directory {self.config.out}"
        )
