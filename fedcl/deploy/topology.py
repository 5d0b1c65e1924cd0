"""The deployment topology: which Flower processes run, with which flags.

One SuperLink, one SuperNode per hospital, and a SuperExec beside each of them that
runs the app (``--isolation process``: the ServerApp and every ClientApp in their own
process or container). :func:`services` is the single source of truth for the flags:
``docker-compose.yml`` is rendered from it (:func:`compose_file`) and
``fedcl deploy local`` starts the same services as local processes on 127.0.0.1; only
the addresses (service names vs loopback ports) and file paths differ.

Flower 1.42 serves everything on one HTTP port per daemon: the SuperLink's Fleet,
Control and runtime APIs on ``--port``, each SuperNode's runtime API on its own
``--port``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flwr

FLOWER_VERSION = flwr.__version__  # image tags follow the installed (pinned) Flower
SUPERLINK_PORT = 8000  # Flower's default; Fleet, Control and runtime APIs
SUPERNODE_PORT = 9094  # Flower's default runtime API port of a SuperNode
CERT_DIR = "/certificates"  # where the compose services mount the certificates
# Every process: offline and quiet.
ENVIRONMENT = {"FLWR_TELEMETRY_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1"}
# A SuperExec looks for new work every second by default; at 0.2 s a round starts
# ~0.4 s sooner on average, for a few small HTTP requests more.
SUPEREXEC_ENVIRONMENT = ENVIRONMENT | {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}


@dataclass(frozen=True)
class Tls:
    """Certificate files as the processes see them (see :mod:`fedcl.deploy.certs`)."""

    ca: str  # the CA every client verifies servers with
    cert: str  # server certificate (SANs: every service name, localhost, 127.0.0.1)
    key: str


@dataclass(frozen=True)
class Network:
    """How services find each other.

    ``bind``: the host servers listen on; ``host(name)`` and ``port(name)``: where a
    service is reached. Compose: service names and fixed ports; local: 127.0.0.1 and a
    free port per daemon.
    """

    bind: str
    host: Callable[[str], str]
    port: Callable[[str], int]

    def address(self, name: str) -> str:
        """``host:port`` of the daemon ``name``."""
        return f"{self.host(name)}:{self.port(name)}"


@dataclass(frozen=True)
class Service:
    """One Flower process (a container in compose, a local process in ``deploy local``)."""

    name: str
    program: str  # flower-superlink | flower-supernode | flower-superexec
    args: tuple[str, ...]
    hospital: int | None = None  # whose data this service may see (ClientApp only)
    serves: bool = False  # listens on a port with GET /health
    after: tuple[str, ...] = ()  # services it needs running first
    environment: Mapping[str, str] = field(default_factory=lambda: dict(ENVIRONMENT))

    @property
    def command(self) -> list[str]:
        """The full command line."""
        return [self.program, *self.args]


def supernode(hospital: int) -> str:
    """Service name of a hospital's SuperNode."""
    return f"supernode-{hospital}"


def clientapp(hospital: int) -> str:
    """Service name of a hospital's ClientApp process (its SuperExec)."""
    return f"clientapp-{hospital}"


def _client_tls(tls: Tls | None) -> list[str]:
    # A TLS client verifies the server with the CA; --insecure turns TLS off.
    return ["--root-certificates", tls.ca] if tls else ["--insecure"]


def _server_tls(tls: Tls | None) -> list[str]:
    if tls is None:
        return []
    return ["--ssl-certfile", tls.cert, "--ssl-keyfile", tls.key, "--ssl-ca-certfile", tls.ca]


def services(hospitals: int, network: Network, tls: Tls | None = None) -> list[Service]:
    """Every process of a deployment with ``hospitals`` SuperNodes, in start order."""
    link = Service(
        "superlink",
        "flower-superlink",
        (
            *(_server_tls(tls) or ["--insecure"]),
            "--host", network.bind,
            "--port", str(network.port("superlink")),
            "--isolation", "process",
            "--disable-runtime-dependency-installation",
        ),
        serves=True,
    )  # fmt: skip
    serverapp = Service(
        "serverapp",
        "flower-superexec",
        ("--runtime-api-address", network.address("superlink"), *_client_tls(tls)),
        after=("superlink",),
        environment=SUPEREXEC_ENVIRONMENT,
    )
    nodes: list[Service] = []
    for h in range(hospitals):
        node = Service(
            supernode(h),
            "flower-supernode",
            (
                *_client_tls(tls),  # to the SuperLink
                *_server_tls(tls),  # its own runtime API, used by its ClientApp process
                "--superlink", network.address("superlink"),
                "--host", network.bind,
                "--port", str(network.port(supernode(h))),
                "--isolation", "process",
                "--node-config", f"partition-id={h} num-partitions={hospitals}",
            ),
            serves=True,
            after=("superlink",),
        )  # fmt: skip
        app = Service(
            clientapp(h),
            "flower-superexec",
            ("--runtime-api-address", network.address(supernode(h)), *_client_tls(tls)),
            hospital=h,
            after=(supernode(h),),
            environment=SUPEREXEC_ENVIRONMENT,
        )
        nodes += [node, app]
    return [link, serverapp, *nodes]


