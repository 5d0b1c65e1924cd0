"""The built-in scenarios (docs/scenarios.md), by the classes the registry names.

``iid``, ``client-drift``, ``catastrophic-forgetting`` and ``drift-and-forgetting``:
each is a :class:`~fedcl.scenarios.Scenario` over the same tiles
(:mod:`fedcl.scenarios.tiles`), with the keys of what it shifts
(:mod:`fedcl.scenarios.sections`). This module loads no tiles' libraries (numpy,
albumentations, torch): the command line builds and checks a run's config with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from fedcl.config import RunConfig, Section
from fedcl.errors import FedclError
from fedcl.scenarios import DRIFT_HEADLINE, STAGED_HEADLINE, Scenario
from fedcl.scenarios.sections import MAX_STAGES, DriftSettings, StageShiftSettings

if TYPE_CHECKING:
    from fedcl.data.dataset import TileDataset


class Builtin(Scenario):
    """The built-ins: synthetic or real tiles (:mod:`fedcl.scenarios.tiles`)."""

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """Refuse real data where the scenario generates what it needs; too many stages."""
        if cls.staged:
            shift = config.section(StageShiftSettings).stage_shift
            limit = MAX_STAGES.get(shift)
            if limit is not None and config.stages > limit:
                raise FedclError(
                    f"config key 'stages' must be <= {limit} with stage-shift {shift!r} (it "
                    f"makes at most {limit} distinct stages), got {config.stages}"
                )
        if config.data == "synthetic":
            return
        if cls.staged:
            raise FedclError(
                f"scenario {config.scenario!r} generates its stages: it needs data = "
                f"'synthetic' (real data, {config.data!r}, works with iid and client-drift)"
            )
        if cls.drifting and config.section(DriftSettings).drift_kind == "stain":
            raise FedclError(
                "drift-kind 'stain' re-renders synthetic tissue; with real data use "
                "blur, noise, jpeg, label-noise, annotation or invert"
            )

    @property
    def stage_shift(self) -> str:
        """The ``stage-shift`` key where the scenario is staged."""
        return self.config.section(StageShiftSettings).stage_shift if self.staged else ""

    def train_dataset(
        self, hospital: int, server_round: int, classes: tuple[int, ...] | None = None
    ) -> TileDataset:
        """Return ``hospital``'s tiles of the round's stage, drifted if it drifts then.

        ``classes``: the classes their masks annotate under the class shift, if not the
        stage's own (:func:`fedcl.scenarios.tiles.hospital_dataset`).
        """
        from fedcl.scenarios.tiles import hospital_dataset  # start-up: the CLI loads no tiles

        return hospital_dataset(
            self.config,
            hospital,
            "train",
            stage=self.stage_of(server_round),
            drifted=self.is_drifted(hospital, server_round),
            classes=classes,
        )

    def test_dataset(self, hospital: int, stage: int) -> TileDataset:
        """Return ``hospital``'s clean held-out tiles of ``stage``."""
        from fedcl.scenarios.tiles import hospital_dataset  # start-up: the CLI loads no tiles

        return hospital_dataset(self.config, hospital, "test", stage=stage)


class Iid(Builtin):
    """Every hospital its own mild site stain; nothing drifts, nothing is staged."""


class ClientDrift(Builtin):
    """A fraction of the hospitals train on shifted data (the spatial shift)."""

    drifting = True
    headline = ("final_dice_own_stats", "final_dice", *DRIFT_HEADLINE)
    sections: ClassVar[tuple[type[Section], ...]] = (DriftSettings,)


class CatastrophicForgetting(Builtin):
    """Stages that every hospital goes through together (the temporal shift)."""

    staged = True
    headline = STAGED_HEADLINE
    sections: ClassVar[tuple[type[Section], ...]] = (StageShiftSettings,)


class DriftAndForgetting(Builtin):
    """Both shifts: stages, and a fraction of the hospitals drifting."""

    staged = True
    drifting = True
    headline = (*STAGED_HEADLINE, *DRIFT_HEADLINE)
    sections: ClassVar[tuple[type[Section], ...]] = (DriftSettings, StageShiftSettings)
