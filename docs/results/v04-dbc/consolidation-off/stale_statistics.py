"""How far the as-run reading falls in rounds with a server-side consolidation step.

A step changes the weights on the server; the BatchNorm statistics stay the hospitals'
for the weights before it. For every DBC run on the tuning seeds 0-2 under
docs/results/v04-dbc/ (a run kept in two folders counted once), each evaluated round's
gap "as-run Dice - own-statistics Dice" in rounds with an anchor step, against the same
run's mean gap in rounds without one (own statistics re-estimate the statistics for the
weights as they are, so their difference is what the stale statistics cost).

    python docs/results/v04-dbc/consolidation-off/stale_statistics.py
"""

import glob
import statistics
from pathlib import Path
from typing import Any

from fedcl.recorder import read_metrics

ROOT = Path(__file__).resolve().parents[1]  # docs/results/v04-dbc


def gaps(records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Return a run's gaps in rounds with a consolidation step and in rounds without one."""
    stepped, calm = [], []
    for record in records:
        step = (record.get("aggregation") or {}).get("consolidation")
        if record.get("dice") is None or record.get("dice_own_stats") is None or not step:
            continue
        if step.get("by", "anchor") != "anchor":  # "teacher" re-estimates statistics after
            continue
        gap = record["dice"] - record["dice_own_stats"]
        (stepped if step.get("steps", 0) > 0 else calm).append(gap)
    return stepped, calm


def main() -> None:
    """Print every stepped round's gap and their mean against the run's usual."""
    seen, differences = set(), []
    runs = glob.glob(str(ROOT / "*/*/dbc*-s[012]")) + glob.glob(str(ROOT / "*/dbc*-s[012]"))
    for name in sorted(runs):
        run = Path(name)
        if not (run / "metrics.jsonl").exists():
            continue
        records = read_metrics(run)
        key = tuple(record.get("dice") for record in records)  # the same run twice
        if key in seen:
            continue
        seen.add(key)
        stepped, calm = gaps(records)
        if not stepped or not calm:
            continue
        usual = statistics.fmean(calm)
        for gap in stepped:
            differences.append(gap - usual)
            print(f"{run.relative_to(ROOT)}: {gap:+.3f} in a stepped round, {usual:+.3f} usually")
    print(
        f"{len(differences)} stepped rounds: the gap {statistics.fmean(differences):+.3f} "
        f"below the run's usual on average ({min(differences):+.3f} to {max(differences):+.3f})"
    )


if __name__ == "__main__":
    main()
