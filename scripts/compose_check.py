"""Run fedcl's docker compose deployment for real, in containers, and tear it down.

    sudo python scripts/compose_check.py            # insecure, then TLS
    sudo python scripts/compose_check.py --compare  # + the same run with deploy local, fedcl run
    sudo python scripts/compose_check.py --fresh-clientapps  # a fresh Python per message

1. A Docker engine: the running one, or ``dockerd`` started here (host networking only,
   no bridge) and stopped at the end.
2. Images, each built only when its inputs changed (a hash in a label): the Flower
   images (``flwr/superlink``, ``flwr/supernode``, ``flwr/superexec`` at the pinned
   version; where no registry is reachable, stand-ins from ``docker/flwr/Dockerfile`` on
   a Debian base made with debootstrap), then ``fedcl-serverapp`` and
   ``fedcl-clientapp`` from the repository's app Dockerfile. The machine's CA bundle goes
   in as a build secret, so pip works behind a TLS-intercepting proxy.
3. For each variant (insecure, TLS): a work directory with the compose file rendered
   from the same topology as ``docker-compose.yml`` (``--network host``: every daemon
   on 127.0.0.1), hospital data folders with a marker file, ``runs/`` and certificates
   owned by the images' user (UID 49999); ``compose up``; checks inside the running
   containers that each ``clientapp-N`` sees only hospital N's data and no other service
   sees any; the fedcl app submitted with the host's ``flwr`` CLI; the run followed to
   ``finished:completed`` and ``runs/.../summary.json`` read on the host;
   ``compose down -v`` and a check that no container, network or volume is left.

Prints build times, image sizes and round latencies, each steady round split into its
parts (:func:`fedcl.metrics.round_parts`); ``--report FILE`` writes them as
JSON. Needs root (or a user allowed to use Docker and to chown to 49999), the
``docker`` CLI with BuildKit, ``docker compose`` or ``docker-compose``; ``--install``
installs docker.io, docker-compose and debootstrap with apt-get where they are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's fedcl, whatever is installed

import tomli_w  # noqa: E402

from fedcl.configure import flower_run_config, load_config  # noqa: E402
from fedcl.deploy.certs import write_certificates, write_node_keys  # noqa: E402
from fedcl.deploy.local import (  # noqa: E402
    Connection,
    DeploymentError,
    follow_run,
    register_hospitals,
)
from fedcl.deploy.topology import (  # noqa: E402
    SUPERLINK_PORT,
    compose_network,
    public_key,
    render_compose,
    services,
)
from fedcl.metrics import round_parts  # noqa: E402
from fedcl.processes import terminate_raises  # noqa: E402
from fedcl.simulation import FLOWER_ENV  # noqa: E402

APP_UID = 49999  # the user `app` of Flower's images (and of the stand-ins)
# The run every variant does (and --compare repeats with deploy local and fedcl run).
SETTINGS = {"strategy": "dbc", "train-tiles": 48, "test-tiles": 16}

from docker_images import (  # noqa: E402
    CheckError,
    Docker,
    Images,
    engine,
    install_missing,
    log,
    run_command,
)


def _marker(hospital: int) -> str:
    return f"fedcl-hospital-{hospital}.marker"


class ComposeRun:
    """One variant (insecure or TLS) of the deployment: up, checks, a run, down."""

    def __init__(
        self,
        docker: Docker,
        workdir: Path,
        hospitals: int,
        rounds: int,
        tls: bool,
        run_timeout: float = 1200,
        warm: bool = True,
    ) -> None:
        self.docker = docker
        self.warm = warm  # ClientApps forked from a warm interpreter (the compose default)
        self.run_timeout = run_timeout  # a run that hangs fails the check, and is torn down
        self.workdir = workdir
        self.hospitals = hospitals
        self.rounds = rounds
        self.tls = tls
        self.variant = "tls" if tls else "insecure"
        self.project = f"fedcl-check-{self.variant}"
        self.timings: dict[str, Any] = {}
        self._last_alive = 0.0
        self._deadline = float("inf")

    def compose(self, *args: str, check: bool = True) -> str:
        """Run the compose command on this variant's file and project."""
        file = str(self.workdir / "docker-compose.yml")
        command = [*self.docker.compose, "-p", self.project, "-f", file, *args]
        return run_command(command, check=check, cwd=self.workdir, env=os.environ | self.docker.env)

    def prepare(self) -> None:
        """Compose file, hospital data, runs/ and certificates, as an operator lays them."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = render_compose(self.hospitals, tls=self.tls, network="host", warm=self.warm)
        (self.workdir / "docker-compose.yml").write_text(text)
        for h in range(self.hospitals):
            data = self.workdir / "data" / f"hospital-{h}"
            data.mkdir(parents=True)
            (data / _marker(h)).write_text(f"hospital {h}\n")
        runs = self.workdir / "runs"
        runs.mkdir()
        owned = [runs]  # the ServerApp (user app) writes here
        if self.tls:
            names = [s.name for s in services(self.hospitals, compose_network())]
            certificates = self.workdir / "certificates"
            write_certificates(certificates, names)
            write_node_keys(certificates, self.hospitals)
            owned += [certificates, *certificates.iterdir()]  # the daemons read the keys
        for path in owned:
            try:
                os.chown(path, APP_UID, APP_UID)
            except PermissionError as err:
                raise CheckError(f"giving {path} to UID {APP_UID} (user app) needs root") from err

    def up(self) -> None:
        """``compose up -d`` (images prebuilt); wait until every daemon is healthy."""
        for port in [SUPERLINK_PORT, *range(9094, 9094 + self.hospitals)]:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    raise CheckError(f"port {port} on 127.0.0.1 is in use; the check needs it")
        started = time.monotonic()
        if self.tls:
            # SuperNode authentication: the SuperLink first, then the operator registers
            # the hospitals' keys (`fedcl deploy register`), then everything else
            self.compose("up", "-d", "--no-build", "superlink")
            self._wait_healthy("superlink")
            certificates = self.workdir / "certificates"
            keys = [public_key(certificates, h) for h in range(self.hospitals)]
            for line in register_hospitals(self.connection(), keys):
                log(f"{self.variant}: {line}")
        self.compose("up", "-d", "--no-build")
        for name in self.container_names():
            self._wait_healthy(name)
        self.timings["up_seconds"] = round(time.monotonic() - started, 1)

    def connection(self) -> Connection:
        """Return the flwr CLI's connection to this variant's SuperLink, from the host."""
        return Connection(
            address=f"127.0.0.1:{SUPERLINK_PORT}",
            ca=str(self.workdir / "certificates" / "ca.pem") if self.tls else None,
            home=self.workdir / "flwr-home",
            env=os.environ | FLOWER_ENV,
        )

    def container_names(self) -> dict[str, str]:
        """Service name -> container name of every container of this project."""
        out = self.docker(
            "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
            "--format", '{{.Label "com.docker.compose.service"}} {{.Names}}',
        )  # fmt: skip
        return dict(line.split() for line in out.splitlines() if line.strip())

    def _wait_healthy(self, service: str, timeout: float = 120) -> None:
        container = self.container_names()[service]
        deadline = time.monotonic() + timeout
        while True:
            state = json.loads(self.docker("inspect", "--format", "{{json .State}}", container))
            health = (state.get("Health") or {}).get("Status", "healthy")
            if state["Status"] == "running" and health == "healthy":
                return
            if state["Status"] in ("exited", "dead") or time.monotonic() > deadline:
                logs = self.docker("logs", "--tail", "40", container, check=False)
                raise CheckError(f"{service} is {state['Status']}/{health}:\n{logs}")
            time.sleep(0.5)

    def check_data_isolation(self) -> None:
        """Inside the running containers: hospital h's data only in clientapp-h, read-only."""
        expected = {f"clientapp-{h}": [f"/data/{_marker(h)}"] for h in range(self.hospitals)}
        for service, container in sorted(self.container_names().items()):
            found = self.docker(
                "exec", container, "find", "/", "-xdev", "-name", "fedcl-hospital-*", "-print",
                check=False,
            ).split()  # fmt: skip
            # -xdev stays on the container's own filesystem; look into every mount too
            mounts = json.loads(self.docker("inspect", "--format", "{{json .Mounts}}", container))
            for mount in mounts:
                found += self.docker(
                    "exec", container, "find", mount["Destination"], "-name", "fedcl-hospital-*",
                    check=False,
                ).split()  # fmt: skip
            found = sorted(set(found))
            if found != expected.get(service, []):
                raise CheckError(
                    f"{service} sees hospital data {found}, expected {expected.get(service, [])}"
                )
            hospital_mounts = [m["Source"] for m in mounts if "/data/" in m["Source"]]
            if service in expected:
                h = int(service.rsplit("-", 1)[1])
                data = [m for m in mounts if m["Destination"] == "/data"]
                if len(data) != 1 or data[0]["RW"] or not data[0]["Source"].endswith(f"-{h}"):
                    raise CheckError(f"{service}: /data is not hospital-{h}'s, read-only: {data}")
                if hospital_mounts != [data[0]["Source"]]:
                    raise CheckError(f"{service} mounts other data: {hospital_mounts}")
                probe = "touch /data/x 2>/dev/null && echo yes || echo no"
                writable = self.docker("exec", container, "sh", "-c", probe).strip()
                if writable != "no":
                    raise CheckError(f"{service} can write its hospital's data")
            elif hospital_mounts:
                raise CheckError(f"{service} mounts hospital data: {hospital_mounts}")
            user = self.docker("exec", container, "id", "-u").strip()
            if user != str(APP_UID):
                raise CheckError(f"{service} runs as uid {user}, expected {APP_UID} (app)")
        log(f"{self.variant}: data isolation checked in {len(self.container_names())} containers")

    def run(self) -> dict[str, Any]:
        """Submit the fedcl app from the host; follow it; return the host's summary.json."""
        config = load_config(
            {"clients": self.hospitals, "rounds": self.rounds, "out": f"runs/{self.variant}"}
            | SETTINGS,
            source="compose check",
        )
        config_file = self.workdir / "run-config.toml"
        config_file.write_text(tomli_w.dumps(flower_run_config(config)))
        connection = self.connection()
        out = self.workdir / "runs" / self.variant  # the ServerApp's runs/ on the host
        started = time.monotonic()
        self._deadline = started + self.run_timeout

        def progress(record: dict[str, Any]) -> None:
            log(f"{self.variant}: round {record['round']} ({record['wall_seconds']:.1f} s)")

        try:
            follow_run(
                connection,
                config_file,
                out,
                self.rounds,
                check_alive=self.check_alive,
                on_record=progress,
                logs=self.workdir / "logs",
            )
        except DeploymentError as err:
            raise CheckError(str(err)) from err
        self.timings["run_seconds"] = round(time.monotonic() - started, 1)
        self.timings["load_average"] = round(os.getloadavg()[1], 1)  # 5 min: others' load too
        summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
        if summary["rounds"] != self.rounds or summary["strategy"] != SETTINGS["strategy"]:
            raise CheckError(f"unexpected summary.json: {summary}")
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        self.timings["round_seconds"] = [r["wall_seconds"] for r in records]
        self.timings["round_parts"] = round_parts(records)
        self.timings["final_dice"] = summary["final_dice"]
        return summary

    def check_alive(self) -> None:
        """Raise if a container exited or restarted (looked at every few seconds)."""
        if time.monotonic() > self._deadline:
            raise CheckError(f"the run did not finish within {self.run_timeout:.0f} s")
        if time.monotonic() - self._last_alive < 5:
            return
        self._last_alive = time.monotonic()
        containers = list(self.container_names().values())
        template = "{{.Name}} {{.State.Status}} {{.RestartCount}}"
        for line in self.docker("inspect", "--format", template, *containers).splitlines():
            name, status, restarts = line.split()
            if status != "running" or restarts != "0":
                logs = self.docker("logs", "--tail", "40", name.lstrip("/"), check=False)
                raise CheckError(f"{name}: {status}, {restarts} restarts:\n{logs}")

    def down(self) -> None:
        """Save the logs, ``compose down -v``; fail if anything of the project is left."""
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        (logs / "compose.log").write_text(self.compose("logs", "--no-color", check=False))
        started = time.monotonic()
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False)
        self.timings["down_seconds"] = round(time.monotonic() - started, 1)
        label = f"label=com.docker.compose.project={self.project}"
        left = {
            "containers": self.docker("ps", "-aq", "--filter", label).split(),
            "networks": self.docker("network", "ls", "-q", "--filter", label).split(),
            "volumes": self.docker("volume", "ls", "-q", "--filter", label).split(),
        }
        if any(left.values()):
            raise CheckError(f"left behind after compose down: {left}")

    def __call__(self) -> dict[str, Any]:
        """Run the whole variant; always tear it down."""
        started = time.monotonic()
        self.prepare()
        try:
            self.up()
            self.check_data_isolation()
            self.run()
        finally:
            self.down()
        self.timings["total_seconds"] = round(time.monotonic() - started, 1)
        log(f"{self.variant}: passed {self.timings}")
        return self.timings


