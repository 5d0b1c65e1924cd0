"""Scale: round time and peak memory of `fedcl run` as the number of hospitals grows.

For each hospital count, ``fedcl run`` (fedavg, default data and model, 2 rounds) in a
fresh process; round time = round 2 (round 1 also starts the actors and generates the
tiles); peak memory = the largest proportional set size (PSS, shared pages split)
of the whole process tree, Ray's daemons and workers included, sampled every 0.25 s.
Fits ``time = a + b N`` and ``memory = a + b N``.

    python benchmarks/scale.py                   # 5, 10, 25, 50, 100 hospitals (~15 min)
    python benchmarks/scale.py --smoke           # 2, 4 hospitals, tiny tiles
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import fedcl_run, linear_fit, machine, result

from fedcl.config import RunConfig

GIB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--hospitals", default="5,10,25,50,100")
    args = parser.parse_args()
    counts = [int(n) for n in args.hospitals.split(",")]
    base = RunConfig(rounds=2)
    if args.smoke:
        counts = [2, 4]
        base = RunConfig(rounds=2, image_size=32, train_tiles=16, test_tiles=8)
    print(machine())
    times, memory = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            run = fedcl_run(base.replace(clients=n), Path(tmp) / f"n{n}")
            round_2 = next(r["wall_seconds"] for r in run["records"] if r["round"] == 2)
            times.append(round_2)
            memory.append(run["peak_bytes"] / GIB)
            print(
                f"{n:4d} hospitals: round {round_2:6.2f} s, peak {memory[-1]:.2f} GiB, "
                f"wall {run['wall']:.0f} s",
                flush=True,
            )
    t0, t1, t_r2 = linear_fit(counts, times)
    m0, m1, m_r2 = linear_fit(counts, memory)
    result(
        hospitals=",".join(map(str, counts)),
        round_s=",".join(f"{t:.2f}" for t in times),
        peak_gib=",".join(f"{m:.2f}" for m in memory),
        round_s_per_hospital=t1,
        round_s_fixed=t0,
        round_fit_r2=t_r2,
        gib_per_hospital=m1,
        gib_fixed=m0,
        memory_fit_r2=m_r2,
        max_peak_gib=max(memory),
    )


if __name__ == "__main__":
    main()
