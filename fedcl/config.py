"""The run configuration: one frozen, validated dataclass, parsed once per entry point.

The same kebab-case keys work everywhere: as ``fedcl run`` flags (``--image-size``),
in a TOML file (``image-size = 64``), in ``[tool.flwr.app.config]`` and
``flwr run . --run-config "image-size=64"``. Field comments say why a default is what
it is; ``fedcl run --help`` shows each field's help text.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedcl.errors import FedclError, unknown_name
from fedcl.plugins import MODELS, STRATEGIES

Scalar = bool | int | float | str


SCENARIOS = ("iid", "client-drift", "catastrophic-forgetting", "drift-and-forgetting")
DRIFTING = ("client-drift", "drift-and-forgetting")  # scenarios where hospitals drift
STAGED = ("catastrophic-forgetting", "drift-and-forgetting")  # scenarios with stages
# What changes at a stage boundary (fedcl.scenarios): the stain and class mix, the
# tissue architecture (fedcl.data.tissue), or which classes the masks annotate.
STAGE_SHIFTS = ("stain", "tissue", "classes")
# The most stages a shift can make distinct: 4 tissue architectures; 4 foreground
# classes (each stage annotates at least one).
MAX_STAGES = {"tissue": 4, "classes": 4}
DRIFT_KINDS = ("stain", "blur", "noise", "jpeg", "label-noise", "invert")
REPRESENTATIONS = ("probs", "features")
DEVICES = ("auto", "cpu", "cuda")
CONSOLIDATION_MODES = ("always", "adaptive", "off")
FILTER_RULES = ("evidence", "round", "oracle")
MOVEMENT_FROM = ("start", "aggregate")
CONSOLIDATION_OPTIMIZERS = ("adam", "normalized")  # fedcl.continuity.consolidate
BN_STATS = ("running", "recomputed")  # fedcl.training.train_local
EVALUATIONS = ("hospitals", "server")  # fedcl.federation


@dataclass(frozen=True, kw_only=True)
class DBCSettings:
    """Every Dynamic Barlow Continuity constant (docs/dbc.md) and its default.

    ``RunConfig`` exposes each as a ``dbc-<name>`` key; see :mod:`fedcl.continuity`.
    """

    # Why each default is what it is, with the measurements: docs/dbc.md ("When to
    # change them") and the decision log; the comments here say what a value means.
    # "evidence": reject a hospital whose peer scores sit persistently above the honest
    # majority's (mean log ratio over its last `window` rounds > tau); "round": the first
    # version's one-round rule (median + kappa * MAD); "oracle": reject exactly the
    # hospitals the scenario drifted (simulation only: the bound of any filter).
    filter_rule: str = "evidence"
    tau: float = 1.25
    # A floor under the typical peer score: a calm federation's typical score is tiny,
    # and an honest hospital a little different from the rest would stand far above it.
    evidence_floor: float = 0.02
    kappa: float = 3.0  # round rule: reject above median + kappa * robust spread
    floor: float = 0.05  # round rule: spread floor, fraction of the median peer score
    beta: float = 0.9  # EMA weight of the anchor's past
    warmup: int = 3  # rounds before the anchor starts (the model is still near random)
    # "adaptive": only while the hospitals share a shift ("always" costs new learning in
    # rounds where nothing shifted).
    consolidation: str = "adaptive"
    # Every consolidated step trades new-stage learning for old-stage memory.
    steps: int = 1  # consolidation optimizer steps per round
    lr: float = 1e-3  # consolidation learning rate
    # "adam": a fresh Adam each round, so one step moves every parameter by ~lr whatever
    # its gradient (a sign step); "normalized": gradient descent with the step scaled to
    # the same root-mean-square size, lr * g / rms(g).
    optimizer: str = "adam"
    # False: consolidation leaves the convolutions that read the RGB tiles as the
    # hospitals left them (where the continuity loss's gradient mostly sits).
    consolidate_input: bool = True
    # Shorten (by halves), or undo, a consolidation step that raised the continuity loss
    # it minimises: near the anchor a fresh Adam's first step overshoots.
    monotone: bool = True
    # adaptive: consolidate when the movement exceeds (1 + rho) x its recent calm median
    # (a stage shift moves it several times further than an ordinary round).
    rho: float = 3.0
    window: int = 10  # rounds of history that make "recent" (evidence, adaptive)
    # adaptive: True, the calm history starts after warm-up; False, with round 2 (round
    # 1 leaves the random start). After warm-up, a short stage had no calm level to
    # jump from.
    calm_after_warmup: bool = False
    # adaptive: movement of a reply from the model it started from ("start") or from the
    # last aggregate before consolidation ("aggregate": re-learning what consolidation
    # undid is then no movement, so consolidation cannot keep its own trigger going).
    movement_from: str = "start"
    # adaptive: consolidate at most this many rounds of one shift (0: no bound). Past it
    # the shift is left alone until movement is back to calm once: the hospitals
    # re-learning what consolidation undid is movement too, so an unbounded shift could
    # keep itself going to the end of a run.
    shift_rounds: int = 3
    # consolidate only on the reference pixels where the anchor's top class probability
    # is at least this (what the old model knew); 0: every pixel. probs only.
    confident: float = 0.0
    lambda_offdiag: float = -1.0  # off-diagonal weight; < 0 means 1 / (D - 1)
    pixels_per_image: int = 256  # P: fixed pixel positions per reference tile
    representation: str = "probs"  # probs (softmax) | features (decoder's last map)
    filter: bool = True  # the spatial filter; False aggregates every valid reply

    def __post_init__(self) -> None:
        checks = [
            (self.tau > 0, "tau", "> 0"),
            (self.evidence_floor >= 0, "evidence_floor", ">= 0"),
            (self.kappa > 0, "kappa", "> 0"),
            (self.floor >= 0, "floor", ">= 0"),
            (0 <= self.beta < 1, "beta", "in [0, 1)"),
            (self.warmup >= 0, "warmup", ">= 0"),
            (self.steps >= 0, "steps", ">= 0"),
            (self.lr > 0, "lr", "> 0"),
            (self.rho >= 0, "rho", ">= 0"),
            (self.window >= 1, "window", ">= 1"),
            (self.shift_rounds >= 0, "shift_rounds", ">= 0"),
            (0 <= self.confident < 1, "confident", "in [0, 1)"),
            (self.pixels_per_image >= 1, "pixels_per_image", ">= 1"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise FedclError(
                    f"config key {key_of('dbc_' + name)!r} must be {expected}, "
                    f"got {getattr(self, name)!r}"
                )
        if self.consolidation not in CONSOLIDATION_MODES:
            raise unknown_name("dbc-consolidation", self.consolidation, CONSOLIDATION_MODES)
        if self.filter_rule not in FILTER_RULES:
            raise unknown_name("dbc-filter-rule", self.filter_rule, FILTER_RULES)
        if self.optimizer not in CONSOLIDATION_OPTIMIZERS:
            raise unknown_name("dbc-optimizer", self.optimizer, CONSOLIDATION_OPTIMIZERS)
        if self.movement_from not in MOVEMENT_FROM:
            raise unknown_name("dbc-movement-from", self.movement_from, MOVEMENT_FROM)
        if self.representation not in REPRESENTATIONS:
            raise unknown_name("dbc-representation", self.representation, REPRESENTATIONS)
        if self.confident > 0 and self.representation != "probs":
            raise FedclError(
                "config key 'dbc-confident' needs dbc-representation = 'probs' (a class "
                f"probability to be confident about), got {self.representation!r}"
            )

    @property
    def offdiag(self) -> float | None:
        """The off-diagonal weight, None for the default ``1 / (D - 1)``."""
        return None if self.lambda_offdiag < 0 else self.lambda_offdiag


_DBC = DBCSettings()
# Keys whose default changed after run directories were first written: the value a run
# recorded without the key ran with (RunConfig.from_run_dir): until version 0.3 stages
# shifted stain and class mix, and DBC's evidence had no floor (docs/decision-log.md).
RECORDED_BEFORE: dict[str, Scalar] = {"stage-shift": "stain", "dbc-evidence-floor": 0.0}
# Keys only one built-in strategy reads: field-name prefix -> strategy (RunConfig.as_read).
_OWN_KEYS = {"dbc_": "dbc", "lwf_": "lwf"}


# The sections a key belongs to, in the order the documentation and `--help` show them.
SECTIONS = {
    "run": "What runs: the strategy, the scenario, how many hospitals and rounds, the seed",
    "data": "The hospitals' tiles: synthetic or real, their size and number",
    "training": "Each hospital's local training and who scores the global model",
    "resources": "Where the hospitals run: Ray resources and the device",
    "scenario": "The knobs of the client-drift and staged (forgetting) scenarios",
    "strategy": "Settings of one baseline strategy each",
    "server": "What the server accepts from a hospital, and the server's own tiles",
    "dbc": "Dynamic Barlow Continuity (strategy dbc); see the DBC page",
    "dbc-variants": "DBC variants that were measured and not adopted (the one-round "
    "filter rule, other consolidation steps and representations), kept so that the "
    "results that compare them can be reproduced; the decision log says why each lost",
}


def _opt(default: Scalar, help: str, *, section: str, data: bool = False) -> Any:  # noqa: A002
    """Declare a key: default, help, section, and whether it shapes the tiles.

    A key with ``data=True`` changes a hospital's tiles: a change rebuilds them.
    """
    assert section in SECTIONS, section
    return field(default=default, metadata={"help": help, "section": section, "data": data})


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything that defines a run; two runs with equal configs give equal results."""

    strategy: str = _opt(
        "fedavg",
        f"aggregation strategy: {', '.join(STRATEGIES.builtin)}, or {STRATEGIES.dotted_hint}",
        section="run",
    )
    scenario: str = _opt("iid", f"data scenario: {', '.join(SCENARIOS)}", data=True, section="run")
    clients: int = _opt(5, "number of simulated hospitals", data=True, section="run")
    # 15 rounds of 1 local epoch take the default model to ~0.8 Dice in ~1.5 min.
    rounds: int = _opt(15, "federated rounds", section="run")
    seed: int = _opt(
        0, "seed of everything: data, model initialisation, batch order", data=True, section="run"
    )
    data: str = _opt(
        "synthetic",
        "synthetic, or bcss:PATH, semicol:PATH, folder:PATH (real data)",
        data=True,
        section="data",
    )
    label_map: str = _opt(
        "",
        "folder data: mask value to class, e.g. '0:ignore 1:tumor 2:stroma'",
        data=True,
        section="data",
    )
    data_split: str = _opt(
        "",
        "real data: CSV 'image,hospital' (default: sites/sub-folders)",
        data=True,
        section="data",
    )
    image_size: int = _opt(
        64, "tile side in pixels (64 is fast; 128/256 work)", data=True, section="data"
    )
    train_tiles: int = _opt(200, "training tiles per hospital", data=True, section="data")
    test_tiles: int = _opt(
        48, "held-out test tiles per hospital and stage (evaluation)", data=True, section="data"
    )
    model: str = _opt(
        "unet",
        f"network: {', '.join(MODELS.builtin)}, or {MODELS.dotted_hint}",
        section="training",
    )
    local_epochs: int = _opt(1, "local epochs per round", section="training")
    batch_size: int = _opt(16, "local batch size", section="training")
    # Adam at 2e-3 converges in a few rounds on the synthetic tiles; SGD needs ~10x lr.
    lr: float = _opt(2e-3, "local learning rate", section="training")
    optimizer: str = _opt("adam", "local optimizer: adam or sgd (momentum 0.9)", section="training")
    # What a hospital's BatchNorm statistics describe when it replies: "running", the
    # averages PyTorch keeps while the weights change (momentum 0.1: a quarter still from
    # the global model after 13 batches); "recomputed", its final weights on its tiles,
    # for one more forward pass (running statistics made the global model's Dice jump
    # between rounds: docs/decision-log.md).
    bn_stats: str = _opt(
        "recomputed", "BatchNorm statistics sent: running or recomputed", section="training"
    )
    # Federated learning never gives the server the hospitals' data, test tiles included:
    # each hospital scores the model it receives and sends figures only. "server" is a
    # shortcut for synthetic simulation (the server regenerates the tiles; same figures).
    evaluation: str = _opt(
        "hospitals",
        "who scores the global model: hospitals (their own test tiles) or server",
        section="training",
    )
    # Two labs following the same protocol still differ a little (0.1); see stain.perturb.
    site_stain: float = _opt(
        0.1, "strength of each hospital's own stain, 0..1", data=True, section="data"
    )
    client_cpus: float = _opt(
        1.0, "CPU cores per hospital (Ray; fedcl deploy local: its threads)", section="resources"
    )
    client_gpus: float = _opt(
        0.0, "GPUs per hospital (Ray); 0.25 lets four share one GPU", section="resources"
    )
    ray_address: str = _opt(
        "", "attach to this existing Ray cluster (default: start one)", section="resources"
    )
    device: str = _opt("auto", "auto (CUDA when available), cpu or cuda", section="resources")
    # --- scenario knobs (docs/design.md, section 2) ----------------------------------
    # 2 of 5 hospitals: a large minority, as in the paper's drift setting; the peer
    # consensus of DBC assumes fewer than half drift.
    drift_ratio: float = _opt(
        0.4, "client-drift: fraction of hospitals that drift, 0..1", data=True, section="scenario"
    )
    drift_kind: str = _opt(
        "stain", f"client-drift: {', '.join(DRIFT_KINDS)}", data=True, section="scenario"
    )
    drift_strength: float = _opt(
        0.8, "client-drift: shift strength, 0 (none)..1 (extreme)", data=True, section="scenario"
    )
    drift_start_round: int = _opt(
        1, "client-drift: first round trained on drifted data", section="scenario"
    )
    stages: int = _opt(
        3,
        "forgetting: number of stages (all hospitals shift together)",
        data=True,
        section="scenario",
    )
    rounds_per_stage: int = _opt(
        5, "forgetting: rounds per stage (rounds = stages x this)", section="scenario"
    )
    # tissue: what the weights learned must change (a stain change is undone by the
    # hospitals' own BatchNorm statistics); docs/RESULTS.md has the evidence.
    stage_shift: str = _opt(
        "tissue",
        "forgetting: what changes at a stage boundary: stain (and class mix), tissue "
        "(architecture) or classes (which classes are annotated)",
        data=True,
        section="scenario",
    )
    forgetting_strength: float = _opt(
        0.8,
        "forgetting, stage-shift stain: stain and class-mix change per stage, 0..1",
        data=True,
        section="scenario",
    )
    # --- strategies -------------------------------------------------------------------
    # FedProx's usual range is 0.001..1; 0.01 keeps local models close without stalling.
    proximal_mu: float = _opt(0.01, "FedProx proximal weight mu (fedprox only)", section="strategy")
    # LwF's usual values (Li and Hoiem 2018): the two losses weighted equally, T = 2.
    lwf_weight: float = _opt(
        1.0, "LwF: weight of the distillation toward the last stage's model", section="strategy"
    )
    lwf_temperature: float = _opt(
        2.0, "LwF: softmax temperature of the distillation", section="strategy"
    )
    byzantine: int = _opt(
        -1,
        "hospitals krum/multikrum/bulyan assume malicious (-1: the most they tolerate)",
        section="strategy",
    )
    # --- every strategy: what the server accepts from a hospital ------------------------
    min_replies: int = _opt(
        1, "fewest usable replies a round aggregates (else: model kept)", section="server"
    )
    # Honest early rounds move the default model by about its own norm (BatchNorm
    # statistics move most); scaled or exploding updates are orders of magnitude beyond.
    max_update_ratio: float = _opt(
        100.0, "drop a reply with ||w - global|| > this x ||global||", section="server"
    )
    round_timeout: float = _opt(
        0.0, "seconds the server waits for replies (0: Flower's 3600)", section="server"
    )
    # The server's own tiles (DBC's reference set, FLTrust's root set): generated, or
    # real public tiles that no hospital holds, in one of the real-data layouts.
    server_data: str = _opt(
        "synthetic",
        "the server's tiles: synthetic, KIND:PATH, or unlabeled:PATH (reference set only)",
        section="server",
    )
    reference_size: int = _opt(
        32, "tiles in the server's unlabeled public reference set", section="server"
    )
    root_tiles: int = _opt(
        32, "tiles in the server's labelled root set (fltrust)", section="server"
    )
    dbc_filter_rule: str = _opt(
        _DBC.filter_rule,
        "DBC filter: evidence (over rounds), round, or oracle (simulation bound)",
        section="dbc",
    )
    dbc_tau: float = _opt(
        _DBC.tau, "DBC evidence: reject if mean log peer-score ratio > tau", section="dbc"
    )
    dbc_evidence_floor: float = _opt(
        _DBC.evidence_floor, "DBC evidence: the typical peer score is at least this", section="dbc"
    )
    dbc_kappa: float = _opt(
        _DBC.kappa, "DBC round rule: reject if > median + kappa * spread", section="dbc-variants"
    )
    dbc_floor: float = _opt(
        _DBC.floor, "DBC round rule: spread floor, fraction of median", section="dbc-variants"
    )
    dbc_beta: float = _opt(_DBC.beta, "DBC: EMA weight of the anchor's past", section="dbc")
    dbc_warmup: int = _opt(_DBC.warmup, "DBC: rounds before the anchor starts", section="dbc")
    dbc_consolidation: str = _opt(_DBC.consolidation, "DBC: always, adaptive or off", section="dbc")
    dbc_steps: int = _opt(_DBC.steps, "DBC: consolidation steps per round, at most", section="dbc")
    dbc_lr: float = _opt(_DBC.lr, "DBC: consolidation learning rate", section="dbc")
    dbc_optimizer: str = _opt(
        _DBC.optimizer,
        "DBC: consolidation steps: adam, or normalized (lr * g / rms(g))",
        section="dbc-variants",
    )
    dbc_consolidate_input: bool = _opt(
        _DBC.consolidate_input,
        "DBC: consolidation also moves the layers that read the tiles",
        section="dbc-variants",
    )
    dbc_monotone: bool = _opt(
        _DBC.monotone,
        "DBC: undo a consolidation step that raised the continuity loss",
        section="dbc",
    )
    dbc_rho: float = _opt(
        _DBC.rho, "DBC adaptive: consolidate above (1 + rho) x recent", section="dbc"
    )
    dbc_window: int = _opt(
        _DBC.window, "DBC: rounds of history (evidence, adaptive)", section="dbc"
    )
    dbc_calm_after_warmup: bool = _opt(
        _DBC.calm_after_warmup,
        "DBC adaptive: calm history starts after warm-up (else round 2)",
        section="dbc-variants",
    )
    dbc_confident: float = _opt(
        _DBC.confident,
        "DBC: consolidate only where the anchor's top class prob >= this",
        section="dbc-variants",
    )
    dbc_movement_from: str = _opt(
        _DBC.movement_from,
        "DBC adaptive: movement from start or (unconsolidated) aggregate",
        section="dbc-variants",
    )
    dbc_shift_rounds: int = _opt(
        _DBC.shift_rounds,
        "DBC adaptive: consolidate at most this many rounds a shift (0: all)",
        section="dbc",
    )
    dbc_lambda: float = _opt(
        _DBC.lambda_offdiag, "DBC: off-diagonal weight (<0: 1/(D-1))", section="dbc"
    )
    dbc_pixels_per_image: int = _opt(
        _DBC.pixels_per_image, "DBC: pixels per reference tile", section="dbc"
    )
    dbc_representation: str = _opt(
        _DBC.representation, "DBC: probs or features", section="dbc-variants"
    )
    dbc_filter: bool = _opt(
        _DBC.filter, "DBC: reject outliers against the peer consensus", section="dbc"
    )
    out: str = _opt(
        "", "run directory (default: runs/<strategy>-<scenario>-s<seed>-<time>)", section="run"
    )

    def _check_data(self) -> None:
        from fedcl.data.real import label_table, parse_data

        server = parse_data(self.server_data, key="server-data")
        if server.kind != "synthetic" and self.data != "synthetic":
            if server.path == parse_data(self.data).path:
                raise FedclError(
                    "config key 'server-data' names the hospitals' own data folder: the "
                    "server's tiles must be public tiles no hospital holds (another folder)"
                )

        if server.kind == "unlabeled" and self.strategy == "fltrust":
            raise FedclError(
                "fltrust trains on the server's root set, which needs masks: server-data "
                f"{self.server_data!r} is unlabeled (use bcss:, semicol: or folder: tiles)"
            )
        spec = parse_data(self.data)
        if spec.kind == "unlabeled":
            raise FedclError(
                "config key 'data': unlabeled tiles have no masks to train on; 'unlabeled:"
                "PATH' is for server-data (DBC's reference set)"
            )
        if spec.kind == "synthetic":
            return
        if spec.kind == "folder":
            label_table(spec.kind, self.label_map)  # errors name the bad pair
        if self.scenario in STAGED:
            raise FedclError(
                f"scenario {self.scenario!r} generates its stages: it needs data = "
                f"'synthetic' (real data, {self.data!r}, works with iid and client-drift)"
            )
        if self.scenario in DRIFTING and self.drift_kind == "stain":
            raise FedclError(
                "drift-kind 'stain' re-renders synthetic tissue; with real data use "
                "blur, noise, jpeg, label-noise or invert"
            )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = type(f.default)
            if expected is float and type(value) is int:
                object.__setattr__(self, f.name, float(value))
            elif type(value) is not expected:
                raise FedclError(
                    f"config key {key_of(f.name)!r} must be {expected.__name__}, "
                    f"got {value!r} ({type(value).__name__})"
                )
        positive = (
            "clients",
            "rounds",
            "image_size",
            "train_tiles",
            "test_tiles",
            "local_epochs",
            "batch_size",
            "reference_size",
            "root_tiles",
            "min_replies",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise FedclError(
                    f"config key {key_of(name)!r} must be >= 1, got {getattr(self, name)}"
                )
        if self.image_size % 16:
            raise FedclError(
                f"config key 'image-size' must be a multiple of 16, got {self.image_size}"
            )
        if not self.lr > 0:
            raise FedclError(f"config key 'lr' must be > 0, got {self.lr}")
        if not 0 <= self.site_stain <= 1:
            raise FedclError(f"config key 'site-stain' must be in 0..1, got {self.site_stain}")
        if self.client_gpus < 0:
            raise FedclError(f"config key 'client-gpus' must be >= 0, got {self.client_gpus}")
        if self.device not in DEVICES:
            raise unknown_name("device", self.device, DEVICES)
        if not self.client_cpus > 0:
            raise FedclError(f"config key 'client-cpus' must be > 0, got {self.client_cpus}")
        if self.optimizer not in ("adam", "sgd"):
            raise unknown_name("optimizer", self.optimizer, ("adam", "sgd"))
        if self.bn_stats not in BN_STATS:
            raise unknown_name("bn-stats", self.bn_stats, BN_STATS)
        if self.evaluation not in EVALUATIONS:
            raise unknown_name("evaluation", self.evaluation, EVALUATIONS)
        if self.evaluation == "server" and self.data != "synthetic":
            raise FedclError(
                "config key 'evaluation' is 'server', but the server holds no hospital "
                f"data ({self.data!r}): use 'hospitals' (server evaluation needs "
                "synthetic data, which the server can regenerate)"
            )
        if self.scenario not in SCENARIOS:
            raise unknown_name("scenario", self.scenario, SCENARIOS)
        if self.drift_kind not in DRIFT_KINDS:
            raise unknown_name("drift-kind", self.drift_kind, DRIFT_KINDS)
        for name in ("drift_ratio", "drift_strength", "forgetting_strength"):
            if not 0 <= getattr(self, name) <= 1:
                raise FedclError(
                    f"config key {key_of(name)!r} must be in 0..1, got {getattr(self, name)}"
                )
        for name in ("drift_start_round", "stages", "rounds_per_stage"):
            if getattr(self, name) < 1:
                raise FedclError(
                    f"config key {key_of(name)!r} must be >= 1, got {getattr(self, name)}"
                )
        if self.stage_shift not in STAGE_SHIFTS:
            raise unknown_name("stage-shift", self.stage_shift, STAGE_SHIFTS)
        limit = MAX_STAGES.get(self.stage_shift)
        if self.scenario in STAGED and limit is not None and self.stages > limit:
            raise FedclError(
                f"config key 'stages' must be <= {limit} with stage-shift "
                f"{self.stage_shift!r} (it makes at most {limit} distinct stages), "
                f"got {self.stages}"
            )
        if self.scenario in STAGED and self.rounds != self.stages * self.rounds_per_stage:
            raise FedclError(
                f"config key 'rounds' must equal stages x rounds-per-stage = {self.stages} "
                f"x {self.rounds_per_stage} = {self.stages * self.rounds_per_stage} in "
                f"scenario {self.scenario!r}, got {self.rounds}"
            )
        if not self.max_update_ratio > 0:
            raise FedclError(
                f"config key 'max-update-ratio' must be > 0, got {self.max_update_ratio}"
            )
        if self.round_timeout < 0:
            raise FedclError(f"config key 'round-timeout' must be >= 0, got {self.round_timeout}")
        if self.min_replies > self.clients:
            raise FedclError(
                f"config key 'min-replies' must be <= clients = {self.clients}, "
                f"got {self.min_replies}"
            )
        self._check_data()
        if self.proximal_mu < 0:
            raise FedclError(f"config key 'proximal-mu' must be >= 0, got {self.proximal_mu}")
        if self.lwf_weight < 0 or not self.lwf_temperature > 0:
            raise FedclError(
                "config keys 'lwf-weight' >= 0 and 'lwf-temperature' > 0 expected, got "
                f"{self.lwf_weight} and {self.lwf_temperature}"
            )
        if self.byzantine < -1:
            raise FedclError(f"config key 'byzantine' must be >= -1, got {self.byzantine}")
        self.dbc  # noqa: B018 - validates the dbc-* keys

    def as_read(self) -> RunConfig:
        """Return this config with the keys its strategy does not read at their defaults.

        Only the built-in ``dbc`` reads the ``dbc-*`` keys, only ``lwf`` the ``lwf-*``
        keys (a plug-in gets the sampling settings only), so two configs with equal
        ``as_read()`` give the same run: ``fedcl compare`` keeps a finished FedAvg run
        when only a DBC default changed.
        """
        defaults = RunConfig()
        return self.replace(
            **{
                f.name: getattr(defaults, f.name)
                for f in fields(self)
                if self._owned_by_another_strategy(f.name)
            }
        )

    def _owned_by_another_strategy(self, name: str) -> bool:
        """Whether field ``name`` belongs to a built-in strategy other than this run's."""
        return any(name.startswith(p) for p, owner in _OWN_KEYS.items() if owner != self.strategy)

    def unread_keys(self) -> list[str]:
        """Return the keys this run does not read (written, commented, in config.toml).

        A key stays in the configuration whatever the run (a run directory's
        ``config.toml`` reloads as it was written); this says which ones had no effect:
        another strategy's settings, the other scenarios' knobs, ``site-stain`` with real
        data (its tiles have their own stains), the label map with synthetic data.
        """
        strategy = {
            "proximal_mu": ("fedprox",),
            "byzantine": ("krum", "multikrum", "bulyan"),
            "root_tiles": ("fltrust",),
            "reference_size": ("dbc", "fltrust"),  # fltrust: its root set follows it
        }
        unread = {n for n, readers in strategy.items() if self.strategy not in readers}
        unread |= {f.name for f in fields(self) if self._owned_by_another_strategy(f.name)}
        if self.scenario not in DRIFTING:
            unread |= {"drift_ratio", "drift_kind", "drift_strength", "drift_start_round"}
        if self.scenario not in STAGED:
            unread |= {"stages", "rounds_per_stage", "stage_shift", "forgetting_strength"}
        if self.stage_shift != "stain":
            unread.add("forgetting_strength")
        unread |= {"label_map", "data_split"} if self.data == "synthetic" else {"site_stain"}
        return [key_of(f.name) for f in fields(self) if f.name in unread]

    @property
    def dbc(self) -> DBCSettings:
        """The ``dbc-*`` keys as :class:`DBCSettings`."""
        return DBCSettings(
            filter_rule=self.dbc_filter_rule,
            tau=self.dbc_tau,
            evidence_floor=self.dbc_evidence_floor,
            kappa=self.dbc_kappa,
            floor=self.dbc_floor,
            beta=self.dbc_beta,
            warmup=self.dbc_warmup,
            consolidation=self.dbc_consolidation,
            steps=self.dbc_steps,
            lr=self.dbc_lr,
            optimizer=self.dbc_optimizer,
            consolidate_input=self.dbc_consolidate_input,
            monotone=self.dbc_monotone,
            rho=self.dbc_rho,
            window=self.dbc_window,
            calm_after_warmup=self.dbc_calm_after_warmup,
            movement_from=self.dbc_movement_from,
            shift_rounds=self.dbc_shift_rounds,
            confident=self.dbc_confident,
            lambda_offdiag=self.dbc_lambda,
            pixels_per_image=self.dbc_pixels_per_image,
            representation=self.dbc_representation,
            filter=self.dbc_filter,
        )

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, source: str = "config", strict: bool = True
    ) -> RunConfig:
        """Build a config from kebab-case keys (TOML, Flower run config, a message).

        Parameters
        ----------
        values : Mapping[str, Any]
            Key -> value; missing keys take their defaults, except ``rounds`` in a staged
            scenario: ``stages x rounds-per-stage`` (an explicit value must equal it).
        source : str
            Named in error messages (a file name, "run config").
        strict : bool
            Unknown keys are an error (with a did-you-mean) when True, ignored when
            False (a Flower message also carries ``server-round``).
        """
        known = {key_of(f.name): f.name for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key in known:
                kwargs[known[key]] = value
            elif strict:
                raise FedclError(f"{source}: {unknown_name('key', key, known)}")
        if "rounds" not in kwargs and kwargs.get("scenario", cls.scenario) in STAGED:
            # a staged run's length follows from its stages unless given (then checked)
            stages = kwargs.get("stages", cls.stages)
            per_stage = kwargs.get("rounds_per_stage", cls.rounds_per_stage)
            if isinstance(stages, int) and isinstance(per_stage, int):
                kwargs["rounds"] = stages * per_stage
        try:
            return cls(**kwargs)
        except FedclError as err:
            raise FedclError(f"{source}: {err}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        """Read a TOML file of kebab-case keys (the same as the CLI flags)."""
        return cls.from_mapping(read_toml(path), source=str(path))

    @classmethod
    def from_run_dir(cls, directory: str | Path) -> RunConfig:
        """Read the ``config.toml`` of a run directory, as the run was run.

        A run recorded before a key existed ran with that key's value of the time
        (:data:`RECORDED_BEFORE`), not with today's default.
        """
        path = Path(directory) / "config.toml"
        return cls.from_mapping(RECORDED_BEFORE | read_toml(path), source=str(path))

    def to_mapping(self) -> dict[str, Scalar]:
        """Return kebab-case key -> value (a valid Flower ``ConfigRecord``)."""
        return {key_of(f.name): getattr(self, f.name) for f in fields(self)}

    def local_schedule(self) -> dict[str, Any]:
        """Keyword arguments of ``fedcl.training.train_local`` for one local round.

        The hospitals' schedule; FLTrust's server update must follow the same one.
        """
        return {
            "epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "bn_stats": self.bn_stats,
        }

    def with_run_dir(self) -> RunConfig:
        """Return a copy whose ``out`` is set (a fresh time-stamped default if empty)."""
        if self.out:
            return self
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.replace(out=f"runs/{self.strategy}-{self.scenario}-s{self.seed}-{stamp}")

    def replace(self, **changes: Any) -> RunConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def data_keys() -> tuple[str, ...]:
    """Return the keys that shape a hospital's tiles (declared with ``data=True``).

    With the hospital, its stage and whether it drifts, they fingerprint the tiles a
    hospital keeps between rounds: a change of any of them regenerates the tiles.
    """
    return tuple(key_of(f.name) for f in fields(RunConfig) if f.metadata.get("data"))


def key_of(name: str) -> str:
    """Field name -> config key (``image_size`` -> ``image-size``)."""
    return name.replace("_", "-")


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case) -> bool."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_setting(text: str, *, source: str = "setting") -> tuple[str, Scalar]:
    """``KEY=VALUE`` (a config key, as on the command line) -> (key, typed value)."""
    key, sep, raw = text.partition("=")
    types: dict[str, type] = {key_of(f.name): type(f.default) for f in fields(RunConfig)}
    if not sep or not key:
        raise FedclError(f"{source}: expected KEY=VALUE, got {text!r}")
    if key not in types:
        raise FedclError(f"{source}: {unknown_name('key', key, types)}")
    kind = types[key]
    try:
        value: Scalar = parse_bool(raw) if kind is bool else kind(raw)
    except ValueError:
        raise FedclError(f"{source}: {key} must be {kind.__name__}, got {raw!r}") from None
    return key, value


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing or malformed file into a FedclError."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise FedclError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise FedclError(f"config file {str(path)!r} is not valid TOML: {err}") from None
