"""The Dynamic Barlow Continuity strategy (``--strategy dbc``).

A Flower ``FedAvg`` whose ``aggregate_train`` first scores every reply on the server's
public reference set and rejects the outliers, watches the global model's movement on
it for a shift all hospitals share, and then guides the hospitals' training: from the
round after a shift it sends them the model from before it, to hold their training to
(:mod:`fedcl.strategies.dbc.hospital`); it can also consolidate the aggregate toward
the EMA anchor of the global model's past behaviour itself (docs/dbc.md). The math is
in :mod:`fedcl.continuity`; this class wires it into Flower and keeps the state that
lives across rounds (the anchor, the teacher, each hospital's evidence, the movement
history).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any, ClassVar

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from fedcl import seeds
from fedcl.config import RunConfig, Section
from fedcl.continuity import (
    EvidenceFilter,
    ShiftDetector,
    barlow_continuity,
    barlow_continuity_columns,
    consolidate,
    largest_shares,
    model_outputs,
    pixel_index,
    update_anchor,
)
from fedcl.continuity.consolidation import choose_mix
from fedcl.data import NUM_CLASSES, reference_images
from fedcl.data.dataset import images_to_tensor
from fedcl.data.reference import public_set
from fedcl.distillation import distil
from fedcl.models import build_model
from fedcl.scenarios import scenario_of
from fedcl.strategies.contract import RoundReport, SentModel, SentOnce
from fedcl.strategies.dbc.hospital import (
    ANNOTATED_KEY,
    TEACHER_CLASSES_KEY,
    TEACHER_KEY,
    TEACHER_ROUND_KEY,
    TEACHER_SCALE_KEY,
    DBCHospital,
)
from fedcl.strategies.dbc.settings import DBCSettings
from fedcl.strategies.flower import sampling
from fedcl.strategies.replies import first_loss, partition_of
from fedcl.strategies.server_stats import (
    require_running_stats,
    unlabeled,
    with_server_statistics,
)
from fedcl.training import recompute_batchnorm, resolve_device

ACCEPTED, OUTLIER = "accepted", "rejected-outlier"


def _to_arrays(model: nn.Module) -> ArrayRecord:
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


class DynamicBarlowContinuity(FedAvg):
    """FedAvg guarded by Barlow continuity on a public reference set, which finds shifts.

    When every hospital shifts, its hospital half (:class:`DBCHospital`) holds the
    hospitals' training to the model from before the shift.

    Its own keys are :class:`~fedcl.strategies.dbc.settings.DBCSettings` (``dbc-*``).

    Parameters
    ----------
    reference_images : torch.Tensor
        ``M x 3 x H x W`` unlabeled reference tiles in 0..1, held by the server.
    model_fn : callable
        Builds a fresh network of the federation's architecture (to load replies into).
    settings : DBCSettings, optional
        The DBC constants (kappa, beta, warmup, consolidation, ...); defaults per
        docs/dbc.md.
    seed : int
        Seeds the fixed reference pixel positions.
    device : str or torch.device
        Where scoring and consolidation run (the reference set lives there too).
    drifted : callable, optional
        ``drifted(hospital, server_round)``: whether the scenario drifted that hospital in
        that round. Only ``filter_rule = "oracle"`` reads it (and needs it): it rejects
        exactly those, the upper bound of what any filter could do in a simulation.
    **fedavg_kwargs
        Passed to ``FedAvg`` (sampling, keys). Accepted replies are aggregated by FedAvg
        (weights = ``num-examples``).
    sent : SentModel, optional
        The global model of the round. fedcl runs every strategy inside a
        :class:`~fedcl.strategies.guard.GuardedStrategy`, which keeps it and drops
        malformed, hostile and error replies before this strategy sees them.

    Attributes
    ----------
    round_report : dict or None
        What the last ``aggregate_train`` decided and measured, per hospital: peer and
        anchor scores, decisions, the threshold, the movement, whether a shift began,
        the teacher's round, the bytes sent beyond FedAvg's, the consolidation losses
        and steps, and the seconds spent (fedcl writes it into ``metrics.jsonl``).
    """

    hospital = DBCHospital
    sections: ClassVar[tuple[type[Section], ...]] = (DBCSettings,)
    server_tiles: ClassVar[tuple[str, ...]] = ("reference_set",)  # the public tiles it scores on

    def __init__(
        self,
        *,
        reference_images: torch.Tensor,
        model_fn: Callable[[], nn.Module],
        settings: DBCSettings | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drifted: Callable[[Hashable, int], bool] | None = None,
        sent: SentModel | None = None,
        reference_of: Callable[[int], tuple[tuple[int, ...], torch.Tensor]] | None = None,
        batch_size: int = 16,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.seed, self.batch_size, self.model_fn = seed, batch_size, model_fn
        self.device = device
        self.reference_of = reference_of
        self.reference_stages: tuple[int, ...] | None = None  # what reference_images holds
        self.settings = settings or DBCSettings()
        self.sent = sent or SentModel()
        self.filter = EvidenceFilter(self.settings, drifted)
        self._set_reference(reference_images)
        m, _, h, w = reference_images.shape
        self.pixel_index = pixel_index(m, h, w, self.settings.pixels_per_image, seed)
        self.model = model_fn()  # one instance, reloaded per reply: no re-construction
        self.teacher_model: nn.Module | None = None  # distillation at the server only
        self.model.to(device).to(memory_format=torch.channels_last)
        self.anchor: torch.Tensor | None = None
        self.shifts = ShiftDetector(
            rho=self.settings.rho,
            window=self.settings.calm_rounds,
            bound=self.settings.shift_rounds,
            loss_jump=self.settings.loss_jump,
        )
        # Z of the last aggregate before consolidation (only when consolidation changed it)
        self.unconsolidated: torch.Tensor | None = None
        # The hospitals' teacher: the global model the last detected shift began from
        self.teacher: ArrayRecord | None = None
        self.teacher_round = 0  # the round that shift was found in (0: none yet)
        self.once = SentOnce()  # sends it to each hospital once
        # the classes the hospitals' masks annotated so far (mib term; class_bits), and
        # those annotated before the teacher's round: the classes it was trained on
        self.annotated = 0
        self.teacher_classes = 0
        # the movement of the round the teacher was named in, and of the last round
        # (dbc-teacher-strength = movement scales the term by their ratio)
        self.shift_movement: float | None = None
        self.last_movement: float | None = None
        self.round_report: RoundReport | None = None

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """Refuse ``dbc-server-stats`` with a network that keeps no statistics to re-estimate."""
        if config.section(DBCSettings).server_stats:
            require_running_stats(config, "config key 'dbc-server-stats'", "dbc-server-stats false")

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> DynamicBarlowContinuity:
        """Every hospital every round; the ``dbc-*`` settings; the server's reference set.

        ``drifted`` (for the oracle filter only) asks the scenario.
        """
        scenario = scenario_of(config)
        reference_of = public_set(
            config, lambda server_round: images_to_tensor(reference_images(config, server_round))
        )
        return cls(
            **sampling(config),
            reference_images=reference_of(1)[1],
            model_fn=lambda: build_model(config.model, NUM_CLASSES),
            settings=config.section(DBCSettings),
            seed=config.seed,
            device=resolve_device(config.device),
            drifted=lambda hospital, server_round: (
                isinstance(hospital, int) and scenario.is_drifted(hospital, server_round)
            ),
            sent=sent,
            reference_of=reference_of,
            batch_size=config.batch_size,
        )

    def summary(self) -> None:
        """Log the DBC settings after FedAvg's summary."""
        super().summary()
        log(logging.INFO, "\t└──> DBC: %s", self.settings)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, naming the teacher; it goes to each hospital once."""
        config[TEACHER_ROUND_KEY] = self.teacher_round
        config[TEACHER_SCALE_KEY] = self.teacher_scale()
        config[TEACHER_CLASSES_KEY] = self.teacher_classes
        return self.once.attach(super().configure_train(server_round, arrays, config, grid))

    def teacher_scale(self) -> float:
        """Return the factor of the hospitals' teacher weight for the next round.

        1 with ``teacher-strength = constant``; with ``movement``, the last round's
        movement over the movement of the round the teacher was named in, at most 1.
        """
        moved, at_shift = self.last_movement, self.shift_movement
        if self.settings.teacher_strength == "constant" or moved is None or not at_shift:
            return 1.0
        return min(1.0, moved / at_shift)

    def _outputs(self, state_dict: dict[str, torch.Tensor]) -> torch.Tensor:
        self.model.load_state_dict(state_dict)
        return self._model_outputs(self.model)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Score, filter, aggregate, consolidate, report (docs/dbc.md, steps 1-5)."""
        started = time.perf_counter()
        replies = list(replies)  # well formed: the guard screened them (strategies.guard)
        changed = self._public_set(server_round)

        # 1. Score: the global model's outputs on R, and every reply's.
        z_global = self._outputs(self.sent().to_torch_state_dict())
        if changed and self.anchor is not None:
            # outputs on tiles that are gone say nothing of the new ones: the anchor starts
            # again from the model the round began with, on the tiles the server now has
            self.anchor, self.unconsolidated = z_global.clone(), None
        z_replies = [
            self._outputs(msg.content.array_records[self.arrayrecord_key].to_torch_state_dict())
            for msg in replies
        ]
        # 2. Spatial filter against the peer consensus.
        scores = self._spatial(server_round, replies, z_global, z_replies)
        if self.anchor is not None:  # before the anchor moves on: what consolidation aimed at
            lam = self.settings.offdiag
            scores["anchor_continuity"] = [
                barlow_continuity(self.anchor, z, lam) for z in z_replies
            ]
        accepted = [m for m, d in zip(replies, scores["decisions"], strict=True) if d == ACCEPTED]
        scored = time.perf_counter()
        # 3. Aggregate the accepted replies (FedAvg, weights num-examples).
        arrays, metrics = None, None
        if accepted:
            arrays, metrics = super().aggregate_train(server_round, accepted)
        # 4. The temporal side: a shift found names the hospitals' teacher; consolidation
        # toward the anchor (or the teacher) while a shift all share lasts.
        movement, shift = self._temporal(
            server_round, z_global, z_replies, scores, first_loss(replies)
        )
        shift_began = movement is not None and self.shifts.started
        if movement is not None:
            self.last_movement = movement
        extra_bytes = self._teach(server_round, replies, shift_began)
        consolidation: dict[str, Any] | None = None
        toward = self.anchor if self.settings.consolidate_by == "anchor" else self.teacher
        rewound = shift_began and self.settings.rewind and self.teacher_round == server_round
        if rewound:
            arrays = self.teacher
        elif arrays is not None and toward is not None:
            arrays, consolidation = self._consolidate(server_round, arrays, shift)
        if arrays is not None and self.settings.server_stats:  # the public tiles' statistics
            tiles, batch = self.reference_tiles, self.batch_size
            arrays = with_server_statistics(arrays, self.model, tiles, batch)
        # 5. Report.
        self.round_report = scores | RoundReport(
            all_rejected=arrays is None,
            movement=movement,
            shift_length=len(self.shifts.shift),
            shift_started=shift_began,
            teacher_round=self.teacher_round,
            rewound=rewound,
            teacher_scale=self.teacher_scale(),
            extra_bytes=extra_bytes,
            consolidation=consolidation,
            seconds_scoring=round(scored - started, 4),
            seconds_consolidation=round(time.perf_counter() - scored, 4),
        )
        return arrays, metrics

    def _teach(self, server_round: int, replies: list[Message], shift_began: bool) -> int:
        """Name a new teacher when a shift began this round; return the bytes sent to teach.

        The teacher is the global model this round started from: the last one trained
        before the shift. A hospital holds it once it has answered a message that
        carried it.
        """
        sent = self.once.delivered(replies)
        if shift_began and self.settings.teacher_weight > 0:
            self.teacher, self.teacher_round = self.sent(), server_round
            self.teacher_classes = self.annotated  # before this round's replies
            self.once.set({TEACHER_KEY: self.teacher})
            self.shift_movement = self.last_movement
        for msg in replies:
            record = msg.content.config_records.get(ANNOTATED_KEY)
            classes = None if record is None else record.get("classes")
            # a reply's word, not the guard's: anything but a class bitmask is ignored
            if isinstance(classes, int) and not isinstance(classes, bool) and classes >= 0:
                self.annotated |= classes
        return sent

    def _public_set(self, server_round: int) -> bool:
        """Take the round's public reference set; whether it changed (``public-stages``)."""
        if self.reference_of is None:
            return False
        stages, images = self.reference_of(server_round)
        # None: the first round, or the first after resuming a checkpoint without them
        changed = self.reference_stages is not None and stages != self.reference_stages
        self.reference_stages = stages
        if images is not self._reference_source:
            self._set_reference(images)
        return changed

    def _set_reference(self, images: torch.Tensor) -> None:
        self._reference_source = images
        # Channels-last: the scoring forward passes run faster on CPU (docs/BENCHMARKS.md).
        self.reference_images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        # the same tiles as a dataset (uint8, masks unused): for re-estimating statistics
        self.reference_tiles = unlabeled(
            (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        )

    def _spatial(
        self,
        server_round: int,
        replies: list[Message],
        z_global: torch.Tensor,
        z_replies: list[torch.Tensor],
    ) -> RoundReport:
        """Score each reply against the peer consensus and the global model; decide."""
        lam, n = self.settings.offdiag, len(replies)
        hospitals = [partition_of(msg) for msg in replies]
        scores = RoundReport(
            hospitals=hospitals,
            decisions=[ACCEPTED] * n,
            peer_scores=[None] * n,
            anchor_scores=[None] * n,
            evidence=[None] * n,
            threshold=None,
        )
        if not z_replies:
            return scores
        consensus = torch.stack(z_replies).median(dim=0).values
        peer = [barlow_continuity(consensus, z, lam) for z in z_replies]
        # a hospital is its partition id; a plug-in ClientApp without one: its node
        identities: list[int | str] = [
            h if h is not None else f"node-{msg.metadata.src_node_id}"
            for h, msg in zip(hospitals, replies, strict=True)
        ]
        columns = [barlow_continuity_columns(consensus, z, lam) for z in z_replies]
        compared = peer if self.settings.peer_score == "mean" else largest_shares(columns)
        rejected, scores["threshold"] = self.filter.update(identities, compared, server_round)
        scores["peer_scores"] = peer
        scores["peer_columns"] = columns
        scores["output_means"] = [z.mean(dim=0).tolist() for z in z_replies]
        scores["anchor_scores"] = [barlow_continuity(z_global, z, lam) for z in z_replies]
        scores["evidence"] = [self.filter.mean_evidence(h) for h in identities]
        scores["decisions"] = [OUTLIER if out else ACCEPTED for out in rejected]
        return scores

    def _temporal(
        self,
        server_round: int,
        z_global: torch.Tensor,
        z_replies: list[torch.Tensor],
        scores: RoundReport,
        first: float | None,
    ) -> tuple[float | None, bool]:
        """Move the anchor on, measure the round's movement, tell a shift all share.

        The anchor starts after warm-up; the movement history after warm-up or with
        round 2 (round 1 leaves the random start: its movement is never a calm level).
        """
        settings = self.settings
        if server_round > settings.warmup:
            self.anchor = update_anchor(self.anchor, z_global, settings.beta)
        movement, shift = None, False
        if server_round > (settings.warmup if settings.calm_after_warmup else 1):
            movement = self._movement(z_replies, scores)
        if movement is not None:
            shift = self.shifts.update(movement, first)
        scores["first_loss"] = first
        scores["loss_jumped"] = movement is not None and self.shifts.jumped
        self.unconsolidated = None  # this round's consolidation sets it again if it moves
        return movement, shift

    def _movement(self, z_replies: list[torch.Tensor], scores: RoundReport) -> float | None:
        """Measure the round's movement: the median over accepted replies of how far each moved.

        From the model it started from (its anchor score), or with ``movement_from =
        "aggregate"`` from the last aggregate before consolidation, where there was one.
        None when nothing was accepted.
        """
        accepted = [
            (z, a)
            for z, a, d in zip(z_replies, scores["anchor_scores"], scores["decisions"], strict=True)
            if d == ACCEPTED
        ]
        if self.settings.movement_from == "aggregate" and self.unconsolidated is not None:
            lam = self.settings.offdiag
            found = [barlow_continuity(self.unconsolidated, z, lam) for z, _ in accepted]
        else:
            found = [a for _, a in accepted if a is not None]
        return statistics.median(found) if found else None

    def _consolidate(
        self, server_round: int, arrays: ArrayRecord, shift: bool
    ) -> tuple[ArrayRecord, dict[str, Any]]:
        mode, by = self.settings.consolidation, self.settings.consolidate_by
        active = mode == "always" or (mode == "adaptive" and shift)
        if by == "anchor":
            return self._toward_anchor(arrays, shift, self.settings.steps if active else 0)
        report: dict[str, Any] = {"mode": mode, "by": by, "shift": shift, "steps": 0}
        if not active:
            return arrays, report
        assert self.teacher is not None
        state, teacher = arrays.to_torch_state_dict(), self.teacher.to_torch_state_dict()
        if by == "mix":
            alpha, scores = choose_mix(
                self.model,
                teacher,
                state,
                self._model_outputs,
                grid=self.settings.mix_grid,
                lambda_offdiag=self.settings.offdiag,
            )
            return (_to_arrays(self.model) if alpha > 0 else arrays), report | {
                "mix": alpha,
                "mix_scores": scores,
            }
        # by == "teacher": distil on the public tiles, then their statistics
        if self.teacher_model is None:
            self.teacher_model = self.model_fn().to(self.device)
        self.teacher_model.load_state_dict(teacher)
        self.model.load_state_dict(state)
        order = seeds.stream(self.seed, seeds.SERVER_DISTIL, server_round).generate_state(1)[0]
        loss = distil(
            self.model,
            self.teacher_model,
            self.reference_images,
            steps=self.settings.steps,
            lr=self.settings.lr,
            batch_size=self.batch_size,
            seed=int(order),
            temperature=self.settings.teacher_temperature,
        )
        recompute_batchnorm(self.model, self.reference_tiles, self.batch_size)
        return _to_arrays(self.model), report | {"steps": self.settings.steps, "loss": loss}

    def _model_outputs(self, model: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model_outputs(
                model, self.reference_images, self.pixel_index, self.settings.representation
            )

    def _toward_anchor(
        self, arrays: ArrayRecord, shift: bool, steps: int
    ) -> tuple[ArrayRecord, dict[str, Any]]:
        assert self.anchor is not None
        settings = self.settings
        mode = settings.consolidation
        rows = None
        if settings.confident > 0:  # only what the old model knew
            rows = self.anchor.max(dim=1).values >= settings.confident
            if int(rows.sum()) < 2:  # nothing to correlate over: leave the aggregate
                rows, steps = None, 0
        state = arrays.to_torch_state_dict()
        if steps and settings.movement_from == "aggregate":
            self.unconsolidated = self._outputs(state)  # loads the aggregate into self.model
        else:
            self.model.load_state_dict(state)
        result = consolidate(
            self.model,
            self.reference_images,
            self.pixel_index,
            self.anchor,
            steps=steps,
            lr=settings.lr,
            optimizer=settings.optimizer,
            consolidate_input=settings.consolidate_input,
            representation=settings.representation,
            lambda_offdiag=settings.offdiag,
            rows=rows,
            monotone=settings.monotone,
        )
        report = {
            "mode": mode,
            "shift": shift,
            "pixels": self.anchor.shape[0] if rows is None else int(rows.sum()),
            "loss_before": result.loss_before,
            "loss_after": result.loss_after,
            "steps": result.steps,
            "undone": result.undone,
            "shortened": result.shortened,
        }
        if result.steps == 0:
            return arrays, report
        return _to_arrays(self.model), report

    def state_dict(self) -> dict[str, Any]:
        """DBC's cross-round state (for checkpoints): anchor, evidence, shift detector."""
        return {
            "anchor": self.anchor,
            "evidence": self.filter.state_dict(),
            "shifts": self.shifts.state_dict(),
            "unconsolidated": self.unconsolidated,
            "reference_stages": self.reference_stages,
            "teacher": None if self.teacher is None else self.teacher.to_torch_state_dict(),
            "teacher_round": self.teacher_round,
            "shift_movement": self.shift_movement,
            "last_movement": self.last_movement,
            "annotated": self.annotated,
            "teacher_classes": self.teacher_classes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the anchor onto this strategy's device)."""
        anchor = state["anchor"]
        self.anchor = None if anchor is None else anchor.to(self.reference_images.device)
        self.filter.load_state_dict(state["evidence"])
        if "shifts" in state:
            self.shifts.load_state_dict(state["shifts"])
        else:  # a checkpoint before the detector: its calm history and shift length
            length = state.get("shift_length", 0)
            self.shifts.load_state_dict({"calm": state["movement"], "shift": [math.inf] * length})
        self.reference_stages = state.get("reference_stages")  # the anchor's tiles
        teacher = state.get("teacher")  # absent in checkpoints before version 0.4
        self.teacher = None if teacher is None else ArrayRecord(teacher)
        self.teacher_round = state.get("teacher_round", 0)
        self.shift_movement = state.get("shift_movement")
        self.last_movement = state.get("last_movement")
        self.annotated = state.get("annotated", 0)
        self.teacher_classes = state.get("teacher_classes", 0)
        # the hospitals' state is gone: send it again
        self.once.set({} if self.teacher is None else {TEACHER_KEY: self.teacher})
        unconsolidated = state.get("unconsolidated")  # absent in checkpoints before 2026-11-26
        self.unconsolidated = (
            None if unconsolidated is None else unconsolidated.to(self.reference_images.device)
        )
