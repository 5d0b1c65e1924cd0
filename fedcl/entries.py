"""What a study names: entries ``STRATEGY[+KEY=VALUE...]`` and comma-separated lists.

An entry is a strategy name, optionally with settings of its own:
``dbc+dbc-consolidation=off+dbc-steps=20`` is DBC with those two keys changed, a row of
its own in ``fedcl compare``'s tables (ablations). This module loads no strategy until an
entry is parsed: the command line reads names with it before torch loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fedcl.config import RunConfig, Scalar, parse_setting
from fedcl.config.sections import RunKeys
from fedcl.configure import every_section, is_builtin_key, load_config, sections_for
from fedcl.errors import FedclError

VARIANT = "+"  # separates an entry's strategy from its own settings


@dataclass(frozen=True)
class Entry:
    """One row of a comparison: a strategy and the settings it runs with."""

    label: str  # as written: "dbc" or "dbc+dbc-consolidation=off"
    strategy: str
    settings: dict[str, Scalar]

    def config(self, base: RunConfig) -> RunConfig:
        """Return ``base`` with this entry's strategy and settings.

        Keys of ``base`` and of the built-ins that this entry's strategy and the scenario
        do not declare are left out (the base holds every entry's keys).
        """
        mapping = base.to_mapping() | self.settings | {"strategy": self.strategy}
        return load_config(
            mapping,
            source=f"entry {self.label!r}",
            tolerate=lambda key: key in mapping or is_builtin_key(key),
        )


def parse_entry(text: str) -> Entry:
    """``STRATEGY[+KEY=VALUE...]`` -> :class:`Entry` (keys are config keys)."""
    strategy, *pairs = text.split(VARIANT)
    sections = every_section() + sections_for(strategy, RunKeys.scenario)
    settings = dict(
        parse_setting(pair, sections=sections, source=f"entry {text!r}") for pair in pairs
    )
    if "strategy" in settings or "seed" in settings or "out" in settings:
        raise FedclError(f"entry {text!r}: strategy, seed and out are set by fedcl compare")
    return Entry(label=text, strategy=strategy, settings=settings)


def parse_list(text: str, every: Iterable[str]) -> list[str]:
    """Comma-separated names; ``all`` expands to ``every``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return [n for name in names for n in (every if name == "all" else [name])]
