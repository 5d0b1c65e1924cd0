import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedcl.data import NUM_CLASSES, Stain, TileDataset, generate_tiles
from fedcl.data.real import IGNORE
from fedcl.errors import FedclError
from fedcl.models import build_model
from fedcl.normalization import batch_norms, has_running_stats
from fedcl.plugins import MODELS
from fedcl.strategies.fedprox import Proximal
from fedcl.training import evaluate, resolve_device, segmentation_loss, tile_dice, train_local


def dataset(count=8, size=32):
    images, masks = generate_tiles(count, size=size, stain=Stain(), seed=np.random.SeedSequence(11))
    return TileDataset(images, masks, NUM_CLASSES)


def batch_loss(model, data):
    model.train()  # batch statistics, as during the training step
    images, masks = next(data.batches(len(data)))
    with torch.no_grad():
        return float(segmentation_loss()(model(images), masks))


def test_one_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model = build_model("unet", NUM_CLASSES)
    data = dataset()
    before = batch_loss(model, data)
    result = train_local(model, data, epochs=1, batch_size=8, lr=3e-3, seed=0)
    assert result.steps == 1 and result.num_examples == 8
    assert result.loss == pytest.approx(before, rel=1e-4)  # the loss it reports is real
    assert batch_loss(model, data) < before - 0.01


def test_first_loss_is_the_received_models_loss_on_the_first_batches_without_terms():
    torch.manual_seed(0)
    model = build_model("unet", NUM_CLASSES)
    data = dataset()
    before = batch_loss(model, data)
    constant = 5.0  # a strategy's term: in the training loss, not in first_loss
    plain = segmentation_loss()
    result = train_local(
        model, data, epochs=1, batch_size=8, lr=3e-3, seed=0,
        penalties=[lambda images, logits: torch.tensor(constant)],
        criterion=lambda logits, masks: 2 * plain(logits, masks),  # the hospital's own
    )  # fmt: skip
    assert result.steps == 1
    assert result.first_loss == pytest.approx(2 * before, rel=1e-4)
    assert result.loss == pytest.approx(2 * before + constant, rel=1e-4)
    many = train_local(model, data, epochs=2, batch_size=2, lr=1e-3, seed=0)
    assert many.steps == 8 and math.isfinite(many.first_loss)  # the first 3 steps only


def test_local_training_is_reproducible_for_a_seed():
    data = dataset()
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("unet", NUM_CLASSES)
        train_local(model, data, epochs=1, batch_size=4, lr=1e-3, seed=7)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_recomputed_batchnorm_statistics_belong_to_the_final_weights():
    # Eval mode with the recomputed statistics = train mode over the same tiles as one
    # batch (the data is one batch here, so exactly); PyTorch's running averages (a mix
    # of every step's weights and the initial statistics) are far from it.
    data = dataset()
    images = next(data.batches(len(data)))[0]
    trained = {}
    for bn_stats in ("running", "recomputed"):
        torch.manual_seed(0)
        model = build_model("unet", NUM_CLASSES)
        train_local(model, data, epochs=3, batch_size=8, lr=3e-3, seed=0, bn_stats=bn_stats)
        with torch.no_grad():
            eval_out = model.eval()(images)
            batch_out = copy.deepcopy(model).train()(images)
        trained[bn_stats] = (model, (eval_out - batch_out).abs().max())
    (running, running_gap), (recomputed, recomputed_gap) = trained.values()
    # (not 0: BatchNorm keeps the unbiased variance, it normalises a batch by the biased)
    assert recomputed_gap < 0.1 < running_gap and recomputed_gap < running_gap / 10
    for a, b in zip(running.parameters(), recomputed.parameters(), strict=True):
        assert torch.equal(a, b)  # the weights are the same: only the statistics differ
    norms = [m for m in recomputed.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)
    with pytest.raises(ValueError, match="bn_stats"):
        train_local(recomputed, data, epochs=1, batch_size=4, lr=1e-3, bn_stats="frozen")


def test_proximal_term_keeps_weights_closer_to_the_start():
    # FedProx's hospital half (fedcl.strategies.fedprox) passes this penalty
    data = dataset()
    distances = []
    for mu in (0.0, 50.0):
        torch.manual_seed(0)
        model = build_model("unet", NUM_CLASSES)
        start = [p.detach().clone() for p in model.parameters()]
        penalties = [Proximal(model, mu)] if mu else []
        train_local(model, data, epochs=2, batch_size=4, lr=3e-3, seed=0, penalties=penalties)
        params = [p.detach() for p in model.parameters()]
        moved = zip(params, start, strict=True)
        distances.append(sum(float(((p - s) ** 2).sum()) for p, s in moved))
    assert distances[1] < distances[0]


