"""The run configuration: one frozen, validated dataclass, parsed once per entry point.

The same kebab-case keys work everywhere: as ``fedcl run`` flags (``--image-size``),
in a TOML file (``image-size = 64``), in ``[tool.flwr.app.config]`` and
``flwr run . --run-config "image-size=64"``. Each key is declared once, in its section
(:mod:`fedcl.config.sections`, :mod:`fedcl.config.dbc`); how: :mod:`fedcl.config.keys`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcl.config.dbc import (
    CONSOLIDATION_MODES,
    CONSOLIDATION_OPTIMIZERS,
    FILTER_RULES,
    MOVEMENT_FROM,
    REPRESENTATIONS,
    DBCSettings,
)
from fedcl.config.keys import (
    SECTIONS,
    Key,
    Scalar,
    check_fields,
    key_of,
    keys_of,
    nested,
    parse_bool,
    read_toml,
)
from fedcl.config.sections import (
    BN_STATS,
    DEVICES,
    DRIFT_KINDS,
    EVALUATIONS,
    STAGE_SHIFTS,
    DataKeys,
    LwFSettings,
    ResourceKeys,
    RunKeys,
    ScenarioKeys,
    ServerKeys,
    StrategyKeys,
    TrainingKeys,
)
from fedcl.errors import FedclError, unknown_name

if TYPE_CHECKING:
    from fedcl.scenarios import Scenario

__all__ = [
    "BN_STATS",
    "CONSOLIDATION_MODES",
    "CONSOLIDATION_OPTIMIZERS",
    "DEVICES",
    "DRIFT_KINDS",
    "EVALUATIONS",
    "FILTER_RULES",
    "MAX_STAGES",
    "MOVEMENT_FROM",
    "RECORDED_BEFORE",
    "REPRESENTATIONS",
    "SECTIONS",
    "STAGE_SHIFTS",
    "DBCSettings",
    "Key",
    "LwFSettings",
    "RunConfig",
    "Scalar",
    "data_keys",
    "key_of",
    "keys",
    "parse_bool",
    "parse_setting",
    "read_toml",
]

# The most stages a shift can make distinct: 4 tissue architectures; 4 foreground
# classes (each stage annotates at least one).
MAX_STAGES = {"tissue": 4, "classes": 4}
# Keys whose default changed after run directories were first written: the value a run
# recorded without the key ran with (RunConfig.from_run_dir): until version 0.3 stages
# shifted stain and class mix, and DBC's evidence had no floor (docs/decision-log.md).
RECORDED_BEFORE: dict[str, Scalar] = {"stage-shift": "stain", "dbc-evidence-floor": 0.0}


@dataclass(frozen=True, kw_only=True)
class RunConfig(
    RunKeys, DataKeys, TrainingKeys, ResourceKeys, ScenarioKeys, StrategyKeys, ServerKeys
):
    """Everything that defines a run; two runs with equal configs give equal results.

    The keys of the plain sections are attributes (``config.image_size``); a
    strategy's own settings are nested sections (``config.dbc.tau``, key ``dbc-tau``).
    """

    lwf: LwFSettings = nested(LwFSettings, owner="lwf")
    dbc: DBCSettings = nested(DBCSettings, owner="dbc")

    def __post_init__(self) -> None:
        check_fields(self)  # types, ranges, choices of every key; the sections' types
        scenario = self.scenario_type  # an unknown name: the error, with a did-you-mean
        if self.image_size % 16:
            raise FedclError(
                f"config key 'image-size' must be a multiple of 16, got {self.image_size}"
            )
        if self.min_replies > self.clients:
            raise FedclError(
                f"config key 'min-replies' must be <= clients = {self.clients}, "
                f"got {self.min_replies}"
            )
        self._check_stages()
        self._check_data()
        scenario.check(self)

    def _check_stages(self) -> None:
        if not self.staged:
            return
        limit = MAX_STAGES.get(self.stage_shift)
        if limit is not None and self.stages > limit:
            raise FedclError(
                f"config key 'stages' must be <= {limit} with stage-shift "
                f"{self.stage_shift!r} (it makes at most {limit} distinct stages), "
                f"got {self.stages}"
            )
        if self.rounds != self.stages * self.rounds_per_stage:
            raise FedclError(
                f"config key 'rounds' must equal stages x rounds-per-stage = {self.stages} "
                f"x {self.rounds_per_stage} = {self.stages * self.rounds_per_stage} in "
                f"scenario {self.scenario!r}, got {self.rounds}"
            )

    def _check_data(self) -> None:
        from fedcl.data.real import label_table, parse_data

        server, spec = parse_data(self.server_data, key="server-data"), parse_data(self.data)
        if server.kind != "synthetic" and spec.kind != "synthetic" and server.path == spec.path:
            raise FedclError(
                "config key 'server-data' names the hospitals' own data folder: the "
                "server's tiles must be public tiles no hospital holds (another folder)"
            )
        if server.kind == "unlabeled" and self.strategy == "fltrust":
            raise FedclError(
                "fltrust trains on the server's root set, which needs masks: server-data "
                f"{self.server_data!r} is unlabeled (use bcss:, semicol: or folder: tiles)"
            )
        if spec.kind == "unlabeled":
            raise FedclError(
                "config key 'data': unlabeled tiles have no masks to train on; 'unlabeled:"
                "PATH' is for server-data (DBC's reference set)"
            )
        if spec.kind == "folder":
            label_table(spec.kind, self.label_map)  # errors name the bad pair
        if self.evaluation == "server" and spec.kind != "synthetic":
            raise FedclError(
                "config key 'evaluation' is 'server', but the server holds no hospital "
                f"data ({self.data!r}): use 'hospitals' (server evaluation needs "
                "synthetic data, which the server can regenerate)"
            )

    @property
    def scenario_type(self) -> type[Scenario]:
        """The class of this run's scenario (a built-in or a plug-in)."""
        from fedcl.scenarios import scenario_class

        return scenario_class(self.scenario)

    @property
    def staged(self) -> bool:
        """Whether the scenario has stages (``stages x rounds-per-stage`` rounds)."""
        return self.scenario_type.staged

    @property
    def drifting(self) -> bool:
        """Whether some hospitals drift in this scenario."""
        return self.scenario_type.drifting

    def as_read(self) -> RunConfig:
        """Return this config with the keys its strategy does not read at their defaults.

        Only the built-in ``dbc`` reads the ``dbc-*`` keys, only ``lwf`` the ``lwf-*``
        keys (a plug-in gets the sampling settings only), so two configs with equal
        ``as_read()`` give the same run: ``fedcl compare`` keeps a finished FedAvg run
        when only a DBC default changed.
        """
        return self.replace(**{name: section() for name, section in self._other_sections()})

    def _other_sections(self) -> list[tuple[str, type]]:
        """Return the nested sections of built-in strategies other than this run's."""
        return [
            (f.name, f.metadata["nested"])
            for f in fields(self)
            if "nested" in f.metadata and f.metadata["owner"] != self.strategy
        ]

    def unread_keys(self) -> list[str]:
        """Return the keys this run does not read (written, commented, in config.toml).

        A key stays in the configuration whatever the run (a run directory's
        ``config.toml`` reloads as it was written); this says which ones had no effect:
        another strategy's settings, the other scenarios' knobs, ``site-stain`` with real
        data (its tiles have their own stains), the label map with synthetic data.
        """
        strategy = {
            "proximal-mu": ("fedprox",),
            "byzantine": ("krum", "multikrum", "bulyan"),
            "root-tiles": ("fltrust",),
            "reference-size": ("dbc", "fltrust"),  # fltrust: its root set follows it
        }
        unread = {k for k, readers in strategy.items() if self.strategy not in readers}
        others = {name for name, _ in self._other_sections()}
        unread |= {k.name for k in keys() if k.path[0] in others}
        if not self.drifting:
            unread |= {"drift-ratio", "drift-kind", "drift-strength", "drift-start-round"}
        if not self.staged:
            unread |= {"stages", "rounds-per-stage", "stage-shift", "forgetting-strength"}
        if self.stage_shift != "stain":
            unread.add("forgetting-strength")
        unread |= {"label-map", "data-split"} if self.data == "synthetic" else {"site-stain"}
        return [k.name for k in keys() if k.name in unread]

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, source: str = "config", strict: bool = True
    ) -> RunConfig:
        """Build a config from kebab-case keys (TOML, Flower run config, a message).

        Parameters
        ----------
        values : Mapping[str, Any]
            Key -> value; missing keys take their defaults, except ``rounds`` in a staged
            scenario: ``stages x rounds-per-stage`` (an explicit value must equal it).
        source : str
            Named in error messages (a file name, "run config").
        strict : bool
            Unknown keys are an error (with a did-you-mean) when True, ignored when
            False (a Flower message also carries ``server-round``).
        """
        known = {k.name: k for k in keys()}
        plain: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name in known:
                *section, attr = known[name].path
                (sections.setdefault(section[0], {}) if section else plain)[attr] = value
            elif strict:
                raise FedclError(f"{source}: {unknown_name('key', name, known)}")
        try:
            for f in fields(cls):
                if f.name in sections:
                    plain[f.name] = f.metadata["nested"](**sections[f.name])
            if "rounds" not in plain:
                plain["rounds"] = _rounds(plain)
            return cls(**plain)
        except FedclError as err:
            raise FedclError(f"{source}: {err}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        """Read a TOML file of kebab-case keys (the same as the CLI flags)."""
        return cls.from_mapping(read_toml(path), source=str(path))

    @classmethod
    def from_run_dir(cls, directory: str | Path) -> RunConfig:
        """Read the ``config.toml`` of a run directory, as the run was run.

        A run recorded before a key existed ran with that key's value of the time
        (:data:`RECORDED_BEFORE`), not with today's default.
        """
        path = Path(directory) / "config.toml"
        return cls.from_mapping(RECORDED_BEFORE | read_toml(path), source=str(path))

    def to_mapping(self) -> dict[str, Scalar]:
        """Return kebab-case key -> value (a valid Flower ``ConfigRecord``)."""
        return {k.name: k.value(self) for k in keys()}

    def with_keys(self, values: Mapping[str, Any], *, source: str = "settings") -> RunConfig:
        """Return a copy with kebab-case ``values`` applied (``{"dbc-tau": 2.0}``)."""
        return RunConfig.from_mapping(self.to_mapping() | dict(values), source=source)

    def local_schedule(self) -> dict[str, Any]:
        """Keyword arguments of ``fedcl.training.train_local`` for one local round.

        The hospitals' schedule; FLTrust's server update must follow the same one.
        """
        return {
            "epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "bn_stats": self.bn_stats,
        }

    def with_run_dir(self) -> RunConfig:
        """Return a copy whose ``out`` is set (a fresh time-stamped default if empty)."""
        if self.out:
            return self
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = self.scenario.rpartition(":")[2]  # a plug-in: its class name
        return self.replace(out=f"runs/{self.strategy}-{name}-s{self.seed}-{stamp}")

    def replace(self, **changes: Any) -> RunConfig:
        """Return a copy with ``changes`` (attribute names) applied, and validated."""
        return dataclasses.replace(self, **changes)


def _rounds(values: Mapping[str, Any]) -> Any:
    """Return a run's default length: ``stages x rounds-per-stage`` when staged, else 15."""
    from fedcl.scenarios import scenario_class

    scenario = values.get("scenario", RunKeys.scenario)
    stages = values.get("stages", ScenarioKeys.stages)
    per_stage = values.get("rounds_per_stage", ScenarioKeys.rounds_per_stage)
    if isinstance(scenario, str) and isinstance(stages, int) and isinstance(per_stage, int):
        if scenario_class(scenario).staged:  # an unknown name: the error
            return stages * per_stage
    return RunKeys.rounds


@cache
def keys() -> tuple[Key, ...]:
    """Every key of :class:`RunConfig`, section by section in :data:`SECTIONS` order."""
    order = list(SECTIONS)
    return tuple(sorted(keys_of(RunConfig), key=lambda k: order.index(k.section)))


def data_keys() -> tuple[str, ...]:
    """Return the keys that shape a hospital's tiles (declared with ``data=True``).

    With the hospital, its stage and whether it drifts, they fingerprint the tiles a
    hospital keeps between rounds: a change of any of them regenerates the tiles.
    """
    return tuple(k.name for k in keys() if k.shapes_data)


def parse_setting(text: str, *, source: str = "setting") -> tuple[str, Scalar]:
    """``KEY=VALUE`` (a config key, as on the command line) -> (key, typed value)."""
    key, sep, raw = text.partition("=")
    types: dict[str, type] = {k.name: type(k.default) for k in keys()}
    if not sep or not key:
        raise FedclError(f"{source}: expected KEY=VALUE, got {text!r}")
    if key not in types:
        raise FedclError(f"{source}: {unknown_name('key', key, types)}")
    kind = types[key]
    try:
        value: Scalar = parse_bool(raw) if kind is bool else kind(raw)
    except ValueError:
        raise FedclError(f"{source}: {key} must be {kind.__name__}, got {raw!r}") from None
    return key, value
