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

from fedcl.cli.interrupt import INTERRUPTED
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
    if INTERRUPTED.is_set():  # the run ended early, whatever Flower made of the interrupt
        raise KeyboardInterrupt
    progress.print_summary()


def share_cluster(runs_at_once: int) -> None:
    """Size this process's Flower actor pool to its share of the cluster.

    Flower 1.42 gives every run as many hospital actors as the whole cluster holds
    (``pool_size_from_resources``, read when the pool is built). Runs sharing a cluster
    would each ask for all of it; an actor that never gets its cores holds up its
    run's round, and two runs each waiting on such an actor wait forever. With a share
    each, every actor of every run fits at once. Which actor serves a hospital changes
    no figure.
    """
    # Flower's simulation internals: imported (and patched) only in a parallel run's process
    from flwr.simulation.ray_transport import ray_actor

    whole = ray_actor.pool_size_from_resources

    def share(client_resources: dict[str, int | float]) -> int:
        return max(1, whole(client_resources) // runs_at_once)

    ray_actor.pool_size_from_resources = share


def start(run: PlannedRun, cluster: str, runs_at_once: int) -> subprocess.Popen[bytes]:
    """Start ``run`` in a new process attached to the Ray cluster at ``cluster``.

    ``runs_at_once``: how many runs share the cluster (:func:`share_cluster`).
    """
    out = Path(run.config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with run_log(out).open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedcl.cli.runs"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    spec = {"resume": run.resume, "cluster": cluster, "runs_at_once": runs_at_once}
    assert process.stdin is not None
    process.stdin.write((json.dumps(spec) + "\n" + tomli_w.dumps(run.config.to_mapping())).encode())
    process.stdin.close()
    return process


def main() -> int:
    """Make the run whose config arrives on standard input (:func:`start`)."""
    head, _, body = sys.stdin.read().partition("\n")
    spec = json.loads(head)
    config = load_config(tomllib.loads(body), source="fedcl compare")
    share_cluster(spec["runs_at_once"])
    simulate_with_progress(config, False, spec["resume"], spec["cluster"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
