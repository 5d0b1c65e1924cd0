"""PNG plots of a run (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fedcl.entries import VARIANT  # noqa: E402
from fedcl.metrics import ORACLE, OWN, READING_NAMES  # noqa: E402


def plot_dice(
    records: Sequence[dict[str, Any]],
    path: Path,
    *,
    title: str = "",
    names: Sequence[str] = (),
) -> None:
    """Plot mean foreground Dice per round, one thin line per hospital, mean bold.

    ``names``: each hospital's legend entry (default ``hospital <id>``).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    rounds = [r["round"] for r in records]
    hospitals = len(records[0]["dice_per_hospital"]) if records else 0
    for h in range(hospitals):
        values = [_nan(r["dice_per_hospital"][h]) for r in records]
        label = names[h] if h < len(names) else f"hospital {h}"
        ax.plot(rounds, values, lw=1, alpha=0.6, label=label)
    ax.plot(rounds, [_nan(r["dice"]) for r in records], "k-o", lw=2, ms=3, label="mean")
    for reading, style, color in ((OWN, "--", "k"), (ORACLE, ":", "grey")):
        values = [_nan(r.get(f"dice{reading}")) for r in records]
        if any(v == v for v in values):  # not all NaN: the model has running statistics
            label = f"mean, {READING_NAMES[reading]}"
            ax.plot(rounds, values, style, lw=1.5, color=color, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("mean foreground Dice (global model)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_dbc(
    records: Sequence[dict[str, Any]],
    path: Path,
    *,
    title: str = "",
    tau: float | None = None,
    names: Sequence[str] = (),
    boundaries: Sequence[int] = (),
) -> None:
    """Plot DBC's peer score per hospital per round; rejections and threshold marked.

    With the evidence rule (rounds report ``evidence``), a panel shows each hospital's
    evidence against ``tau``, the line above which it is rejected; where rounds report
    a movement, a last panel shows it with the shifts found (a teacher named), the
    scenario's stage ``boundaries`` (first rounds of a new stage) to judge them by and,
    where recorded, the hospitals' first loss (the detector's second sign).
    """
    series, evidence, rejected, thresholds = _dbc_series(records)
    moved = any((r.get("aggregation") or {}).get("movement") is not None for r in records)
    panels = 1 + bool(evidence and tau is not None) + moved
    fig, axes = plt.subplots(panels, 1, figsize=(6.4, 3.4 * panels), dpi=110, squeeze=False)
    ax = axes[0][0]
    order = sorted(series, key=lambda h: (h is None, h))
    for hospital in order:
        xs, ys = zip(*series[hospital], strict=True)
        ax.plot(xs, ys, "-o", ms=3, lw=1, label=_name(hospital, names))
    if thresholds:
        xs, ys = zip(*thresholds, strict=True)
        ax.plot(xs, ys, "k--", lw=1, label="threshold")
    if rejected:
        xs, ys = zip(*rejected, strict=True)
        ax.plot(xs, ys, "rx", ms=9, mew=2, label="rejected")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylabel("peer score L_BC(consensus, reply)")
    ax.set_title(title, fontsize=9)
    if evidence and tau is not None:
        _evidence_panel(axes[1][0], evidence, tau, names)
    if moved:
        _movement_panel(axes[-1][0], records, boundaries)
    for row in axes:
        row[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        row[0].set_xlabel("round")
        row[0].grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


Series = dict[Any, list[tuple[int, float]]]


def _dbc_series(
    records: Sequence[dict[str, Any]],
) -> tuple[Series, Series, list[tuple[int, float]], list[tuple[int, float]]]:
    """Per hospital (round, peer score) and (round, evidence); rejections; thresholds."""
    series: Series = {}
    evidence: Series = {}
    rejected: list[tuple[int, float]] = []
    thresholds: list[tuple[int, float]] = []
    for record in records:
        report = record.get("aggregation") or {}
        if "peer_scores" not in report:
            continue
        rnd = record["round"]
        scores = report.get("evidence") or [None] * len(report["hospitals"])
        for hospital, score, decision, proof in zip(
            report["hospitals"], report["peer_scores"], report["decisions"], scores, strict=True
        ):
            if proof is not None:
                evidence.setdefault(hospital, []).append((rnd, proof))
            if score is None:
                continue
            series.setdefault(hospital, []).append((rnd, score))
            if decision != "accepted":
                rejected.append((rnd, score))
        if report.get("threshold") is not None:
            thresholds.append((rnd, report["threshold"]))
    return series, evidence, rejected, thresholds


def _evidence_panel(ax: Any, evidence: Series, tau: float, names: Sequence[str]) -> None:
    for hospital in sorted(evidence, key=lambda h: (h is None, h)):
        xs, ys = zip(*evidence[hospital], strict=True)
        ax.plot(xs, ys, "-o", ms=3, lw=1, label=_name(hospital, names))
    ax.axhline(tau, color="k", ls="--", lw=1, label=f"tau = {tau:g}: rejected above")
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, max(top, tau + 0.1 * (top - bottom)))  # the line in view
    ax.set_ylabel("evidence: mean log(peer / typical peer)")
    ax.legend(fontsize=7, ncol=2, loc="lower left")


def _movement_panel(ax: Any, records: Sequence[dict[str, Any]], boundaries: Sequence[int]) -> None:
    moves, found = [], []
    for record in records:
        report = record.get("aggregation") or {}
        if report.get("movement") is not None:
            moves.append((record["round"], report["movement"]))
            if report.get("shift_started"):
                found.append((record["round"], report["movement"]))
    xs, ys = zip(*moves, strict=True)
    ax.plot(xs, ys, "-o", color="0.35", ms=3, lw=1, label="movement")
    for i, first in enumerate(boundaries):
        ax.axvline(
            first, color="tab:green", ls=":", lw=1.5, label="a stage starts" if not i else None
        )
    if found:
        xs, ys = zip(*found, strict=True)
        ax.plot(xs, ys, "r^", ms=9, label="shift found: a teacher named")
    ax.set_yscale("log")
    ax.set_ylabel("movement: median L_BC(global, reply)")
    handles, labels = ax.get_legend_handles_labels()
    # the second sign of a shift (dbc-loss-jump): the received model's loss on the
    # hospitals' first batches, which a teacher does not damp
    losses = [(r["round"], r["first_loss"]) for r in records if r.get("first_loss") is not None]
    if losses:
        right = ax.twinx()
        xs, ys = zip(*losses, strict=True)
        right.plot(xs, ys, "--", color="tab:blue", lw=1, label="first loss (right)")
        right.set_ylabel("first loss: received model, first batches", color="tab:blue")
        more, names = right.get_legend_handles_labels()
        handles, labels = handles + more, labels + names
    ax.legend(handles, labels, fontsize=7, loc="best")


def _name(hospital: Any, names: Sequence[str]) -> str:
    if isinstance(hospital, int) and hospital < len(names):
        return names[hospital]
    return f"hospital {hospital}"


def plot_dice_matrix(
    matrices: Mapping[str, Sequence[Sequence[float | None]]],
    path: Path,
    *,
    title: str = "",
) -> None:
    """Heat maps of ``R[i][j]``: Dice on stage j's test data after stage i, side by side.

    ``matrices``: panel name -> matrix, e.g. as run, with the hospitals' own statistics
    and with oracle statistics (:data:`fedcl.metrics.READINGS`); empty ones are left out.
    """
    panels = [(name, m) for name, m in matrices.items() if m]
    size = max((len(m) for _, m in panels), default=1)
    fig, axes = plt.subplots(
        1, len(panels), figsize=((1.6 + 1.1 * size) * len(panels), 1.2 + 1.0 * size), dpi=110
    )
    axes = axes if len(panels) > 1 else [axes]
    for ax, (name, panel) in zip(axes, panels, strict=True):
        values = [[_nan(v) for v in row] for row in panel] or [[float("nan")]]
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                if value == value:  # not NaN
                    color = "white" if value < 0.6 else "black"
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=9)
        ax.set_xticks(range(len(values[0])))
        ax.set_yticks(range(len(values)))
        ax.set_xlabel("test data of stage j")
        ax.set_ylabel("after stage i")
        if len(panels) > 1:
            ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.colorbar(image, ax=list(axes), fraction=0.046, label="Dice")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_comparison(
    curves: dict[str, list[tuple[int, float, float]]],
    table: dict[str, dict[str, tuple[float | None, float | None]]],
    path: Path,
    *,
    title: str = "",
) -> None:
    """Plot strategies side by side: Dice per round, and final Dice / ACC / forgetting.

    Final Dice, ACC and forgetting appear with each hospital's own BatchNorm statistics
    (the headline, where the runs have them) and as run.

    Curves (top) are means over seeds with a band of one std. Below them one panel per
    figure, one horizontal bar per entry with a std error bar, in its curve's colour; the
    entries' names label the rows (broken before their options), so a comparison of
    twenty entries with long names stays readable: the figure grows downward.
    """
    color = entry_colors(list(dict.fromkeys([*table, *curves])))
    bars = {
        "final_dice_own_stats": "final Dice\n(own stats)",
        "final_dice": "final Dice\n(as run)",
        "acc_own_stats": "ACC\n(own stats)",
        "forgetting_own_stats": "forgetting\n(own stats)",
        "acc": "ACC\n(as run)",
        "forgetting": "forgetting\n(as run)",
    }
    # only the groups some strategy has a figure for (no empty "forgetting" in iid)
    metrics = [m for m in bars if any(row[m][0] is not None for row in table.values())]
    rows = list(table)
    labels = [wrapped_label(name) for name in rows]
    # a row per entry, taller where its name takes several lines; the first entry on top
    height = [0.25 + 0.12 * label.count("\n") for label in labels]
    ys = [-(sum(height[:i]) + height[i] / 2) for i in range(len(rows))]
    fig = plt.figure(figsize=(11, 3.8 + sum(height)), dpi=110)
    grid = fig.add_gridspec(2, max(len(metrics), 1), height_ratios=[3.0, 0.8 + sum(height)])
    _curve_panel(fig.add_subplot(grid[0, :]), curves, color)
    first = None
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(grid[1, i], sharey=first)
        first = first or ax
        ax.barh(
            ys,
            [_nan(table[name][metric][0]) for name in rows],
            height=0.2,
            xerr=[_nan(table[name][metric][1]) for name in rows],
            color=[color[name] for name in rows],
            capsize=2,
            error_kw={"elinewidth": 0.8},
        )
        ax.set_title(bars[metric], fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3, axis="x")
        if ax is first:
            ax.set_yticks(ys, labels, fontsize=7)
            ax.set_ylim(-sum(height), 0)
        else:
            ax.tick_params(axis="y", labelleft=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _curve_panel(ax: Any, curves: dict[str, list[tuple[int, float, float]]], color: Any) -> None:
    """Mean Dice per round, a band of one std, one line per entry."""
    for name, points in curves.items():
        rounds = [p[0] for p in points]
        mean = [p[1] for p in points]
        std = [p[2] for p in points]
        ax.plot(rounds, mean, "-o", ms=3, label=name, color=color[name])
        ax.fill_between(
            rounds,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            alpha=0.15,
            color=color[name],
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("mean foreground Dice")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)


def entry_colors(names: Sequence[str]) -> dict[str, Any]:
    """Return one colour per entry, the same in every panel of a figure.

    Parameters
    ----------
    names : sequence of str
        The entries, in the order they are drawn.

    Returns
    -------
    dict
        Per name an RGBA tuple: tab10's colours, or for more than ten entries the 60 of
        tab20, tab20b and tab20c (repeating only after that).
    """
    maps = ("tab10",) if len(names) <= 10 else ("tab20", "tab20b", "tab20c")
    palette = [plt.get_cmap(m)(i) for m in maps for i in range(plt.get_cmap(m).N)]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def wrapped_label(name: str, width: int = 32) -> str:
    """Return an entry's name broken before its ``+KEY=VALUE`` options into lines.

    No line passes ``width`` characters unless one option alone does.
    """
    lines = [""]
    for i, part in enumerate(name.split(VARIANT)):
        piece = part if i == 0 else VARIANT + part
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
