"""Federated EWC: the importance estimate, the penalty, the hospital half, the server half."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedcl.configure import load_config
from fedcl.data import NUM_CLASSES
from fedcl.errors import FedclError
from fedcl.hospital import local_round, local_train_data
from fedcl.models import build_model
from fedcl.strategies.contract import SentModel
from fedcl.strategies.ewc import (
    ANCHOR_KEY,
    ESTIMATE_KEY,
    IMPORTANCE_KEY,
    STAGE_KEY,
    WEIGHT_KEY,
    EWCHospital,
    FederatedEWC,
    fisher_diagonal,
    normalised,
)
from fedcl.strategies.fedprox import Proximal
from fedcl.strategies.guard import GuardedStrategy
from fedcl.training import segmentation_loss
from tests.conftest import FakeGrid, random_tiles

CONFIG = {"strategy": "ewc", "scenario": "catastrophic-forgetting", "image-size": 32}
CONFIG |= {"batch-size": 4, "train-tiles": 8, "stages": 3, "rounds-per-stage": 2}


def test_the_penalty_weights_each_parameters_distance_to_the_anchor_by_its_importance():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 3.0]]))
    anchor = {"weight": torch.tensor([[0.0, 1.0]])}
    importance = {"weight": torch.tensor([[2.0, 0.5]])}
    unused = torch.zeros(1)
    # (mu / 2) * (2 * 1^2 + 0.5 * 2^2)
    ewc = Proximal(model, 0.5, anchor=anchor, importance=importance)
    with torch.no_grad():
        assert float(ewc(unused, unused)) == pytest.approx(0.25 * (2 + 2))
        assert float(Proximal(model, 0.5)(unused, unused)) == 0.0  # FedProx: held where it is
        assert float(Proximal(model, 0.5, anchor=anchor)(unused, unused)) == pytest.approx(1.25)


def test_the_fisher_estimate_is_the_mean_squared_gradient_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model, tiles = build_model("unet", NUM_CLASSES), random_tiles(8, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    fisher = fisher_diagonal(model, tiles, batch_size=4)
    assert model.training  # its mode restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no BN update
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert fisher.keys() == trainable
    assert all(bool((v >= 0).all()) for v in fisher.values())
    assert sum(float(v.sum()) for v in fisher.values()) > 0
    # two batches: by hand, for one parameter
    name, param = next(iter(model.named_parameters()))
    model.eval()
    squares = []
    for images, masks in tiles.batches(4):
        (grad,) = torch.autograd.grad(segmentation_loss()(model(images), masks), [param])
        squares.append(grad**2)
    assert torch.allclose(fisher[name], (squares[0] + squares[1]) / 2)
    scaled = normalised(fisher)
    count = sum(v.numel() for v in scaled.values())
    assert sum(float(v.sum()) for v in scaled.values()) / count == pytest.approx(1.0, rel=1e-4)
    zeros = normalised({"w": torch.zeros(3)})
    assert torch.equal(zeros["w"], torch.zeros(3))


def hospital(config, server_round, model, state, weight=1.0, stage=0, sends=None):
    """EWC's hospital half in a train message (sending ``sends``: importance and anchor)."""
    sent = ConfigRecord({WEIGHT_KEY: weight, STAGE_KEY: stage})
    content = RecordDict({"config": sent} | (sends or {}))
    now = local_round(
        config, 0, server_round, sent=sent, content=content, state=state, training=True
    )
    return EWCHospital(now)


def test_a_hospital_estimates_at_a_stages_start_then_holds_to_what_the_server_sends():
    config = load_config(CONFIG)
    state, model = RecordDict(), build_model("unet", NUM_CLASSES)
    assert hospital(config, 2, model, state).penalties(model) == []  # stage 0: no past
    assert hospital(config, 3, model, state, weight=0.0).penalties(model) == []
    first = hospital(config, 3, model, state)  # stage 1 starts: estimate on stage 0's tiles
    (penalty,) = first.penalties(model)
    own = normalised(fisher_diagonal(model, first.now.own_tiles(), 4))
    # the tiles of the stage just ended (round 2's), which the hospital still holds
    stage_zero = local_train_data(config, 0, 2, RecordDict())
    assert (first.now.own_tiles().images == stage_zero.images).all()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(torch.allclose(w, own[n]) for n, w in zip(names, penalty.importance, strict=True))
    assert float(penalty(None, None).detach()) == 0.0  # anchored at the model received
    content = RecordDict()
    first.reply(content)
    assert content.array_records[ESTIMATE_KEY].keys() == own.keys()
    # the server's importance and anchor arrive once and stay in the hospital's state
    anchor = build_model("unet", NUM_CLASSES)
    torch.nn.init.constant_(next(anchor.parameters()), 2.0)
    twice = {n: 2 * v for n, v in own.items()}
    sends = {IMPORTANCE_KEY: ArrayRecord(twice), ANCHOR_KEY: ArrayRecord(anchor.state_dict())}
    for server_round, message in ((4, sends), (4, None)):
        half = hospital(config, server_round, model, state, stage=1, sends=message)
        (held,) = half.penalties(model)
        assert torch.equal(held.anchor[0], next(anchor.parameters()))
        assert torch.allclose(held.importance[0], twice[names[0]])
        content = RecordDict()
        half.reply(content)
        assert ESTIMATE_KEY not in content  # nothing new to send back
    # stage 2 starts: a new estimate, on top of the importance held
    (next_stage,) = hospital(config, 5, model, state, stage=1).penalties(model)
    assert bool((next_stage.importance[0] >= twice[names[0]]).all())
    with pytest.raises(FedclError, match="holds that of stage 0"):
        hospital(config, 5, model, RecordDict(), stage=0).penalties(model)


