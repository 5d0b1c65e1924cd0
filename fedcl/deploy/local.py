"""``fedcl deploy local``: the compose topology as local processes on 127.0.0.1.

:class:`LocalDeployment` starts every service of :func:`fedcl.deploy.topology.services`
(SuperLink, one SuperNode per hospital, a SuperExec for the ServerApp and for each
ClientApp) with the flags the compose file uses, each in its own process group with
its own log file, and stops them all on exit, also after an error or Ctrl-C.
:func:`deploy_local` submits the app with ``flwr run`` and waits for the run's real
final status from the SuperLink (``flwr run`` only reports that it was submitted).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomli_w

from fedcl.config import RunConfig
from fedcl.configure import flower_run_config
from fedcl.deploy.certs import write_certificates, write_node_keys
from fedcl.deploy.topology import WARM, Network, Tls, services
from fedcl.processes import free_port, stop_tagged, terminate_raises
from fedcl.simulation import FLOWER_ENV

CONNECTION = "fedcl-local"  # the flwr CLI connection name in this deployment's FLWR_HOME
HOST = "127.0.0.1"


class DeploymentError(RuntimeError):
    """The deployment or the run on it failed (the CLI prints it and exits 1)."""


def project_root() -> Path:
    """Return the Flower app directory (``pyproject.toml`` with ``[tool.flwr.app]``)."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.exists() or "[tool.flwr.app]" not in pyproject.read_text():
        raise DeploymentError(
            f"fedcl deploy needs the fedcl source tree (the Flower app to submit); "
            f"{str(root)!r} has no pyproject.toml with [tool.flwr.app]. Install fedcl "
            "from a source checkout (pip install -e .)."
        )
    return root


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class LocalDeployment:
    """Every Flower process of a ``hospitals``-hospital deployment, on loopback.

    Use as a context manager: entering starts the services and waits until the
    SuperLink and every SuperNode answer ``GET /health``; leaving stops every process
    it started (SIGTERM to each process group, SIGKILL after ``grace`` seconds) and
    returns once none of them, nor anything they started, is left.

    Parameters
    ----------
    hospitals
        Number of SuperNodes (one per hospital).
    workdir
        Logs (``logs/<service>.log``), Flower homes and, with ``tls``, certificates.
    tls
        Generate a throwaway CA and run every connection over TLS; with it, a key pair
        per hospital, registered with the SuperLink before any SuperNode starts, so
        that the SuperLink accepts those SuperNodes and no other
        (``--enable-supernode-auth``).
    client_threads
        Torch/OpenMP threads of each ClientApp process (``OMP_NUM_THREADS``), as Ray
        gives each simulated hospital ``client-cpus`` threads: N hospitals training at
        once with every core each would oversubscribe this machine.
    warm
        Fork each hospital's ClientApp processes from an interpreter that has torch and
        MONAI loaded already (:mod:`fedcl.deploy.warm`), instead of a fresh Python per
        message as Flower does.
    """

    def __init__(
        self,
        hospitals: int,
        workdir: Path,
        tls: bool = False,
        grace: float = 10,
        client_threads: int = 1,
        warm: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve()  # absolute: it marks every process (stop)
        self.client_threads = client_threads
        self.grace = grace
        ports: dict[str, int] = {}

        def port(name: str) -> int:
            if name not in ports:
                ports[name] = free_port()
            return ports[name]

        self.network = Network(bind=HOST, host=lambda _name: HOST, port=port)
        self.tls: Tls | None = None
        self.node_keys: list[Path] = []
        if tls:
            names = [s.name for s in services(hospitals, self.network)]
            certificates = workdir / "certificates"
            self.tls = replace(write_certificates(certificates, names), node_keys=str(certificates))
            self.node_keys = write_node_keys(certificates, hospitals)
        wrapper = (sys.executable, *WARM) if warm else ()
        self.services = services(hospitals, self.network, self.tls, wrapper)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # Flower's programs (and the app processes they start) from this interpreter's
        # environment, also when it is not activated.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = os.environ | FLOWER_ENV | {"PYTHONUNBUFFERED": "1", "PATH": path}

    def log(self, name: str) -> Path:
        """Return the log file of service ``name`` (stdout and stderr)."""
        return self.workdir / "logs" / f"{name}.log"

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the services in order; wait for each daemon's health endpoint."""
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        registered = False
        for service in self.services:
            for needed in service.after:
                self.wait_healthy(needed)
            if service.program == "flower-supernode" and not registered:
                self.register_nodes()
                registered = True
            home = self.workdir / "flwr-home" / service.name  # no shared app cache
            home.mkdir(parents=True, exist_ok=True)
            env = self.env | dict(service.environment) | {"FLWR_HOME": str(home)}
            if service.hospital is not None:
                env["OMP_NUM_THREADS"] = str(self.client_threads)
            with self.log(service.name).open("wb") as log:
                self.processes[service.name] = subprocess.Popen(
                    service.command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.workdir,
                    start_new_session=True,  # its own process group: stop() gets children
                )
        for service in self.services:
            if service.serves:
                self.wait_healthy(service.name)

    def register_nodes(self) -> None:
        """Register every hospital's public key with the SuperLink (with node keys only).

        ``flwr supernode register`` through the Control API, as a consortium's operator
        would; the SuperLink then accepts exactly these SuperNodes.
        """
        if self.tls is not None and self.tls.node_keys is not None:
            register_hospitals(self.connection, self.node_keys)

    def wait_healthy(self, name: str, timeout: float = 60) -> None:
        """Wait until service ``name`` answers ``GET /health`` with 200."""
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://{self.network.address(name)}/health"
        context = ssl.create_default_context(cafile=self.tls.ca) if self.tls else None
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive(name)
            try:
                with urllib.request.urlopen(url, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"{name} did not answer {url} within {timeout:.0f} s; its log "
                    f"({self.log(name)}):\n{_tail(self.log(name))}"
                )
            time.sleep(0.2)

    def check_alive(self, *names: str) -> None:
        """Raise :class:`DeploymentError` (with the log) if a started service exited."""
        for name in names or tuple(self.processes):
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise DeploymentError(
                    f"{name} exited with code {process.returncode}; its log "
                    f"({self.log(name)}):\n{_tail(self.log(name))}"
                )

    def stop(self) -> None:
        """Stop every started process group: SIGTERM, then SIGKILL after the grace time."""
        for process in reversed(self.processes.values()):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in self.processes.values():
            _signal_group(process, signal.SIGKILL)  # app processes left in the group too
            process.wait()
        # A killed process takes a moment to go, and one re-parented out of reach of
        # wait() (a fork server, a ClientApp) must be gone too before this returns:
        # every process of the deployment has its FLWR_HOME under the working folder.
        stop_tagged(str(self.workdir), grace=self.grace)

    @property
    def connection(self) -> Connection:
        """The flwr CLI's connection to this deployment's SuperLink."""
        return Connection(
            address=self.network.address("superlink"),
            ca=self.tls.ca if self.tls else None,
            home=self.workdir / "flwr-home" / "cli",
            env=self.env,
        )


class Connection:
    """The flwr CLI against a running SuperLink (``flwr run``, ``flwr list``, ``flwr log``).

    Parameters
    ----------
    address
        ``host:port`` of the SuperLink's Control API.
    ca
        CA certificate to verify the SuperLink with; None: an insecure connection.
    home
        ``FLWR_HOME`` of the CLI; its ``config.toml`` names this one connection.
    env
        Environment of the CLI processes.
    """

    def __init__(self, address: str, ca: str | None, home: Path, env: Mapping[str, str]) -> None:
        self.address = address
        self.ca = ca
        self.home = home
        self.env = dict(env)

    def _cli_env(self) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        connection: dict[str, Any] = {"address": self.address}
        if self.ca:  # the flwr CLI takes an absolute path only
            connection["root-certificates"] = str(Path(self.ca).resolve())
        else:
            connection["insecure"] = True
        (self.home / "config.toml").write_text(
            tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: connection}})
        )
        return self.env | {"FLWR_HOME": str(self.home)}

    def flwr(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        """Run ``flwr ARGS --format json`` against this SuperLink; return its JSON."""
        command = [_flwr(), *args, "--format", "json"]
        result = subprocess.run(
            command,
            env=self._cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        try:
            answer: dict[str, Any] = json.loads(result.stdout)
        except json.JSONDecodeError:
            answer = {"success": False, "error-message": result.stdout + result.stderr}
        if not answer.get("success", False):
            raise DeploymentError(
                f"`{' '.join(command)}` failed: {answer.get('error-message', answer)}"
            )
        return answer

    def submit(self, config_file: Path) -> str:
        """Submit the fedcl app with ``config_file`` as its run config; return the run id."""
        answer = self.flwr("run", str(project_root()), CONNECTION, "--run-config", str(config_file))
        return str(answer["run-id"])

    def run_log(self, run_id: str) -> str:
        """Return the ServerApp's log of run ``run_id`` as the SuperLink keeps it."""
        result = subprocess.run(
            [_flwr(), "log", run_id, CONNECTION, "--show"],
            env=self._cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        return result.stdout + result.stderr

    def status(self, run_id: str) -> dict[str, Any]:
        """Return the SuperLink's record of run ``run_id`` (``status``: e.g. ``running``)."""
        answer = self.flwr("list", CONNECTION, "--run-id", run_id)
        return dict(answer["runs"][0])


def register_hospitals(connection: Connection, public_keys: Sequence[Path]) -> list[str]:
    """Register each hospital's public key with the SuperLink; say what happened to each.

    ``flwr supernode register`` through the Control API. A key registered before is
    left as it is (the SuperLink refuses a key twice).
    """
    said = []
    for hospital, key in enumerate(public_keys):
        try:
            answer = connection.flwr("supernode", "register", str(key), CONNECTION)
        except DeploymentError as err:
            if "already in use" not in str(err):
                raise
            said.append(f"hospital {hospital}: {key} was registered already")
            continue
        said.append(f"hospital {hospital}: {key} registered as node {answer['node-id']}")
    return said


def _flwr() -> str:
    # The flwr CLI of this interpreter's environment, not whatever is first on PATH.
    candidate = Path(sys.executable).with_name("flwr")
    return str(candidate) if candidate.exists() else "flwr"


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _new_records(path: Path, seen: int) -> list[dict[str, Any]]:
    # Complete lines only: the ServerApp may be writing the next one right now.
    if not path.exists():
        return []
    text = path.read_text()
    lines = text[: text.rfind("\n") + 1].splitlines()
    return [json.loads(line) for line in lines[seen:] if line.strip()]


def deploy_local(
    config: RunConfig,
    tls: bool = False,
    on_record: Callable[[dict[str, Any]], None] = lambda _record: None,
    status_every: float = 10.0,
    resume: bool = False,
    warm: bool = True,
) -> dict[str, Any]:
    """Run ``config`` on a local deployment; return the run's final SuperLink record.

    ``config.out`` (made absolute) receives the same run directory as ``fedcl run``;
    ``OUT/deployment/`` keeps the services' logs (a resumed run's in
    ``OUT/deployment/resumed-N/``). ``on_record`` gets each round record as the
    ServerApp writes it. ``resume``: a fresh deployment continues the run in ``out``
    from its checkpoint, as ``fedcl run --resume`` does (the hospitals' state of the
    killed run is gone; a strategy sends what its hospitals held again). ``warm``:
    :class:`LocalDeployment`'s. Raises
    :class:`DeploymentError` if a service dies or the run does not finish as
    ``finished:completed``.
    """
    out = Path(config.out).resolve()
    config = config.replace(out=str(out))
    workdir = out / "deployment"
    if resume:
        attempt = 1 + sum(1 for _ in workdir.glob("resumed-*"))
        workdir = workdir / f"resumed-{attempt}"
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "run-config.toml"
    config_file.write_text(tomli_w.dumps(flower_run_config(config, resume=resume)))
    # progress must come from this run (a resumed one keeps its rounds so far)
    for stale in ("summary.json",) if resume else ("metrics.jsonl", "summary.json"):
        (out / stale).unlink(missing_ok=True)
    deployment = LocalDeployment(
        config.clients, workdir, tls, client_threads=max(1, int(config.client_cpus)), warm=warm
    )
    with terminate_raises(), deployment:
        return follow_run(
            deployment.connection,
            config_file,
            out,
            config.rounds,
            check_alive=deployment.check_alive,
            on_record=on_record,
            status_every=status_every,
            logs=workdir / "logs",
        )


def follow_run(
    connection: Connection,
    config_file: Path,
    out: Path,
    rounds: int,
    check_alive: Callable[[], None] = lambda: None,
    on_record: Callable[[dict[str, Any]], None] = lambda _record: None,
    status_every: float = 10.0,
    logs: Path | None = None,
) -> dict[str, Any]:
    """Submit the app with ``config_file``; follow it until the SuperLink says it finished.

    ``out``: the run directory as this machine sees it (its ``metrics.jsonl`` feeds
    ``on_record``); ``check_alive`` raises if a service died. Returns the run's final
    SuperLink record; raises :class:`DeploymentError` with the ServerApp's log (also
    written to ``logs/run.log``) unless the run ended ``finished:completed``.
    """
    run_id = connection.submit(config_file)
    seen, last_status = 0, 0.0
    while True:
        time.sleep(0.5)
        check_alive()
        records = _new_records(out / "metrics.jsonl", seen)
        seen += len(records)
        for record in records:
            on_record(record)
        finished = (out / "summary.json").exists() and seen > rounds
        if finished or time.monotonic() - last_status > status_every:
            last_status = time.monotonic()
            run = connection.status(run_id)
            if str(run["status"]).startswith("finished"):
                break
    if run["status"] != "finished:completed":
        log = connection.run_log(run_id)
        where = ""
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            (logs / "run.log").write_text(log)
            where = f" (all of it in {logs / 'run.log'})"
        raise DeploymentError(
            f"run {run_id} ended as {run['status']} ({run.get('status-details')}). "
            f"The ServerApp's log{where}:\n" + "\n".join(log.splitlines()[-40:])
        )
    return run
