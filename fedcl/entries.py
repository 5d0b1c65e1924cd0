"""What a study names: entries ``NAME[+KEY=VALUE...]`` and comma-separated lists.

An entry is a strategy or a scenario name, optionally with settings of its own:
``dbc+dbc-consolidation=off+dbc-steps=20`` is DBC with those two keys changed, a row of
its own in ``fedcl compare``'s tables (ablations); ``client-drift+drift-kind=annotation``
is the client-drift scenario with another drift, a table (and a directory) of its own.
An entry's settings are keys of what it names or of every run (the core's): a row varies
the strategy, a table the scenario. This module loads no strategy until an entry is
parsed: the command line reads names with it before torch loads.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from fedcl.config import RunConfig, Scalar, keys, parse_setting, sections_of
from fedcl.configure import every_section, load_config, owners_of
from fedcl.errors import FedclError
from fedcl.plugins import SCENARIOS, STRATEGIES, Registry
from fedcl.scenarios import scenario_class

VARIANT = "+"  # separates an entry's name from its own settings
# keys every entry leaves to fedcl compare: what it names, the seeds, the directories
SET_BY_COMPARE = ("strategy", "scenario", "seed", "out")


@dataclass(frozen=True)
class Entry:
    """A strategy (a row of a comparison) or a scenario (a table), and its settings."""

    label: str  # as written: "dbc", "dbc+dbc-consolidation=off", "client-drift"
    kind: str  # the config key the name sets: "strategy" or "scenario"
    name: str  # the strategy's or the scenario's name: "dbc", "client-drift"
    settings: dict[str, Scalar]

    def config(self, base: RunConfig, *, unset: Collection[str] = ()) -> RunConfig:
        """Return ``base`` with this entry's strategy or scenario, and its settings.

        A strategy entry's config holds the keys its strategy and the scenario declare;
        the other keys of ``base`` are left out (the base holds every entry's). A scenario
        entry's config keeps the sections of ``base``: it is the base of the strategy
        entries that run in that scenario. ``unset``: keys of ``base`` nobody chose, left
        to their defaults here (``rounds``: a staged scenario's stages x rounds-per-stage).
        """
        inherited = {k: v for k, v in base.to_mapping().items() if k not in unset}
        mapping = inherited | self.settings | {self.kind: self.name}
        return load_config(
            mapping,
            source=f"entry {self.label!r}",
            tolerate=lambda key: key not in self.settings,
            also=base.section_types if self.kind == "scenario" else (),
        )


def parse_entry(text: str, registry: Registry = STRATEGIES) -> Entry:
    """``NAME[+KEY=VALUE...]`` -> :class:`Entry`: a strategy, or a scenario (``SCENARIOS``).

    Raises
    ------
    FedclError
        Naming the entry: an unknown name or key (did you mean), a value of the wrong
        type, a key another strategy or scenario declares (its owners), or a key fedcl
        compare sets itself (:data:`SET_BY_COMPARE`).
    """
    name, *pairs = text.split(VARIANT)
    owner = scenario_class(name) if registry is SCENARIOS else registry.load(name)
    own = {key.name for key in keys(*sections_of(owner))}  # the core's keys and its own
    sections = every_section() + sections_of(owner)  # every built-in key: its owners named
    settings = dict(
        parse_setting(pair, sections=sections, source=f"entry {text!r}") for pair in pairs
    )
    if set(settings) & set(SET_BY_COMPARE):
        raise FedclError(f"entry {text!r}: {', '.join(SET_BY_COMPARE)} are set by fedcl compare")
    for key in settings:
        if key not in own:
            raise FedclError(
                f"entry {text!r}: key {key!r} belongs to {' or '.join(owners_of(key))}, not "
                f"to {registry.kind} {name!r}"
            )
    return Entry(label=text, kind=registry.kind, name=name, settings=settings)


def parse_list(text: str, every: Iterable[str]) -> list[str]:
    """Comma-separated names; ``all`` expands to ``every``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return [n for name in names for n in (every if name == "all" else [name])]
