"""A user's own scenario, loaded by tests as ``plugin_scenario:BlurredOddHospitals``.

Written as a researcher would: one module, a subclass of :class:`fedcl.scenarios.Scenario`
with a key of its own (``blur-strength``), declared as fedcl declares its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedcl.config import Section, opt
from fedcl.data import NUM_CLASSES
from fedcl.data.dataset import TileDataset
from fedcl.data.shifts import shift_images
from fedcl.scenarios import Scenario
from fedcl.scenarios.tiles import hospital_dataset


@dataclass(frozen=True, kw_only=True)
class BlurSettings(Section):
    """How out of focus the drifting scanners are."""

    PREFIX = "blur-"

    strength: float = opt(
        0.9, "blurred scanners: blur strength, 0..1", data=True, section="scenario", rule="0..1"
    )


class BlurredOddHospitals(Scenario):
    """The odd-numbered hospitals' scanners are out of focus from round 2 on."""

    drifting = True
    headline = ("final_dice", "recall")
    sections = (BlurSettings,)

    def drifted_hospitals(self) -> tuple[int, ...]:
        """Return the odd-numbered hospitals: the ground truth of the filter's recall."""
        return tuple(range(1, self.config.clients, 2))

    def is_drifted(self, hospital: int, server_round: int) -> bool:
        """Blurred from round 2 on."""
        return hospital in self.drifted_hospitals() and server_round >= 2

    def train_dataset(self, hospital: int, server_round: int) -> TileDataset:
        """Return the hospital's synthetic tiles, blurred where it drifts."""
        data = hospital_dataset(self.config, hospital, "train")
        if not self.is_drifted(hospital, server_round):
            return data
        strength = self.config.section(BlurSettings).strength
        blurred = shift_images(data.images, "blur", strength, seed=hospital)
        return TileDataset(blurred, data.masks, NUM_CLASSES)

    def test_dataset(self, hospital: int, stage: int) -> TileDataset:
        """Return the hospital's clean held-out tiles."""
        return hospital_dataset(self.config, hospital, "test", stage=stage)


class NotAScenario:
    """Has the right name and nothing else."""
