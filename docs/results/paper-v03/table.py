"""Print the results table of docs/RESULTS.md from the result files beside this script.

``<scenario>-results.csv`` are ``fedcl compare``'s tables of version 0.3 (mean and std
over seeds 0, 1, 2). The client-drift rows of the strategies whose code and data did not
change in version 0.3 come from version 0.2's table (``../paper-bn/``): their iid runs
reproduced version 0.2 to the last digit; LwF's is FedAvg's (no stages, no distillation).
Usage: ``python docs/results/paper-v03/table.py``.
"""

import csv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = (
    "fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan",
    "fltrust", "fedbn", "silobn", "lwf", "dbc",
)  # fmt: skip
UNCHANGED = ORDER[:8]  # same code and data as version 0.2 in iid and client drift
# Without stages LwF never distils: its iid runs equal FedAvg's to the last digit, so its
# client-drift row is FedAvg's.
SAME_AS = {"lwf": "fedavg"}


def rows(path: Path) -> dict[str, dict[str, str]]:
    """One CSV row per strategy, by name."""
    if not path.exists():
        return {}
    with path.open() as handle:
        return {row["strategy"]: row for row in csv.DictReader(handle)}


def figure(row: dict[str, str] | None, key: str) -> tuple[float, str] | None:
    """``(mean, "mean ± std")`` of one column, or None where the run is missing."""
    if row is None or not row.get(f"{key}_mean"):
        return None
    mean, std = float(row[f"{key}_mean"]), row.get(f"{key}_std") or "0"
    if len(row.get("seeds", "").split()) == 1:
        return mean, f"{mean:.3f} (seed {row['seeds']})"
    return mean, f"{mean:.3f} ± {float(std):.3f}"


def column(figures: list[tuple[float, str] | None], best=max) -> list[str]:
    """Return one column's cells, the best mean (to 3 decimals) in bold, "-" where missing."""
    means = [round(f[0], 3) for f in figures if f is not None]
    top = best(means) if means else None
    return ["-" if f is None else f"**{f[1]}**" if round(f[0], 3) == top else f[1] for f in figures]


def detection(row: dict[str, str] | None) -> str:
    """``precision p, recall r`` of a strategy that reports rejections, else ""."""
    if row is None or not row.get("recall_mean"):
        return ""
    return f"precision {float(row['precision_mean']):.2f}, recall {float(row['recall_mean']):.2f}"


def table(head: list[str], names: list[str], columns: list[list[str]]) -> str:
    """Return a Markdown table: one row per strategy, one column per figure."""
    lines = ["| " + " | ".join(["strategy", *head]) + " |", "|---" * (len(head) + 1) + "|"]
    for i, name in enumerate(names):
        lines.append("| " + " | ".join([name, *(c[i] for c in columns)]) + " |")
    return "\n".join(lines)


def headline() -> str:
    """Return the two headline tables of docs/RESULTS.md and their notes, as Markdown."""
    iid = rows(HERE / "iid-results.csv")
    drift = rows(HERE / "client-drift-results.csv")
    older = rows(HERE.parent / "paper-bn" / "client-drift-results.csv")
    forgetting = rows(HERE / "catastrophic-forgetting-results.csv")
    both = rows(HERE / "drift-and-forgetting-results.csv")
    names = list(ORDER)
    drift_rows, marks = [], []
    for name in names:
        row, mark = drift.get(name), ""
        if row is None and name in UNCHANGED:
            row, mark = older.get(name), "<sup>†</sup>"
        if row is None and name in SAME_AS:
            row, mark = older.get(SAME_AS[name]), "<sup>‡</sup>"
        drift_rows.append(row)
        marks.append(mark)
    drift_cells = column([figure(r, "final_dice") for r in drift_rows])
    without = table(
        ["iid: final Dice ↑", "client drift: final Dice ↑"],
        names,
        [
            column([figure(iid.get(n), "final_dice") for n in names]),
            [cell + mark for cell, mark in zip(drift_cells, marks, strict=True)],
        ],
    )
    staged = table(
        [
            "forgetting: ACC ↑",
            "forgetting: forgetting ↓",
            "drift + forgetting: ACC ↑",
            "drift + forgetting: forgetting ↓",
        ],
        names,
        [
            column([figure(forgetting.get(n), "acc_local_stats") for n in names]),
            column([figure(forgetting.get(n), "forgetting_local_stats") for n in names], min),
            column([figure(both.get(n), "acc_local_stats") for n in names]),
            column([figure(both.get(n), "forgetting_local_stats") for n in names], min),
        ],
    )
    rejecting = [
        f"{name}: client drift {detection(drift_rows[i])}; drift and forgetting "
        f"{detection(both.get(name))}"
        for i, name in enumerate(names)
        if detection(drift_rows[i])
    ]
    return "\n".join(
        [
            "**Without stages**: the final model's Dice.",
            "",
            without,
            "",
            (
                "<sup>†</sup> version 0.2's runs (same code and data; see above). "
                "<sup>‡</sup> FedAvg's runs: without stages LwF is FedAvg."
            ),
            "",
            "**With stages**: ACC and forgetting with the hospitals' own BatchNorm statistics.",
            "",
            staged,
            "",
            "Bold: the best mean of a column (highest ↑, lowest ↓); most differences are "
            "within the seed spread, and a low forgetting beside a low ACC is a stage "
            "learned less, not kept better. Rejections of drifted hospitals: "
            + "; ".join(rejecting)
            + ".",
        ]
    )


def main() -> None:
    """Print the headline tables (what docs/RESULTS.md holds between its markers)."""
    print(headline())


if __name__ == "__main__":
    main()
