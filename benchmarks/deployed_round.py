"""Where a deployed round goes: `fedcl deploy local` beside the simulation, part by part.

The same run (3 hospitals, `dbc`, default data, ``--rounds``) as (a) a Ray simulation
(``fedcl run``), (b) ``fedcl deploy local`` (warm ClientApps, the default) and (c)
``fedcl deploy local --fresh-clientapps`` (a fresh Python per message, Flower's way),
each once per repeat, alternated. Each round of rounds 2.. is split from the run's own
records (``metrics.jsonl``'s ``hospital_seconds``, :func:`fedcl.metrics.round_parts`):

- delivery: from the server's making the message to the ClientApp process (deployment:
  the SuperNode's and SuperExec's polling, the process's spawn); to the handler where
  the process lives on (simulation);
- start: from the ClientApp process's start to the handler (imports, Flower's set-up);
- receive, evaluation, training: the hospital's handler;
- reply: from the reply's making to the server's pulling it;
- rest: the round less those (the server's scoring and aggregation, waiting on the
  slowest hospital).

Each part is the hospitals' mean, each figure the median over rounds and repeats. The
goal (a deployed round within the simulation's round + Flower's 3 s polling + 1 s) is
reported as ``deploy_over_goal_s`` (negative: met). Containers: ``scripts/compose_check.py
--compare`` writes the same parts for the compose deployment.

    python benchmarks/deployed_round.py              # 3 hospitals, 5 rounds, 1 repeat
    python benchmarks/deployed_round.py --smoke      # tiny, ~3 minutes
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import deploy_run, fedcl_run, machine, result

from fedcl.config import RunConfig
from fedcl.metrics import round_parts

POLLING = 3.0  # seconds: a SuperNode with no work sleeps this long (Flower, fixed)
MODES = {"sim": None, "deploy": (), "fresh": ("--fresh-clientapps",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny workload")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hospitals", type=int, default=3)
    args = parser.parse_args()
    config = RunConfig(clients=args.hospitals, rounds=args.rounds, strategy="dbc")
    if args.smoke:
        config = config.replace(rounds=3, image_size=32, train_tiles=8, test_tiles=4)
    print(machine())
    tiles = f"{config.train_tiles} + {config.test_tiles} tiles of {config.image_size} px"
    print(f"workload: {config.clients} hospitals x {config.rounds} rounds, dbc, {tiles}")
    parts: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode, flags in MODES.items():
                out = Path(tmp) / f"{mode}-{repeat}"
                if flags is None:
                    outcome = fedcl_run(config, out)
                else:
                    outcome = deploy_run(config, out, *flags)
                split = round_parts(outcome["records"])
                if split is None:
                    raise RuntimeError(f"{mode}: the run recorded no message timings")
                parts[mode].append(split)
                print(f"repeat {repeat + 1} {mode}: {outcome['wall']:.1f} s, "
                      f"steady round {split['wall']:.2f} s", flush=True)  # fmt: skip
    medians = {
        mode: {k: statistics.median(s[k] for s in splits) for k in splits[0]}
        for mode, splits in parts.items()
    }
    keys = list(medians["sim"])
    print("\nseconds per round (median of rounds 2..), each part the hospitals' mean")
    print("| part | " + " | ".join(MODES) + " |")
    print("|---|" + "---|" * len(MODES))
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{medians[m][key]:.2f}" for m in MODES) + " |")
    goal = medians["sim"]["wall"] + POLLING + 1.0
    result(
        **{f"{mode}_{key}_s": medians[mode][key] for mode in MODES for key in keys},
        deploy_over_goal_s=medians["deploy"]["wall"] - goal,
        fresh_over_goal_s=medians["fresh"]["wall"] - goal,
        hospitals=config.clients,
        rounds=config.rounds,
        repeats=args.repeats,
    )


if __name__ == "__main__":
    main()
