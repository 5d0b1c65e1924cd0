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


def plot_dbc(records: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> None:
    """Plot DBC's peer score per hospital per round; rejections and threshold marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    series: dict[int, list[tuple[int, float]]] = {}
    rejected: list[tuple[int, float]] = []
    thresholds: list[tuple[int, float]] = []
    for record in records:
        report = record.get("aggregation") or {}
        if "peer_scores" not in report:
            continue
        rnd = record["round"]
        for hospital, score, decision in zip(
            report["hospitals"], report["peer_scores"], report["decisions"], strict=True
        ):
            if score is None:
                continue
            series.setdefault(hospital, []).append((rnd, score))
            if decision != "accepted":
                rejected.append((rnd, score))
        if report.get("threshold") is not None:
            thresholds.append((rnd, report["threshold"]))
    for hospital in sorted(series, key=lambda h: (h is None, h)):
        xs, ys = zip(*series[hospital], strict=True)
        ax.plot(xs, ys, "-o", ms=3, lw=1, label=f"hospital {hospital}")
    if thresholds:
        xs, ys = zip(*thresholds, strict=True)
        ax.plot(xs, ys, "k--", lw=1, label="threshold")
    if rejected:
        xs, ys = zip(*rejected, strict=True)
        ax.plot(xs, ys, "rx", ms=9, mew=2, label="rejected")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("round")
    ax.set_ylabel("peer score L_BC(consensus, reply)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
