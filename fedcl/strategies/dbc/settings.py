"""Dynamic Barlow Continuity's own keys: ``dbc-*``, one section.

The method and its math: docs/dbc.md; why each default is what it is, with the
measurements: docs/dbc.md ("When to change them") and the decision log. The comments
here say what a value means.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from fedcl.config import Section, opt
from fedcl.continuity import CONSOLIDATION_OPTIMIZERS, REPRESENTATIONS
from fedcl.distillation import TERMS
from fedcl.errors import FedclError

FILTER_RULES = ("evidence", "round", "oracle")
PEER_SCORES = ("mean", "max-class")
CONSOLIDATION_MODES = ("always", "adaptive", "off")
CONSOLIDATE_BY = ("anchor", "teacher", "mix")
MOVEMENT_FROM = ("start", "aggregate")
TEACHER_PUBLIC_SETS = ("current", "teacher")
TEACHER_PUBLIC_TILES = ("reference", "apart")
TEACHER_STRENGTHS = ("constant", "movement")


@dataclass(frozen=True, kw_only=True)
class DBCSettings(Section):
    """Every Dynamic Barlow Continuity setting and its default (keys ``dbc-<name>``)."""

    PREFIX: ClassVar[str] = "dbc-"

    # "evidence": reject a hospital whose peer scores sit persistently above the honest
    # majority's (mean log ratio over its last `window` rounds > tau); "round": the first
    # version's one-round rule (median + kappa * MAD); "oracle": reject exactly the
    # hospitals the scenario drifted (simulation only: the bound of any filter).
    filter_rule: str = opt(
        "evidence",
        "DBC filter: evidence (over rounds), round, or oracle (simulation bound)",
        section="dbc",
        choices=FILTER_RULES,
    )
    # What the filter compares: a reply's peer score ("mean": over the classes, each
    # class's Barlow share), or its largest class's share ("max-class"): a biased
    # annotator moves one or two classes, which the mean over all dilutes; but an honest
    # hospital's own site moves single classes as far (docs/decision-log.md).
    peer_score: str = opt(
        "mean",
        "DBC filter: compare the peer score (mean over classes) or its largest class's share",
        section="dbc-variants",
        choices=PEER_SCORES,
    )
    tau: float = opt(
        1.25, "DBC evidence: reject if mean log peer-score ratio > tau", section="dbc", rule="> 0"
    )
    # A floor under the typical peer score: a calm federation's typical score is tiny,
    # and an honest hospital a little different from the rest would stand far above it.
    evidence_floor: float = opt(
        0.02, "DBC evidence: the typical peer score is at least this", section="dbc", rule=">= 0"
    )
    kappa: float = opt(
        3.0,
        "DBC round rule: reject if > median + kappa * spread",
        section="dbc-variants",
        rule="> 0",
    )
    floor: float = opt(
        0.05,
        "DBC round rule: spread floor, fraction of median",
        section="dbc-variants",
        rule=">= 0",
    )
    beta: float = opt(0.9, "DBC: EMA weight of the anchor's past", section="dbc", rule="[0, 1)")
    # The model is still near random in the first rounds.
    warmup: int = opt(3, "DBC: rounds before the anchor starts", section="dbc", rule=">= 0")
    # The temporal side at the hospitals: from the round after the detector finds a
    # shift, every hospital holds its training to the global model the shift began
    # from (the teacher), until the next shift; 0 turns it off.
    teacher_weight: float = opt(
        1.0,
        "DBC: weight of the hospitals' term toward the model before the shift (0: off)",
        section="dbc",
        rule=">= 0",
    )
    teacher_temperature: float = opt(
        2.0, "DBC: softmax temperature of the hospitals' teacher term", section="dbc", rule="> 0"
    )
    # "mib": distillation (LwF's KL) with the classes annotated now that the teacher was
    # not trained on folded into background (MiB's; KL exactly where no class is new);
    # "kl": plain distillation; "barlow": Barlow continuity of the class probabilities.
    teacher_term: str = opt(
        "mib", "DBC: the hospitals' teacher term: mib, kl or barlow", section="dbc", choices=TERMS
    )
    # MiB's other half: once a teacher is named, the hospitals read their masks'
    # background as "background or a class not annotated now" (fedcl's own loss where
    # every class is annotated).
    unbiased_loss: bool = opt(
        True,
        "DBC: once a teacher is named, MiB's unbiased loss at the hospitals (classes not "
        "annotated now count as background; no change where every class is)",
        section="dbc",
    )
    # Where the hospitals hold the student to the teacher: their own current tiles
    # (LwF's place), and, the reference set being public, its tiles: the round's set
    # ("current"), or the set the server had when it named the teacher ("teacher": the
    # tissue the teacher knew, so the term leaves the new tissue to be learned).
    teacher_own: bool = opt(
        True, "DBC: hospitals hold to the teacher on their current tiles", section="dbc"
    )
    teacher_public: bool = opt(
        True, "DBC: hospitals hold to the teacher on the public tiles", section="dbc"
    )
    # While a hospital's masks annotate classes the teacher was not trained on (a class
    # shift; known with the mib term), its own tiles say what is new and MiB's term
    # there keeps the old classes; the public term then slowed the new class
    # (docs/dbc.md). False: the public term waits until no class is new to the teacher.
    teacher_public_new_classes: bool = opt(
        False,
        "DBC: hold to the teacher on the public tiles also while this hospital's masks "
        "annotate classes the teacher was not trained on",
        section="dbc",
    )
    teacher_public_set: str = opt(
        "current",
        "DBC: the public tiles of the teacher term: the round's (current) or the teacher's",
        section="dbc",
        choices=TEACHER_PUBLIC_SETS,
    )
    # Which public tiles: the reference set itself, or as many tiles apart from it. The
    # server finds shifts by how far the hospitals move the global model's outputs on
    # the reference set; a term that holds those very outputs to the teacher also holds
    # down the movement by which the next shift would be found.
    teacher_public_tiles: str = opt(
        "reference",
        "DBC: the teacher term's public tiles: the reference set, or tiles apart from it "
        "(the server does not score on them)",
        section="dbc",
        choices=TEACHER_PUBLIC_TILES,
    )
    # The round a shift is found in, its hospitals trained without a teacher (none was
    # named yet): under a class shift that round's plain loss calls the old classes
    # background. True: the next round starts from the teacher instead of that round's
    # aggregate, so the hospitals learn the new stage with the term from its start.
    rewind: bool = opt(
        False,
        "DBC: when a shift is found, start the next round from the teacher, not from the "
        "shift round's aggregate (trained without a teacher)",
        section="dbc",
    )
    # How strongly, round by round: "constant" (teacher-weight until the next shift), or
    # "movement": teacher-weight x the last round's movement over the shift's first (at
    # most 1): hold hard while the federation's behaviour on R moves as at the shift,
    # less as the new stage settles (the server's scores set it; it sends the factor).
    teacher_strength: str = opt(
        "constant",
        "DBC: the teacher term's weight round by round: constant, or movement (scaled by "
        "the last round's movement over the shift's)",
        section="dbc",
        choices=TEACHER_STRENGTHS,
    )
    # The first version's temporal side, kept as a variant: "adaptive", only while the
    # hospitals share a shift ("always" costs new learning in rounds where nothing
    # shifted). Off by default: beside the hospitals' teacher term it changes no
    # own-statistics figure, and the model it leaves carries the hospitals' BatchNorm
    # statistics for weights it has since changed (docs/dbc.md).
    consolidation: str = opt(
        "off", "DBC: always, adaptive or off", section="dbc", choices=CONSOLIDATION_MODES
    )
    # How: "anchor", Barlow steps toward the EMA of the global model's outputs on R (the
    # first version's); "teacher", distillation toward the hospitals' teacher on
    # augmented public tiles, BatchNorm statistics re-estimated on them after; "mix",
    # the teacher's weights mixed into the aggregate's, the mix chosen on R.
    consolidate_by: str = opt(
        "anchor",
        "DBC consolidation: anchor (steps toward the output anchor), teacher (distil "
        "toward the teacher on public tiles) or mix (weights mixed with the teacher's)",
        section="dbc",
        choices=CONSOLIDATE_BY,
    )
    mix_grid: int = opt(
        11,
        "DBC mix: mixes tried, evenly from the aggregate (0) to the teacher (1)",
        section="dbc-variants",
        rule=">= 2",
    )
    # Every consolidated step trades new-stage learning for old-stage memory.
    steps: int = opt(1, "DBC: consolidation steps per round, at most", section="dbc", rule=">= 0")
    lr: float = opt(1e-3, "DBC: consolidation learning rate", section="dbc", rule="> 0")
    # "adam": a fresh Adam each round, so one step moves every parameter by ~lr whatever
    # its gradient (a sign step); "normalized": gradient descent with the step scaled to
    # the same root-mean-square size, lr * g / rms(g).
    optimizer: str = opt(
        "adam",
        "DBC: consolidation steps: adam, or normalized (lr * g / rms(g))",
        section="dbc-variants",
        choices=CONSOLIDATION_OPTIMIZERS,
    )
    # False: consolidation leaves the convolutions that read the RGB tiles as the
    # hospitals left them (where the continuity loss's gradient mostly sits).
    consolidate_input: bool = opt(
        True, "DBC: consolidation also moves the layers that read the tiles", section="dbc-variants"
    )
    # Shorten (by halves), or undo, a consolidation step that raised the continuity loss
    # it minimises: near the anchor a fresh Adam's first step overshoots.
    monotone: bool = opt(
        True, "DBC: undo a consolidation step that raised the continuity loss", section="dbc"
    )
    # adaptive: consolidate when the movement exceeds (1 + rho) x its recent calm median
    # (a stage shift moves it several times further than an ordinary round).
    rho: float = opt(
        3.0, "DBC adaptive: consolidate above (1 + rho) x recent", section="dbc", rule=">= 0"
    )
    window: int = opt(
        10, "DBC evidence: rounds of a hospital's history", section="dbc", rule=">= 1"
    )
    # The calm level a shift jumps from: the median movement of this many last calm
    # rounds (at least 2 are needed). Few: the level follows learning as it slows down.
    calm_rounds: int = opt(
        3,
        "DBC: a shift jumps above the median of this many calm rounds",
        section="dbc",
        rule=">= 2",
    )
    # A second sign of a shift, which the teacher does not damp: the hospitals' mean
    # loss of the received model on their first batches jumps above (1 + this) x last
    # round's (new tissue, new classes). 0 (the default): the movement alone. 0.35
    # finds the boundaries the movement misses but does not raise ACC: a new teacher
    # replaces the one before (docs/decision-log.md).
    loss_jump: float = opt(
        0.0,
        "DBC: a shift also begins when the first loss jumps above (1 + this) x last round's",
        section="dbc",
        rule=">= 0",
    )
    # adaptive: True, the calm history starts after warm-up; False, with round 2 (round
    # 1 leaves the random start). After warm-up, a short stage had no calm level to
    # jump from.
    calm_after_warmup: bool = opt(
        False,
        "DBC adaptive: calm history starts after warm-up (else round 2)",
        section="dbc-variants",
    )
    # Consolidate only on the reference pixels where the anchor's top class probability
    # is at least this (what the old model knew); 0: every pixel. probs only.
    confident: float = opt(
        0.0,
        "DBC: consolidate only where the anchor's top class prob >= this",
        section="dbc-variants",
        rule="[0, 1)",
    )
    # adaptive: movement of a reply from the model it started from ("start") or from the
    # last aggregate before consolidation ("aggregate": re-learning what consolidation
    # undid is then no movement, so consolidation cannot keep its own trigger going).
    movement_from: str = opt(
        "start",
        "DBC adaptive: movement from start or (unconsolidated) aggregate",
        section="dbc-variants",
        choices=MOVEMENT_FROM,
    )
    # adaptive: consolidate at most this many rounds of one shift (0: no bound). Past it
    # the shift is left alone until movement is back to calm once: the hospitals
    # re-learning what consolidation undid is movement too, so an unbounded shift could
    # keep itself going to the end of a run.
    shift_rounds: int = opt(
        3,
        "DBC adaptive: consolidate at most this many rounds a shift (0: all)",
        section="dbc",
        rule=">= 0",
    )
    lambda_offdiag: float = opt(
        -1.0, "DBC: off-diagonal weight (<0: 1/(D-1))", section="dbc", key="lambda"
    )
    pixels_per_image: int = opt(
        256, "DBC: pixels per reference tile", section="dbc", rule=">= 1"
    )  # P: fixed pixel positions per reference tile
    representation: str = opt(
        "probs",
        "DBC: probs (softmax) or features (the decoder's last map)",
        section="dbc-variants",
        choices=REPRESENTATIONS,
    )
    # False aggregates every valid reply.
    filter: bool = opt(True, "DBC: reject outliers against the peer consensus", section="dbc")
    # The aggregate's BatchNorm running statistics re-estimated on the server's public
    # tiles instead of the accepted hospitals' average (fedavg-server-stats' step): what
    # a model received is scored with ("as run"); training reads batch statistics. Off:
    # the accepted hospitals' statistics fit their tiles better (docs/decision-log.md).
    server_stats: bool = opt(
        False,
        "DBC: re-estimate the global model's BatchNorm statistics on the public tiles",
        section="dbc-variants",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.confident > 0 and self.representation != "probs":
            raise FedclError(
                "config key 'dbc-confident' needs dbc-representation = 'probs' (a class "
                f"probability to be confident about), got {self.representation!r}"
            )

    @property
    def offdiag(self) -> float | None:
        """The off-diagonal weight, None for the default ``1 / (D - 1)``."""
        return None if self.lambda_offdiag < 0 else self.lambda_offdiag

    def replace(self, **changes: Any) -> DBCSettings:
        """Return a copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)
