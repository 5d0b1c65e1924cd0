"""The sections of a run's configuration, each the one declaration of its keys.

:class:`~fedcl.config.RunConfig` is all of them together (their keys are its
attributes, ``config.image_size``); a strategy's or a scenario's own keys are declared
in its module (:class:`~fedcl.config.keys.Section`). Comments say why a default is what
it is; the evidence behind a figure is in the docs they name.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedcl.config.keys import opt
from fedcl.errors import FedclError
from fedcl.plugins import MODELS, SCENARIOS, STRATEGIES

DEVICES = ("auto", "cpu", "cuda")
BN_STATS = ("running", "recomputed")  # fedcl.training.train_local
EVALUATIONS = ("hospitals", "server")  # fedcl.federation
PUBLIC_STAGES = ("current", "first", "all")  # fedcl.data.reference.public_stages


def evaluation_period(value: str) -> int:
    """Read an ``evaluate-rounds`` value: 1 for every, 0 for read, K for every-K (K >= 2).

    Raises FedclError for anything else.
    """
    if value in ("every", "read"):
        return int(value == "every")
    head, _, k = value.partition("-")
    if head == "every" and k.isdigit() and int(k) >= 2:
        return int(k)
    raise FedclError(
        f"config key 'evaluate-rounds' must be every, read or every-K with K >= 2 "
        f"(e.g. every-3), got {value!r}"
    )


@dataclass(frozen=True, kw_only=True)
class RunKeys:
    """What runs: the strategy, the scenario, the hospitals, rounds and seed."""

    strategy: str = opt(
        "fedavg",
        f"aggregation strategy: {', '.join(STRATEGIES.builtin)}, or {STRATEGIES.dotted_hint}",
        section="run",
    )
    scenario: str = opt(
        "iid",
        f"data scenario: {', '.join(SCENARIOS.builtin)}, or {SCENARIOS.dotted_hint}",
        data=True,
        section="run",
    )
    clients: int = opt(5, "number of simulated hospitals", data=True, section="run", rule=">= 1")
    # Enough rounds of 1 local epoch for the default model to converge (docs/RESULTS.md).
    rounds: int = opt(15, "federated rounds", section="run", rule=">= 1")
    seed: int = opt(
        0, "seed of everything: data, model initialisation, batch order", data=True, section="run"
    )
    out: str = opt(
        "", "run directory (default: runs/<strategy>-<scenario>-s<seed>-<time>)", section="run"
    )


@dataclass(frozen=True, kw_only=True)
class DataKeys:
    """The hospitals' tiles."""

    data: str = opt(
        "synthetic",
        "synthetic, or bcss:PATH, semicol:PATH, folder:PATH (real data)",
        data=True,
        section="data",
    )
    label_map: str = opt(
        "",
        "folder data: mask value to class, e.g. '0:ignore 1:tumor 2:stroma'",
        data=True,
        section="data",
    )
    data_split: str = opt(
        "",
        "real data: CSV 'image,hospital' (default: sites/sub-folders)",
        data=True,
        section="data",
    )
    image_size: int = opt(
        64,
        "tile side in pixels (64 is fast; 128/256 work)",
        data=True,
        section="data",
        rule=">= 1",
    )
    train_tiles: int = opt(
        200, "training tiles per hospital", data=True, section="data", rule=">= 1"
    )
    test_tiles: int = opt(
        48,
        "held-out test tiles per hospital and stage (evaluation)",
        data=True,
        section="data",
        rule=">= 1",
    )
    # Two labs following the same protocol still differ a little; see stain.perturb.
    site_stain: float = opt(
        0.1, "strength of each hospital's own stain, 0..1", data=True, section="data", rule="0..1"
    )


