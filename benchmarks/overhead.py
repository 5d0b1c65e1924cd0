"""Framework overhead: `fedcl run` on Flower/Ray vs the same workload as a bare loop.

(a) ``fedcl run`` and (b) ``python benchmarks/bare.py`` (see there), each a fresh
process timed from launch to exit (both pay Python and torch start-up), alternated
``--repeats`` times in this one invocation; medians and the ratio a/b. Also the
steady-state round time of each (rounds 2..), where start-up does not count.

    python benchmarks/overhead.py              # default workload, 5 rounds, 3 repeats
    python benchmarks/overhead.py --smoke      # < 1 minute
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
from common import ROOT, fedcl_run, result, steady_round_seconds, workload

from fedcl.config import RunConfig


def bare_run(config: RunConfig, directory: Path) -> dict:
    """Run benchmarks/bare.py on ``config`` in a fresh process; add its wall time."""
    config_file = directory / "bare.toml"
    config_file.write_text(tomli_w.dumps(config.to_mapping()))
    start = time.perf_counter()
    output = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bare.py"), str(config_file)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    outcome = json.loads(output.strip().splitlines()[-1])
    outcome["process_wall"] = time.perf_counter() - start
    return outcome


def main() -> None:
    config, repeats = workload(__doc__.splitlines()[0])
    fedcl_walls, bare_walls, fedcl_rounds, bare_rounds = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            a = fedcl_run(config, Path(tmp) / f"fedcl-{repeat}")
            b = bare_run(config, Path(tmp))
            fedcl_walls.append(a["wall"])
            bare_walls.append(b["process_wall"])
            fedcl_rounds.append(steady_round_seconds(a["records"]))
            later = b["round_seconds"][1:] or b["round_seconds"]
            bare_rounds.append(statistics.median(later))
            print(
                f"repeat {repeat + 1}: fedcl {a['wall']:.1f} s (final Dice "
                f"{a['records'][-1]['dice']:.3f}), bare {b['process_wall']:.1f} s "
                f"(final Dice {b['dice'][-1]:.3f})",
                flush=True,
            )
    fedcl_wall, bare_wall = statistics.median(fedcl_walls), statistics.median(bare_walls)
    result(
        fedcl_wall_s=fedcl_wall,
        bare_wall_s=bare_wall,
        ratio=fedcl_wall / bare_wall,
        fedcl_round_s=statistics.median(fedcl_rounds),
        bare_round_s=statistics.median(bare_rounds),
        repeats=repeats,
        hospitals=config.clients,
        rounds=config.rounds,
    )


if __name__ == "__main__":
    main()
