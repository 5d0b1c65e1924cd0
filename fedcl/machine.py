"""What ran a run: fedcl's commit, the libraries and the processor.

Figures trained on a CPU agree to the last digit only on the same processor and
library versions, so every run's ``provenance.json`` says which of each it had.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import flwr
import torch

import fedcl

GIT_SECONDS = 5  # a checkout answers in milliseconds; a hung git must not stall a run


def software() -> dict[str, Any]:
    """Return fedcl's version and commit, the libraries' versions and the machine's processor."""
    return {
        "fedcl": fedcl.__version__,
        "commit": commit(Path(fedcl.__file__).parent),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": flwr.__version__,
        "processor": processor(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def commit(directory: Path) -> str | None:
    """Return the git commit ``directory`` is checked out at, ``+dirty`` with edits in it.

    Only ``directory``'s own tracked files count: a study writing its results into the
    same checkout leaves the code's commit clean. None where it is not a git checkout
    (an installed wheel, a deployed app) or git is missing.
    """
    try:
        head = _git(directory, "rev-parse", "HEAD")
        edited = _git(directory, "status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if edited else "")


def _git(directory: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=GIT_SECONDS,
        check=True,
    )
    return done.stdout.strip()


@cache
def processor() -> str:
    """Return the processor's model name (``/proc/cpuinfo`` on Linux), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
