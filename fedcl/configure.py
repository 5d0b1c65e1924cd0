"""A run's configuration from names and values: the layer above :mod:`fedcl.config`.

:mod:`fedcl.config` knows keys and values; this module resolves the names in them (the
strategy, the scenario: built-ins or plug-ins, :mod:`fedcl.plugins`) into the classes
that declare keys of their own (:class:`~fedcl.config.Section`), builds the config with
their sections, and checks it against the scenario (a staged run's length, what the
scenario accepts) and the strategy. Every entry point builds its config here: the
command line, a TOML file, Flower's run config, a hospital's message, a run directory.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import tomli_w

from fedcl.config import (
    RunConfig,
    Scalar,
    Section,
    keys,
    read_toml,
    sections_of,
)
from fedcl.config.sections import RunKeys, ScenarioKeys
from fedcl.errors import FedclError
from fedcl.plugins import SCENARIOS, STRATEGIES
from fedcl.scenarios import scenario_class

# Flower's run config accepts only the keys the app's pyproject declares (every built-in
# key, generated): a plug-in's own keys travel in this one, as a TOML document.
PLUGIN_KEYS = "plugin-keys"
# A Flower run-config key that is no experiment setting: the ServerApp continues the
# run in `out` from its checkpoint (`fedcl deploy local --resume`).
RESUME_KEY = "resume"
# Keys whose default changed after run directories were first written: the value a run
# recorded without the key ran with (from_run_dir): until version 0.3 stages shifted
# stain and class mix, and DBC's evidence had no floor; DBC's hospitals held to their
# teacher by KL without MiB's loss until its two halves became the default
# (docs/decision-log.md).
RECORDED_BEFORE: dict[str, Scalar] = {
    "stage-shift": "stain",
    "dbc-evidence-floor": 0.0,
    "dbc-teacher-term": "kl",
    "dbc-unbiased-loss": False,
    "dbc-teacher-public-new-classes": True,
}


def sections_for(strategy: str, scenario: str) -> tuple[type[Section], ...]:
    """Return the sections strategy ``strategy`` and scenario ``scenario`` declare."""
    return sections_of(STRATEGIES.load(strategy), scenario_class(scenario))


def load_config(
    values: Mapping[str, Any],
    *,
    source: str = "config",
    strict: bool = True,
    tolerate: Callable[[str], bool] | None = None,
    also: tuple[type[Section], ...] = (),
) -> RunConfig:
    """Build and check the config of ``values`` (kebab-case keys), with its sections.

    Missing keys take their defaults, except ``rounds`` in a staged scenario:
    ``stages x rounds-per-stage`` (an explicit value must equal it). ``strict`` and
    ``tolerate`` are :meth:`RunConfig.from_mapping`'s; ``also``: sections to hold beside
    the strategy's and scenario's (``fedcl compare``'s base: every entry's).

    Raises
    ------
    FedclError
        Naming ``source`` and the key: an unknown strategy or scenario (did you mean),
        an unknown key, a value its declaration refuses, a run the scenario cannot run.
    """
    try:
        strategy = _name(values, "strategy", RunKeys.strategy)
        scenario = _name(values, "scenario", RunKeys.scenario)
        sections = tuple(dict.fromkeys((*sections_for(strategy, scenario), *also)))
        values = _unpacked(values)
        if strict:
            _refuse_foreign_keys(values, sections, strategy, scenario, tolerate)
    except FedclError as err:
        raise FedclError(f"{source}: {err}") from None
    if "rounds" not in values and scenario_class(scenario).staged:
        stages = values.get("stages", ScenarioKeys.stages)
        per_stage = values.get("rounds-per-stage", ScenarioKeys.rounds_per_stage)
        if isinstance(stages, int) and isinstance(per_stage, int):
            values = {**values, "rounds": stages * per_stage}
    config = RunConfig.from_mapping(
        values, sections=sections, source=source, strict=strict, tolerate=tolerate
    )
    try:
        validate(config)
    except FedclError as err:
        raise FedclError(f"{source}: {err}") from None
    return config


def _refuse_foreign_keys(
    values: Mapping[str, Any],
    sections: tuple[type[Section], ...],
    strategy: str,
    scenario: str,
    tolerate: Callable[[str], bool] | None,
) -> None:
    """Name the owners of a built-in key that this run's strategy and scenario do not read."""
    known = {key.name for key in keys(*sections)}
    for name in values:
        if name in known or (tolerate and tolerate(name)) or not is_builtin_key(name):
            continue  # unknown to every built-in: from_mapping's did-you-mean
        raise FedclError(
            f"key {name!r} belongs to {' or '.join(owners_of(name))}, not to strategy "
            f"{strategy!r} or scenario {scenario!r}"
        )


def owners_of(key: str) -> list[str]:
    """Return the built-ins that declare ``key``: ``strategy dbc``, ``scenario client-drift``."""
    if not is_builtin_key(key):
        return []
    return [
        f"{registry.kind} {owner}"
        for registry in (STRATEGIES, SCENARIOS)
        for owner in registry.builtin
        if any(k.name == key for k in keys(*sections_of(registry.load(owner))) if k.section_type)
    ]


