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
from pathlib import Path
from typing import Any

import flwr

import fedcl

FLOWER_VERSION = flwr.__version__  # image tags follow the installed (pinned) Flower
SUPERLINK_PORT = 8000  # Flower's default; Fleet, Control and runtime APIs
SUPERNODE_PORT = 9094  # Flower's default runtime API port of a SuperNode
CERT_DIR = "/certificates"  # where the compose services mount the certificates
# Every process: offline and quiet.
ENVIRONMENT = {"FLWR_TELEMETRY_ENABLED": "0", "NO_ALBUMENTATIONS_UPDATE": "1"}
# A SuperExec looks for new work every second by default; at 0.2 s a round starts
# ~0.4 s sooner on average, for a few small HTTP requests more.
SUPEREXEC_ENVIRONMENT = ENVIRONMENT | {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}
# A ClientApp trains with one torch thread, as Ray gives a simulated hospital: the
# hospitals of one compose file share one host's cores, and N processes with every core
# each oversubscribe it (docs/deployment.md, round latency). Raise it where each
# hospital runs on its own machine; `fedcl deploy local` sets it from --client-cpus.
CLIENTAPP_ENVIRONMENT = SUPEREXEC_ENVIRONMENT | {"OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Tls:
    """Certificate and key files as the processes see them (see :mod:`fedcl.deploy.certs`).

    ``node_keys``: the folder of the hospitals' SuperNode keys (:func:`node_key`);
    set, the SuperLink accepts only SuperNodes whose public key was registered with it
    (``--enable-supernode-auth``, which Flower allows only over TLS).
    """

    ca: str  # the CA every client verifies servers with
    cert: str  # server certificate (SANs: every service name, localhost, 127.0.0.1)
    key: str
    node_keys: str | None = None


def node_key(hospital: int) -> str:
    """File name of a hospital's SuperNode private key (:func:`public_key`: its public key)."""
    return f"supernode-{hospital}"


def public_key(directory: Path, hospital: int) -> Path:
    """Path of a hospital's SuperNode public key in the keys folder ``directory``."""
    return directory / f"{node_key(hospital)}.pub"


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
    wrapper: tuple[str, ...] = ()  # a command the program runs under (fedcl.deploy.warm)

    @property
    def command(self) -> list[str]:
        """The full command line."""
        return [*self.wrapper, self.program, *self.args]


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


def _node_auth(tls: Tls | None, hospital: int) -> list[str]:
    if tls is None or tls.node_keys is None:
        return []
    return ["--auth-supernode-private-key", f"{tls.node_keys}/{node_key(hospital)}"]


def services(
    hospitals: int,
    network: Network,
    tls: Tls | None = None,
    clientapp_wrapper: tuple[str, ...] = (),
) -> list[Service]:
    """Every process of a deployment with ``hospitals`` SuperNodes, in start order.

    ``clientapp_wrapper``: a command each hospital's SuperExec runs under (``deploy
    local``'s warm ClientApps, :mod:`fedcl.deploy.warm`).
    """
    link = Service(
        "superlink",
        "flower-superlink",
        (
            *(_server_tls(tls) or ["--insecure"]),
            *(["--enable-supernode-auth"] if tls and tls.node_keys else []),
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
                *_node_auth(tls, h),
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
            environment=CLIENTAPP_ENVIRONMENT,
            wrapper=clientapp_wrapper,
        )
        nodes += [node, app]
    return [link, serverapp, *nodes]


# --- docker compose -----------------------------------------------------------------

_IMAGES = {"flower-superlink": "superlink", "flower-supernode": "supernode"}
APP_DOCKERFILE = "docker/app/Dockerfile"  # the ServerApp's and every ClientApp's image
# How the containers reach each other: "bridge", a compose network with service names
# (the committed files); "host", the host's network stack, every daemon on 127.0.0.1
# with its own port (for tests, and where a container network is not wanted).
NETWORKS = ("bridge", "host")
LOOPBACK = "127.0.0.1"


def _host_port(name: str) -> int:
    # Host networking shares one port space: SuperNode h listens on 9094 + h.
    if name == "superlink":
        return SUPERLINK_PORT
    return SUPERNODE_PORT + int(name.rsplit("-", 1)[1])


def compose_network(network: str = "bridge") -> Network:
    """Compose addressing for ``network`` (one of :data:`NETWORKS`).

    ``bridge``: containers bind 0.0.0.0 and reach each other by service name on
    Flower's default ports. ``host``: containers bind 127.0.0.1 only; the SuperLink
    listens on 8000 and SuperNode ``h`` on 9094 + ``h``.
    """
    if network == "host":
        return Network(bind=LOOPBACK, host=lambda _name: LOOPBACK, port=_host_port)
    if network != "bridge":
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}; got {network!r}")
    return Network(
        bind="0.0.0.0",
        host=lambda name: name,
        port=lambda name: SUPERLINK_PORT if name == "superlink" else SUPERNODE_PORT,
    )


def app_image(service: str) -> str:
    """Return the local image name of an app service (built, never pulled)."""
    role = "serverapp" if service == "serverapp" else "clientapp"
    return f"fedcl-{role}:{fedcl.__version__}"


def compose_tls() -> Tls:
    """Certificate and key paths inside the containers (``./certificates`` mounted read-only)."""
    return Tls(
        ca=f"{CERT_DIR}/ca.pem",
        cert=f"{CERT_DIR}/server.pem",
        key=f"{CERT_DIR}/server.key",
        node_keys=CERT_DIR,
    )


def _healthcheck(port: int, tls: bool) -> dict[str, Any]:
    # The Flower images have Python but no curl.
    url = f"{'https' if tls else 'http'}://localhost:{port}/health"
    context = f"ssl.create_default_context(cafile='{CERT_DIR}/ca.pem')" if tls else "None"
    probe = f"import ssl, urllib.request as u; u.urlopen('{url}', context={context}, timeout=3)"
    # Every 2 s (a Python start, ~40 ms of CPU): each tier of depends_on waits for one
    # healthy probe, so at 5 s a 3-tier start took 19 s instead of ~10 s.
    return {
        "test": ["CMD", "python", "-c", probe],
        "interval": "2s",
        "timeout": "5s",
        "retries": 30,
    }


# A hospital's SuperExec runs under it: ClientApps forked from a warm interpreter.
WARM = ("-m", "fedcl.deploy.warm")


def compose_file(
    hospitals: int = 3, tls: bool = False, network: str = "bridge", warm: bool = True
) -> dict[str, Any]:
    """Build the docker compose document for ``hospitals`` hospitals (optionally with TLS).

    Hospital ``i``'s ClientApp container mounts ``./data/hospital-i`` read-only at
    ``/data`` and nothing else of any hospital; the ServerApp writes run directories to
    ``./runs``. With ``tls``, every service mounts ``./certificates`` (made by
    ``fedcl deploy certs``) and every connection is verified against its CA.
    ``network``: see :func:`compose_network`; with ``host`` nothing is published, the
    daemons listen on 127.0.0.1 only. ``warm``: each hospital's SuperExec forks its
    ClientApps from an interpreter with torch and MONAI loaded (:mod:`fedcl.deploy.warm`,
    the image's ``python``); False: a fresh Python per message, as Flower does.
    """
    addressing = compose_network(network)
    version = FLOWER_VERSION
    result: dict[str, Any] = {}
    wrapper = ("python", *WARM) if warm else ()
    for service in services(hospitals, addressing, compose_tls() if tls else None, wrapper):
        entry: dict[str, Any] = {}
        image = _IMAGES.get(service.program)
        if image:
            entry["image"] = f"flwr/{image}:{version}"
        else:
            # One image per role, built from the repository (every ClientApp shares one);
            # `pull_policy: build` keeps compose from looking for it in a registry and
            # rebuilds it (from cache) on `up`, so it follows the code.
            entry["image"] = app_image(service.name)
            entry["build"] = {
                "context": ".",
                "dockerfile": APP_DOCKERFILE,
                "args": {"FLWR_VERSION": version},
            }
            entry["pull_policy"] = "build"
        if service.wrapper:
            entry["entrypoint"] = [*service.wrapper, service.program]
        entry["command"] = list(service.args)
        if network == "host":
            entry["network_mode"] = "host"
        elif service.name == "superlink":
            # Control API for `flwr run` from the host.
            entry["ports"] = [f"{SUPERLINK_PORT}:{SUPERLINK_PORT}"]
        if service.serves:
            entry["healthcheck"] = _healthcheck(addressing.port(service.name), tls)
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


def render_compose(
    hospitals: int = 3, tls: bool = False, network: str = "bridge", warm: bool = True
) -> str:
    """``docker-compose.yml`` text: a header saying how it was made, then the document."""
    # imported only to write compose files
    import yaml

    flags = (" --tls" if tls else "") + (f" --network {network}" if network != "bridge" else "")
    flags += "" if warm else " --fresh-clientapps"
    header = (
        f"# Generated by `fedcl deploy compose --hospitals {hospitals}{flags}`: edit the\n"
        "# topology in fedcl/deploy/topology.py (the same flags `fedcl deploy local` runs),\n"
        "# then regenerate. Usage: docs/deployment.md.\n"
    )
    body = yaml.safe_dump(compose_file(hospitals, tls, network, warm), sort_keys=False, width=100)
    return header + body
