"""Single-machine simulation on Flower's Ray engine.

Why ``flwr.simulation.run_simulation`` (deprecated in Flower 1.42 in favour of
``flwr run``) rather than a local SuperLink: it runs the ServerApp in this process,
so ``fedcl run`` can hand it the resolved config and a progress callback directly,
starts in seconds, and needs no ``FLWR_HOME`` connection file. The project stays a
standard Flower app too: ``flwr run .`` runs the same ``server.app:app`` and
``clients.app:app`` through the supported path.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fedcl.config import RunConfig
from fedcl.flower_logs import drop_intended_flower_logs

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

    from fedcl.recorder import RoundCallback

# Offline and quiet: no telemetry, no update check, no dependency installation.
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_DEDUP_LOGS": "0",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # Ray's FutureWarning: keep new behaviour
}


def backend_config(config: RunConfig, cluster: str = "") -> dict[str, Any]:
    """Flower Ray backend settings.

    Each hospital (a Ray actor) reserves ``client-cpus`` CPUs and ``client-gpus``
    GPUs. With ``ray-address`` (or ``cluster``, an address that is not part of the
    run's config: ``fedcl compare``'s shared head) the simulation attaches to that
    existing cluster (``ray.init(address=...)``, whose resources are the cluster's);
    otherwise it starts a local Ray instance with every core of this machine.
    """
    init_args: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if config.ray_address or cluster:
        init_args["address"] = config.ray_address or cluster
    else:
        # "local", not None: ray.init() without an address joins any cluster that
        # `ray start` left running on this machine (and hangs when num_cpus is given).
        init_args["address"] = "local"
        init_args["num_cpus"] = os.cpu_count() or 1
    return {
        "client_resources": {"num_cpus": config.client_cpus, "num_gpus": config.client_gpus},
        "init_args": init_args,
    }


# What a hospital's Ray worker imports as it starts (Ray's ``preload_python_modules``),
# so that the first round does not wait for torch and MONAI to load in every actor.
HOSPITAL_MODULES = ("clients.app",)


@contextmanager
def local_ray(config: RunConfig, cluster: str = "") -> Iterator[None]:
    """Run the block with this process's local Ray instance for ``config`` started.

    Starts nothing when Ray already runs in this process or the run attaches to a
    cluster (``ray-address``, ``cluster``: Flower connects). Otherwise Ray starts now,
    and stops when the block ends. Flower's backend finds it initialised and uses it.

    Why fedcl starts it rather than Flower: Ray prestarts one worker per CPU, and
    Flower, which starts Ray with a ``runtime_env``, leaves those idle and starts
    fresh workers for its actors, which then import torch and MONAI on the first
    round's message. Here the workers inherit ``PYTHONPATH`` (Flower's reason for its
    ``runtime_env``) from this process, host the actors, and, when each hospital has
    at most one CPU and no GPU (one prestarted worker per actor), import
    :data:`HOSPITAL_MODULES` as they start, while this process does its own imports.
    """
    # imported when a simulation starts: Ray, and the Flower apps (the layer above)
    import ray

    if ray.is_initialized() or config.ray_address or cluster:
        yield
        return
    _set_flower_env()
    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    preload = config.client_cpus <= 1 and config.client_gpus == 0
    # The OMP_NUM_THREADS Ray gives an actor's worker (its CPUs, at least 1; a user's
    # own wins), set for the workers as they start: Ray sets it when the actor starts,
    # too late for a worker whose torch was loaded already.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, math.floor(config.client_cpus)))
    with _environ(PYTHONPATH=pythonpath, OMP_NUM_THREADS=threads):
        ray.init(
            **backend_config(config)["init_args"],
            _system_config={"preload_python_modules": list(HOSPITAL_MODULES) if preload else []},
        )
    try:
        yield
    finally:
        ray.shutdown()


def _set_flower_env() -> None:
    for key, value in FLOWER_ENV.items():
        os.environ.setdefault(key, value)


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the processes started inside the block."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def simulate(
    config: RunConfig,
    callbacks: Sequence[RoundCallback] = (),
    verbose: bool = False,
    client_app: ClientApp | None = None,
    resume: bool = False,
    cluster: str = "",
) -> None:
    """Run ``config`` as a Ray simulation with one virtual SuperNode per hospital.

    ``client_app`` replaces fedcl's hospital ClientApp (tests: a hospital that fails,
    or one whose messages are inspected). ``resume``: continue the run in
    ``config.out`` from its checkpoint. ``cluster``: attach to this Ray address
    unless the config names one (see :func:`backend_config`).
    """
    _set_flower_env()
    from flwr.simulation import run_simulation  # after the environment is set

    # imported when a simulation starts: Ray, and the Flower apps (the layer above)
    from clients.app import app as default_client_app
    from server.app import make_app

    flwr_logger = logging.getLogger("flwr")
    flwr_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    drop_intended_flower_logs()
    with local_ray(config, cluster):
        run_simulation(
            server_app=make_app(config, callbacks, resume),
            client_app=client_app or default_client_app,
            num_supernodes=config.clients,
            backend_config=backend_config(config, cluster),
        )
