"""TensorBoard event files for a run, so ``tensorboard --logdir runs/`` shows a study.

A :class:`TensorBoardLog` gets every round record as it completes (a run recorder
callback) and writes, at that round as the step: the mean Dice (as run and with local
statistics), each hospital's Dice, the train and test loss, and, for strategies that
report them (DBC), each hospital's peer score and the number of rejected replies. At the
end it writes the configuration as hyper-parameters with the run's summary figures.
Files go to the run directory itself (``events.out.tfevents.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcl.config import RunConfig


class TensorBoardLog:
    """Write a run's round records and summary as TensorBoard scalars and hparams."""

    def __init__(self, config: RunConfig, run_dir: Path, names: list[str]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # the server only

        self.config = config
        self.names = names  # each hospital's label (its sites for real data)
        self.writer = SummaryWriter(log_dir=str(run_dir))

    def __call__(self, record: Mapping[str, Any]) -> None:
        """Write one round's record (round 0: the initial model)."""
        step = int(record["round"])
        scalars = {
            "dice/mean": record.get("dice"),
            "dice/mean, own statistics": record.get("dice_own_stats"),
            "dice/mean, oracle statistics": record.get("dice_oracle_stats"),
            "loss/train": record.get("train_loss"),
            "loss/test": record.get("test_loss"),
        }
        for h, dice in enumerate(record.get("dice_per_hospital") or []):
            scalars[f"dice per hospital/{self._name(h)}"] = dice
        report = record.get("aggregation") or {}
        if "peer_scores" in report:
            for h, score in zip(report["hospitals"], report["peer_scores"], strict=True):
                if h is not None:
                    scalars[f"dbc peer score/{self._name(h)}"] = score
            rejected = sum(d != "accepted" for d in report["decisions"])
            scalars["dbc/rejected replies"] = rejected
        for tag, value in scalars.items():
            if isinstance(value, int | float):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Write the configuration as hyper-parameters with the run's figures; close."""
        figures = {
            f"summary/{k}": float(v)
            for k, v in summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "seed"
        }
        self.writer.add_hparams(dict(self.config.to_mapping()), figures, run_name="hparams")
        self.writer.close()

    def _name(self, hospital: int) -> str:
        return self.names[hospital] if hospital < len(self.names) else f"hospital {hospital}"
