"""Scenarios: what each hospital trains and is tested on, round by round.

A scenario is a class with the :class:`Scenario` interface, built from a run's
:class:`~fedcl.config.RunConfig`. Everything it answers is a pure function of the
config, the hospital and the round, so the server and every hospital derive the same
facts independently. The four built-ins (:mod:`fedcl.scenarios.builtin`,
docs/scenarios.md):

- ``iid``: every hospital its own mild site stain (``site-stain``), no drift.
- ``client-drift``: the fraction ``drift-ratio`` of hospitals (drawn from the seed)
  train on strongly shifted data from round ``drift-start-round`` on (``drift-kind``,
  ``drift-strength``): the spatial shift. Test data stays clean.
- ``catastrophic-forgetting``: ``stages`` stages of ``rounds-per-stage`` rounds; at each
  stage boundary all hospitals change together (``stage-shift``: stain and class mix,
  tissue architecture, or the annotated classes), and the previous stage's training
  data is gone.
- ``drift-and-forgetting``: both.

A scenario of one's own is one module: subclass :class:`Scenario`, then name it
``package.module:ClassName`` (``--scenario``) or register it under the entry-point
group ``fedcl.scenarios`` (docs/plugins.md); keys of its own are a
:class:`~fedcl.config.Section` named in its ``sections``. This module does not import
torch or the tiles: the command line checks scenario names before a run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from fedcl import seeds
from fedcl.config import RunConfig, Section
from fedcl.errors import FedclError
from fedcl.plugins import SCENARIOS

if TYPE_CHECKING:
    from fedcl.data.dataset import TileDataset

# The headline figures of fedcl compare (its paired differences; the first, as run where
# hospitals drift, is a scenario's column of a several-scenario overview): final Dice
# where nothing is staged; ACC and forgetting where it is (as run and with the
# hospitals' own statistics), and the newest stage's Dice (what holding on to the old
# ones costs); the filter's precision and recall where hospitals drift.
STAGED_HEADLINE = (
    "acc_own_stats",
    "forgetting_own_stats",
    "newest_own_stats",
    "acc",
    "forgetting",
)
DRIFT_HEADLINE = ("precision", "recall")


class Scenario:
    """What a run's hospitals see, round by round.

    Subclass it and override :meth:`train_dataset` and :meth:`test_dataset` (and the
    class attributes) for a scenario of one's own; the rest follows from the config's
    ``stages``, ``rounds-per-stage``, ``drift-ratio`` and ``drift-start-round`` keys.

    Parameters
    ----------
    config : RunConfig
        The run; ``config.clients`` hospitals, 0-based.
    """

    staged: ClassVar[bool] = False
    """Whether the run has stages: ``stages x rounds-per-stage`` rounds, each stage's
    test tiles scored after every stage (ACC, forgetting)."""
    drifting: ClassVar[bool] = False
    """Whether some hospitals drift (:meth:`drifted_hospitals`: the ground truth a
    filter's precision and recall are measured against)."""
    headline: ClassVar[tuple[str, ...]] = ("final_dice_own_stats", "final_dice")
    """The summary figures ``fedcl compare`` pairs against its baseline; the first is the
    scenario's column of a several-scenario overview (:func:`fedcl.compare.target_figure`)."""
    sections: ClassVar[tuple[type[Section], ...]] = ()
    """The scenario's own keys (:class:`~fedcl.config.Section` classes)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """Raise a FedclError if this scenario cannot run ``config`` (a clear message).

        Override it for checks of one's own; :meth:`validate` runs it after the checks
        every scenario shares.
        """

    @classmethod
    def validate(cls, config: RunConfig) -> None:
        """Check ``config`` for this scenario: a staged run's length, then :meth:`check`."""
        if cls.staged and config.rounds != config.stages * config.rounds_per_stage:
            raise FedclError(
                f"config key 'rounds' must equal stages x rounds-per-stage = {config.stages} "
                f"x {config.rounds_per_stage} = {config.stages * config.rounds_per_stage} in "
                f"scenario {config.scenario!r}, got {config.rounds}"
            )
        cls.check(config)

    def train_dataset(self, hospital: int, server_round: int) -> TileDataset:
        """Return what ``hospital`` trains on in ``server_round`` (1-based)."""
        raise NotImplementedError(f"{type(self).__name__} must define train_dataset")

    def test_dataset(self, hospital: int, stage: int) -> TileDataset:
        """Return ``hospital``'s held-out tiles of ``stage`` (0-based), never trained on."""
        raise NotImplementedError(f"{type(self).__name__} must define test_dataset")

    @property
    def stage_shift(self) -> str:
        """What changes at a stage boundary, in a word for titles and tables ("": unsaid)."""
        return ""

    def num_stages(self) -> int:
        """Return the number of stages: ``stages`` if staged, else 1."""
        return self.config.stages if self.staged else 1

    def stage_of(self, server_round: int) -> int:
        """0-based stage of ``server_round`` (round 0, the initial model, is in stage 0)."""
        if not self.staged:
            return 0
        per_stage = self.config.rounds_per_stage
        return min(max(server_round - 1, 0) // per_stage, self.config.stages - 1)

    def stage_boundaries(self) -> list[int]:
        """Return the first round of every stage after the first (none without stages)."""
        return [end + 1 for end in self.stage_end_rounds()[:-1]] if self.staged else []

    def stage_end_rounds(self) -> list[int]:
        """Return the last round of every stage (where the stage x stage matrix gets a row)."""
        if not self.staged:
            return [self.config.rounds]
        return [self.config.rounds_per_stage * (s + 1) for s in range(self.config.stages)]

    def drifted_hospitals(self) -> tuple[int, ...]:
        """Return the hospitals that drift: ``round(drift-ratio x clients)``, from the seed."""
        if not self.drifting:
            return ()
        config = self.config
        count = int(round(config.drift_ratio * config.clients))
        order = seeds.rng(config.seed, seeds.DRIFT).permutation(config.clients)
        return tuple(sorted(int(h) for h in order[:count]))

    def is_drifted(self, hospital: int, server_round: int) -> bool:
        """Whether ``hospital`` trains on drifted data in ``server_round``."""
        return (
            hospital in self.drifted_hospitals() and server_round >= self.config.drift_start_round
        )


def scenario_class(name: str) -> type[Scenario]:
    """Return the scenario class ``name`` stands for: a built-in or a plug-in."""
    found = SCENARIOS.load(name)
    if not (isinstance(found, type) and issubclass(found, Scenario)):
        raise FedclError(
            f"scenario {name!r} is {found!r}, not a subclass of fedcl.scenarios.Scenario"
        )
    return found


def scenario_of(config: RunConfig) -> Scenario:
    """Return the scenario of ``config``, built from it."""
    return scenario_class(config.scenario)(config)
