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


class WarmHospitals:
    """The hospital actors kept between the runs of a :func:`warm_hospitals` block."""

    def __init__(self) -> None:
        self.idle: dict[tuple[Any, ...], list[Any]] = {}  # by the resources an actor holds
        self.started = 0  # actors started in the block
        self.reused = 0  # actors a run took over from an earlier one

    def backend(self) -> type:
        """Flower's Ray backend, keeping its actors (and Ray) when a run ends."""
        # Flower's simulation internals: imported when a simulation starts
        import ray
        from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
        from flwr.simulation.ray_transport.ray_actor import BasicActorPool, ClientAppActor

        warm = self

        class KeptActorsBackend(RayBackend):
            def build(self, app_fn: Any) -> None:
                self.resources = tuple(sorted(self.client_resources.items()))
                self.pool = BasicActorPool(ClientAppActor, self.client_resources, self.actor_kwargs)
                wanted = self.pool.actors_capacity
                idle = warm.idle.pop(self.resources, [])
                for actor in idle[wanted:]:
                    ray.kill(actor)
                taken = idle[:wanted]
                self.pool.pool.extend(taken)
                self.pool.num_actors += len(taken)
                self.pool.add_actors_to_pool(wanted - len(taken))
                warm.reused += len(taken)
                warm.started += wanted - len(taken)
                self.app_fn = app_fn

            def terminate(self) -> None:
                # a run that ended with an actor still busy (an error, an interrupt)
                # keeps none; the block's end stops the busy one with Ray
                if self.pool is None:
                    return
                if len(self.pool.pool) == self.pool.num_actors:
                    warm.idle.setdefault(self.resources, []).extend(self.pool.pool)
                else:
                    self.pool.terminate_all_actors()

        return KeptActorsBackend


@contextmanager
def warm_hospitals() -> Iterator[WarmHospitals]:
    """Let the simulated runs made inside the block share their hospitals' Ray actors.

    A run's hospitals are Ray actors whose processes import torch and MONAI before
    their first message: seconds per run, most of a small run's time. Flower 1.42
    stops them and Ray with every run and offers no way to keep them; inside the block
    its Ray backend (which its simulation engine looks up by name as each run starts)
    is replaced by one that hands the idle actors of a finished run to the next run
    asking for the same resources and leaves Ray connected. An actor carries nothing
    from one run to the next (every message brings its ClientApp and the run's
    context), so every figure is what a fresh actor gives. Leaving the block stops the
    kept actors and disconnects from a Ray that a run of the block connected to.
    """
    # imported when a simulation starts: Ray, and Flower's simulation internals
    import ray
    from flwr.server.superlink.fleet.vce.backend import raybackend

    warm = WarmHospitals()
    connected = ray.is_initialized()
    flowers = raybackend.RayBackend
    raybackend.RayBackend = warm.backend()  # type: ignore[misc,assignment]
    try:
        yield warm
    finally:
        raybackend.RayBackend = flowers  # type: ignore[misc]
        if ray.is_initialized():
            for actor in (a for actors in warm.idle.values() for a in actors):
                ray.kill(actor)
            if not connected:
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
