"""Flower's own strategies as fedcl runs them: built from the run's configuration.

Each class is Flower's, unchanged but for :meth:`from_config`: every hospital every
round (:func:`sampling`) and, for the Byzantine-robust rules, how many hospitals they
assume malicious (:func:`byzantine`). FedProx, which has a hospital half, is in
:mod:`fedcl.strategies.fedprox`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flwr.serverapp import strategy as flower

from fedcl.config import RunConfig, Section, opt

if TYPE_CHECKING:
    from fedcl.strategies.contract import SentModel


def sampling(config: RunConfig) -> dict[str, Any]:
    """FedAvg-family sampling: every hospital every round, no federated evaluation round.

    ``fraction_evaluate=0``: Flower's evaluation round trip is not needed, as the
    hospitals send their scores of the model they receive with their training replies
    (:mod:`fedcl.hospital`).
    """
    return {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": 1,
        "min_available_nodes": config.clients,
    }


@dataclass(frozen=True, kw_only=True)
class ByzantineSettings(Section):
    """The Byzantine-robust rules' own key (Krum, Multi-Krum, Bulyan)."""

    byzantine: int = opt(
        -1,
        "hospitals krum/multikrum/bulyan assume malicious (-1: the most they tolerate)",
        section="strategy",
        rule=">= -1",
    )


def byzantine(config: RunConfig, per_node: int) -> int:
    """Assumed malicious hospitals: ``byzantine``, or the most the rule tolerates.

    Krum needs ``n >= 2f + 3`` (``per_node=2``), Bulyan ``n >= 4f + 3`` (``per_node=4``).
    """
    assumed = config.section(ByzantineSettings).byzantine
    if assumed >= 0:
        return assumed
    return max(0, (config.clients - 3) // per_node)


class FedAvg(flower.FedAvg):
    """Flower's FedAvg (McMahan et al., AISTATS 2017)."""

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FedAvg:
        """Every hospital every round."""
        return cls(**sampling(config))


class FedMedian(flower.FedMedian):
    """Flower's coordinate-wise median (Yin et al., ICML 2018)."""

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FedMedian:
        """Every hospital every round."""
        return cls(**sampling(config))


class FedTrimmedAvg(flower.FedTrimmedAvg):
    """Flower's coordinate-wise trimmed mean (Yin et al., ICML 2018), 20 % cut each side."""

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FedTrimmedAvg:
        """Every hospital every round; ``beta = 0.2``."""
        return cls(**sampling(config), beta=0.2)


class Krum(flower.Krum):
    """Flower's Krum (Blanchard et al., NeurIPS 2017)."""

    sections = (ByzantineSettings,)

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> Krum:
        """Every hospital every round; ``byzantine`` assumed malicious."""
        return cls(**sampling(config), num_malicious_nodes=byzantine(config, 2))


class MultiKrum(flower.MultiKrum):
    """Flower's Multi-Krum (Blanchard et al., NeurIPS 2017)."""

    sections = (ByzantineSettings,)

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> MultiKrum:
        """Every hospital every round; averages all but the assumed malicious."""
        malicious = byzantine(config, 2)
        return cls(
            **sampling(config),
            num_malicious_nodes=malicious,
            num_nodes_to_select=max(1, config.clients - malicious),
        )


class Bulyan(flower.Bulyan):
    """Flower's Bulyan (El Mhamdi et al., ICML 2018)."""

    sections = (ByzantineSettings,)

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> Bulyan:
        """Every hospital every round; ``byzantine`` assumed malicious."""
        return cls(**sampling(config), num_malicious_nodes=byzantine(config, 4))
