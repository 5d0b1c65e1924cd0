"""Names of the built-in strategies, models and scenarios, and of plug-ins, without torch.

A name is a built-in (listed here once, with the ``package.module:attribute`` that
defines it), a plug-in an installed package registers under an entry-point group
(``fedcl.strategies``, ``fedcl.models``, ``fedcl.scenarios``), or a dotted path
``package.module:attribute`` (a module in the working directory is found as ``python
-m`` finds it). The command line checks names here first, so a typo is answered in a
second, not after torch loads; a name's module is imported only when it is loaded.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fedcl.errors import FedclError, unknown_name


@dataclass(frozen=True)
class Registry:
    """One kind of pluggable thing: its built-in names and its entry-point group."""

    kind: str  # "strategy", "model", "scenario": the word errors use
    builtin: Mapping[str, str]  # name -> "package.module:attribute" that defines it
    group: str
    dotted_hint: str  # how a dotted name looks, e.g. "package.module:ClassName"

    def plugins(self) -> dict[str, EntryPoint]:
        """Return what installed packages register under this registry's entry-point group."""
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def check(self, name: str) -> None:
        """Raise a FedclError (with a did-you-mean) unless ``name`` can name one."""
        if name in self.builtin or ":" in name:
            return
        plugins = self.plugins()
        if name not in plugins:
            raise unknown_name(self.kind, name, [*self.builtin, *plugins, self.dotted_hint])

    def load(self, name: str) -> Any:
        """Return the object a name (built-in, entry point or dotted path) refers to."""
        if name in self.builtin:
            return _load_dotted(self.kind, self.builtin[name])
        if ":" in name:
            return _load_dotted(self.kind, name)
        self.check(name)
        return self.plugins()[name].load()


def _load_dotted(kind: str, path: str) -> Any:
    module_name, _, attr = path.partition(":")
    # As `python -m` and `python script.py` do: a module in the working directory is
    # found (the `fedcl` console script does not put it on sys.path itself).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise FedclError(f"{kind} {path!r}: cannot import module {module_name!r} ({err})") from None
    found = getattr(module, attr, None)
    if found is None:
        raise FedclError(f"{kind} {path!r}: module {module_name!r} has no {attr!r}")
    return found


STRATEGIES = Registry(
    "strategy",
    {
        "fedavg": "fedcl.strategies.flower:FedAvg",
        "fedavg-server-stats": "fedcl.strategies.server_stats:FedAvgServerStats",
        "fedprox": "fedcl.strategies.fedprox:FedProx",
        "fedmedian": "fedcl.strategies.flower:FedMedian",
        "fedtrimmedavg": "fedcl.strategies.flower:FedTrimmedAvg",
        "krum": "fedcl.strategies.flower:Krum",
        "multikrum": "fedcl.strategies.flower:MultiKrum",
        "bulyan": "fedcl.strategies.flower:Bulyan",
        "fltrust": "fedcl.strategies.fltrust:FLTrust",
        "dbc": "fedcl.strategies.dbc:DynamicBarlowContinuity",
        "fedbn": "fedcl.strategies.fedbn:FedBN",
        "silobn": "fedcl.strategies.fedbn:SiloBN",
        "lwf": "fedcl.strategies.lwf:LwF",
        "ewc": "fedcl.strategies.ewc:FederatedEWC",
        "joint": "fedcl.strategies.bounds:JointTraining",
        "local-only": "fedcl.strategies.bounds:LocalOnly",
    },
    "fedcl.strategies",
    "package.module:ClassName",
)
MODELS = Registry(
    "model",
    {
        "unet": "fedcl.models:unet",
        "unet-instance": "fedcl.models:unet_instance",
        "unet-group": "fedcl.models:unet_group",
        "basic-unet": "fedcl.models:basic_unet",
        "smp-resnet18": "fedcl.models:smp_resnet18",
        "smp-resnet34": "fedcl.models:smp_resnet34",
    },
    "fedcl.models",
    "package.module:function",
)
SCENARIOS = Registry(
    "scenario",
    {
        "iid": "fedcl.scenarios.builtin:Iid",
        "client-drift": "fedcl.scenarios.builtin:ClientDrift",
        "catastrophic-forgetting": "fedcl.scenarios.builtin:CatastrophicForgetting",
        "drift-and-forgetting": "fedcl.scenarios.builtin:DriftAndForgetting",
    },
    "fedcl.scenarios",
    "package.module:ClassName",
)