class Oracle(nn.Module):
    """Reads the class back from the red channel (red = class * 50 / 255)."""

    def forward(self, images):
        labels = torch.round(images[:, 0] * 255 / 50).long()
        return nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float() * 20


def test_tile_dice_is_monais_dice_metric_bit_for_bit():
    from monai.metrics import DiceMetric

    generator = torch.Generator().manual_seed(0)
    masks = torch.randint(0, NUM_CLASSES, (12, 16, 16), generator=generator)
    masks[0] = 0  # a tile with no foreground class: NaN for every class
    masks[1][masks[1] == 3] = 1  # a class absent from one tile only
    masks[2:5, :4] = IGNORE  # real data: pixels outside the annotation
    predicted = torch.where(
        torch.rand(masks.shape, generator=generator) < 0.6,
        masks % NUM_CLASSES,
        torch.randint(0, NUM_CLASSES, masks.shape, generator=generator),
    )
    metric = DiceMetric(
        include_background=False, reduction="none", ignore_empty=True,
        num_classes=NUM_CLASSES, ignore_index=IGNORE,
    )  # fmt: skip
    expected = metric(y_pred=predicted.unsqueeze(1), y=masks.unsqueeze(1))
    ours = tile_dice(predicted, masks, NUM_CLASSES)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert torch.equal(ours.isnan(), expected.isnan()) and ours.isnan().any()
    assert torch.equal(torch.nan_to_num(ours), torch.nan_to_num(expected))  # every bit


def test_evaluate_over_several_batches_is_monais_aggregated_dice_metric():
    from monai.metrics import DiceMetric

    data = dataset(count=12)
    model = build_model("unet", NUM_CLASSES).eval()
    metric = DiceMetric(
        include_background=False, reduction="mean_batch", ignore_empty=True,
        num_classes=NUM_CLASSES, get_not_nans=True, ignore_index=IGNORE,
    )  # fmt: skip
    with torch.no_grad():
        for images, masks in data.batches(5):
            metric(y_pred=model(images).argmax(1, keepdim=True), y=masks.unsqueeze(1))
    values, counts = metric.aggregate()
    expected = torch.where(counts > 0, values, torch.nan)
    result = evaluate(model, data, batch_size=5, with_loss=False)
    assert result.per_class == tuple(float(v) for v in expected)
    assert not any(np.isnan(result.per_class)) and np.isnan(result.loss)
    assert evaluate(model, data, batch_size=5).dice == result.dice  # the loss changes no Dice
    with pytest.raises(ValueError, match="one shape"):
        tile_dice(torch.zeros(1, 32, 32), torch.zeros(3, 32, 32), NUM_CLASSES)


def test_dice_is_one_for_a_perfect_model_and_lower_for_a_wrong_one():
    # Seed 2 draws no inflammatory region at all: that class must not count as 0.
    _, masks = generate_tiles(6, size=32, stain=Stain(), seed=np.random.SeedSequence(2))
    images = np.repeat((masks * 50)[..., None], 3, axis=-1).astype(np.uint8)
    data = TileDataset(images, masks, NUM_CLASSES)
    assert evaluate(Oracle(), data).dice == pytest.approx(1.0)
    # Swap tumor (1) and stroma (2) in the "images": those two classes score 0.
    swapped = masks.copy()
    swapped[masks == 1], swapped[masks == 2] = 2, 1
    wrong = TileDataset(
        np.repeat((swapped * 50)[..., None], 3, axis=-1).astype(np.uint8), masks, NUM_CLASSES
    )
    result = evaluate(Oracle(), wrong)
    assert result.per_class[0] == pytest.approx(0.0) and result.per_class[1] == pytest.approx(0.0)
    assert np.isnan(result.per_class[2])  # absent class: no Dice, not a zero
    assert result.dice == pytest.approx(1 / 3)  # classes 1, 2 wrong, 4 right


@pytest.mark.parametrize("name", sorted(MODELS.builtin))
def test_every_model_maps_tiles_to_class_logits(name):
    model = build_model(name, NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, NUM_CLASSES, 64, 64)


