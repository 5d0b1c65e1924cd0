"""LwF: the distillation loss, the training penalty, the hospital's teacher, the strategy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedcl.configure import load_config
from fedcl.data import NUM_CLASSES
from fedcl.data.real import IGNORE
from fedcl.distillation import (
    Distillation,
    PublicDistillation,
    UnbiasedLoss,
    annotated_classes,
    continuity_term,
    distil,
    distillation_loss,
    folded,
)
from fedcl.hospital import local_round
from fedcl.models import build_model
from fedcl.scenarios.tiles import stage_classes
from fedcl.strategies.contract import SentModel
from fedcl.strategies.lwf import (
    TEACHER_KEY,
    TEMPERATURE_KEY,
    TERM_KEY,
    UNBIASED_KEY,
    WEIGHT_KEY,
    LwF,
    LwFHospital,
)
from fedcl.training import recompute_batchnorm, segmentation_loss, train_local
from tests.conftest import FakeGrid, random_tiles


def test_distillation_loss_is_zero_for_equal_outputs_and_the_kl_divergence_otherwise():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    assert float(distillation_loss(a, a.clone(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    # one pixel, two classes, T = 1: KL(p || q) by hand
    student, teacher = torch.tensor([0.0, 0.0]), torch.tensor([math.log(3), 0.0])
    p = [0.75, 0.25]
    expected = sum(pi * math.log(pi / 0.5) for pi in p)
    value = distillation_loss(student.view(1, 2, 1, 1), teacher.view(1, 2, 1, 1), 1.0)
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert float(distillation_loss(a, b, 2.0)) > 0


def test_only_the_student_gets_gradients():
    student = torch.randn(1, 5, 3, 3, requires_grad=True)
    teacher = torch.randn(1, 5, 3, 3, requires_grad=True)
    distillation_loss(student, teacher, 2.0).backward()
    assert student.grad is not None and teacher.grad is None


def test_distilling_keeps_the_model_closer_to_its_teacher():
    data = random_tiles(seed=1)
    images = torch.stack([data[i][0] for i in range(len(data))])
    torch.manual_seed(0)
    teacher = build_model("unet", NUM_CLASSES)
    recompute_batchnorm(teacher, data, 4)  # as a global model's statistics describe tiles
    teacher.eval()
    distances = []
    for weight in (0.0, 10.0):
        model = build_model("unet", NUM_CLASSES)
        model.load_state_dict(teacher.state_dict())
        penalty = Distillation(build_model("unet", NUM_CLASSES), weight=weight, temperature=2.0)
        penalty.teacher.load_state_dict(teacher.state_dict())
        train_local(model, data, epochs=2, batch_size=4, lr=5e-3, penalties=[penalty])
        with torch.no_grad():
            distances.append(float(distillation_loss(model.eval()(images), teacher(images), 1.0)))
    assert distances[1] < 0.5 * distances[0]


def test_invalid_distillation_settings_are_refused():
    with pytest.raises(ValueError, match="temperature > 0"):
        Distillation(build_model("unet", NUM_CLASSES), weight=1.0, temperature=0.0)
    with pytest.raises(ValueError, match="term must be one of"):
        Distillation(build_model("unet", NUM_CLASSES), weight=1.0, temperature=1.0, term="l2")


@pytest.mark.parametrize("term", ["kl", "barlow"])
def test_a_continuity_term_is_zero_for_the_teacher_itself_and_positive_otherwise(term):
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 8, 8)
    student = teacher.clone().requires_grad_(True)
    same = continuity_term(student, teacher, term=term, temperature=2.0)
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-3)
    moved = continuity_term(student + torch.randn(2, 5, 8, 8), teacher, term=term, temperature=2.0)
    assert float(moved.detach()) > 0.01
    moved.backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


class _Recorder(torch.nn.Module):
    """A student that remembers which tiles it saw (each tile's first pixel is its index)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, NUM_CLASSES, 1)
        self.seen: list[int] = []
        self.batches: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.extend(int(v) for v in x[:, 0, 0, 0])
        self.batches.append(x.detach().clone())
        return self.conv(x)


def test_public_distillation_runs_the_student_on_every_public_tile_once_per_pass():
    images = torch.rand(10, 3, 4, 4)
    images[:, 0, 0, 0] = torch.arange(10, dtype=torch.float32)
    student, teacher = _Recorder(), _Recorder()
    penalty = PublicDistillation(
        student, teacher, images, batch_size=4, seed=3, weight=0.5, temperature=2.0
    )
    unused = torch.zeros(2, 3, 4, 4)
    values = [penalty(unused, torch.zeros(2, NUM_CLASSES, 4, 4)) for _ in range(5)]
    # 4 + 4 tiles of one permutation, then a fresh one (2 left over are not enough)
    assert len(set(student.seen[:8])) == 8 and len(set(student.seen[8:16])) == 8
    assert len(student.seen) == 20
    assert student.seen == teacher.seen  # both models see the same public batch
    assert all(v.requires_grad for v in values)  # the student's outputs carry gradients
    again = PublicDistillation(_Recorder(), _Recorder(), images, batch_size=4, seed=3,
                               weight=0.5, temperature=2.0)  # fmt: skip
    again(unused, unused)
    assert again.student.seen == student.seen[:4]  # the seed fixes the order


def penalties(config, server_round, model, state, weight=1.0, teacher=None):
    """LwF's hospital half in a round whose message sends ``weight`` (and ``teacher``)."""
    sent = ConfigRecord({WEIGHT_KEY: weight, TEMPERATURE_KEY: 2.0})
    content = RecordDict({"config": sent} | ({TEACHER_KEY: teacher} if teacher else {}))
    now = local_round(
        config, 0, server_round, sent=sent, content=content, state=state, training=True
    )
    return LwFHospital(now).penalties(model)


def test_a_teacher_the_server_sends_replaces_the_hospitals_own():
    # after a resume the hospital's state is gone; the server's copy is the teacher
    config = load_config(
        {"scenario": "catastrophic-forgetting", "stages": 2, "rounds-per-stage": 3}
    )
    sent, received = build_model("unet", NUM_CLASSES), build_model("unet", NUM_CLASSES)
    torch.nn.init.constant_(next(sent.parameters()), 7.0)
    teacher = ArrayRecord(sent.state_dict())
    (penalty,) = penalties(config, 5, received, RecordDict(), teacher=teacher)
    assert torch.equal(next(penalty.teacher.parameters()), next(sent.parameters()))


def test_the_teacher_is_the_first_model_a_hospital_receives_in_a_stage():
    config = load_config(
        {"scenario": "catastrophic-forgetting", "stages": 3, "rounds-per-stage": 2}
    )
    state = RecordDict()
    models = [build_model("unet", NUM_CLASSES) for _ in range(4)]
    for i, model in enumerate(models):
        torch.nn.init.constant_(next(model.parameters()), float(i))
    assert penalties(config, 2, models[0], state) == []  # stage 0: no past
    assert penalties(config, 3, models[1], state, weight=0.0) == []  # weight 0: no term
    first = penalties(config, 3, models[1], state)  # stage 1 starts
    later = penalties(config, 4, models[2], state)  # same stage: same teacher
    last = penalties(config, 5, models[3], state)  # stage 2: a new teacher
    for got, source in ((first, 1), (later, 1), (last, 3)):
        (penalty,) = got
        assert isinstance(penalty, Distillation) and penalty.weight == 1.0
        weight = next(penalty.teacher.parameters())
        assert torch.equal(weight, next(models[source].parameters())), source


@pytest.mark.usefixtures("flower_task")
def test_lwf_tells_the_hospitals_how_to_distil():
    config = load_config(
        {"strategy": "lwf", "scenario": "catastrophic-forgetting", "stages": 2}
        | {"rounds-per-stage": 2}
    ).with_keys({"lwf-weight": 0.5, "lwf-temperature": 3.0})
    strategy = LwF.from_config(config, SentModel())
    assert isinstance(strategy, LwF)
    models = [ArrayRecord(build_model("unet", NUM_CLASSES).state_dict()) for _ in range(3)]

    def configure(server_round, arrays):
        return list(strategy.configure_train(server_round, arrays, ConfigRecord(), FakeGrid(5)))

    messages = configure(1, models[0])
    sent = messages[0].content.config_records["config"]
    assert (sent[WEIGHT_KEY], sent[TEMPERATURE_KEY]) == (0.5, 3.0)
    assert strategy.teacher is None  # stage 1: nothing to remember
    configure(3, models[1])  # stage 2 starts: its first global model is the teacher
    assert strategy.teacher is models[1] and TEACHER_KEY not in messages[0].content
    # a checkpoint keeps it; the first round after a resume sends it, once
    resumed = LwF.from_config(config, SentModel())
    resumed.load_state_dict(strategy.state_dict())
    strategy = resumed
    first, later = configure(4, models[2]), configure(4, models[2])
    for message in first:
        teacher = message.content.array_records[TEACHER_KEY].to_torch_state_dict()
        expected = models[1].to_torch_state_dict()
        assert all(torch.equal(teacher[k], expected[k]) for k in expected)
    assert all(TEACHER_KEY not in m.content.array_records for m in later)


def test_the_mib_term_leaves_the_newly_annotated_classes_to_the_labels():
    # one pixel: the teacher calls it background, the student class 3 (annotated now)
    teacher = torch.tensor([4.0, 0.0, 0.0, 0.0, 0.0]).view(1, 5, 1, 1)
    student = torch.tensor([0.0, 0.0, 0.0, 4.0, 0.0]).view(1, 5, 1, 1)
    kl = continuity_term(student, teacher, term="kl", temperature=1.0)
    mib = continuity_term(student, teacher, term="mib", temperature=1.0, new_classes=(3,))
    assert float(kl) > 1.0 and float(mib) < 0.05 * float(kl)
    # but it holds the old classes: the student moving class 1 into class 2 costs the same
    old = torch.tensor([0.0, 4.0, 0.0, 0.0, 0.0]).view(1, 5, 1, 1)
    moved = torch.tensor([0.0, 0.0, 4.0, 0.0, 0.0]).view(1, 5, 1, 1)
    assert float(continuity_term(moved, old, term="mib", temperature=1.0, new_classes=(3,))) == (
        pytest.approx(float(continuity_term(moved, old, term="kl", temperature=1.0)), rel=0.05)
    )
    # nothing newly annotated: it is the KL term
    a, b = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    assert float(continuity_term(a, b, term="mib", temperature=2.0)) == pytest.approx(
        float(distillation_loss(a, b, 2.0)), rel=1e-5
    )
    log_probs = torch.log_softmax(torch.randn(2, 5, 3, 3), dim=1)
    merged = folded(log_probs, (2, 4))
    assert merged.shape == (2, 3, 3, 3)
    assert torch.allclose(merged.exp().sum(1), torch.ones(2, 3, 3), atol=1e-5)
    expected = log_probs[:, [0, 2, 4]].exp().sum(1)
    assert torch.allclose(merged[:, 0].exp(), expected, atol=1e-6)
    masks = np.array([[0, 2], [IGNORE, 2]], dtype=np.uint8)
    assert annotated_classes(masks) == (2,)


def test_lwf_with_the_mib_term_folds_the_classes_a_hospital_annotates_now():
    config = load_config(
        {"scenario": "catastrophic-forgetting", "stage-shift": "classes", "stages": 3}
        | {"rounds-per-stage": 2, "image-size": 32, "train-tiles": 8}
    )
    sent = ConfigRecord({WEIGHT_KEY: 1.0, TEMPERATURE_KEY: 2.0, TERM_KEY: "mib"})
    content = RecordDict({"config": sent})
    now = local_round(config, 0, 3, sent=sent, content=content, state=RecordDict(), training=True)
    (penalty,) = LwFHospital(now).penalties(build_model("unet", NUM_CLASSES))
    assert penalty.term == "mib" and penalty.new_classes == stage_classes(config, 1)


def test_public_batches_can_be_augmented_and_the_server_can_distil_on_them():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 8, 8)
    student, teacher = _Recorder(), _Recorder()
    penalty = PublicDistillation(student, teacher, images, batch_size=6, seed=1, augment=True,
                                 weight=1.0, temperature=2.0)  # fmt: skip
    penalty(images, images)
    (seen,) = student.batches
    symmetries = [
        torch.rot90(images.flip(-1) if flip else images, k, dims=(-2, -1))
        for flip in (0, 1)
        for k in range(4)
    ]
    order = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    assert any(torch.equal(seen, s[order]) for s in symmetries)  # one of the 8, whole batch
    # distillation at the server: the student moves toward the teacher; the teacher stays
    model, frozen = build_model("unet", NUM_CLASSES), build_model("unet", NUM_CLASSES)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    tiles = torch.rand(8, 3, 32, 32)
    start = float(continuity_term(model.eval()(tiles), frozen.eval()(tiles), term="kl",
                                  temperature=2.0).detach())  # fmt: skip
    distil(model, frozen, tiles, steps=15, lr=1e-3, batch_size=4, seed=0, temperature=2.0)
    after = float(continuity_term(model.eval()(tiles), frozen.eval()(tiles), term="kl",
                                  temperature=2.0).detach())  # fmt: skip
    assert after < start
    assert all(torch.equal(v, before[k]) for k, v in frozen.state_dict().items())


