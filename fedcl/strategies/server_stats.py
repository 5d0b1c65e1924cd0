"""FedAvg with server-side BatchNorm statistics (``--strategy fedavg-server-stats``).

A baseline, not a method: FedAvg's aggregate, unchanged (every reply, weights
``num-examples``), whose BatchNorm running statistics the server then re-estimates on
its public reference set (the unlabeled tiles DBC scores on, :mod:`fedcl.data.reference`)
instead of averaging the hospitals'. Under stain drift FedAvg's one model carries the
average of every hospital's colour statistics, the drifted ones' included; here it
carries the statistics of its own weights on a broad mix of stains. Every other weight
is FedAvg's bit for bit, and as hospitals train on batch statistics, so is every later
round's: what this changes over FedAvg is the statistics alone, seen only where a model
is scored with its own (docs/evaluation.md, the "as run" reading).

The re-estimation is :func:`fedcl.training.recompute_batchnorm` (precise BN: the
statistics reset, one pass in train mode over the tiles in order, a cumulative
average over the batches), deterministic for a set of tiles. A network without
BatchNorm running statistics has nothing to re-estimate and is refused
(:meth:`FedAvgServerStats.check`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg
from torch import nn

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES, reference_images
from fedcl.data.dataset import TileDataset
from fedcl.data.real import IGNORE
from fedcl.data.reference import public_set
from fedcl.errors import FedclError
from fedcl.models import build_model
from fedcl.normalization import has_running_stats, local_norm_keys
from fedcl.strategies.contract import SentModel
from fedcl.strategies.flower import sampling
from fedcl.training import recompute_batchnorm, resolve_device


def unlabeled(images: np.ndarray) -> TileDataset:
    """Wrap ``M x H x W x 3`` uint8 tiles without masks as a dataset (every pixel IGNORE)."""
    return TileDataset(images, np.full(images.shape[:3], IGNORE, np.uint8), NUM_CLASSES)


def require_running_stats(config: RunConfig, who: str, instead: str) -> None:
    """Refuse ``config``'s network if it keeps no BatchNorm running statistics.

    ``who`` re-estimates them (named in the error), ``instead`` is what to use otherwise.
    """
    if not has_running_stats(build_model(config.model, NUM_CLASSES)):
        raise FedclError(
            f"{who} re-estimates the global model's BatchNorm running statistics, but "
            f"model {config.model!r} has none (its normalisation keeps no statistics "
            "across batches); use a BatchNorm network (unet, basic-unet, smp-resnet18, "
            f"smp-resnet34) or {instead}"
        )


def with_server_statistics(
    arrays: ArrayRecord, model: nn.Module, tiles: TileDataset, batch_size: int
) -> ArrayRecord:
    """Return ``arrays`` with their BatchNorm running statistics re-estimated on ``tiles``.

    Parameters
    ----------
    arrays : ArrayRecord
        A model of ``model``'s architecture (an aggregate).
    model : torch.nn.Module
        A network of that architecture, on the device the pass runs on; ``arrays`` are
        loaded into it and its statistics re-estimated in place.
    tiles : TileDataset
        The tiles the statistics are taken on, in order (their masks are not read).
    batch_size : int
        Tiles a forward pass; each batch counts the same in the cumulative average.

    Returns
    -------
    ArrayRecord
        ``arrays``' entries in their order: the running means and variances and
        ``num_batches_tracked`` of every BatchNorm layer re-estimated (the model's
        dtypes, on the CPU), every other entry ``arrays``' own.
    """
    model.load_state_dict(arrays.to_torch_state_dict())
    recompute_batchnorm(model, tiles, batch_size)
    statistics = set(local_norm_keys(model, "statistics"))
    state = model.state_dict()
    return ArrayRecord(
        {
            key: Array(state[key].detach().cpu().contiguous()) if key in statistics else value
            for key, value in arrays.items()
        }
    )


class FedAvgServerStats(FedAvg):
    """Flower's FedAvg whose aggregate takes its BatchNorm statistics from the server's tiles.

    Parameters
    ----------
    model_fn : callable
        Builds a fresh network of the federation's architecture (with BatchNorm).
    tiles_of : callable
        ``tiles_of(server_round)``: the server's unlabeled tiles of that round (the
        public reference set, :func:`fedcl.data.reference.public_set`).
    batch_size : int
        Tiles a forward pass of the re-estimation (the run's ``batch-size``).
    device : str or torch.device
        Where the re-estimation runs.
    **fedavg_kwargs
        Passed to ``FedAvg`` (sampling, keys).
    """

    server_tiles: ClassVar[tuple[str, ...]] = ("reference_set",)  # the tiles it re-estimates on

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """Refuse a network without BatchNorm running statistics: nothing to re-estimate."""
        require_running_stats(config, "strategy fedavg-server-stats", "strategy fedavg")

    def __init__(
        self,
        *,
        model_fn: Callable[[], nn.Module],
        tiles_of: Callable[[int], TileDataset],
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.model = model_fn().to(device)  # one instance, reloaded every round
        self.tiles_of = tiles_of
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FedAvgServerStats:
        """Every hospital every round; the server's reference set; ``batch-size``."""
        reference_of = public_set(
            config, lambda server_round: unlabeled(reference_images(config, server_round))
        )
        return cls(
            **sampling(config),
            model_fn=lambda: build_model(config.model, NUM_CLASSES),
            tiles_of=lambda server_round: reference_of(server_round)[1],
            batch_size=config.batch_size,
            device=resolve_device(config.device),
        )

    def statistics_tiles(self, server_round: int) -> TileDataset:
        """Return the tiles the statistics of ``server_round``'s aggregate are taken on."""
        return self.tiles_of(server_round)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate as FedAvg, then re-estimate the aggregate's statistics on the server."""
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        tiles = self.statistics_tiles(server_round)
        return with_server_statistics(arrays, self.model, tiles, self.batch_size), metrics