@pytest.mark.parametrize("name", ["unet-instance", "unet-group"])
def test_instance_or_group_normalised_unet_carries_no_statistics_of_the_tiles_it_saw(name):
    # Its outputs on a tile do not depend on what it was trained on besides its weights:
    # no running statistics in the state, and a tile's output is the same in a batch of
    # its own, in any other batch, and in train or eval mode.
    model = build_model(name, NUM_CLASSES)
    assert not has_running_stats(model)
    assert not [k for k in model.state_dict() if "running" in k or "num_batches" in k]
    train_local(model, dataset(), epochs=1, batch_size=4, lr=1e-3, seed=0)
    tiles = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        alone = model.eval()(tiles[:1])
        with_others = model.train()(tiles)[:1]
    torch.testing.assert_close(alone, with_others, rtol=1e-4, atol=1e-5)
    batchnorm = build_model("unet", NUM_CLASSES)
    with torch.no_grad():
        gap = (batchnorm.eval()(tiles[:1]) - batchnorm.train()(tiles)[:1]).abs().max()
    assert gap > 1e-3  # the same check tells a BatchNorm network apart


def test_the_group_normalised_unet_is_the_batchnorm_one_with_group_norms():
    batch, group = build_model("unet", NUM_CLASSES), build_model("unet-group", NUM_CLASSES)
    assert not batch_norms(group)
    norms = [m for m in group.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == len(batch_norms(batch))
    # 8 groups where 8 divides the channels, one in the top layer of NUM_CLASSES channels
    groups = {(8, channels) for channels in (16, 32, 64, 128)} | {(1, NUM_CLASSES)}
    assert {(m.num_groups, m.num_channels) for m in norms} == groups
    assert [(k, p.shape) for k, p in group.named_parameters()] == [
        (k, p.shape) for k, p in batch.named_parameters()
    ]  # the same weights, so the same parameter count (about 0.2 M)


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(FedclError, match="Did you mean 'unet'"):
        build_model("unte", NUM_CLASSES)


def test_a_users_model_plugs_in_by_dotted_path_or_entry_point(monkeypatch):
    model = build_model("plugin_model:tiny", NUM_CLASSES)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, NUM_CLASSES, 32, 32)

    class EntryPoint:
        name = "tiny"

        def load(self):
            from plugin_model import tiny

            return tiny

    monkeypatch.setattr("fedcl.plugins.entry_points", lambda group: [EntryPoint()])
    assert isinstance(build_model("tiny", NUM_CLASSES)[0], torch.nn.Conv2d)
    with pytest.raises(FedclError, match="must be a function num_classes -> torch.nn.Module"):
        build_model("plugin_model:not_a_network", NUM_CLASSES)
    with pytest.raises(FedclError, match="has no 'nope'"):
        build_model("plugin_model:nope", NUM_CLASSES)


def test_dataset_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="masks must be"):
        TileDataset(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 9), np.uint8), 5)


def test_ignored_pixels_count_for_nothing_in_the_loss():
    from monai.losses import DiceCELoss

    from fedcl.data.real import IGNORE

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8)
    labels = torch.randint(0, 5, (2, 8, 8))
    loss = segmentation_loss()
    # Without ignored pixels it is MONAI's DiceCELoss itself.
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels.unsqueeze(1))
    assert torch.allclose(loss(logits, labels), expected)
    ignored = labels.clone()
    ignored[:, :4] = IGNORE
    changed = logits.clone()
    changed[:, :, :4] = torch.randn(2, 5, 4, 8) * 10  # whatever is predicted there
    assert torch.allclose(loss(logits, ignored), loss(changed, ignored))
    assert not torch.allclose(loss(logits, labels), loss(changed, labels))


@pytest.mark.cuda
def test_training_and_evaluation_on_cuda_agree_with_cpu():
    assert resolve_device("auto").type == "cuda"
    data = dataset(count=16)
    torch.manual_seed(0)
    cpu = build_model("unet", NUM_CLASSES)
    gpu = copy.deepcopy(cpu).to(resolve_device("cuda"))
    before = [evaluate(m, data) for m in (cpu, gpu)]
    assert before[1].loss == pytest.approx(before[0].loss, rel=1e-4)
    assert before[1].dice == pytest.approx(before[0].dice, abs=1e-3)
    trained = [train_local(m, data, epochs=2, batch_size=8, lr=3e-3, seed=0) for m in (cpu, gpu)]
    assert trained[1].steps == trained[0].steps == 4
    assert trained[1].loss == pytest.approx(trained[0].loss, rel=1e-2)
    assert all(p.is_cuda for p in gpu.parameters())  # batches followed the model
    after = [evaluate(m, data) for m in (cpu, gpu)]
    assert after[1].loss == pytest.approx(after[0].loss, rel=0.05)
    assert after[1].loss < before[1].loss


def test_every_builtin_model_name_loads_a_builder_from_fedcl_models():
    for name, path in MODELS.builtin.items():
        assert path.startswith("fedcl.models:") and callable(MODELS.load(name)), name
