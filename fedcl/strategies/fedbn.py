"""FedBN and SiloBN: FedAvg whose hospitals keep (part of) their normalisation local.

- :class:`FedBN` (Li et al., "FedBN: Federated Learning on Non-IID Features via Local
  Batch Normalization", ICLR 2021): every BatchNorm layer, its affine weight and bias and
  its running statistics, stays at the hospital.
- :class:`SiloBN` (Andreux et al., "Siloed Federated Learning for Multi-Centric
  Histopathology Datasets", DART 2020): the running statistics stay at the hospital; the
  affine weight and bias are shared.

The server side is FedAvg's: it tells the hospitals what to keep (``local-norm`` in the
train config, as FedProx sends ``proximal-mu``), and each hospital puts its own part
back into every global model it receives (:mod:`fedcl.hospital`,
:mod:`fedcl.normalization`). The averaged normalisation the server holds is therefore
never used by a hospital after its first round; such a model is evaluated only where
its normalisation lives, at the hospitals.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class FedBN(FedAvg):
    """FedAvg with every BatchNorm layer kept local at the hospitals (``local_norm``)."""

    local_norm = "layers"  # fedcl.normalization.LOCAL_NORMS

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, telling the hospitals what to keep local."""
        config["local-norm"] = self.local_norm
        return super().configure_train(server_round, arrays, config, grid)


class SiloBN(FedBN):
    """FedAvg with the BatchNorm running statistics kept local; affine parameters shared."""

    local_norm = "statistics"
