"""Check that a refactoring changes no figure: fingerprints of a fixed set of tiny runs.

    python tools/same_figures.py record tools/same_figures.json   # before the change
    python tools/same_figures.py check tools/same_figures.json    # after it

The set: every built-in strategy for 2 rounds (iid); DBC for 6 rounds in every
scenario; and DBC under catastrophic forgetting killed (SIGKILL, driver and Ray) in
round 4 and resumed, which must end as the uninterrupted run does. A run's fingerprint
is a hash of its ``summary.json`` without timings and a hash of its final model's
tensors. Everything runs on the CPU (bit-reproducible there), in a few minutes on 2
cores; ``--work DIR`` keeps the runs for a closer look.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fedcl.metrics import without_timing

TINY = [
    "--seeds", "0", "--clients", "3", "--rounds-per-stage", "2", "--train-tiles", "24",
    "--test-tiles", "8", "--image-size", "32", "--reference-size", "8", "--root-tiles", "8",
    "--dbc-warmup", "1", "--device", "cpu",
]  # fmt: skip


def fingerprint(run: Path) -> dict[str, str]:
    """Hashes of a run's summary (timings aside) and of its final model."""
    summary = without_timing(json.loads((run / "summary.json").read_text()))
    model = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    digest = hashlib.sha256()
    for key in sorted(model):
        digest.update(key.encode())
        digest.update(model[key].contiguous().numpy().tobytes())
    text = json.dumps(summary, sort_keys=True).encode()
    return {"summary": hashlib.sha256(text).hexdigest(), "model": digest.hexdigest()}


def _fedcl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fedcl", *args], check=True)


def _killed_and_resumed(work: Path) -> Path:
    out = work / "resumed"
    command = [sys.executable, "-m", "fedcl", "run", "--strategy", "dbc", "--scenario",
               "catastrophic-forgetting", "--rounds", "6", "--out", str(out),
               *[a for a in TINY if a not in ("--seeds", "0")], "--seed", "0"]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True)
    metrics = out / "metrics.jsonl"
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 4:
        if process.poll() is not None:
            raise SystemExit("the run to be killed ended before round 4")
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray it started
    process.wait()
    _fedcl("run", "--resume", str(out))
    return out


def collect(work: Path) -> dict[str, dict[str, str]]:
    """Run the fixed set into ``work`` and fingerprint every run."""
    _fedcl("compare", "--scenarios", "iid", "--strategies", "all", "--rounds", "2",
           "--out", str(work / "strategies"), *TINY)  # fmt: skip
    _fedcl("compare", "--scenarios", "all", "--strategies", "dbc", "--rounds", "6",
           "--out", str(work / "dbc"), *TINY)  # fmt: skip
    runs = sorted((work / "strategies" / "iid").glob("*-s0")) + sorted(
        (work / "dbc").glob("*/dbc-s0")
    )
    prints = {str(run.relative_to(work)): fingerprint(run) for run in runs}
    prints["resumed"] = fingerprint(_killed_and_resumed(work))
    return prints


def main() -> int:
    """Record or check the fingerprints; exit 1 on any change."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("record", "check"))
    parser.add_argument("file", type=Path)
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        prints = collect(work)
    resumed_as_whole = prints["resumed"] == prints["dbc/catastrophic-forgetting/dbc-s0"]
    print(f"killed and resumed = uninterrupted: {resumed_as_whole}")
    if args.mode == "record":
        args.file.write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(prints)} fingerprints in {args.file}")
        return 0 if resumed_as_whole else 1
    recorded = json.loads(args.file.read_text())
    changed = sorted(k for k in recorded.keys() | prints.keys() if recorded.get(k) != prints.get(k))
    for name in changed:
        print(f"CHANGED {name}: {recorded.get(name)} -> {prints.get(name)}")
    print(f"{len(prints) - len(changed)} of {len(prints)} runs unchanged")
    return 0 if not changed and resumed_as_whole else 1


if __name__ == "__main__":
    raise SystemExit(main())
