"""Processes fedcl starts and stops: a shared local Ray head, tagged and stopped exactly.

``fedcl compare`` runs every strategy x seed pair on one Ray instance instead of
starting and stopping Ray for each (3-5 s per run on 2 cores). ``ray stop`` would stop
every Ray on the machine, a user's other experiments included, so the head is started
with a tag in its environment, which every daemon and worker inherits, and stopping
signals exactly the processes that carry it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedcl.errors import FedclError

TAG = "FEDCL_RAY_CLUSTER"  # environment variable that marks a cluster's processes
MIN_MARK = 8  # characters; fedcl's marks are a uuid tag or a temporary directory


def processes_with_env(text: str) -> list[int]:
    """Live (non-zombie) processes whose environment contains ``text``.

    Every process a command starts inherits its environment, so a unique value in it
    (a temporary directory, a tag) finds them all, wherever they were re-parented.
    Raises ValueError for a text shorter than :data:`MIN_MARK` characters: an empty
    one is in every environment, and :func:`stop_tagged` would stop the whole machine.
    """
    if len(text) < MIN_MARK:
        raise ValueError(f"a process mark must be unique text of {MIN_MARK}+ characters: {text!r}")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in environ and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state first), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def started_at(pid: int | None = None) -> float | None:
    """Return when a process (this one by default) started, in Unix seconds; None off Linux.

    From its start in clock ticks after boot (``/proc/PID/stat``) and the clock since
    boot: exact to a tick, where ``/proc/stat``'s boot time has whole seconds only.
    """
    fields = _stat(os.getpid() if pid is None else pid)
    if fields is None:  # gone, or no /proc
        return None
    try:
        ticks = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (IndexError, ValueError, OSError, AttributeError):  # AttributeError: not Linux
        return None
    return time.time() - (since_boot - ticks)


def _identity(pid: int) -> str | None:
    """Return the start time of a running ``pid`` (None if gone): tells it from a reuse.

    A zombie (exited, waiting for its parent) does not run.
    """
    fields = _stat(pid)
    return fields[19] if fields is not None and fields[0] != "Z" else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (exists and is not a zombie waiting for its parent)."""
    return _identity(pid) is not None


def _descendants(roots: set[int]) -> set[int]:
    """Every live process below ``roots`` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def stop_tagged(text: str, grace: float = 10.0) -> None:
    """Stop every process whose environment has ``text``, and their descendants.

    SIGTERM, SIGKILL after ``grace``. Descendants count because a process that renames
    itself may overwrite its environment as seen from outside (Ray's agents do, with
    setproctitle): the agents are found as the raylet's children, and remembered once
    the dying raylet leaves them to init. Processes that appear while the others stop
    are stopped too (a dying raylet can restart its agents): it returns once none has
    been seen for a second, or after ``2 * grace`` seconds. The calling process is
    never signalled, whatever its environment.
    """
    start = last_seen = time.monotonic()
    known: dict[int, str] = {}  # pid -> identity, every process found so far
    signalled: set[int] = set()
    while time.monotonic() - last_seen < 1.0 and time.monotonic() - start < 2 * grace:
        late = time.monotonic() - start > grace
        running = {pid for pid, identity in known.items() if _identity(pid) == identity}
        tagged = set(processes_with_env(text))
        for pid in (tagged | _descendants(tagged | running)) - {os.getpid()}:
            identity = _identity(pid)
            if identity is not None and pid not in known:
                known[pid] = identity
                running.add(pid)
        for pid in running:
            last_seen = time.monotonic()
            if late or pid not in signalled:
                try:
                    os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
                signalled.add(pid)
        time.sleep(0.2)


def watch(parent: int, tag: str, interval: float = 0.5) -> None:
    """Wait until process ``parent`` has exited, then stop the processes tagged ``tag``.

    Run as its own process (``python -m fedcl.processes PID TAG``) beside a cluster's
    owner: the owner cannot always clean up itself. Ray's driver installs its own
    SIGTERM handler, which ends the process without unwinding Python, and nothing
    unwinds a SIGKILL; the daemons of a ``ray start`` head would outlive it.
    """
    while _alive(parent):
        time.sleep(interval)
    stop_tagged(tag)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_cluster(num_cpus: int | None = None, nodes: int = 1) -> Iterator[str]:
    """Start a Ray head on 127.0.0.1 (``num_cpus``: default every core); yield its address.

    ``nodes`` > 1 joins as many nodes again to it, each with ``num_cpus`` of its own: a
    cluster of several machines played on one (each node its own raylet and workers).
    Leaving the block stops the head, the other nodes, their daemons and workers, and
    nothing else; so does a watcher process (:func:`watch`) if this process dies
    without leaving it (SIGTERM once Ray runs in it, SIGKILL).
    """
    ray = shutil.which("ray")
    if ray is None:
        raise FedclError("the ray command is not on PATH (pip install 'flwr[simulation]')")
    port, tag = free_port(), f"{TAG}={uuid.uuid4().hex}"
    name, value = tag.split("=")
    # the watcher runs in its own session: a signal to this process group (a job
    # scheduler's SIGTERM, Ctrl-C) spares it, so it is there to clean up
    watcher = subprocess.Popen(
        [sys.executable, "-m", "fedcl.processes", str(os.getpid()), tag], start_new_session=True
    )

    def ray_start(*args: str) -> None:
        started = subprocess.run(
            [
                ray,
                "start",
                *args,
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={num_cpus or os.cpu_count() or 1}",
                "--disable-usage-stats",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env=os.environ | {name: value, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        if started.returncode != 0:
            raise FedclError(f"could not start a local Ray node: {started.stderr.strip()[-500:]}")

    try:
        ray_start("--head", f"--port={port}", "--include-dashboard=false")
        for _ in range(nodes - 1):
            ray_start(f"--address=127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        stop_tagged(tag)
        watcher.terminate()
        watcher.wait()


@contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM (e.g. from a job scheduler) unwinds like Ctrl-C.

    So ``finally`` blocks and context managers run and every started process stops.
    """

    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
