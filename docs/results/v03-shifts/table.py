"""Print the stage-shift tables of docs/RESULTS.md from the run folders beside this file.

Each folder ``<shift>-<strategy>-s<seed>`` holds a run's ``summary.json`` and
``config.toml``. Usage: ``python docs/results/v03-shifts/table.py``.
"""

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("acc", "forgetting", "acc_local_stats", "forgetting_local_stats")


def cell(values: list[float]) -> str:
    """Mean ± standard deviation over seeds."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    """One Markdown table per stage shift, one row per strategy."""
    for shift in ("tissue", "classes"):
        print(f"\n`stage-shift = {shift}`\n")
        print(
            "| strategy | seeds | ACC | forgetting | ACC, local statistics | "
            "forgetting, local statistics | last stage, local statistics |"
        )
        print("|---" * 7 + "|")
        for strategy in ("fedavg", "lwf", "dbc"):
            runs = [
                json.loads((d / "summary.json").read_text())
                for d in sorted(HERE.glob(f"{shift}-{strategy}-s*"))
            ]
            if not runs:
                continue
            cells = [cell([r[c] for r in runs]) for c in COLUMNS]
            last = cell([r["dice_matrix_local_stats"][-1][-1] for r in runs])
            print(f"| {strategy} | {len(runs)} | " + " | ".join(cells) + f" | {last} |")


if __name__ == "__main__":
    main()
