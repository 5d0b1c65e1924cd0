"""PNG plots of a run (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_dice(records: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> None:
    """Plot mean foreground Dice per round, one thin line per hospital, mean bold."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    rounds = [r["round"] for r in records]
    hospitals = len(records[0]["dice_per_hospital"]) if records else 0
    for h in range(hospitals):
        values = [_nan(r["dice_per_hospital"][h]) for r in records]
        ax.plot(rounds, values, lw=1, alpha=0.6, label=f"hospital {h}")
    ax.plot(rounds, [_nan(r["dice"]) for r in records], "k-o", lw=2, ms=3, label="mean")
    ax.set_xlabel("round")
    ax.set_ylabel("mean foreground Dice (global model)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
