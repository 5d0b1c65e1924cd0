"""Which strategy names exist, known without importing torch or Flower.

The built-ins' names (:data:`fedcl.strategies.STRATEGIES` holds their classes; a test
keeps the two equal), the plug-ins installed under the entry-point group
``fedcl.strategies``, and dotted paths ``package.module:ClassName``. The command line
checks a name here first, so a typo is answered in a second, not after torch loads.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from fedcl.errors import unknown_name

BUILTIN = (
    "fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan",
    "fltrust", "dbc", "fedbn", "silobn", "lwf",
)  # fmt: skip
ENTRY_POINT_GROUP = "fedcl.strategies"


def plugin_names() -> dict[str, EntryPoint]:
    """Strategies registered by installed packages under ``fedcl.strategies``."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def check_name(name: str) -> None:
    """Raise a FedclError (with a did-you-mean) unless ``name`` can name a strategy."""
    if name in BUILTIN or ":" in name:
        return
    plugins = plugin_names()
    if name not in plugins:
        raise unknown_name("strategy", name, [*BUILTIN, *plugins, "package.module:ClassName"])
