"""Each benchmark's smoke mode still runs and ends with its RESULT line (no timing checks)."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Slopes fitted to two smoke points: on a loaded machine the larger federation's round
# can come out faster (measured: -0.041 s per hospital beside the results table), so
# they need only be numbers; measured times, rates and sizes must be positive.
FITTED = {"round_s_per_hospital", "gib_per_hospital"}


@pytest.mark.parametrize(
    ("script", "keys"),
    [
        pytest.param(
            "overhead.py",
            {"fedcl_wall_s", "bare_wall_s", "ratio"},
            marks=pytest.mark.slow,  # a whole simulation and the bare loop: ~1 minute
        ),
        (
            "throughput.py",
            {"fedcl_tiles_per_s", "bare_tiles_per_s", "ratio", "handler_ratio", "evaluation_share"},
        ),
        pytest.param(
            "dbc_cost.py",
            {"share_n3_r8", "share_n3_r32"},
            marks=pytest.mark.slow,  # two DBC federations: ~1 minute
        ),
        pytest.param(
            "scale.py",
            {"round_s_per_hospital", "gib_per_hospital", "max_peak_gib"},
            marks=pytest.mark.slow,  # two federations of Ray actors: ~40 s
        ),
        ("devices.py", {"unet_cpu_tiles_per_s"}),
        pytest.param(
            "study.py",
            {"runs_ratio", "compare_ratio", "parallel_ratio", "bare_s"},
            marks=pytest.mark.slow,  # 6 tiny runs three ways and the bare loop: minutes
        ),
        pytest.param(
            "deployed_round.py",
            {"sim_wall_s", "deploy_wall_s", "fresh_wall_s", "deploy_start_s", "fresh_start_s"},
            marks=pytest.mark.slow,  # a simulation and two deployments: ~3 minutes
        ),
        pytest.param(
            "evaluation.py",
            {"sim_wall_ratio", "deploy_wall_ratio", "sim_same_dice"},
            marks=pytest.mark.slow,  # two simulations and two deployments: ~3 minutes
        ),
    ],
)
def test_benchmark_smoke_mode_prints_its_result_line(script, keys):
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, run.stdout[-2000:]
    figures = dict(re.findall(r"(\S+?)=(\S+)", lines[0]))
    assert keys <= set(figures)
    for key in keys:
        value = float(figures[key])
        assert math.isfinite(value) and (key in FITTED or value > 0), (key, figures[key])
