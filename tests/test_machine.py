"""What ran a run: fedcl's commit, read from git only where fedcl is a checkout."""

import shutil
import subprocess
from pathlib import Path

import pytest

from fedcl.machine import commit, processor, software

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(directory: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=directory, check=True, capture_output=True)


def test_a_commit_is_read_and_only_the_folders_own_edits_make_it_dirty(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "module.py").write_text("x = 1\n")
    (tmp_path / "results.md").write_text("before\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert commit(code) == head
    (tmp_path / "results.md").write_text("a study wrote here\n")  # outside the code
    (code / "new.py").write_text("")  # untracked
    assert commit(code) == head
    (code / "module.py").write_text("x = 2\n")
    assert commit(code) == head + "+dirty"


def test_no_checkout_no_commit(tmp_path):
    assert commit(tmp_path) is None


def test_software_names_the_versions_and_the_processor():
    found = software()
    assert found["torch"] and found["flwr"] and found["python"].count(".") == 2
    assert found["processor"] == processor() and found["processor"]
    assert found["cpus"] >= 1 and found["torch_threads"] >= 1
