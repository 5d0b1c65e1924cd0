"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

The server half is Flower's ``FedProx``: FedAvg that sends ``proximal-mu`` in the train
config. The hospital half adds the proximal term ``(mu / 2) * ||w - w_global||^2`` to
its local loss (``w_global``: the weights it received; Flower leaves this to the client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from flwr.serverapp import strategy as flower
from torch import nn

from fedcl.config import RunConfig, Section, opt
from fedcl.strategies.contract import SentModel
from fedcl.strategies.flower import sampling
from fedcl.strategies.hospital_half import HospitalHalf
from fedcl.training import Penalty

MU_KEY = "proximal-mu"  # Flower's FedProx puts it into the train config


@dataclass(frozen=True, kw_only=True)
class ProximalSettings(Section):
    """FedProx's own key."""

    # FedProx's usual range is 0.001..1; 0.01 keeps local models close without stalling.
    proximal_mu: float = opt(0.01, "FedProx proximal weight mu", section="strategy", rule=">= 0")


class Proximal:
    """A training penalty: ``(mu / 2) * ||w - w_0||^2`` over ``model``'s trainable parameters.

    Parameters
    ----------
    model : nn.Module
        The model being trained; ``w_0`` is a copy of its parameters at construction.
    mu : float
        The proximal weight (> 0).
    """

    def __init__(self, model: nn.Module, mu: float) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.anchor = [p.detach().clone() for p in self.params]
        self.mu = mu

    def __call__(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Return the penalty (independent of the batch)."""
        drift = sum(((p - a) ** 2).sum() for p, a in zip(self.params, self.anchor, strict=True))
        return 0.5 * self.mu * drift  # type: ignore[return-value]


class ProximalHospital(HospitalHalf):
    """FedProx's hospital half: the proximal term, with the ``mu`` the server sent."""

    def penalties(self, model: nn.Module) -> list[Penalty]:
        """``[Proximal(model, mu)]``, or nothing when ``mu`` is 0."""
        mu = float(self.now.sent.get(MU_KEY, 0.0))  # type: ignore[arg-type]
        return [Proximal(model, mu)] if mu > 0 else []


class FedProx(flower.FedProx):
    """Flower's FedProx, with its hospital half."""

    hospital = ProximalHospital
    sections: ClassVar[tuple[type[Section], ...]] = (ProximalSettings,)

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FedProx:
        """Every hospital every round; ``proximal-mu`` from the config."""
        return cls(**sampling(config), proximal_mu=config.section(ProximalSettings).proximal_mu)
