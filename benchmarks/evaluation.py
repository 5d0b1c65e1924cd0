"""What evaluation at the hospitals costs: hospital-side vs server-side evaluation.

The same run with ``evaluation = "hospitals"`` (each hospital scores the model it
receives, figures ride on its training reply, one evaluate message at the end) and
``"server"`` (the server regenerates every hospital's test tiles and scores them
itself), alternated ``--repeats`` times in this one invocation, (a) as a Ray simulation
(``fedcl run``) and (b) as local processes (``fedcl deploy local``). Reports the median
process wall time and the median steady round time (rounds 2..) of each, the ratios
hospitals / server, and whether both gave the same final Dice.

    python benchmarks/evaluation.py              # default workload, 5 rounds, 3 repeats
    python benchmarks/evaluation.py --smoke      # a few minutes
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from common import deploy_run, fedcl_run, result, steady_round_seconds, workload

MODES = ("hospitals", "server")


def main() -> None:
    config, repeats = workload(__doc__.splitlines()[0])
    walls: dict[tuple[str, str], list[float]] = {}
    rounds: dict[tuple[str, str], list[float]] = {}
    finals: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for mode in MODES:
                run = config.replace(evaluation=mode)
                outcomes = {
                    "sim": fedcl_run(run, Path(tmp) / f"sim-{mode}-{repeat}"),
                    "deploy": deploy_run(run, Path(tmp) / f"deploy-{mode}-{repeat}"),
                }
                for engine, outcome in outcomes.items():
                    walls.setdefault((engine, mode), []).append(outcome["wall"])
                    rounds.setdefault((engine, mode), []).append(
                        steady_round_seconds(outcome["records"])
                    )
                    finals[engine, mode] = outcome["records"][-1]["dice"]
                    print(
                        f"repeat {repeat + 1} {engine} evaluation={mode}: "
                        f"{outcome['wall']:.1f} s, final Dice {finals[engine, mode]:.4f}",
                        flush=True,
                    )
    figures: dict[str, float | int | bool] = {}
    for engine in ("sim", "deploy"):
        for mode in MODES:
            figures[f"{engine}_{mode}_wall_s"] = statistics.median(walls[engine, mode])
            figures[f"{engine}_{mode}_round_s"] = statistics.median(rounds[engine, mode])
        figures[f"{engine}_wall_ratio"] = (
            figures[f"{engine}_hospitals_wall_s"] / figures[f"{engine}_server_wall_s"]
        )
        figures[f"{engine}_round_ratio"] = (
            figures[f"{engine}_hospitals_round_s"] / figures[f"{engine}_server_round_s"]
        )
        figures[f"{engine}_same_dice"] = (
            abs(finals[engine, "hospitals"] - finals[engine, "server"]) < 1e-6
        )
    result(**figures, repeats=repeats, hospitals=config.clients, rounds=config.rounds)


if __name__ == "__main__":
    main()
