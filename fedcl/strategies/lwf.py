"""Federated learning without forgetting: FedAvg whose hospitals distil toward the past.

A federated continual-learning baseline that needs no old data, neither at the server
nor at the hospitals: each hospital trains on its current tiles with the segmentation
loss plus LwF's distillation toward the global model it received at the start of the
current stage (:mod:`fedcl.distillation`); the server averages as FedAvg does. In the
first stage there is nothing to remember and the run is FedAvg's.

The server only tells the hospitals the weight and temperature (``distill-weight``,
``distill-temperature`` in the train config, as FedProx sends ``proximal-mu``); each
hospital keeps its teacher in ``Context.state`` (:mod:`fedcl.hospital`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

# Message keys of the train config (read by fedcl.hospital).
WEIGHT_KEY, TEMPERATURE_KEY = "distill-weight", "distill-temperature"


class LwF(FedAvg):
    """FedAvg with LwF distillation at the hospitals.

    Parameters
    ----------
    distill_weight : float
        Weight of the distillation term beside the segmentation loss (LwF's lambda).
    temperature : float
        Softmax temperature of the distillation.
    **kwargs
        FedAvg's arguments.
    """

    def __init__(self, *, distill_weight: float, temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.distill_weight = distill_weight
        self.temperature = temperature

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, telling the hospitals how to distil."""
        config[WEIGHT_KEY] = self.distill_weight
        config[TEMPERATURE_KEY] = self.temperature
        return super().configure_train(server_round, arrays, config, grid)
