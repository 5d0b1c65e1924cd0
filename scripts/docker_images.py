"""The Docker side of the compose check: an engine, and the images, built when their inputs change.

Used by ``scripts/compose_check.py`` (its docstring says what the check does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's fedcl, whatever is installed

from fedcl.deploy.topology import APP_DOCKERFILE, FLOWER_VERSION, app_image  # noqa: E402

BASE_IMAGE = "fedcl-standin/debian-python:bookworm"
STAND_IN_LABEL = "org.fedcl.stand-in"
INPUTS_LABEL = "org.fedcl.inputs"
PYTORCH_CPU_INDEX = "download.pytorch.org"


def log(message: str) -> None:
    """Print a progress line."""
    print(f"[compose-check] {message}", flush=True)


class CheckError(RuntimeError):
    """A step of the check failed (printed, exit code 1)."""


# --- the engine and the CLIs -------------------------------------------------------------


class Docker:
    """The docker CLI (one that builds with BuildKit) and the compose command."""

    def __init__(self) -> None:
        self.cli, self.env = _buildkit_cli()
        self.compose = _compose_command(self.cli)

    def __call__(self, *args: str, check: bool = True, **kwargs: Any) -> str:
        """Run ``docker ARGS``; return its stdout (raise :class:`CheckError` on failure)."""
        return run_command([self.cli, *args], env=os.environ | self.env, check=check, **kwargs)

    def image_label(self, image: str, label: str) -> str | None:
        """Return the image's label value ("" if unset), None if the image is missing."""
        template = "{{json .Config.Labels}}"
        result = subprocess.run(
            [self.cli, "image", "inspect", "--format", template, image],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            return None
        return str((json.loads(result.stdout) or {}).get(label, ""))

    def image_size(self, image: str) -> int:
        """Size of ``image`` in bytes, as ``docker images`` shows it."""
        return int(self("image", "inspect", "--format", "{{.Size}}", image).strip())


def run_command(command: Sequence[str], check: bool = True, **kwargs: Any) -> str:
    """Run ``command`` (no stdin); return its output, raise CheckError if it fails."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    result = subprocess.run(list(command), text=True, **kwargs)
    if check and result.returncode != 0:
        output = (result.stdout or "") + (result.stderr or "")
        raise CheckError(f"`{' '.join(command)}` failed ({result.returncode}):\n{output[-3000:]}")
    return result.stdout or ""


def _buildkit_cli() -> tuple[str, dict[str, str]]:
    # Docker 23+ builds with BuildKit through buildx; an older CLI (Debian's 20.10) has
    # it built in behind DOCKER_BUILDKIT=1. A newer CLI without buildx has neither.
    candidates = dict.fromkeys(p for p in (shutil.which("docker"), "/usr/bin/docker") if p)
    for cli in candidates:
        if not Path(cli).exists():
            continue
        if subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0:
            return cli, {}
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        ).stdout.strip()
        if version and int(version.split(".")[0]) < 23:
            return cli, {"DOCKER_BUILDKIT": "1"}
    raise CheckError(
        "no docker CLI that builds with BuildKit: install the buildx plugin "
        "(docker-buildx-plugin) or Docker 20.10+ (apt-get install docker.io)"
    )


def _compose_command(cli: str) -> list[str]:
    if subprocess.run([cli, "compose", "version"], capture_output=True).returncode == 0:
        return [cli, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise CheckError("neither `docker compose` nor `docker-compose` is installed")


def install_missing() -> None:
    """apt-get install the engine, compose and debootstrap where they are missing."""
    wanted = {"dockerd": "docker.io", "docker-compose": "docker-compose"}
    wanted["debootstrap"] = "debootstrap"
    missing = [package for tool, package in wanted.items() if not shutil.which(tool)]
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        run_command(["apt-get", "update"], env=env)
        run_command(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env)


def engine_running() -> bool:
    """Whether a Docker engine answers (``docker info``)."""
    docker = shutil.which("docker") or "/usr/bin/docker"
    if not Path(docker).exists():
        return False
    return subprocess.run([docker, "info"], capture_output=True).returncode == 0


@contextmanager
def engine(workdir: Path) -> Iterator[None]:
    """Use the running Docker engine, or start ``dockerd`` for the block and stop it after.

    The engine started here has no default bridge (``--bridge=none``): the check uses
    host networking only, so no container gets a private-range address.
    """
    if engine_running():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise CheckError(
            "no Docker engine is running and none can be started here (needs root and "
            "dockerd; --install installs docker.io)"
        )
    log_file = workdir / "dockerd.log"
    log(f"starting dockerd (log: {log_file})")
    with log_file.open("wb") as handle:
        process = subprocess.Popen(
            [dockerd, "--bridge=none", "--iptables=false", "--ip-masq=false"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not engine_running():
            if process.poll() is not None or time.monotonic() > deadline:
                raise CheckError(f"dockerd did not start:\n{log_file.read_text()[-2000:]}")
            time.sleep(0.5)
        yield
    finally:
        log("stopping the dockerd started here")
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- images ------------------------------------------------------------------------------


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _app_inputs() -> list[Path]:
    # What .dockerignore lets into the app images' build context.
    files = [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / ".dockerignore"]
    for folder in ("fedcl", "clients", "server"):
        files += sorted(
            p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    return files


def _ca_bundle() -> str | None:
    # The CA bundle pip is configured with on this machine (a TLS-intercepting proxy's
    # CA is in it), else the system's.
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return os.environ[name]
    configured = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.cert"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    for path in (configured, "/etc/ssl/certs/ca-certificates.crt"):
        if path and Path(path).is_file():
            return path
    return None


def _torch_index_reachable() -> bool:
    try:
        socket.getaddrinfo(PYTORCH_CPU_INDEX, 443)
    except OSError:
        return False
    return True


class Images:
    """Build (or find) every image the deployment uses; record build times and sizes."""

    def __init__(self, docker: Docker, workdir: Path, rebuild: bool = False) -> None:
        self.docker = docker
        self.workdir = workdir
        self.rebuild = rebuild
        self.build_seconds: dict[str, float] = {}
        self.ca = _ca_bundle()

    def _build(self, image: str, inputs: str, args: list[str]) -> None:
        if not self.rebuild and self.docker.image_label(image, INPUTS_LABEL) == inputs:
            log(f"{image}: up to date")
            return
        log(f"building {image}")
        secret = ["--secret", f"id=ca-bundle,src={self.ca}"] if self.ca else []
        started = time.monotonic()
        self.docker(
            "build", "--network", "host", "--label", f"{INPUTS_LABEL}={inputs}",
            *secret, "-t", image, *args,
            cwd=ROOT,
        )  # fmt: skip
        self.build_seconds[image] = round(time.monotonic() - started, 1)
        log(f"{image}: built in {self.build_seconds[image]:.0f} s")
        # the image this one replaced, now untagged (its layers are shared)
        self.docker("image", "prune", "-f", "--filter", f"label={INPUTS_LABEL}")

    def base(self) -> str:
        """Make a Debian bookworm image with Python 3.11 for the stand-ins (debootstrap)."""
        if self.docker.image_label(BASE_IMAGE, INPUTS_LABEL) is not None:
            return BASE_IMAGE
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None:
            raise CheckError("the stand-in base needs debootstrap (--install installs it)")
        log(f"making {BASE_IMAGE} with debootstrap (a few minutes)")
        started = time.monotonic()
        rootfs = self.workdir / "rootfs"
        run_command(
            [
                debootstrap, "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates", "bookworm", str(rootfs),
            ]
        )  # fmt: skip
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        self.docker("import", "-", BASE_IMAGE, stdin=tar.stdout)
        tar.wait()
        shutil.rmtree(rootfs)
        self.build_seconds[BASE_IMAGE] = round(time.monotonic() - started, 1)
        return BASE_IMAGE

    def flower(self) -> None:
        """Use the official Flower images if present, else build the stand-ins."""
        dockerfile = ROOT / "docker" / "flwr" / "Dockerfile"
        for target in ("superlink", "supernode", "superexec"):
            image = f"flwr/{target}:{FLOWER_VERSION}"
            if self.docker.image_label(image, STAND_IN_LABEL) == "":
                log(f"{image}: Flower's own image")
                continue
            base = self.base()
            base_id = self.docker("image", "inspect", "--format", "{{.Id}}", base).strip()
            inputs = _digest(dockerfile.read_bytes(), base_id.encode(), target.encode())
            self._build(
                image,
                inputs,
                [
                    "-f", str(dockerfile), "--target", target,
                    "--build-arg", f"BASE={base}", "--build-arg", f"FLWR_VERSION={FLOWER_VERSION}",
                    str(dockerfile.parent),
                ],
            )  # fmt: skip

    def apps(self) -> None:
        """``fedcl-serverapp`` and ``fedcl-clientapp`` from the repository's app Dockerfile."""
        superexec = f"flwr/superexec:{FLOWER_VERSION}"
        base_id = self.docker("image", "inspect", "--format", "{{.Id}}", superexec).strip()
        args = ["--build-arg", f"FLWR_VERSION={FLOWER_VERSION}"]
        if not _torch_index_reachable():
            log(f"{PYTORCH_CPU_INDEX} is unreachable: torch from the package index only")
            args += ["--build-arg", "TORCH_INDEX_URL="]
        sources = [p.read_bytes() for p in _app_inputs()]
        path = ROOT / APP_DOCKERFILE
        for service in ("serverapp", "clientapp-0"):  # the second reuses every layer
            inputs = _digest(path.read_bytes(), base_id.encode(), *sources, " ".join(args).encode())
            self._build(app_image(service), inputs, ["-f", str(path), *args, str(ROOT)])

    def sizes(self) -> dict[str, int]:
        """Bytes per image the deployment uses."""
        names = [f"flwr/{t}:{FLOWER_VERSION}" for t in ("superlink", "supernode", "superexec")]
        names += [app_image("serverapp"), app_image("clientapp-0")]
        return {name: self.docker.image_size(name) for name in names}


# --- one deployment ----------------------------------------------------------------------
