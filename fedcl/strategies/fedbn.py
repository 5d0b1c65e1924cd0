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

Statistics kept from the last round belong to the hospital's *trained local* weights,
not to the next averaged ones they are put into (a fresh Adam each round moves the
weights far enough that the stale statistics cost more than the averaged ones). So by
default (``local-stats-refresh = true``) a hospital re-estimates the running statistics
of the model it received, with its own layers back in, on its training tiles before it
evaluates and trains; ``false`` is the stale variant of version 0.3, kept for the record.
With refresh, SiloBN's shared weights are FedAvg's bit for bit (BatchNorm trains on batch
statistics) and its figures FedAvg's with the hospitals' own statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flwr.app import ArrayRecord
from torch import nn

from fedcl.config import RunConfig, Section, opt
from fedcl.normalization import local_norm_keys
from fedcl.strategies.contract import SentModel
from fedcl.strategies.flower import FedAvg, sampling
from fedcl.strategies.hospital_half import HospitalHalf
from fedcl.training import recompute_batchnorm

_STATE_KEY = "fedcl-local-norm"  # Context.state: the weights a hospital keeps


@dataclass(frozen=True, kw_only=True)
class LocalStatsSettings(Section):
    """FedBN's and SiloBN's own key (``local-stats-<name>``)."""

    PREFIX: ClassVar[str] = "local-stats-"

    refresh: bool = opt(
        True,
        "FedBN, SiloBN: re-estimate the received model's BatchNorm statistics on the "
        "hospital's training tiles before it evaluates and trains (false: the kept ones)",
        section="strategy",
    )


class KeptWeightsHospital(HospitalHalf):
    """A hospital half that keeps some of the model's weights to itself across rounds.

    :meth:`kept_keys` says which; they are put back into every model received.
    """

    keeps_weights = True

    def kept_keys(self, model: nn.Module) -> list[str]:
        """Return the state-dict keys this hospital keeps to itself."""
        raise NotImplementedError(f"{type(self).__name__} must define kept_keys")

    def received(self, model: nn.Module) -> None:
        """Put the part this hospital kept (none before its first training) back."""
        kept = self.now.state.array_records.get(_STATE_KEY)
        if kept is not None:
            model.load_state_dict(kept.to_torch_state_dict(), strict=False)

    def trained(self, model: nn.Module) -> None:
        """Keep this hospital's part of the trained model."""
        keys = self.kept_keys(model)
        if keys:
            values = model.state_dict()
            self.now.state[_STATE_KEY] = ArrayRecord({k: values[k].detach().cpu() for k in keys})


class LocalNormHospital(KeptWeightsHospital):
    """Keeps the normalisation that :attr:`mode` names at the hospital (FedBN's part)."""

    mode: ClassVar[str] = "layers"  # fedcl.normalization.LOCAL_NORMS

    def kept_keys(self, model: nn.Module) -> list[str]:
        """Return the keys of :attr:`mode`'s normalisation (``local_norm_keys``)."""
        return local_norm_keys(model, self.mode)

    def received(self, model: nn.Module) -> None:
        """Put the kept normalisation back, then (``local-stats-refresh``) re-estimate.

        The running statistics are re-estimated on the hospital's training tiles of the
        received model's round.
        """
        super().received(model)
        if self.now.config.section(LocalStatsSettings).refresh:
            recompute_batchnorm(model, self.now.own_tiles(), self.now.config.batch_size)


class LocalStatisticsHospital(LocalNormHospital):
    """Keeps the BatchNorm running statistics at the hospital (SiloBN's part)."""

    mode = "statistics"


class FedBN(FedAvg):
    """FedAvg with every BatchNorm layer kept at the hospitals (:class:`LocalNormHospital`)."""

    hospital: ClassVar[type[HospitalHalf]] = LocalNormHospital
    sections: ClassVar[tuple[type[Section], ...]] = (LocalStatsSettings,)

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FedBN:
        """Every hospital every round."""
        return cls(**sampling(config))


class SiloBN(FedBN):
    """FedAvg with the BatchNorm running statistics kept local; affine parameters shared."""

    hospital = LocalStatisticsHospital
