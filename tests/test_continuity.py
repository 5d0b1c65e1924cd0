"""DBC math: Barlow continuity, the peer-consensus filter, anchor and consolidation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from monai.losses import BarlowTwinsLoss

from fedcl.continuity import (
    ShiftDetector,
    barlow_continuity,
    barlow_continuity_columns,
    barlow_continuity_loss,
    consensus_filter,
    consensus_threshold,
    consolidate,
    input_parameters,
    largest_shares,
    loss_jump,
    model_outputs,
    peer_evidence,
    persistent_outlier,
    pixel_index,
    reference_outputs,
    shared_shift,
    update_anchor,
)
from fedcl.continuity.consolidation import choose_mix, mixed
from fedcl.data import NUM_CLASSES
from fedcl.models import build_model


def probs(n=2000, d=5, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, d, generator=g) * scale, dim=1)


def uniform(n=4000, d=5, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("z", [probs(), uniform(), probs(d=3), uniform(d=16)])
def test_identical_inputs_score_below_1e6(z):
    assert barlow_continuity(z, z.clone()) < 1e-6


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (probs(seed=1), probs(seed=2)),
        (uniform(seed=3), uniform(seed=4)),
        (probs(seed=5), probs(seed=5) + 0.1 * uniform(n=2000, seed=6)),
    ],
)
def test_score_is_symmetric(a, b):
    assert barlow_continuity(a, b) == pytest.approx(barlow_continuity(b, a), rel=1e-12)


@pytest.mark.parametrize(("d", "seed"), [(3, 0), (5, 1), (8, 2)])
def test_equals_monai_loss_over_d_on_independent_random_inputs(d, seed):
    a, b = uniform(d=d, seed=seed), uniform(d=d, seed=seed + 100)
    monai = float(BarlowTwinsLoss(lambd=1 / (d - 1))(a.double(), b.double())) / d
    assert barlow_continuity(a, b) == pytest.approx(monai, rel=1e-3)


def test_degenerate_column_in_both_is_dropped():
    a, b = probs(seed=1), probs(seed=2)
    a3, b3 = a.clone(), b.clone()
    a3[:, 2] = 0.0
    b3[:, 2] = 0.0
    kept = [0, 1, 3, 4]
    assert barlow_continuity(a3, b3) == pytest.approx(barlow_continuity(a[:, kept], b[:, kept]))


def test_column_constant_in_one_model_only_counts_as_a_maximal_change():
    a = probs(seed=1)
    b = a.clone()
    b[:, 2] = 0.5
    # C_22 = 0 contributes (1 - 0)^2 / D = 0.2 on its own.
    assert barlow_continuity(a, b) >= 0.2 - 1e-6


def test_permuted_classes_score_high_and_small_noise_scores_low():
    z = probs(seed=3)
    permuted = z[:, [1, 2, 3, 4, 0]]
    noisy = z + 0.01 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    assert barlow_continuity(z, permuted) > 0.8
    assert barlow_continuity(z, noisy) < 0.01


def test_columns_average_to_the_score_and_name_the_class_that_moved():
    a = probs(seed=1)
    b = a.clone()
    b[:, 2] = b[:, 2] + 0.5 * uniform(n=2000, d=1, seed=7)[:, 0]  # only class 2 changes
    b[:, 4] = 0.0
    a[:, 4] = 0.0  # a class neither model predicts
    columns = barlow_continuity_columns(a, b)
    assert columns[4] is None
    kept = [c for c in columns if c is not None]
    assert sum(kept) / len(kept) == pytest.approx(barlow_continuity(a, b), rel=1e-6)
    assert max(range(4), key=lambda i: columns[i]) == 2


def test_largest_shares_skips_dropped_classes():
    assert largest_shares([[0.1, None, 0.3], [None, None], [0.2]]) == [0.3, 0.0, 0.2]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        barlow_continuity(probs(), probs(d=4))


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([0.10, 0.11, 0.09, 0.12, 0.80], [True, True, True, True, False]),
        ([0.10, 0.11, 0.09, 0.12, 0.13], [True] * 5),
        ([0.10, 5.0], [True, True]),  # fewer than 3 replies: nothing rejected
        ([0.0, 0.0, 0.0, 0.0], [True] * 4),  # no spread: the floor keeps them
        ([0.01, 0.01, 0.01, 0.5, 0.6, 0.01, 0.01], [True, True, True, False, False, True, True]),
    ],
)
def test_consensus_filter_table(scores, expected):
    assert consensus_filter(scores) == expected


def test_threshold_formula_with_mad_and_floor():
    scores = [1.0, 2.0, 3.0, 4.0, 100.0]
    mad = 1.4826 * 1.0  # |p - 3| = 2, 1, 0, 1, 97 -> median 1
    assert consensus_threshold(scores, kappa=3.0) == pytest.approx(3.0 + 3.0 * mad)
    flat = [1.0, 1.0, 1.0]  # MAD 0 -> floor 0.05 * 1 + 1e-4
    assert consensus_threshold(flat, kappa=2.0) == pytest.approx(1.0 + 2.0 * 0.0501)
    assert consensus_threshold([1.0, 2.0]) is None


def test_anchor_is_an_exponential_moving_average():
    z1, z2, z3 = probs(seed=1), probs(seed=2), probs(seed=3)
    anchor = update_anchor(None, z1, beta=0.9)
    assert torch.equal(anchor, z1)
    anchor = update_anchor(anchor, z2, beta=0.9)
    anchor = update_anchor(anchor, z3, beta=0.9)
    assert torch.allclose(anchor, 0.81 * z1 + 0.09 * z2 + 0.1 * z3)


def test_peer_evidence_is_relative_to_the_honest_majority():
    # 2 of 5 shifted: the typical score is the median of the lowest 3 (0.02), not 0.05
    evidence = peer_evidence([0.01, 0.02, 0.05, 0.40, 0.60])
    assert evidence == pytest.approx(
        [math.log((p + 1e-4) / (0.02 + 1e-4)) for p in (0.01, 0.02, 0.05, 0.40, 0.60)]
    )
    assert evidence[1] == 0.0 and evidence[3] > 2.9
    # scale-free: multiplying every score leaves the evidence (nearly) unchanged
    assert peer_evidence([1.0, 2.0, 5.0, 40.0, 60.0]) == pytest.approx(
        [math.log(p / 2.0) for p in (1.0, 2.0, 5.0, 40.0, 60.0)], abs=1e-3
    )
    assert peer_evidence([0.1, 5.0]) is None  # too few peers


def test_peer_evidence_has_a_floor_under_a_calm_federations_typical_score():
    calm = [0.002, 0.003, 0.004, 0.05, 0.003]  # one hospital a little different
    assert peer_evidence(calm)[3] > 2.5  # 12x the typical 0.004
    floored = peer_evidence(calm, floor=0.02)
    assert floored == pytest.approx([math.log((p + 1e-4) / (0.02 + 1e-4)) for p in calm])
    assert floored[3] < 1.0
    shifted = [0.02, 0.03, 0.05, 0.40, 0.60]  # above the floor: unchanged
    assert peer_evidence(shifted, floor=0.02) == peer_evidence(shifted)


def test_persistent_outlier_averages_the_recent_rounds():
    assert not persistent_outlier([], tau=1.0, window=3)
    assert persistent_outlier([2.5], tau=1.0, window=3)  # one round is enough when large
    honest = [0.0, 2.1, -0.3, 0.2]  # one high round among ordinary ones
    assert not persistent_outlier(honest, tau=1.0, window=10)
    assert persistent_outlier([1.2, 1.4, 0.9], tau=1.0, window=10)
    # the window forgets: a hospital that has drifted for 3 rounds is rejected
    assert persistent_outlier([0.0] * 8 + [2.5] * 3, tau=1.0, window=3)


def test_shared_shift_compares_with_the_recent_median():
    assert not shared_shift([], 5.0, rho=1.0, window=3)
    assert not shared_shift([1.0], 50.0, rho=1.0, window=3)  # one round is no level
    assert shared_shift([1.0, 1.0], 2.1, rho=1.0, window=3)
    history = [9.0, 1.0, 2.0, 3.0]  # last 3: median 2
    assert shared_shift(history, 4.1, rho=1.0, window=3)
    assert not shared_shift(history, 4.0, rho=1.0, window=3)
    assert not shared_shift(history, 0.5, rho=1.0, window=3)  # learning settles: no shift


def test_pixel_positions_are_fixed_by_the_seed_and_distinct_per_image():
    a, b = pixel_index(3, 8, 8, 16, seed=4), pixel_index(3, 8, 8, 16, seed=4)
    assert torch.equal(a, b) and len(a) == 48
    assert not torch.equal(a, pixel_index(3, 8, 8, 16, seed=5))
    assert len(set(a[:16].tolist())) == 16 and a[16:32].min() >= 64


@pytest.fixture
def model_pair():
    torch.manual_seed(0)
    model = build_model("unet", NUM_CLASSES)
    torch.manual_seed(1)
    other = build_model("unet", NUM_CLASSES)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return model, other, images


@pytest.mark.parametrize("representation", ["probs", "features"])
def test_reference_outputs_shape_and_determinism(model_pair, representation):
    model, _, images = model_pair
    z = reference_outputs(model, images, pixels_per_image=10, seed=1, representation=representation)
    assert z.shape[0] == 40 and not z.requires_grad
    assert torch.equal(z, reference_outputs(model, images, 10, 1, representation))
    if representation == "probs":
        assert z.shape[1] == NUM_CLASSES
        assert torch.allclose(z.sum(1), torch.ones(40))


@pytest.mark.parametrize("optimizer", ["adam", "normalized"])
def test_consolidation_lowers_the_loss_and_leaves_batchnorm_statistics(model_pair, optimizer):
    model, other, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    anchor = reference_outputs(other, images, 64, 0)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    result = consolidate(model, images, index, anchor, steps=10, lr=1e-2, optimizer=optimizer)
    assert result.steps == 10
    assert result.loss_after < result.loss_before
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name


def test_monotone_consolidation_undoes_a_step_that_raises_the_loss(model_pair):
    # At the anchor (the model's own outputs) a fresh Adam step moves every parameter by
    # ~lr whatever its gradient: the loss goes up, and monotone undoes it exactly.
    model, _, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    anchor = reference_outputs(model, images, 64, 0)
    weights = [p.detach().clone() for p in model.parameters()]
    plain = consolidate(copy.deepcopy(model), images, index, anchor, steps=3, lr=1e-2)
    assert plain.steps == 3 and plain.loss_after > plain.loss_before
    held = consolidate(model, images, index, anchor, steps=3, lr=1e-2, monotone=True)
    assert (held.steps, held.undone) == (0, 1)
    assert held.loss_after == held.loss_before
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))


def test_monotone_consolidation_shortens_a_step_that_overshoots(model_pair):
    # Near the anchor a full Adam step at this lr overshoots; a fraction of it helps.
    model, other, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    near = copy.deepcopy(model)  # a fifth of the way to the other model
    with torch.no_grad():
        for p, q in zip(near.parameters(), other.parameters(), strict=True):
            p.mul_(0.8).add_(0.2 * q)
    anchor = reference_outputs(near, images, 64, 0)
    plain = consolidate(copy.deepcopy(model), images, index, anchor, steps=1, lr=1e-2)
    assert plain.loss_after > plain.loss_before
    held = consolidate(model, images, index, anchor, steps=1, lr=1e-2, monotone=True)
    assert (held.steps, held.undone, held.shortened) == (1, 0, 1)
    assert held.loss_after < held.loss_before


def test_monotone_consolidation_keeps_the_steps_that_lower_the_loss(model_pair):
    model, other, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    anchor = reference_outputs(other, images, 64, 0)
    plain = consolidate(copy.deepcopy(model), images, index, anchor, steps=3, lr=1e-3)
    held = consolidate(model, images, index, anchor, steps=3, lr=1e-3, monotone=True)
    assert (held.steps, held.undone) == (3, 0)  # far from the anchor every step helps
    assert held.loss_after == pytest.approx(plain.loss_after, rel=1e-6)
    assert held.loss_after < held.loss_before


def test_consolidation_on_some_rows_counts_only_those(model_pair):
    # the loss before any step is L_BC of the selected rows of anchor and outputs
    model, other, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    anchor = reference_outputs(other, images, 64, 0)
    rows = anchor.max(dim=1).values >= anchor.max(dim=1).values.median()
    z = reference_outputs(model, images, 64, 0)
    some = consolidate(copy.deepcopy(model), images, index, anchor, steps=0, lr=1e-2, rows=rows)
    every = consolidate(copy.deepcopy(model), images, index, anchor, steps=0, lr=1e-2)
    assert some.loss_before == pytest.approx(barlow_continuity(anchor[rows], z[rows]), rel=1e-5)
    assert every.loss_before == pytest.approx(barlow_continuity(anchor, z), rel=1e-5)
    assert some.loss_before != pytest.approx(every.loss_before)
    stepped = consolidate(model, images, index, anchor, steps=5, lr=1e-2, rows=rows)
    assert stepped.loss_after < stepped.loss_before


def test_a_normalized_step_follows_the_gradient_with_rms_size_lr(model_pair):
    model, other, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    anchor = reference_outputs(other, images, 64, 0)
    probe = copy.deepcopy(model)  # the gradient at the start
    loss = barlow_continuity_loss(anchor, model_outputs(probe, images, index, "probs"))
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in probe.parameters() if p.grad is not None])
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    consolidate(model, images, index, anchor, steps=1, lr=1e-3, optimizer="normalized")
    moved = before - torch.cat([p.detach().flatten() for p in model.parameters()])
    assert moved.pow(2).mean().sqrt() == pytest.approx(1e-3, rel=1e-3)
    assert torch.nn.functional.cosine_similarity(moved, grad, dim=0) > 0.9999
    # a fresh Adam's first step is lr * sign(g): the same size for every parameter
    adam = copy.deepcopy(probe)
    consolidate(adam, images, index, anchor, steps=1, lr=1e-3, optimizer="adam")
    adam_moved = before - torch.cat([p.detach().flatten() for p in adam.parameters()])
    assert adam_moved[grad.abs() > 1e-6].abs().median() == pytest.approx(1e-3, rel=0.01)


@pytest.mark.parametrize("optimizer", ["adam", "normalized"])
def test_consolidation_can_leave_the_layers_that_read_the_tiles(model_pair, optimizer):
    model, other, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    anchor = reference_outputs(other, images, 64, 0)
    held = {id(p) for p in input_parameters(model, images)}
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert held and {id(p) for p in first.parameters()} <= held
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = consolidate(
        model, images, index, anchor, steps=3, lr=1e-2, optimizer=optimizer, consolidate_input=False
    )
    assert result.loss_after < result.loss_before
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (id(p) in held), name


def test_every_configurable_optimizer_is_implemented_and_no_other(model_pair):
    from dataclasses import fields

    from fedcl.strategies.dbc import DBCSettings

    # the choices the dbc-optimizer key declares
    declared = next(f for f in fields(DBCSettings) if f.name == "optimizer").metadata["choices"]
    assert set(declared) == {"adam", "normalized"}
    model, other, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    anchor = reference_outputs(other, images, 64, 0)
    for optimizer in declared:
        assert consolidate(model, images, index, anchor, steps=1, lr=1e-3, optimizer=optimizer)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        consolidate(model, images, index, anchor, steps=1, lr=1e-3, optimizer="sgd")


def test_no_step_when_off(model_pair):
    model, other, images = model_pair
    index = pixel_index(4, 32, 32, 64, seed=0)
    anchor = reference_outputs(other, images, 64, 0)
    weights = [p.detach().clone() for p in model.parameters()]
    off = consolidate(model, images, index, anchor, steps=0, lr=1e-2)
    assert off.steps == 0 and off.loss_after == off.loss_before
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))


@pytest.mark.cuda
@pytest.mark.parametrize("representation", ["probs", "features"])
def test_scores_and_consolidation_on_cuda_agree_with_cpu(model_pair, representation):
    model, other, images = model_pair  # the images stay on the CPU: the functions move them
    gpu = copy.deepcopy(model).cuda()
    z_cpu = reference_outputs(model, images, 64, 0, representation)
    z_gpu = reference_outputs(gpu, images, 64, 0, representation)
    assert z_gpu.is_cuda
    torch.testing.assert_close(z_gpu.cpu(), z_cpu, rtol=1e-3, atol=1e-4)
    anchor = reference_outputs(other, images, 64, 0, representation)  # on the CPU
    score = barlow_continuity(anchor, z_cpu)
    assert barlow_continuity(anchor.cuda(), z_gpu) == pytest.approx(score, rel=1e-3)
    index = pixel_index(4, 32, 32, 64, seed=0)
    buffers = {k: v.clone() for k, v in gpu.named_buffers()}
    result = consolidate(
        gpu, images, index, anchor, steps=5, lr=1e-2, representation=representation
    )
    assert result.loss_before == pytest.approx(score, rel=1e-3)
    assert result.loss_after < result.loss_before
    for name, value in gpu.named_buffers():
        assert torch.equal(value, buffers[name]), name


@pytest.mark.parametrize("stage_length", [3, 4, 5, 8])
def test_every_stage_boundary_is_a_shift_whatever_the_stage_length(stage_length):
    # Movement of a staged run (from round 2): learning settles within a stage, and every
    # boundary jumps; the last rounds of a short stage have not settled back to calm.
    detector = ShiftDetector(rho=3.0, window=10, bound=3)
    fired, rng = [], np.random.default_rng(0)
    for stage in range(3):
        for step in range(stage_length - (stage == 0)):  # round 1 is not measured
            level = 1.0 if stage and step == 0 else 0.3 / (step + 1) if stage else 0.02
            fired.append(detector.update(level * rng.uniform(0.8, 1.2)))
    boundaries = [stage * stage_length - 1 for stage in (1, 2)]  # round -> index (from 2)
    assert all(fired[b] for b in boundaries), fired
    assert not any(fired[: boundaries[0]])  # stage 0: calm


def test_a_shift_is_consolidated_for_at_most_its_bound_and_survives_a_checkpoint():
    detector = ShiftDetector(rho=1.0, window=5, bound=2)
    assert [detector.update(m) for m in (1.0, 1.0, 5.0, 4.0, 4.5, 1.0)] == [
        False, False, True, True, False, False,
    ]  # fmt: skip
    restored = ShiftDetector(rho=1.0, window=5, bound=2)
    restored.load_state_dict(detector.state_dict())
    assert restored.update(5.0) and detector.update(5.0)


def test_a_first_loss_jump_starts_a_shift_the_damped_movement_misses():
    # The second boundary of a held federation (tissue shift, tuning seed 1): the
    # movement barely rises (the teacher holds it down), the first loss jumps 1.7-fold.
    movement = [0.09, 0.09, 0.03, 0.03, 0.20, 0.08, 0.01, 0.00, 0.01, 0.02, 0.00, 0.00]
    loss = [1.87, 1.60, 1.43, 1.20, 1.18, 1.15, 1.17, 1.11, 1.09, 1.87, 1.58, 1.45]
    started = []
    for jump in (0.0, 0.5):
        detector = ShiftDetector(rho=3.0, window=3, bound=3, loss_jump=jump)
        rounds = []
        for r, (m, first) in enumerate(zip(movement, loss, strict=True), start=2):
            detector.update(m, first)
            rounds += [r] if detector.started else []
        started.append(rounds)
    assert started == [[6], [6, 11]]
    detector = ShiftDetector(rho=3.0, window=3, bound=3, loss_jump=0.5)
    for m, first in zip(movement[:9], loss[:9], strict=True):
        detector.update(m, first)
    restored = ShiftDetector(rho=3.0, window=3, bound=3, loss_jump=0.5)
    restored.load_state_dict(detector.state_dict())  # the last first loss goes with it
    assert restored.update(0.02, 1.87) and restored.jumped and restored.started


def test_loss_jump_needs_both_losses_and_a_jump_above_the_factor():
    assert loss_jump(1.0, 1.6, 0.5) and not loss_jump(1.0, 1.5, 0.5)
    assert not loss_jump(None, 3.0, 0.5) and not loss_jump(1.0, None, 0.5)
    assert not loss_jump(1.0, 9.0, 0.0)  # 0: off


class _Named(torch.nn.Module):
    """A network that names its layers for DBC instead of leaving them to be guessed."""

    fedcl_feature_layer = "head"
    fedcl_input_layers = ("stem",)

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.body = torch.nn.Conv2d(6, 7, 1)  # 7 channels: the feature map DBC should read
        self.head = torch.nn.Conv2d(7, NUM_CLASSES, 1)
        self.late = torch.nn.Conv2d(NUM_CLASSES, NUM_CLASSES, 1)  # the last conv: not it

    def forward(self, x):
        return self.late(self.head(self.body(self.stem(x))))


def test_a_network_can_name_the_layers_dbc_uses():
    model, images = _Named(), torch.rand(2, 3, 16, 16)
    index = pixel_index(2, 16, 16, 8, seed=0)
    assert model_outputs(model, images, index, "features").shape == (16, 7)
    assert {id(p) for p in input_parameters(model, images)} == {
        id(p) for p in model.stem.parameters()
    }
    assert "fedcl_feature_layer" not in str(model.state_dict().keys())  # names, not modules
    model.fedcl_input_layers = ("nope",)
    with pytest.raises(ValueError, match="_Named.fedcl_input_layers"):
        input_parameters(model, images)


def test_a_mix_of_two_models_is_their_interpolation_and_keeps_integer_buffers():
    start = {"w": torch.zeros(3), "n": torch.tensor(5)}
    end = {"w": torch.ones(3) * 4, "n": torch.tensor(9)}
    assert torch.equal(mixed(start, end, 0.25)["w"], torch.ones(3))
    assert int(mixed(start, end, 0.25)["n"]) == 5  # BatchNorm's batch count: not a weight
    assert torch.equal(mixed(start, end, 0.0)["w"], start["w"])


def test_the_mix_chosen_on_r_is_between_the_two_behaviours_and_loaded_into_the_model():
    torch.manual_seed(0)
    model = build_model("unet", NUM_CLASSES)
    images = torch.rand(4, 3, 32, 32)
    index = pixel_index(4, 32, 32, 64, seed=0)

    def outputs(m):
        with torch.no_grad():
            return model_outputs(m, images, index)

    teacher = copy.deepcopy(model.state_dict())
    other = build_model("unet", NUM_CLASSES)
    aggregate = copy.deepcopy(other.state_dict())
    alpha, scores = choose_mix(model, teacher, aggregate, outputs, grid=5)
    assert len(scores) == 5 and scores[[0, 0.25, 0.5, 0.75, 1.0].index(alpha)] == min(scores)
    assert 0 < alpha < 1  # two unrelated networks: neither end is nearest both
    held = model.state_dict()
    expected = mixed(aggregate, teacher, alpha)
    assert all(torch.equal(held[k], expected[k]) for k in expected)
    # the same model twice: nothing to mix, the aggregate (alpha 0) kept
    alpha, _ = choose_mix(model, aggregate, aggregate, outputs, grid=5)
    assert alpha == 0.0
