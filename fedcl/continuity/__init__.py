"""Dynamic Barlow Continuity (DBC): the math, as pure functions (no Flower, no Ray).

DBC (Babendererde et al., "Federated-Continual Dynamic Segmentation of Histopathology
guided by Barlow Continuity", 2025) judges a model by how its outputs on a small public
reference set R vary from tile to tile and pixel to pixel, compared with another
model's: the Barlow Twins cross-correlation (Zbontar et al., ICML 2021) between the two
output matrices. The server uses it twice per round (docs/dbc.md):

1. spatially, to reject client updates whose behaviour on R departs from the peer
   consensus (:func:`consensus_filter`);
2. temporally, to pull the aggregate back toward an exponential moving average of the
   global model's past behaviour on R (:func:`update_anchor`, :func:`consolidate`).

Shapes: a representation ``Z`` is ``N x D`` with ``N = M * P`` rows (M reference
tiles, P fixed pixel positions per tile) and ``D`` columns (class probabilities or
decoder features).
"""

from __future__ import annotations

from fedcl.continuity.behaviour import (
    REPRESENTATIONS,
    barlow_continuity,
    barlow_continuity_columns,
    barlow_continuity_loss,
    model_outputs,
    named_layers,
    pixel_index,
    reference_outputs,
)
from fedcl.continuity.consolidation import (
    CONSOLIDATION_OPTIMIZERS,
    ConsolidationResult,
    consolidate,
    input_parameters,
)
from fedcl.continuity.spatial import (
    EvidenceFilter,
    consensus_filter,
    consensus_threshold,
    largest_shares,
    peer_evidence,
    persistent_outlier,
    typical_peer_score,
)
from fedcl.continuity.temporal import ShiftDetector, loss_jump, shared_shift, update_anchor

__all__ = [
    "CONSOLIDATION_OPTIMIZERS",
    "REPRESENTATIONS",
    "ConsolidationResult",
    "EvidenceFilter",
    "ShiftDetector",
    "barlow_continuity",
    "barlow_continuity_columns",
    "barlow_continuity_loss",
    "consensus_filter",
    "consensus_threshold",
    "consolidate",
    "input_parameters",
    "largest_shares",
    "loss_jump",
    "model_outputs",
    "named_layers",
    "peer_evidence",
    "persistent_outlier",
    "pixel_index",
    "reference_outputs",
    "shared_shift",
    "typical_peer_score",
    "update_anchor",
]
