"""A strategy's hospital half: what a strategy changes in a hospital's round.

A strategy is a server half (a Flower ``Strategy``) and, where it needs one, a hospital
half: a :class:`HospitalHalf` subclass in the same module, named by the server class's
``hospital`` attribute. A hospital (:mod:`fedcl.hospital`) runs the same round for every
strategy and calls the half's hooks at named moments, as Avalanche's plugins are called:

1. :meth:`HospitalHalf.received`: the global model has arrived and is loaded (put back
   layers the hospital keeps to itself, re-estimate statistics);
2. :meth:`HospitalHalf.training_tiles`: the tiles the round trains on are chosen (keep
   the tiles of past stages: the joint-training bound);
3. :meth:`HospitalHalf.penalties`: extra terms of the local loss (a proximal pull, a
   distillation toward a teacher, any penalty), and :meth:`HospitalHalf.criterion`: the
   segmentation loss itself, where a strategy changes it (MiB's unbiased one);
4. :meth:`HospitalHalf.trained`: local training is over (keep local layers);
5. :meth:`HospitalHalf.reply`: the reply is being built (add records to it).

A half reads its settings from the message (:attr:`LocalRound.sent`: the server half
puts them into the train config, as Flower's FedProx sends ``proximal-mu``), and keeps
what must outlive the round in the hospital's ``Context.state``
(:attr:`LocalRound.state`). The hospital imports a strategy's module and nothing of the
server's machinery (the guard, the catalog, the run's records).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from flwr.app import ConfigRecord, RecordDict
from torch import nn

from fedcl.data import NUM_CLASSES
from fedcl.distillation import annotated_classes
from fedcl.models import build_model
from fedcl.training import device_of

if TYPE_CHECKING:
    from fedcl.config import RunConfig
    from fedcl.data.dataset import TileDataset
    from fedcl.training import Penalty


@dataclass(frozen=True)
class LocalRound:
    """What a hospital knows in one round: what every hook of a hospital half reads."""

    config: RunConfig  # the run's configuration, as the server sent it
    hospital: int  # this hospital's partition id
    server_round: int  # the run's round (a resumed run's too: the server counts on)
    sent: ConfigRecord  # the message's config record: where a server half puts its settings
    content: RecordDict  # the whole message content (arrays a strategy sends besides the model)
    state: RecordDict  # the hospital's Context.state: kept across rounds
    model_round: int  # the round whose global model the message holds (train: server_round - 1)
    own_tiles: Callable[[], TileDataset]  # the hospital's training tiles of model_round's round
    # its training tiles of a round, kept in state (under a name of their own: keep="...")
    train_tiles: Callable[..., TileDataset]


class HospitalHalf:
    """The hooks a strategy's hospital half may fill; each does nothing by default.

    One instance per message, built with the round it serves.

    Parameters
    ----------
    now : LocalRound
        The round: configuration, hospital, round number, the message and the state.
    """

    keeps_weights: ClassVar[bool] = False
    """Whether the hospital puts weights of its own into every model it receives
    (FedBN, SiloBN): such a model is then only defined at the hospitals, so the server
    cannot evaluate it (``evaluation = "server"`` is refused)."""

    def __init__(self, now: LocalRound) -> None:
        self.now = now

    def received(self, model: nn.Module) -> None:
        """Take in the global model, just loaded into ``model`` (before evaluation, training)."""

    def training_tiles(self, tiles: TileDataset) -> TileDataset:
        """Return the tiles this round trains on; ``tiles``: the hospital's current ones."""
        return tiles

    def penalties(self, model: nn.Module) -> list[Penalty]:
        """Return extra terms of the local loss (each ``penalty(images, logits)``)."""
        return []

    def criterion(self) -> nn.Module | None:
        """Return the segmentation loss of this round's training (None: fedcl's own)."""
        return None

    def trained(self, model: nn.Module) -> None:
        """Finish the round's training of ``model`` (before the reply is built)."""

    def reply(self, content: RecordDict) -> None:
        """Add what this strategy sends back besides the weights and metrics to ``content``."""

    @cached_property
    def annotated(self) -> tuple[int, ...]:
        """The foreground classes this round's training masks annotate (read once)."""
        now = self.now
        return annotated_classes(now.train_tiles(now.server_round).masks)

    def kept_model(self, name: str, like: nn.Module) -> nn.Module:
        """Return the model kept in ``Context.state[name]`` (a teacher), on ``like``'s device."""
        kept = build_model(self.now.config.model, NUM_CLASSES)
        kept.load_state_dict(self.now.state.array_records[name].to_torch_state_dict())
        return kept.to(device_of(like))
