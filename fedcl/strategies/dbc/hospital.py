"""DBC's hospital half: hold the training to the model from before the shift.

When the server's shift detector finds a shift all hospitals share (the movement of
the global model's behaviour on the reference set jumps above its calm level), the
server freezes the global model that round started from (the last calm round's) as
the *teacher* and sends it once to each hospital. From then until the next shift every
hospital adds a term toward it to its local loss: on its current tiles and, the
reference set being public, on the public tiles too (:mod:`fedcl.distillation`). No
stage boundary is read from the scenario: the server alone decides when, by what it
measures.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, RecordDict
from torch import nn

from fedcl import seeds
from fedcl.data import apart_images, reference_images
from fedcl.data.dataset import images_to_tensor
from fedcl.distillation import (
    Distillation,
    PublicDistillation,
    bits_classes,
    class_bits,
    current_classes,
    unbiased_loss,
)
from fedcl.errors import FedclError
from fedcl.strategies.dbc.settings import DBCSettings
from fedcl.strategies.hospital_half import HospitalHalf
from fedcl.training import Penalty

# Message keys: the teacher's arrays (content, sent once per hospital and teacher), the
# round whose start model it is (train config; 0: no teacher yet), the factor of the
# term's weight this round (train config; dbc-teacher-strength), and the classes the
# teacher was trained on (train config, distillation.class_bits). With the mib term a
# hospital replies with the classes its masks annotate (a ConfigRecord, "classes").
TEACHER_KEY, TEACHER_ROUND_KEY = "dbc-teacher", "dbc-teacher-round"
TEACHER_SCALE_KEY, TEACHER_CLASSES_KEY = "dbc-teacher-scale", "dbc-teacher-classes"
ANNOTATED_KEY = "dbc-annotated"
# Context.state entry of a hospital's teacher (and its "-meta": the teacher's round).
_STATE_KEY = "fedcl-dbc-teacher"


class DBCHospital(HospitalHalf):
    """Add the teacher terms to the local loss once the server has named a teacher."""

    def criterion(self) -> nn.Module | None:
        """MiB's unbiased loss once a teacher is named, with ``unbiased-loss`` (else fedcl's)."""
        settings = self.now.config.section(DBCSettings)
        named = int(self.now.sent.get(TEACHER_ROUND_KEY, 0))  # type: ignore[arg-type]
        if not settings.unbiased_loss or settings.teacher_weight == 0 or named == 0:
            return None
        return unbiased_loss(self.annotated)

    def penalties(self, model: nn.Module) -> list[Penalty]:
        """Return the terms on the current tiles and on the public ones (``dbc-teacher-*``)."""
        now = self.now
        settings = now.config.section(DBCSettings)
        teacher_round = int(now.sent.get(TEACHER_ROUND_KEY, 0))  # type: ignore[arg-type]
        if settings.teacher_weight == 0 or teacher_round == 0:
            return []
        arrays = now.content.array_records.get(TEACHER_KEY)
        if arrays is not None:
            now.state[_STATE_KEY] = arrays
            now.state[f"{_STATE_KEY}-meta"] = ConfigRecord({"round": teacher_round})
        meta = now.state.config_records.get(f"{_STATE_KEY}-meta")
        if meta is None or meta.get("round") != teacher_round:
            raise FedclError(
                f"hospital {now.hospital}: the server names the teacher of round "
                f"{teacher_round} but never sent it to this hospital (it holds "
                f"{'none' if meta is None else 'round ' + str(meta.get('round'))})"
            )
        teacher = self.kept_model(_STATE_KEY, model)
        scale = float(now.sent.get(TEACHER_SCALE_KEY, 1.0))  # type: ignore[arg-type]
        terms: dict[str, Any] = {
            "weight": settings.teacher_weight * scale,
            "temperature": settings.teacher_temperature,
            "term": settings.teacher_term,
            "new_classes": current_classes(
                settings.teacher_term,
                lambda: self.annotated,
                bits_classes(int(now.sent.get(TEACHER_CLASSES_KEY, 0))),  # type: ignore[arg-type]
            ),
        }
        penalties: list[Penalty] = [Distillation(teacher, **terms)] if settings.teacher_own else []
        # (mib: the server knows the teacher's classes; the other terms fold none)
        waits = terms["new_classes"] and not settings.teacher_public_new_classes
        if settings.teacher_public and not waits:
            # the teacher's set: the server's in the last round before the shift
            public_round = (
                now.server_round if settings.teacher_public_set == "current" else teacher_round - 1
            )
            tiles = apart_images if settings.teacher_public_tiles == "apart" else reference_images
            public = images_to_tensor(tiles(now.config, max(public_round, 1)))
            order = seeds.stream(
                now.config.seed, seeds.PUBLIC_ORDER, now.hospital, now.server_round
            )
            penalties.append(
                PublicDistillation(
                    model,
                    teacher,
                    public,
                    batch_size=now.config.batch_size,
                    seed=int(order.generate_state(1)[0]),
                    **terms,
                )
            )
        return penalties

    def reply(self, content: RecordDict) -> None:
        """With the ``mib`` term: tell the server the classes this round's masks annotate."""
        now = self.now
        if now.config.section(DBCSettings).teacher_term == "mib":
            content[ANNOTATED_KEY] = ConfigRecord({"classes": class_bits(self.annotated)})