def _unpacked(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the plug-in keys that :data:`PLUGIN_KEYS` carries in their place."""
    unpacked = dict(values)
    packed = str(unpacked.pop(PLUGIN_KEYS, ""))
    try:
        return unpacked | tomllib.loads(packed)
    except tomllib.TOMLDecodeError as err:
        raise FedclError(f"config key {PLUGIN_KEYS!r} is not a TOML document: {err}") from None


def flower_run_config(config: RunConfig, resume: bool = False) -> dict[str, Scalar]:
    """Return ``config`` as a Flower run config (``flwr run --run-config FILE``).

    Every built-in key as it is; a plug-in's own keys, which the app's pyproject cannot
    declare, in :data:`PLUGIN_KEYS` (``load_config`` puts them back); ``resume``
    (:data:`RESUME_KEY`): continue the run in ``out`` from its checkpoint.
    """
    mapping = config.to_mapping()
    plugin = {k: v for k, v in mapping.items() if not is_builtin_key(k)}
    builtin = {k: v for k, v in mapping.items() if k not in plugin}
    return builtin | {PLUGIN_KEYS: tomli_w.dumps(plugin), RESUME_KEY: resume}


def from_flower_run_config(values: Mapping[str, Any]) -> tuple[RunConfig, bool]:
    """Return the config :func:`flower_run_config` wrote, and whether to resume."""
    settings = dict(values)
    resume = settings.pop(RESUME_KEY, False)
    if not isinstance(resume, bool):
        raise FedclError(f"run config key {RESUME_KEY!r} must be true or false, got {resume!r}")
    return load_config(settings, source="run config", tolerate=is_builtin_key), resume


def _name(values: Mapping[str, Any], key: str, default: str) -> str:
    name = values.get(key, default)
    if not isinstance(name, str):
        raise FedclError(f"config key {key!r} must be str, got {name!r}")
    return name


def validate(config: RunConfig) -> None:
    """Check ``config`` against its scenario and its strategy (their ``validate``/``check``)."""
    scenario_class(config.scenario).validate(config)
    check = getattr(STRATEGIES.load(config.strategy), "check", None)  # optional, documented
    if callable(check):
        check(config)


def from_toml(path: str | Path) -> RunConfig:
    """Read a TOML file of kebab-case keys (the same as the command line's flags)."""
    return load_config(read_toml(path), source=str(path))


def from_run_dir(directory: str | Path) -> RunConfig:
    """Read the ``config.toml`` of a run directory, as the run was run.

    A run recorded before a key existed ran with that key's value of the time
    (:data:`RECORDED_BEFORE`), not with today's default; older versions also wrote
    every strategy's keys into every run's file, which are ignored.
    """
    path = Path(directory) / "config.toml"
    values = RECORDED_BEFORE | read_toml(path)
    return load_config(values, source=str(path), tolerate=is_builtin_key)


def every_section() -> tuple[type[Section], ...]:
    """Return the sections of every built-in strategy and scenario (docs, Flower's block)."""
    owners = [STRATEGIES.load(n) for n in STRATEGIES.builtin]
    return sections_of(*owners, *(SCENARIOS.load(n) for n in SCENARIOS.builtin))


@cache
def builtin_keys() -> frozenset[str]:
    """Return every key of the core and of every built-in strategy and scenario."""
    return frozenset(k.name for k in keys(*every_section()))


def is_builtin_key(name: str) -> bool:
    """Whether ``name`` is a key of the core or of a built-in (loads them on first use)."""
    return name in builtin_keys()


def server_tiles(strategy: str) -> tuple[str, ...]:
    """Return the server's tile sets strategy ``strategy`` uses: ``reference_set``, ``root_set``.

    A strategy declares them as the class attribute ``server_tiles`` (none: it uses
    no tiles of the server's).
    """
    return tuple(getattr(STRATEGIES.load(strategy), "server_tiles", ()))  # the one lookup


def unread_keys(config: RunConfig) -> list[str]:
    """Return the keys ``config`` holds that its run does not read (commented in config.toml).

    A key stays in the configuration whatever the run (a run directory's ``config.toml``
    reloads as it was written); this says which ones had no effect: the stage keys
    where nothing is staged, the drift keys where nothing drifts, the server's tile
    sets a strategy does not use, ``site-stain`` with real data (its tiles have their
    own stains), the label map with synthetic data, and what a section says it leaves
    unread (:meth:`fedcl.config.Section.unread`).
    """
    scenario = scenario_class(config.scenario)
    uses = set(server_tiles(config.strategy))
    unread: set[str] = set()
    if not scenario.drifting:
        unread |= {"drift-ratio", "drift-start-round"}
    if not scenario.staged:
        unread |= {"stages", "rounds-per-stage"}
    if "root_set" not in uses:
        unread.add("root-tiles")
    if not uses:
        unread.add("reference-size")
    unread |= {"label-map", "data-split"} if config.data == "synthetic" else {"site-stain"}
    for section in config.sections:
        unread |= set(section.unread())
    return [k.name for k in config.keys() if k.name in unread]