# --- docker compose -----------------------------------------------------------------

_IMAGES = {"flower-superlink": "superlink", "flower-supernode": "supernode"}
_BUILDS = {"serverapp": "server/Dockerfile"}  # ClientApps: clients/Dockerfile


def compose_network() -> Network:
    """Compose addressing: containers bind 0.0.0.0 and reach each other by name."""
    return Network(
        bind="0.0.0.0",
        host=lambda name: name,
        port=lambda name: SUPERLINK_PORT if name == "superlink" else SUPERNODE_PORT,
    )


def compose_tls() -> Tls:
    """Certificate paths inside the containers (``./certificates`` mounted read-only)."""
    return Tls(ca=f"{CERT_DIR}/ca.pem", cert=f"{CERT_DIR}/server.pem", key=f"{CERT_DIR}/server.key")


def _healthcheck(port: int, tls: bool) -> dict[str, Any]:
    # The Flower images have Python but no curl.
    url = f"{'https' if tls else 'http'}://localhost:{port}/health"
    context = f"ssl.create_default_context(cafile='{CERT_DIR}/ca.pem')" if tls else "None"
    probe = f"import ssl, urllib.request as u; u.urlopen('{url}', context={context}, timeout=3)"
    return {
        "test": ["CMD", "python", "-c", probe],
        "interval": "5s",
        "timeout": "5s",
        "retries": 12,
    }


def compose_file(hospitals: int = 3, tls: bool = False) -> dict[str, Any]:
    """Build the docker compose document for ``hospitals`` hospitals (optionally with TLS).

    Hospital ``i``'s ClientApp container mounts ``./data/hospital-i`` read-only at
    ``/data`` and nothing else of any hospital; the ServerApp writes run directories to
    ``./runs``. With ``tls``, every service mounts ``./certificates`` (made by
    ``fedcl deploy certs``) and every connection is verified against its CA.
    """
    network = compose_network()
    version = FLOWER_VERSION
    result: dict[str, Any] = {}
    for service in services(hospitals, network, compose_tls() if tls else None):
        entry: dict[str, Any] = {}
        image = _IMAGES.get(service.program)
        if image:
            entry["image"] = f"flwr/{image}:{version}"
        else:
            dockerfile = _BUILDS.get(service.name, "clients/Dockerfile")
            entry["build"] = {
                "context": ".",
                "dockerfile": dockerfile,
                "args": {"FLWR_VERSION": version},
            }
        entry["command"] = list(service.args)
        if service.name == "superlink":
            # Control API for `flwr run` from the host.
            entry["ports"] = [f"{SUPERLINK_PORT}:{SUPERLINK_PORT}"]
        if service.serves:
            entry["healthcheck"] = _healthcheck(network.port(service.name), tls)
        if service.after:
            entry["depends_on"] = {name: {"condition": "service_healthy"} for name in service.after}
        volumes = []
        if tls:
            volumes.append(f"./certificates:{CERT_DIR}:ro")
        if service.hospital is not None:
            volumes.append(f"./data/hospital-{service.hospital}:/data:ro")
        if service.name == "serverapp":
            volumes.append("./runs:/app/runs")
        if volumes:
            entry["volumes"] = volumes
        entry["environment"] = dict(service.environment)
        entry["restart"] = "on-failure"
        result[service.name] = entry
    return {"services": result}


def render_compose(hospitals: int = 3, tls: bool = False) -> str:
    """``docker-compose.yml`` text: a header saying how it was made, then the document."""
    import yaml

    variant = " --tls" if tls else ""
    header = (
        f"# Generated by `fedcl deploy compose --hospitals {hospitals}{variant}`: edit the\n"
        "# topology in fedcl/deploy/topology.py (the same flags `fedcl deploy local` runs),\n"
        "# then regenerate. Usage: docs/deployment.md.\n"
    )
    body = yaml.safe_dump(compose_file(hospitals, tls), sort_keys=False, width=100)
    return header + body
