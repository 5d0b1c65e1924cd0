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


def cell(row: dict[str, str] | None, key: str) -> str:
    """``mean ± std`` of one column, or a dash where the run is missing."""
    if row is None or not row.get(f"{key}_mean"):
        return "-"
    mean, std = float(row[f"{key}_mean"]), row.get(f"{key}_std") or "0"
    if len(row.get("seeds", "").split()) == 1:
        return f"{mean:.3f} (seed {row['seeds']})"
    return f"{mean:.3f} ± {float(std):.3f}"


def detection(row: dict[str, str] | None) -> str:
    """`` (P p, R r)`` for a strategy that reports rejections, else nothing."""
    if row is None or not row.get("recall_mean"):
        return ""
    return f" (P {float(row['precision_mean']):.2f}, R {float(row['recall_mean']):.2f})"


def main() -> None:
    """Print the headline table: one row per strategy, the targets' figures per scenario."""
    iid = rows(HERE / "iid-results.csv")
    drift = rows(HERE / "client-drift-results.csv")
    older = rows(HERE.parent / "paper-bn" / "client-drift-results.csv")
    forgetting = rows(HERE / "catastrophic-forgetting-results.csv")
    both = rows(HERE / "drift-and-forgetting-results.csv")
    print(
        "| strategy | iid: Dice | client drift: Dice | forgetting: ACC | forgetting: "
        "forgetting | drift + forgetting: ACC | drift + forgetting: forgetting |"
    )
    print("|---" * 7 + "|")
    for name in ORDER:
        cd = drift.get(name) or (older.get(name) if name in UNCHANGED else None)
        mark = "" if name in drift or cd is None else " (v0.2)"
        if cd is None and name in SAME_AS:
            cd, mark = older.get(SAME_AS[name]), f" (= {SAME_AS[name]}, v0.2)"
        cells = [
            cell(iid.get(name), "final_dice"),
            cell(cd, "final_dice") + mark + detection(cd),
            cell(forgetting.get(name), "acc_local_stats"),
            cell(forgetting.get(name), "forgetting_local_stats"),
            cell(both.get(name), "acc_local_stats"),
            cell(both.get(name), "forgetting_local_stats") + detection(both.get(name)),
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
