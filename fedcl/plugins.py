"""Names of the built-in strategies and models, and of plug-ins, known without torch.

A name is a built-in, a plug-in an installed package registers under an entry-point
group (``fedcl.strategies``, ``fedcl.models``), or a dotted path
``package.module:attribute`` (a module in the working directory is found as
``python -m`` finds it). The command line checks names here first, so a typo is answered
in a second, not after torch loads; :mod:`fedcl.strategies` and :mod:`fedcl.models`
hold the built-ins themselves (tests keep the names equal).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fedcl.errors import FedclError, unknown_name


@dataclass(frozen=True)
class Registry:
    """One kind of pluggable thing: its built-in names and its entry-point group."""

    kind: str  # "strategy", "model": the word errors use
    builtin: tuple[str, ...]
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
        """Return the object a plug-in name (entry point or dotted path) refers to."""
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
    (
        "fedavg",
        "fedprox",
        "fedmedian",
        "fedtrimmedavg",
        "krum",
        "multikrum",
        "bulyan",
        "fltrust",
        "dbc",
        "fedbn",
        "silobn",
        "lwf",
    ),  # fmt: skip
    "fedcl.strategies",
    "package.module:ClassName",
)
MODELS = Registry(
    "model",
    ("unet", "unet-instance", "basic-unet", "smp-resnet18", "smp-resnet34"),
    "fedcl.models",
    "package.module:function",
)
