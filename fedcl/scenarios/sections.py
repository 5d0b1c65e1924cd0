"""The built-in scenarios' own keys: how the drifting hospitals drift, what a stage shifts.

Declared here, apart from the scenario classes (:mod:`fedcl.scenarios.builtin`) and their
tiles (:mod:`fedcl.scenarios.tiles`), so that both read them and neither imports the
other's module; the command line reads them without loading the tiles' libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedcl.config import Section, opt

# How a drifting hospital's tiles differ (fedcl.data.shifts implements each): its pixels
# (stain, blur, noise, jpeg, invert) or its training masks (label-noise: random regions
# relabelled; annotation: biased annotators, the same bias on every tile, which no
# normalisation of the images undoes).
DRIFT_KINDS = ("stain", "blur", "noise", "jpeg", "label-noise", "invert", "annotation")
# What changes at a stage boundary: the stain and class mix, the tissue architecture
# (fedcl.data.tissue), or which classes the masks annotate.
STAGE_SHIFTS = ("stain", "tissue", "classes")
# The most stages a shift can make distinct: 4 tissue architectures; 4 foreground
# classes (each stage annotates at least one).
MAX_STAGES = {"tissue": 4, "classes": 4}


@dataclass(frozen=True, kw_only=True)
class DriftSettings(Section):
    """How the drifting hospitals of a built-in scenario drift."""

    drift_kind: str = opt(
        "stain",
        f"client-drift: how a drifting hospital's training tiles differ: "
        f"{', '.join(DRIFT_KINDS)} (docs/scenarios.md)",
        data=True,
        section="scenario",
        choices=DRIFT_KINDS,
    )
    drift_strength: float = opt(
        0.8,
        "client-drift: shift strength, 0 (none)..1 (extreme)",
        data=True,
        section="scenario",
        rule="0..1",
    )


@dataclass(frozen=True, kw_only=True)
class StageShiftSettings(Section):
    """What changes at a built-in scenario's stage boundary, and how strongly."""

    # tissue: what the weights learned must change (a stain change is undone by the
    # hospitals' own BatchNorm statistics); docs/decision-log.md has the evidence.
    stage_shift: str = opt(
        "tissue",
        "forgetting: what changes at a stage boundary: stain (and class mix), tissue "
        "(architecture) or classes (which classes are annotated)",
        data=True,
        section="scenario",
        choices=STAGE_SHIFTS,
    )
    forgetting_strength: float = opt(
        0.8,
        "forgetting, stage-shift stain: stain and class-mix change per stage, 0..1",
        data=True,
        section="scenario",
        rule="0..1",
    )

    def unread(self) -> tuple[str, ...]:
        """Only the stain shift has a strength."""
        return () if self.stage_shift == "stain" else ("forgetting-strength",)