@dataclass(frozen=True, kw_only=True)
class TrainingKeys:
    """Each hospital's local training and who scores the global model."""

    model: str = opt(
        "unet", f"network: {', '.join(MODELS.builtin)}, or {MODELS.dotted_hint}", section="training"
    )
    local_epochs: int = opt(1, "local epochs per round", section="training", rule=">= 1")
    batch_size: int = opt(16, "local batch size", section="training", rule=">= 1")
    # Adam converges in a few rounds on the synthetic tiles; SGD needs a larger lr.
    lr: float = opt(2e-3, "local learning rate", section="training", rule="> 0")
    optimizer: str = opt(
        "adam",
        "local optimizer: adam or sgd (momentum 0.9)",
        section="training",
        choices=("adam", "sgd"),
    )
    # What a hospital's BatchNorm statistics describe when it replies: "running", the
    # averages PyTorch keeps while the weights change (momentum 0.1: partly still the
    # global model's); "recomputed", its final weights on its tiles, for one more
    # forward pass (why: docs/decision-log.md).
    bn_stats: str = opt(
        "recomputed",
        "BatchNorm statistics sent: running or recomputed",
        section="training",
        choices=BN_STATS,
    )
    # Federated learning never gives the server the hospitals' data, test tiles included:
    # each hospital scores the model it receives and sends figures only. "server" is a
    # shortcut for synthetic simulation (the server regenerates the tiles; same figures).
    evaluation: str = opt(
        "hospitals",
        "who scores the global model: hospitals (their own test tiles) or server",
        section="training",
        choices=EVALUATIONS,
    )
    # Scoring every stage seen in every round costs about as much as training in a staged
    # run; "read" scores only the rounds a summary figure reads (the last two of every
    # stage, the last three of the run): the same summary, fewer per-round curve points;
    # "every-K" those and every K-th round, a coarser curve. Checked by RunConfig.
    evaluate_rounds: str = opt(
        "every",
        "rounds whose model is scored: every, read (only those summary.json reads), or "
        "every-K (those and every K-th round)",
        section="training",
    )


@dataclass(frozen=True, kw_only=True)
class ResourceKeys:
    """Where the hospitals run."""

    client_cpus: float = opt(
        1.0,
        "CPU cores per hospital (Ray; fedcl deploy local: its threads)",
        section="resources",
        rule="> 0",
    )
    client_gpus: float = opt(
        0.0,
        "GPUs per hospital (Ray); 0.25 lets four share one GPU",
        section="resources",
        rule=">= 0",
    )
    ray_address: str = opt(
        "", "attach to this existing Ray cluster (default: start one)", section="resources"
    )
    device: str = opt(
        "auto", "auto (CUDA when available), cpu or cuda", section="resources", choices=DEVICES
    )


@dataclass(frozen=True, kw_only=True)
class ScenarioKeys:
    """What every scenario's stages and drift follow (:class:`fedcl.scenarios.Scenario`).

    A scenario with stages (``staged``) has ``stages x rounds-per-stage`` rounds; one with
    drift (``drifting``) drifts the fraction ``drift-ratio`` of its hospitals from round
    ``drift-start-round`` on. What the built-ins shift, and how strongly, are their own
    keys (docs/scenarios.md).
    """

    # A large minority drifts: the peer consensus of DBC assumes fewer than half do.
    drift_ratio: float = opt(
        0.4,
        "client-drift: fraction of hospitals that drift, 0..1",
        data=True,
        section="scenario",
        rule="0..1",
    )
    drift_start_round: int = opt(
        1, "client-drift: first round trained on drifted data", section="scenario", rule=">= 1"
    )
    stages: int = opt(
        3,
        "forgetting: number of stages (all hospitals shift together)",
        data=True,
        section="scenario",
        rule=">= 1",
    )
    rounds_per_stage: int = opt(
        5, "forgetting: rounds per stage (rounds = stages x this)", section="scenario", rule=">= 1"
    )


@dataclass(frozen=True, kw_only=True)
class ServerKeys:
    """What the server accepts from a hospital, and the server's own tiles."""

    min_replies: int = opt(
        1, "fewest usable replies a round aggregates (else: model kept)", section="server",
        rule=">= 1",
    )  # fmt: skip
    # Honest early rounds move the default model by about its own norm (BatchNorm
    # statistics move most); scaled or exploding updates are orders of magnitude beyond.
    max_update_ratio: float = opt(
        100.0, "drop a reply with ||w - global|| > this x ||global||", section="server",
        rule="> 0",
    )  # fmt: skip
    round_timeout: float = opt(
        0.0, "seconds the server waits for replies (0: Flower's 3600)", section="server",
        rule=">= 0",
    )  # fmt: skip
    # The server's own tiles (DBC's reference set, FLTrust's root set): generated, or
    # real public tiles that no hospital holds, in one of the real-data layouts.
    server_data: str = opt(
        "synthetic",
        "the server's tiles: synthetic, KIND:PATH, or unlabeled:PATH (reference set only)",
        section="server",
    )
    reference_size: int = opt(
        32, "tiles in the server's unlabeled public reference set", section="server", rule=">= 1"
    )
    root_tiles: int = opt(
        32, "tiles in the server's labelled root set (fltrust)", section="server", rule=">= 1"
    )
    # A public atlas holds what is known, not what is to come: a server whose tiles
    # cover the later stages' tissue from round 1 sees the future.
    public_stages: str = opt(
        "current",
        "which stages' tissue (and classes) the server's generated tiles hold: current "
        "(every stage begun so far), first, or all (from round 1)",
        section="server",
        choices=PUBLIC_STAGES,
    )
