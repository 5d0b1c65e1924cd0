"""A user's own strategies, loaded by tests through ``--strategy plugin_strategy:NAME``.

``HalfStep``: a server-side Flower strategy only. ``PullToRound``: a strategy with a
hospital half and keys of its own (the plug-ins page shows it).
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.serverapp.strategy import FedAvg

from fedcl.config import Section, opt
from fedcl.strategies.flower import sampling
from fedcl.strategies.hospital_half import HospitalHalf


class HalfStep(FedAvg):
    """FedAvg that moves only half way from the global model to the average."""

    def configure_train(self, server_round, arrays, config, grid):
        self._global = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        old, new = self._global.to_torch_state_dict(), arrays.to_torch_state_dict()
        from flwr.app import ArrayRecord

        mixed = {
            k: (old[k] + new[k].to(old[k].dtype)) / 2 if old[k].is_floating_point() else old[k]
            for k in old
        }
        self.round_report = {"half": True}
        return ArrayRecord(mixed), metrics


class NotAStrategy:
    pass


# A strategy with a hospital half and keys of its own, written as a user would: one module.


@dataclass(frozen=True, kw_only=True)
class PullSettings(Section):
    """Pull-to-round's own keys (``pull-round``, ``pull-weight``)."""

    PREFIX = "pull-"

    round: int = opt(
        1, "pull-to-round: the round whose global model is the anchor", section="strategy",
        rule=">= 1",
    )  # fmt: skip
    weight: float = opt(
        1.0, "pull-to-round: weight mu of (mu / 2) ||w - w_round||^2", section="strategy",
        rule=">= 0",
    )  # fmt: skip


ANCHOR_KEY, WEIGHT_KEY, DISTANCE_KEY = "pull-anchor", "pull-weight", "pull-distance"


class PullHospital(HospitalHalf):
    """Adds ``(mu / 2) ||w - w_round||^2`` to the local loss once the server sends ``w_round``."""

    def penalties(self, model):
        """The pull toward the anchor the message carries (none before it does)."""
        anchor = self.now.content.array_records.get(ANCHOR_KEY)
        if anchor is None:
            return []
        weight = float(self.now.sent[WEIGHT_KEY])
        device = next(model.parameters()).device
        target = {k: v.to(device) for k, v in anchor.to_torch_state_dict().items()}
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        def pull(images, logits):
            return 0.5 * weight * sum(((p - target[n]) ** 2).sum() for n, p in named)

        return [pull]

    def reply(self, content):
        """Report how far the trained model ended from the anchor (0 before there is one)."""
        anchor = self.now.content.array_records.get(ANCHOR_KEY)
        distance = 0.0
        if anchor is not None:
            target, trained = anchor.to_torch_state_dict(), content["arrays"].to_torch_state_dict()
            distance = float(sum(((trained[k] - target[k]) ** 2).sum() for k in target))
        content["metrics"][DISTANCE_KEY] = distance


class PullToRound(FedAvg):
    """FedAvg whose hospitals are pulled toward the global model of round ``pull-round``."""

    hospital = PullHospital
    sections = (PullSettings,)

    def __init__(self, *, pull_round, weight, **kwargs):
        super().__init__(**kwargs)
        self.pull_round, self.weight = pull_round, weight
        self.anchor = None
        self.round_report = None

    @classmethod
    def from_config(cls, config, sent):
        """Every hospital every round, and this strategy's own keys."""
        own = config.section(PullSettings)
        return cls(**sampling(config), pull_round=own.round, weight=own.weight)

    def configure_train(self, server_round, arrays, config, grid):
        """FedAvg's messages; from round ``pull-round`` on, with the anchor and the weight."""
        if server_round == self.pull_round:
            self.anchor = arrays
        config[WEIGHT_KEY] = self.weight
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.anchor is not None:
            for message in messages:
                message.content[ANCHOR_KEY] = self.anchor
        return messages

    def aggregate_train(self, server_round, replies):
        """FedAvg, reporting each hospital's distance to the anchor."""
        replies = list(replies)
        self.round_report = {
            "hospitals": [int(m.content["metrics"]["partition-id"]) for m in replies],
            "pull_distance": [float(m.content["metrics"][DISTANCE_KEY]) for m in replies],
        }
        return super().aggregate_train(server_round, replies)

    def state_dict(self):
        """The anchor, for checkpoints."""
        return {"anchor": None if self.anchor is None else self.anchor.to_torch_state_dict()}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`."""
        from flwr.app import ArrayRecord

        self.anchor = None if state["anchor"] is None else ArrayRecord(state["anchor"])
