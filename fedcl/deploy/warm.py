"""A hospital's ClientApp processes, forked from one that has torch and MONAI loaded.

Flower 1.42 runs every message to a hospital in a new ``flwr-clientapp`` process
(SuperNode -> ``flower-superexec`` -> ``flwr-clientapp --token ...``, which exits after
one message), and Flower offers no way to keep one alive across messages. Each such
process spends seconds of CPU importing torch and MONAI before it reads its message.

``python -m fedcl.deploy.warm flower-superexec ARGS...`` runs the hospital's SuperExec
as usual, with two things beside it:

- a *fork server*: a process that imports the heavy libraries once (:data:`PRELOAD`,
  not the app's own code, which comes with each run's app bundle) and then, single
  threaded, waits on a Unix socket only this user can open;
- a stand-in ``flwr-clientapp`` first on the SuperExec's ``PATH``: it hands its
  command line, environment, working directory and standard streams to the fork
  server, which forks a child that runs Flower's own ``flwr-clientapp`` entry point in
  the already-loaded interpreter; the stand-in waits for the child and exits with its
  code (signals are passed on). If the fork server cannot be reached the stand-in
  runs the real ``flwr-clientapp``, as without this module.

What runs per message is Flower's code, unchanged; only the interpreter it starts in
is already warm. The fork server stops when the SuperExec it was started beside exits.
"""

from __future__ import annotations

import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Third-party libraries a hospital's ClientApp imports (with their dependencies), loaded
# once by the fork server: not fedcl, clients or server, which each run's app bundle
# brings (Flower puts the bundle first on sys.path).
PRELOAD = ("torch", "torchvision", "monai", "scipy.ndimage", "flwr.supernode.cli.flwr_clientapp")
SOCKET_ENV = "FEDCL_WARM_SOCKET"  # where the stand-in finds the fork server
REAL_ENV = "FEDCL_WARM_REAL"  # the real flwr-clientapp, run when the fork server is away
_CODE = struct.Struct("!i")  # the child's pid, then its exit code, as sent to the stand-in
_MESSAGE_LIMIT = 1 << 20  # bytes of one request (command line and environment)

STAND_IN = """#!{python} -I
# fedcl: flwr-clientapp, forked from a warm interpreter (fedcl.deploy.warm)
import sys
from fedcl.deploy.warm import stand_in
sys.exit(stand_in(sys.argv))
"""


def stand_in(argv: list[str]) -> int:
    """Have the fork server run ``flwr-clientapp argv[1:]``; return the child's exit code.

    Falls back to the real program (``$FEDCL_WARM_REAL``) when the server is away.
    """
    address = os.environ.get(SOCKET_ENV, "")
    request = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    try:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(address)
    except OSError:
        real = os.environ.get(REAL_ENV) or "flwr-clientapp"
        os.execvp(real, [real, *argv[1:]])
    with connection:
        socket.send_fds(connection, [_CODE.pack(len(request)) + request], [0, 1, 2])
        child = _read_code(connection)

        def forward(signum: int, _frame: object) -> None:
            os.kill(child, signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        return _read_code(connection)


def _read_code(connection: socket.socket) -> int:
    data = b""
    while len(data) < _CODE.size:
        chunk = connection.recv(_CODE.size - len(data))
        if not chunk:
            return 1  # the fork server went away
        data += chunk
    return int(_CODE.unpack(data)[0])


def serve(address: str, parent: int) -> None:
    """Preload :data:`PRELOAD`, then fork a ClientApp for every stand-in that connects.

    Single threaded (a fork copies only the calling thread); stops when process
    ``parent`` (the SuperExec) is gone.
    """

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)  # the deployment stopping: clean up first
    try:
        _serve(address, parent)
    finally:
        shutil.rmtree(Path(address).parent, ignore_errors=True)


def _serve(address: str, parent: int) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    os.chmod(address, stat.S_IRUSR | stat.S_IWUSR)
    listener.listen()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    while os.getppid() == parent:  # else the SuperExec is gone (this process re-parented)
        for _key, _events in selector.select(timeout=0.2):
            connection, _ = listener.accept()
            pid = _fork(connection, [listener, *children.values()])
            if pid is None:
                connection.close()
            else:
                children[pid] = connection
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                connection = children.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                try:
                    connection.sendall(_CODE.pack(code if code >= 0 else 128 - code))
                except OSError:
                    pass  # the stand-in is gone
                connection.close()
    for pid in children:
        os.kill(pid, signal.SIGTERM)


def _fork(connection: socket.socket, others: list[socket.socket]) -> int | None:
    """Read one request and fork its child; return the child's pid (None: a bad request)."""
    try:
        head, fds, _flags, _address = socket.recv_fds(connection, _MESSAGE_LIMIT, 3)
        size = _CODE.unpack(head[: _CODE.size])[0]
        body = head[_CODE.size :]
        while len(body) < size:
            body += connection.recv(size - len(body))
        request = json.loads(body)
    except (OSError, ValueError, struct.error):
        return None
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid == 0:  # the child: never returns
        for other in others:  # the listener, other stand-ins' connections
            other.close()
        _run_clientapp(request, fds, connection)
    for fd in fds:
        os.close(fd)
    connection.sendall(_CODE.pack(pid))
    return pid


def _run_clientapp(request: dict[str, Any], fds: list[int], connection: socket.socket) -> None:
    code = 1
    try:
        connection.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a fresh Python
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(str(request["cwd"]))
        sys.argv = ["flwr-clientapp", *request["argv"][1:]]
        from flwr.supernode.cli.flwr_clientapp import flwr_clientapp  # loaded already

        flwr_clientapp()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported as Flower's own process would
        import traceback  # the child's last words

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str]) -> int:
    """``python -m fedcl.deploy.warm PROGRAM ARGS...``: run PROGRAM beside a fork server."""
    if len(argv) < 1:
        print("usage: python -m fedcl.deploy.warm PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="fedcl-warm-"))  # mode 0700: this user only
    address = str(folder / "clientapp.sock")
    stand = folder / "flwr-clientapp"
    stand.write_text(STAND_IN.format(python=sys.executable))
    stand.chmod(stat.S_IRWXU)
    real = shutil.which("flwr-clientapp") or "flwr-clientapp"
    env = os.environ | {
        SOCKET_ENV: address,
        REAL_ENV: real,
        "PATH": os.pathsep.join([str(folder), os.environ.get("PATH", "")]),
    }
    # the fork server: a child of this process, which becomes PROGRAM (same pid)
    server = [sys.executable, "-m", "fedcl.deploy.warm", "--serve", address, str(os.getpid())]
    subprocess.Popen(server)
    deadline = time.monotonic() + 120
    while not os.path.exists(address) and time.monotonic() < deadline:
        time.sleep(0.1)  # PROGRAM's first message waits for the preload, not the fallback
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(main(sys.argv[1:]))
