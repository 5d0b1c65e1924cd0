"""How ``fedcl run`` and ``fedcl compare`` make a simulated run, in this process or another.

:func:`simulate_with_progress` makes one with its progress bar and closing summary.
``fedcl compare --parallel N`` starts this module once per run (:func:`start`) and
hands it the run's config on standard input; the run is made by the same function,
attached to the study's Ray cluster, so it is the sequential comparison's run. Its
output (the progress bar, Flower's log) goes to ``<run directory>.log`` beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import tomli_w

from fedcl.compare import PlannedRun, run_log
from fedcl.config import RunConfig
from fedcl.configure import load_config
from fedcl.progress import RoundProgress
from fedcl.simulation import simulate


def simulate_with_progress(
    config: RunConfig, verbose: bool, resume: bool = False, cluster: str = ""
) -> None:
    """Make the run ``config`` describes, with a progress bar and its summary at the end."""
    with RoundProgress(config) as progress:
        simulate(
            config, callbacks=[progress.update], verbose=verbose, resume=resume, cluster=cluster
        )
    progress.print_summary()


def start(run: PlannedRun, cluster: str) -> subprocess.Popen[bytes]:
    """Start ``run`` in a new process attached to the Ray cluster at ``cluster``."""
    out = Path(run.config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with run_log(out).open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedcl.cli.runs"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    spec = {"resume": run.resume, "cluster": cluster}
    assert process.stdin is not None
    process.stdin.write((json.dumps(spec) + "\n" + tomli_w.dumps(run.config.to_mapping())).encode())
    process.stdin.close()
    return process


def main() -> int:
    """Make the run whose config arrives on standard input (:func:`start`)."""
    head, _, body = sys.stdin.read().partition("\n")
    spec = json.loads(head)
    config = load_config(tomllib.loads(body), source="fedcl compare")
    simulate_with_progress(config, False, spec["resume"], spec["cluster"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
