"""Shared pieces of the benchmarks: the RESULT line, runs of `fedcl run`, memory, fits."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch

from fedcl.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def workload(description: str) -> tuple[RunConfig, int]:
    """Parse ``--smoke``, ``--repeats``, ``--rounds``; print the machine and workload.

    The default workload is fedcl's default run (5 hospitals, default model, 64-px
    tiles) for ``--rounds``; ``--smoke`` a tiny one, once.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny workload, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config, repeats = RunConfig(rounds=args.rounds), args.repeats
    if args.smoke:
        config = RunConfig(clients=2, rounds=2, image_size=32, train_tiles=16, test_tiles=8)
        repeats = 1
    print(machine())
    print(f"workload: {config.clients} hospitals x {config.rounds} rounds x "
          f"{config.train_tiles} + {config.test_tiles} tiles, model {config.model}, "
          f"{config.image_size} px")  # fmt: skip
    return config, repeats


def result(**figures: Any) -> None:
    """Print the one ``RESULT key=value ...`` line a benchmark ends with."""
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()]
    print("RESULT " + " ".join(parts), flush=True)


def machine() -> str:
    """One line describing this machine and the versions that matter."""
    import flwr
    import ray

    return (
        f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
        f"torch {torch.__version__}, flwr {flwr.__version__}, ray {ray.__version__}"
    )


def _tree(root: int) -> list[int]:
    """``root`` and every process descending from it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def tree_memory(root: int) -> int:
    """Proportional set size (bytes) of ``root``'s process tree (shared pages split)."""
    total = 0
    for pid in _tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class PeakMemory:
    """Samples :func:`tree_memory` of a process every ``interval`` s; ``peak`` in bytes."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_memory(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fedcl_run(config: RunConfig, out: Path, extra_env: dict[str, str] | None = None) -> dict:
    """Run ``fedcl run`` on ``config`` in a subprocess; wall time, peak memory, records."""
    out.mkdir(parents=True, exist_ok=True)
    config = config.replace(out=str(out / "run"))
    config_file = out / "config.toml"
    config_file.write_text(tomli_w.dumps(config.to_mapping()))
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedcl", "run", "--config", str(config_file)],
        cwd=ROOT,
        env=os.environ | (extra_env or {}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    with PeakMemory(process.pid) as memory:
        _, stderr = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"fedcl run failed ({process.returncode}):\n{stderr[-3000:]}")
    lines = (Path(config.out) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {"wall": wall, "peak_bytes": memory.peak, "records": records}


def deploy_run(config: RunConfig, out: Path, *flags: str) -> dict:
    """Run ``fedcl deploy local`` on ``config`` (as flags, plus ``flags``); wall time, records."""
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "fedcl", "deploy", "local", "--hospitals", str(config.clients),
         "--out", str(out), *changed_flags(config, "clients", "out"), *flags],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"fedcl deploy local failed:\n{process.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"wall": wall, "records": records}


def changed_flags(config: RunConfig, *skip: str) -> list[str]:
    """``config``'s keys that differ from the defaults as command-line flags (not ``skip``)."""
    defaults = RunConfig().to_mapping()
    return [
        f"--{key}={value}"
        for key, value in config.to_mapping().items()
        if value != defaults[key] and key not in skip
    ]


def steady_round_seconds(records: Sequence[dict]) -> float:
    """Median wall time of rounds 2.. (round 1 includes actor start and data generation)."""
    times = [r["wall_seconds"] for r in records if r["round"] >= 2]
    if not times:
        times = [r["wall_seconds"] for r in records if r["round"] >= 1]
    return statistics.median(times)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``; returns ``(a, b, r2)``."""
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    predicted = a + b * np.asarray(x, float)
    residual = float(np.sum((np.asarray(y) - predicted) ** 2))
    total = float(np.sum((np.asarray(y) - np.mean(y)) ** 2)) or 1.0
    return float(a), float(b), 1.0 - residual / total
