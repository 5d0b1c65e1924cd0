"""FedBN and SiloBN: FedAvg whose hospitals keep (part of) their normalisation local.

- :class:`FedBN` (Li et al., "FedBN: Federated Learning on Non-IID Features via Local
  Batch Normalization", ICLR 2021): every BatchNorm layer, its affine weight and bias and
  its running statistics, stays at the hospital.
- :class:`SiloBN` (Andreux et al., "Siloed Federated Learning for Multi-Centric
  Histopathology Datasets", DART 2020): the running statistics stay at the hospital; the
  affine weight and bias are shared.

The server half is FedAvg's. The hospital half (:class:`LocalNormHospital`) keeps its
part in ``Context.state`` after training and puts it back into every global model it
receives (:mod:`fedcl.normalization` says which keys). The averaged normalisation the
server holds is therefore never used by a hospital after its first round; such a model
is evaluated only where its normalisation lives, at the hospitals.
"""

from __future__ import annotations

from typing import ClassVar

from flwr.app import ArrayRecord
from torch import nn

from fedcl.config import RunConfig
from fedcl.normalization import local_norm_keys
from fedcl.strategies.contract import SentModel
from fedcl.strategies.flower import FedAvg, sampling
from fedcl.strategies.hospital_half import HospitalHalf

_STATE_KEY = "fedcl-local-norm"  # Context.state: the normalisation a hospital keeps


class LocalNormHospital(HospitalHalf):
    """Keeps the normalisation that :attr:`mode` names at the hospital (FedBN's part)."""

    mode: ClassVar[str] = "layers"  # fedcl.normalization.LOCAL_NORMS
    keeps_weights = True

    def received(self, model: nn.Module) -> None:
        """Put the normalisation this hospital kept (none before its first training) back."""
        kept = self.now.state.array_records.get(_STATE_KEY)
        if kept is not None:
            model.load_state_dict(kept.to_torch_state_dict(), strict=False)

    def trained(self, model: nn.Module) -> None:
        """Keep this hospital's part of the trained model's normalisation."""
        keys = local_norm_keys(model, self.mode)
        if keys:
            values = model.state_dict()
            self.now.state[_STATE_KEY] = ArrayRecord({k: values[k].detach().cpu() for k in keys})


class LocalStatisticsHospital(LocalNormHospital):
    """Keeps the BatchNorm running statistics at the hospital (SiloBN's part)."""

    mode = "statistics"


class FedBN(FedAvg):
    """FedAvg with every BatchNorm layer kept at the hospitals (:class:`LocalNormHospital`)."""

    hospital: ClassVar[type[HospitalHalf]] = LocalNormHospital

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FedBN:
        """Every hospital every round."""
        return cls(**sampling(config))


class SiloBN(FedBN):
    """FedAvg with the BatchNorm running statistics kept local; affine parameters shared."""

    hospital = LocalStatisticsHospital
