"""Find the processes a test started, wherever they were re-parented: by environment."""

from pathlib import Path


def processes_with_env(text: str) -> list[int]:
    """Live (non-zombie) processes whose environment contains ``text``.

    Every process a run starts inherits its environment, so a unique value in it (a
    temporary directory, a tag) finds them all, Ray daemons and app processes included.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found