def reply(to: Message, arrays: ArrayRecord, partition: int, n: int, estimate=None) -> Message:
    content = RecordDict(
        {
            "arrays": arrays,
            "metrics": MetricRecord({"num-examples": n, "partition-id": partition}),
        }
        | ({ESTIMATE_KEY: ArrayRecord(estimate)} if estimate else {})
    )
    return Message(content=content, reply_to=to)


@pytest.mark.usefixtures("flower_task")
def test_the_server_averages_the_estimates_and_sends_importance_and_anchor_once():
    sent = SentModel()
    inner = FederatedEWC(
        weight=0.5, stage_of=lambda r: (r - 1) // 2, sent=sent, min_available_nodes=1
    )
    strategy = GuardedStrategy(inner, sent=sent)
    model = build_model("unet", NUM_CLASSES)
    arrays = ArrayRecord(model.state_dict())
    params = [n for n, p in model.named_parameters() if p.requires_grad]

    def one_round(server_round, estimates=None, answering=3):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), FakeGrid(3)))
        got = {
            m.metadata.dst_node_id: m.content.array_records.get(IMPORTANCE_KEY) for m in messages
        }
        config = messages[0].content.config_records["config"]
        replies = [
            reply(m, arrays, p, n=10 * (p + 1), estimate=estimates[p] if estimates else None)
            for p, m in enumerate(messages)
        ]
        aggregated, _ = strategy.aggregate_train(server_round, replies[:answering])
        assert aggregated is not None  # FedAvg's, the estimates taken out
        lost.update(m.metadata.dst_node_id for m in messages[answering:])
        return got, config, strategy.round_report

    lost: set[int] = set()

    got, config, report = one_round(1)
    assert set(got.values()) == {None} and config[WEIGHT_KEY] == 0.5 and config[STAGE_KEY] == 0
    estimates = [{n: torch.full_like(dict(model.named_parameters())[n], p + 1.0) for n in params}
                 for p in range(3)]  # fmt: skip
    got, _, report = one_round(3, estimates, answering=2)  # stage 1 starts; one reply lost
    assert set(got.values()) == {None}
    assert report["extra_bytes"] == 2 * ArrayRecord(estimates[0]).count_bytes()
    # weighted by tiles (10, 20): constant (1 * 10 + 2 * 20) / 30, then scaled to mean 1
    assert all(
        torch.allclose(v, torch.ones_like(v))
        for v in inner.importance.to_torch_state_dict().values()
    )
    assert inner.importance_stage == 1 and inner.anchor is arrays
    lost.clear()
    got, config, report = one_round(4, answering=2)
    assert None not in got.values() and config[STAGE_KEY] == 1
    assert report["extra_bytes"] == 3 * (got[1].count_bytes() + arrays.count_bytes())
    got, _, _ = one_round(4)  # round 4 again (a test's shortcut)
    assert {n for n, g in got.items() if g is not None} == lost  # only where it was lost
    # stage 2: the new average (all ones again) added to the importance held
    one_round(5, estimates)
    assert all(
        torch.allclose(v, 2 * torch.ones_like(v))
        for v in inner.importance.to_torch_state_dict().values()
    )
    # a checkpoint keeps it; after a resume it goes to every hospital again
    resumed = FederatedEWC(weight=0.5, stage_of=inner.stage_of, sent=sent, min_available_nodes=1)
    resumed.load_state_dict(inner.state_dict())
    strategy.inner, inner = resumed, resumed
    got, config, _ = one_round(6)
    assert None not in got.values() and config[STAGE_KEY] == 2
