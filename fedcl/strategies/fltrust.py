"""FLTrust as a Flower strategy (``--strategy fltrust``).

Cao et al., "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping",
NDSS 2021.

The server trains the global model on its own small labelled root set with the same
local schedule as the hospitals, giving a server update ``g0``. Each hospital's update
``g_i`` (its weights minus the global weights, trainable parameters only) gets the
trust score ``TS_i = ReLU(cos(g_i, g0))`` and is rescaled to ``g0``'s norm; the new
global model is ``w + sum_i TS_i * g_i * |g0| / |g_i| / sum_i TS_i``. Buffers that are
not trained (BatchNorm running statistics) are averaged with the same trust weights.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, ClassVar

import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from torch import nn

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES, root_dataset
from fedcl.data.real import parse_data
from fedcl.data.reference import public_set
from fedcl.errors import FedclError
from fedcl.models import build_model
from fedcl.strategies.contract import RoundReport, SentModel
from fedcl.strategies.flower import sampling
from fedcl.strategies.replies import partition_of
from fedcl.training import resolve_device, train_local

StateDict = dict[str, torch.Tensor]


def _flat(update: StateDict, keys: Sequence[str]) -> torch.Tensor:
    return torch.cat([update[k].flatten().double() for k in keys])


def fltrust_aggregate(
    global_state: StateDict,
    client_states: Sequence[StateDict],
    server_state: StateDict,
    trainable: Collection[str],
) -> tuple[StateDict, list[float]]:
    """FLTrust's aggregation rule (pure function).

    Parameters
    ----------
    global_state : dict
        The global model the round started from.
    client_states : sequence of dict
        The hospitals' trained models (same keys and shapes).
    server_state : dict
        The global model after the server's own training on its root set.
    trainable : collection of str
        Keys of trained parameters (the update vectors); the others are buffers.

    Returns
    -------
    new_state : dict
        The next global model; ``global_state`` itself when every trust score is 0.
    trust : list of float
        ``TS_i`` per client.
    """
    keys = [k for k in global_state if k in trainable]
    server_update = _flat(server_state, keys) - _flat(global_state, keys)
    server_norm = server_update.norm()
    trust, scaled = [], []
    for state in client_states:
        update = _flat(state, keys) - _flat(global_state, keys)
        norm = update.norm()
        denominator = float(norm * server_norm)
        cosine = float(update @ server_update) / denominator if denominator > 0 else 0.0
        trust.append(max(cosine, 0.0))
        scaled.append(update * (server_norm / norm) if norm > 0 else update)
    total = sum(trust)
    if total == 0:
        return dict(global_state), trust
    step = torch.stack([t * u for t, u in zip(trust, scaled, strict=True)]).sum(0) / total
    new_state: StateDict = {}
    offset = 0
    for key, value in global_state.items():
        if key in trainable:
            size = value.numel()
            delta = step[offset : offset + size].view(value.shape)
            new_state[key] = (value.double() + delta).to(value.dtype)
            offset += size
        else:
            mixed = sum(t * s[key].double() for t, s in zip(trust, client_states, strict=True))
            averaged = torch.as_tensor(mixed) / total
            if not value.is_floating_point():
                averaged = averaged.round()
            new_state[key] = averaged.to(value.dtype)
    return new_state, trust


class FLTrust(FedAvg):
    """FLTrust on top of Flower's FedAvg plumbing (sampling, messages).

    Parameters
    ----------
    model_fn : callable
        Builds a fresh network of the federation's architecture.
    server_train : callable
        ``server_train(model, server_round)`` trains ``model`` in place on the server's
        root set of the round (:func:`fedcl.data.reference.public_stages`) with
        the hospitals' local schedule.
    device : str or torch.device
        Where the server's own training runs.
    sent : SentModel, optional
        The global model of the round (kept by the guard every fedcl strategy runs in,
        which also drops error and malformed replies before this strategy sees them).
    **fedavg_kwargs
        Passed to ``FedAvg``.
    """

    server_tiles: ClassVar[tuple[str, ...]] = ("root_set",)  # the labelled tiles it trains on

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """Refuse server tiles without masks: the root set is trained on."""
        if parse_data(config.server_data, key="server-data").kind == "unlabeled":
            raise FedclError(
                "fltrust trains on the server's root set, which needs masks: server-data "
                f"{config.server_data!r} is unlabeled (use bcss:, semicol: or folder: tiles)"
            )

    def __init__(
        self,
        *,
        model_fn: Callable[[], nn.Module],
        server_train: Callable[[nn.Module, int], None],
        device: str | torch.device = "cpu",
        sent: SentModel | None = None,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.sent = sent or SentModel()
        self.model = model_fn().to(device)
        self.server_train = server_train
        self.trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        self.round_report: RoundReport | None = None

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FLTrust:
        """Every hospital every round; the server trains on its root set as they do."""
        root_of = public_set(config, lambda server_round: root_dataset(config, server_round))

        def server_train(model: nn.Module, server_round: int) -> None:
            _, root = root_of(server_round)
            train_local(model, root, **config.local_schedule(), seed=config.seed)

        return cls(
            **sampling(config),
            model_fn=lambda: build_model(config.model, NUM_CLASSES),
            server_train=server_train,
            device=resolve_device(config.device),
            sent=sent,
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Trust-weight the hospitals' updates by their agreement with the server's."""
        global_arrays = self.sent()
        usable = list(replies)
        if not usable:
            self.round_report = {"hospitals": [], "trust": []}
            return None, None
        global_state = global_arrays.to_torch_state_dict()
        self.model.load_state_dict(global_state)
        self.server_train(self.model, server_round)
        server_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        client_states = [
            m.content.array_records[self.arrayrecord_key].to_torch_state_dict() for m in usable
        ]
        new_state, trust = fltrust_aggregate(
            global_state, client_states, server_state, self.trainable
        )
        self.round_report = {"hospitals": [partition_of(m) for m in usable], "trust": trust}
        metrics = aggregate_metricrecords([m.content for m in usable], self.weighted_by_key)
        return ArrayRecord(new_state), metrics
