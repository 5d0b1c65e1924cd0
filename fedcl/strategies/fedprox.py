"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

The server half is Flower's ``FedProx``: FedAvg that sends ``proximal-mu`` in the train
config. The hospital half adds the proximal term ``(mu / 2) * ||w - w_global||^2`` to
its local loss (``w_global``: the weights it received; Flower leaves this to the client).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """A training penalty: ``(mu / 2) * sum_i omega_i (w_i - a_i)^2`` over trainable parameters.

    FedProx's term (``omega = 1``, ``a`` the weights received) and, with an importance
    per weight, EWC's (:mod:`fedcl.strategies.ewc`).

    Parameters
    ----------
    model : nn.Module
        The model being trained.
    mu : float
        The penalty's weight (> 0).
    anchor : mapping of str to torch.Tensor, optional
        Where to hold each parameter, by name; default its value at construction.
    importance : mapping of str to torch.Tensor, optional
        ``omega``, by parameter name; default 1 everywhere.
    """

    def __init__(
        self,
        model: nn.Module,
        mu: float,
        *,
        anchor: Mapping[str, torch.Tensor] | None = None,
        importance: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.anchor = [
            (p if anchor is None else anchor[n]).detach().clone().to(p.device) for n, p in named
        ]
        self.importance = (
            None if importance is None else [importance[n].to(p.device) for n, p in named]
        )
        self.mu = mu

    def __call__(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Return the penalty (independent of the batch)."""
        squares = [(p - a) ** 2 for p, a in zip(self.params, self.anchor, strict=True)]
        if self.importance is not None:
            squares = [s * w for s, w in zip(squares, self.importance, strict=True)]
        return 0.5 * self.mu * sum(s.sum() for s in squares)  # type: ignore[return-value]


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