def test_the_unbiased_loss_lets_a_background_pixel_be_an_old_class():
    torch.manual_seed(0)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2] = 3  # the class annotated now; the rest is "background"
    old_class = torch.full((1, NUM_CLASSES, 4, 4), -4.0)
    old_class[0, 3, :2] = 4.0  # right where class 3 is
    old_class[0, 1, 2:] = 4.0  # the background pixels predicted as class 1 (an old class)
    background = old_class.clone()
    background[0, 1, 2:], background[0, 0, 2:] = -4.0, 4.0
    biased, unbiased = segmentation_loss(), UnbiasedLoss((3,), NUM_CLASSES)
    assert float(biased(old_class, labels)) > float(biased(background, labels)) + 0.5
    # unbiased: calling an unannotated pixel class 1 costs what calling it background does
    assert float(unbiased(old_class, labels)) == pytest.approx(
        float(unbiased(background, labels)), abs=1e-4
    )
    # every class annotated: nothing folded, fedcl's own loss
    logits = torch.randn(2, NUM_CLASSES, 4, 4)
    full = torch.randint(0, NUM_CLASSES, (2, 4, 4))
    everything = UnbiasedLoss(tuple(range(1, NUM_CLASSES)), NUM_CLASSES)
    assert float(everything(logits, full)) == pytest.approx(float(biased(logits, full)), rel=1e-5)
    ignored = full.clone()
    ignored[0, 0, 0] = IGNORE  # real data's unannotated pixels stay out of the score
    assert torch.isfinite(everything(logits, ignored))


def test_lwf_can_train_with_the_unbiased_loss_from_the_second_stage_on():
    config = load_config(
        {"scenario": "catastrophic-forgetting", "stage-shift": "classes", "stages": 3}
        | {"rounds-per-stage": 2, "image-size": 32, "train-tiles": 8}
    )

    def half(server_round, unbiased):
        sent = ConfigRecord({WEIGHT_KEY: 1.0, TEMPERATURE_KEY: 2.0, TERM_KEY: "mib",
                             UNBIASED_KEY: unbiased})  # fmt: skip
        now = local_round(config, 0, server_round, sent=sent, content=RecordDict({"config": sent}),
                          state=RecordDict(), training=True)  # fmt: skip
        return LwFHospital(now)

    assert half(2, True).criterion() is None  # stage 0: nothing to keep
    assert half(3, False).criterion() is None
    unbiased = half(3, True).criterion()
    assert isinstance(unbiased, UnbiasedLoss)
    assert unbiased.unannotated == [c for c in range(1, NUM_CLASSES) if c not in
                                    stage_classes(config, 1)]  # fmt: skip
