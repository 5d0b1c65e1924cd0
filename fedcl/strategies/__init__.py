"""Aggregation strategies: each one module with its server half and its hospital half.

Built in: ``fedavg``, ``fedmedian``, ``fedtrimmedavg``, ``krum``, ``multikrum``,
``bulyan`` (Flower's own, :mod:`fedcl.strategies.flower`), ``fedprox``, ``fltrust``,
``dbc``, ``fedbn``, ``silobn``, ``fedavg-server-stats``, ``lwf``, ``ewc`` and the bounds
``joint`` and ``local-only`` (:mod:`fedcl.strategies.bounds`); their names and modules
are listed once, in :data:`fedcl.plugins.STRATEGIES`. A user's strategy plugs
in as ``--strategy package.module:ClassName`` (any Flower ``Strategy`` subclass, with an
optional hospital half) or by name through the entry-point group ``fedcl.strategies``.

- :mod:`~fedcl.strategies.catalog`: names to classes; :func:`build_strategy`;
- :mod:`~fedcl.strategies.contract`: what a strategy may offer (``Protocol`` s, the
  round report), :class:`SentModel` and :class:`SentOnce`;
- :mod:`~fedcl.strategies.hospital_half`: the hooks of a hospital half;
- :mod:`~fedcl.strategies.guard`: the guard every strategy runs inside.

This package imports none of them itself: a hospital imports its strategy's module and
the hospital-half hooks only, not the server's catalog, guard and strategies. The names
below are loaded when first used (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_strategy": "catalog",
    "check_strategy": "catalog",
    "strategy_class": "catalog",
    "GuardedStrategy": "guard",
    "ReplyGuard": "guard",
    "SentModel": "contract",
    "SentOnce": "contract",
    "RoundReport": "contract",
    "HospitalHalf": "hospital_half",
    "LocalRound": "hospital_half",
    "DynamicBarlowContinuity": "dbc",
    "FLTrust": "fltrust",
    "FedBN": "fedbn",
    "SiloBN": "fedbn",
    "FedAvgServerStats": "server_stats",
    "JointTraining": "bounds",
    "LocalOnly": "bounds",
    "FedProx": "fedprox",
    "LwF": "lwf",
    "FederatedEWC": "ewc",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
