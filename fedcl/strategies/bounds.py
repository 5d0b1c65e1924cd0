"""Bounds of a staged benchmark: what keeping every stage's tiles, and sharing nothing, give.

- :class:`JointTraining` (upper bound of a continual method): FedAvg whose hospitals
  keep the training tiles of every stage they have seen and train on all of them each
  round (:class:`JointHospital`; under the class shift annotated with every class of the
  stages so far). Nothing is forgotten for lack of data; what it still loses is what
  the stages' conflicting tasks cost one model.
- :class:`LocalOnly` (lower bound of federation): every hospital trains its own model
  on its own tiles and never takes the global one (:class:`LocalOnlyHospital` keeps
  every weight); the server's averaging is computed but unused. Its figures are each
  hospital's own model on its own test tiles.

Neither is a method: the joint bound keeps the data the scenario says is gone, the local
bound forgoes federation. They bracket what a federated continual method can gain.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from torch import nn

from fedcl.data import NUM_CLASSES, TileDataset
from fedcl.scenarios import scenario_of
from fedcl.scenarios.builtin import Builtin
from fedcl.strategies.fedbn import KeptWeightsHospital
from fedcl.strategies.flower import FedAvg
from fedcl.strategies.hospital_half import HospitalHalf


class JointHospital(HospitalHalf):
    """Trains on the tiles of every stage seen so far (each kept once, in its last round's form).

    Under the class shift each stage's masks call the other stages' classes background,
    so tiles kept with them would contradict each other: there every kept tile, and the
    current stage's, is annotated with every class of the stages so far.
    """

    def training_tiles(self, tiles: TileDataset) -> TileDataset:
        """``tiles`` (the current stage's) after those of every earlier stage."""
        now = self.now
        scenario = scenario_of(now.config)
        stage = scenario.stage_of(now.server_round)
        if stage == 0:
            return tiles
        ends = scenario.stage_end_rounds()[:stage]
        if isinstance(scenario, Builtin) and scenario.stage_shift == "classes":
            from fedcl.scenarios.tiles import stage_classes  # start-up: the CLI loads no tiles

            known = tuple(c for s in range(stage + 1) for c in stage_classes(now.config, s))
            tiles = now.train_tiles(now.server_round, keep="joint-current", classes=known)
        else:
            known = None
        kept = [
            now.train_tiles(end, keep=f"joint-stage-{s}", classes=known)
            for s, end in enumerate(ends)
        ]
        return TileDataset(
            np.concatenate([t.images for t in (*kept, tiles)]),
            np.concatenate([t.masks for t in (*kept, tiles)]),
            NUM_CLASSES,
        )


class LocalOnlyHospital(KeptWeightsHospital):
    """Keeps every weight: the hospital's own model, whatever the server sends."""

    def kept_keys(self, model: nn.Module) -> list[str]:
        """Return every key of the model's state."""
        return list(model.state_dict())


class JointTraining(FedAvg):
    """FedAvg whose hospitals train on every stage's tiles (:class:`JointHospital`)."""

    hospital: ClassVar[type[HospitalHalf]] = JointHospital


class LocalOnly(FedAvg):
    """Every hospital its own model (:class:`LocalOnlyHospital`); nothing is shared."""

    hospital: ClassVar[type[HospitalHalf]] = LocalOnlyHospital
