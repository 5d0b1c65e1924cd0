"""``fedcl deploy``: the multi-process deployment's sub-commands (local, compose, certs)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fedcl.cli.options import (
    add_overwrite,
    add_resume,
    add_run_options,
    check_fresh,
    preflight,
    resolve_config,
    resumed_config,
)
from fedcl.config import Section
from fedcl.errors import FedclError


def add_commands(commands: Any, sections: tuple[type[Section], ...] = ()) -> None:
    """Add ``fedcl deploy`` and its targets to the ``commands`` sub-parsers.

    ``sections``: the strategies' and scenarios' sections whose keys are flags too.
    """
    deploy = commands.add_parser(
        "deploy",
        help="multi-process deployment: SuperLink + one SuperNode per hospital",
        description=(
            "Deploy fedcl as separate Flower processes: try it on this machine with "
            "`fedcl deploy local`, or write the docker compose files that run the same "
            "topology in containers."
        ),
    )
    targets = deploy.add_subparsers(dest="target", required=True, metavar="TARGET")
    local = targets.add_parser(
        "local",
        help="run one experiment on SuperLink/SuperNode processes on 127.0.0.1",
        description=(
            "Start flower-superlink, one flower-supernode per hospital and their "
            "flower-superexec processes on 127.0.0.1 with the docker-compose.yml flags, "
            "submit the fedcl app, wait for the run's final status, and stop every "
            "process. Writes the same run directory as fedcl run, plus OUT/deployment/ "
            "(each process's log)."
        ),
    )
    local.add_argument(
        "--hospitals", dest="clients", type=int, default=argparse.SUPPRESS, metavar="N",
        help="number of hospitals, one SuperNode each (same as --clients)",
    )  # fmt: skip
    local.add_argument(
        "--tls", action="store_true", help="generate a throwaway CA and use TLS everywhere"
    )
    add_fresh_clientapps(local)
    add_resume(local)
    add_overwrite(local)
    add_run_options(local, sections=sections)
    compose = targets.add_parser(
        "compose",
        help="print the docker compose file for N hospitals",
        description="Print docker-compose.yml (or its TLS variant) for N hospitals.",
    )
    compose.add_argument("--hospitals", type=int, default=3, metavar="N")
    compose.add_argument("--tls", action="store_true", help="the TLS variant")
    compose.add_argument(
        "--network", choices=("bridge", "host"), default="bridge",  # topology.NETWORKS
        help="bridge (default): a compose network, services by name; host: the host's "
        "network, every daemon on 127.0.0.1 with its own port (scripts/compose_check.py)",
    )  # fmt: skip
    add_fresh_clientapps(compose)
    certs = targets.add_parser(
        "certs",
        help="write a throwaway CA, server certificate and hospital keys for the TLS compose file",
        description=(
            "Write ca.pem, server.pem and server.key into DIR (default ./certificates), "
            "valid for every service name of an N-hospital compose deployment, and a "
            "SuperNode key pair per hospital (supernode-H, supernode-H.pub) for SuperNode "
            "authentication."
        ),
    )
    _add_keys_folder(certs)
    register = targets.add_parser(
        "register",
        help="register the hospitals' public keys with a running SuperLink",
        description=(
            "Register DIR/supernode-H.pub (H = 0..N-1, written by `fedcl deploy certs`) "
            "with the SuperLink at --superlink over TLS (verified with DIR/ca.pem), with "
            "`flwr supernode register`: the SuperLink then accepts those SuperNodes and "
            "no other."
        ),
    )
    _add_keys_folder(register)
    register.add_argument(
        "--superlink", default="127.0.0.1:8000", metavar="HOST:PORT",
        help="the SuperLink's Control API (default 127.0.0.1:8000, the compose file's)",
    )  # fmt: skip


def add_fresh_clientapps(parser: argparse.ArgumentParser) -> None:
    """``--fresh-clientapps``: Flower's own way of starting a hospital's ClientApps."""
    parser.add_argument(
        "--fresh-clientapps", dest="warm", action="store_false",
        help="start every ClientApp process from a fresh Python, as Flower does (default: "
        "fork them from one that has torch and MONAI loaded; docs/deployment.md)",
    )  # fmt: skip


def _add_keys_folder(parser: argparse.ArgumentParser) -> None:
    # certs writes into it what register reads from it
    parser.add_argument(
        "dir", nargs="?", default="certificates", metavar="DIR",
        help="the certificates and keys folder (default: ./certificates)",
    )  # fmt: skip
    parser.add_argument(
        "--hospitals", type=int, default=3, metavar="N", help="number of hospitals (default: 3)"
    )


def deploy(args: argparse.Namespace) -> int:
    """Run ``fedcl deploy TARGET``; return the exit code."""
    # start-up: imported where a command needs it (module docstring)
    from fedcl.deploy import topology

    if args.target == "compose":
        _check_hospitals(args.hospitals)
        sys.stdout.write(topology.render_compose(args.hospitals, args.tls, args.network, args.warm))
        return 0
    if args.target == "certs":
        # start-up: imported where a command needs it (module docstring)
        from fedcl.deploy.certs import write_certificates, write_node_keys

        _check_hospitals(args.hospitals)
        names = [s.name for s in topology.services(args.hospitals, topology.compose_network())]
        tls = write_certificates(Path(args.dir), names)
        public_keys = write_node_keys(Path(args.dir), args.hospitals)
        print(f"wrote {tls.ca}, {tls.cert}, {tls.key}")
        print(f"wrote a SuperNode key pair per hospital: {', '.join(map(str, public_keys))}")
        # Flower's images run as user app: the daemons must be able to read the key.
        print(f"for docker compose: sudo chown -R 49999:49999 {args.dir}")
        register = f"fedcl deploy register {args.dir} --hospitals {args.hospitals}"
        print(f"once the SuperLink runs: {register}")
        return 0
    if args.target == "register":
        return _register(args)
    return _deploy_local(args)


def _register(args: argparse.Namespace) -> int:
    # start-up: imported where a command needs it (module docstring)
    from fedcl.deploy.local import Connection, register_hospitals
    from fedcl.deploy.topology import public_key

    _check_hospitals(args.hospitals)
    directory = Path(args.dir).resolve()
    ca = directory / "ca.pem"
    keys = [public_key(directory, h) for h in range(args.hospitals)]
    missing = [str(p) for p in (ca, *keys) if not p.exists()]
    if missing:
        raise FedclError(
            f"missing {', '.join(missing)}: write them with `fedcl deploy certs {args.dir} "
            f"--hospitals {args.hospitals}`"
        )
    with tempfile.TemporaryDirectory() as home:
        connection = Connection(args.superlink, str(ca), Path(home), dict(os.environ))
        for line in register_hospitals(connection, keys):
            print(line)
    return 0


def _check_hospitals(hospitals: int) -> None:
    if hospitals < 1:
        raise FedclError(f"--hospitals must be >= 1, got {hospitals}")


def _deploy_local(args: argparse.Namespace) -> int:
    # start-up: imported where a command needs it (module docstring)
    from fedcl.deploy.local import deploy_local
    from fedcl.progress import RoundProgress

    config = resumed_config(args) if args.resume else resolve_config(args)
    if not args.resume:
        check_fresh(config, args.overwrite)
    preflight(config)
    starting = "starting the SuperLink, SuperNodes and apps..."
    with RoundProgress(config, command="fedcl deploy local", starting=starting) as progress:
        deploy_local(
            config,
            tls=args.tls,
            on_record=progress.update,
            resume=bool(args.resume),
            warm=args.warm,
        )
    progress.print_summary()
    return 0
