"""One run of a parallel ``fedcl compare`` (``--parallel N``), in a process of its own.

``fedcl compare`` starts this module once per run (:func:`start`) and hands it the run's
config on standard input; the run is made exactly as the sequential comparison makes
it, by the same function, attached to the study's Ray cluster. Its output (the progress
bar, Flower's log) goes to ``<run directory>.log`` beside the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import tomli_w

# the sequential comparison's own function makes the run: the same run, bit for bit
from fedcl.cli import _simulate_with_progress
from fedcl.compare import PlannedRun
from fedcl.configure import load_config


def start(run: PlannedRun, cluster: str) -> subprocess.Popen[bytes]:
    """Start ``run`` in a new process attached to the Ray cluster at ``cluster``."""
    out = Path(run.config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedcl.cli.study_worker"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    spec = {"resume": run.resume, "cluster": cluster}
    assert process.stdin is not None
    process.stdin.write(
        (json.dumps(spec) + "\n" + tomli_w.dumps(run.config.to_mapping())).encode()
    )
    process.stdin.close()
    return process


def main() -> int:
    """Make the run whose config arrives on standard input (:func:`start`)."""
    head, _, body = sys.stdin.read().partition("\n")
    spec = json.loads(head)
    config = load_config(tomllib.loads(body), source="fedcl compare")
    _simulate_with_progress(config, False, spec["resume"], spec["cluster"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
