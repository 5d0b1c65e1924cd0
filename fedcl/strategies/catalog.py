"""Strategies by name, built for a run inside the guard.

A name is a built-in (:data:`fedcl.plugins.STRATEGIES`, the one list of them), a name
an installed package registers under the entry-point group ``fedcl.strategies``, or a
dotted path ``package.module:ClassName``; it stands for a Flower ``Strategy`` subclass,
the strategy's server half (its hospital half, if any, is its ``hospital`` attribute:
:mod:`fedcl.strategies.hospital_half`).

Every strategy is instantiated through :func:`build_strategy` inside a
:class:`~fedcl.strategies.guard.GuardedStrategy`: it sorts, screens and counts the
replies, keeps the global model sent out, and records every round.
"""

from __future__ import annotations

import inspect

from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Strategy

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES
from fedcl.errors import FedclError
from fedcl.models import build_model
from fedcl.plugins import STRATEGIES as NAMES
from fedcl.strategies.contract import Configurable, SentModel, hospital_half_of
from fedcl.strategies.flower import sampling
from fedcl.strategies.guard import GuardedStrategy, ReplyGuard, TrainHook


def strategy_class(name: str) -> type[Strategy]:
    """Return the server half ``name`` stands for: a built-in or a plug-in.

    Raises
    ------
    FedclError
        For an unknown name (listing the known ones), a plug-in that cannot be imported
        or is not a Flower ``Strategy``, or one whose hospital half is not a
        :class:`~fedcl.strategies.hospital_half.HospitalHalf`.
    """
    cls = NAMES.load(name)  # an unknown name: the error, did-you-mean
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        from flwr.server.strategy import Strategy as LegacyStrategy  # only for this hint

        hint = ""
        if inspect.isclass(cls) and issubclass(cls, LegacyStrategy):
            hint = (
                " (it subclasses the legacy flwr.server.strategy API; fedcl runs Flower's "
                "Message API: subclass flwr.serverapp.strategy.FedAvg or Strategy and "
                "override aggregate_train)"
            )
        raise FedclError(f"strategy {name!r} is not a flwr Strategy subclass: {cls!r}{hint}")
    hospital_half_of(cls)  # a wrong hospital half: the error now, not at the hospitals
    return cls


def check_strategy(name: str) -> None:
    """Raise a FedclError if ``name`` does not resolve to a strategy."""
    strategy_class(name)


def build_strategy(
    config: RunConfig, on_train: TrainHook | None = None, round_offset: int = 0
) -> GuardedStrategy:
    """Instantiate ``config.strategy`` inside a :class:`GuardedStrategy` with the config's guard.

    A :class:`~fedcl.strategies.contract.Configurable` strategy builds itself
    (``from_config``); any other gets fedcl's sampling settings where its constructor
    takes them, and the round's :class:`SentModel` if it takes ``sent``.
    """
    cls = strategy_class(config.strategy)
    guard = ReplyGuard(
        template=ArrayRecord(build_model(config.model, NUM_CLASSES).state_dict()),
        min_replies=config.min_replies,
        max_update_ratio=config.max_update_ratio,
        hospitals=config.clients,
    )
    sent = SentModel()
    if issubclass(cls, Configurable):
        strategy = cls.from_config(config, sent)
    else:
        offered = sampling(config) | {"sent": sent}
        strategy = cls(**{k: v for k, v in offered.items() if _takes(cls, k)})
    return GuardedStrategy(
        strategy, guard=guard, sent=sent, on_train=on_train, round_offset=round_offset
    )


def _takes(cls: type, name: str) -> bool:
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


__all__ = ["build_strategy", "check_strategy", "strategy_class"]