# --- the same run without containers -------------------------------------------------------


def compare(workdir: Path, hospitals: int, rounds: int, warm: bool = True) -> dict[str, Any]:
    """Repeat the run with ``fedcl deploy local`` and ``fedcl run``; return their timings."""
    flags = [f"--{key}={value}" for key, value in SETTINGS.items()]
    flags += [f"--clients={hospitals}", f"--rounds={rounds}"]
    local = ["deploy", "local"] + ([] if warm else ["--fresh-clientapps"])
    result: dict[str, Any] = {}
    for name, command in (("deploy_local", local), ("simulation", ["run"])):
        out = workdir / name
        started = time.monotonic()
        run_command(
            [sys.executable, "-m", "fedcl", *command, *flags, "--out", str(out)],
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        result[name] = {
            "total_seconds": round(time.monotonic() - started, 1),
            "round_seconds": [r["wall_seconds"] for r in records],
            "round_parts": round_parts(records),
            "load_average": round(os.getloadavg()[1], 1),
        }
        log(f"{name}: {result[name]}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="insecure,tls", help="comma-separated: insecure, tls")
    parser.add_argument("--compare", action="store_true", help="also deploy local + fedcl run")
    parser.add_argument(
        "--fresh-clientapps", dest="warm", action="store_false",
        help="a fresh Python per ClientApp message, as Flower does (also in --compare)",
    )  # fmt: skip
    parser.add_argument("--rebuild", action="store_true", help="build images even if unchanged")
    parser.add_argument("--install", action="store_true", help="apt-get install what is missing")
    parser.add_argument("--keep", type=Path, help="keep the work directories here")
    parser.add_argument("--report", type=Path, help="write the figures as JSON")
    parser.add_argument(
        "--run-timeout", type=float, default=1200, help="seconds a run may take (default 1200)"
    )
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(variants) <= {"insecure", "tls"}:
        parser.error(f"--variants takes insecure and/or tls, got {args.variants!r}")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

    started = time.monotonic()
    report: dict[str, Any] = {"hospitals": args.hospitals, "rounds": args.rounds, **SETTINGS}
    keep = args.keep.resolve() if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    with nullcontext(keep) if keep else tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        try:
            if args.install:
                install_missing()
            with terminate_raises(), engine(workdir):
                docker = Docker()
                images = Images(docker, workdir, rebuild=args.rebuild)
                images.flower()
                images.apps()
                report["build_seconds"] = images.build_seconds
                report["image_bytes"] = images.sizes()
                for variant in variants:
                    run = ComposeRun(
                        docker,
                        workdir / variant,
                        args.hospitals,
                        args.rounds,
                        tls=variant == "tls",
                        run_timeout=args.run_timeout,
                        warm=args.warm,
                    )
                    report[variant] = run()
            if args.compare:
                report |= compare(workdir, args.hospitals, args.rounds, args.warm)
        except CheckError as err:
            log(f"FAILED: {err}")
            return 1
        except KeyboardInterrupt:
            log("interrupted: torn down")
            return 130
        finally:
            report["check_seconds"] = round(time.monotonic() - started, 1)
            if args.report:
                args.report.write_text(json.dumps(report, indent=2) + "\n")
    log(f"passed in {report['check_seconds']:.0f} s: {json.dumps(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
