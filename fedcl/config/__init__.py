"""The run configuration: one frozen, validated dataclass, parsed once per entry point.

The same kebab-case keys work everywhere: as ``fedcl run`` flags (``--image-size``),
in a TOML file (``image-size = 64``), in ``[tool.flwr.app.config]`` and
``flwr run . --run-config "image-size=64"``. Each key is declared once: the core ones in
their section (:mod:`fedcl.config.sections`), a strategy's or a scenario's own in its
module (a :class:`Section`); how: :mod:`fedcl.config.keys`.

This package knows names and values, not plug-ins: which sections a run's strategy and
scenario declare is resolved one layer up (:mod:`fedcl.configure`), which builds a
config from a mapping with them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from fedcl.config.keys import (
    SECTIONS,
    Key,
    Scalar,
    Section,
    check_fields,
    keys_of,
    opt,
    parse_bool,
    read_toml,
    sections_of,
)
from fedcl.config.sections import (
    BN_STATS,
    DEVICES,
    EVALUATIONS,
    DataKeys,
    ResourceKeys,
    RunKeys,
    ScenarioKeys,
    ServerKeys,
    TrainingKeys,
    evaluation_period,
)
from fedcl.errors import FedclError, unknown_name

__all__ = [
    "BN_STATS",
    "DEVICES",
    "EVALUATIONS",
    "SECTIONS",
    "Key",
    "RunConfig",
    "Scalar",
    "Section",
    "data_keys",
    "keys",
    "opt",
    "parse_bool",
    "parse_setting",
    "read_toml",
    "sections_of",
]

S = TypeVar("S", bound=Section)


@dataclass(frozen=True, kw_only=True)
class RunConfig(RunKeys, DataKeys, TrainingKeys, ResourceKeys, ScenarioKeys, ServerKeys):
    """Everything that defines a run; two runs with equal configs give equal results.

    The core keys are attributes (``config.image_size``); the keys a run's strategy and
    scenario declare are in their sections (``config.section(DBCSettings).tau``, key
    ``dbc-tau``).
    """

    sections: tuple[Section, ...] = field(default=())
    """The sections of the run's strategy and scenario (:mod:`fedcl.configure` fills it)."""

    def __post_init__(self) -> None:
        check_fields(self)  # types, ranges, choices of every core key
        evaluation_period(self.evaluate_rounds)
        if self.image_size % 16:
            raise FedclError(
                f"config key 'image-size' must be a multiple of 16, got {self.image_size}"
            )
        if self.min_replies > self.clients:
            raise FedclError(
                f"config key 'min-replies' must be <= clients = {self.clients}, "
                f"got {self.min_replies}"
            )
        if len({type(s) for s in self.sections}) < len(self.sections):
            raise FedclError("a RunConfig holds each section once")
        self._check_data()

    def _check_data(self) -> None:
        from fedcl.data.real import label_table, parse_data  # numpy-free checks of the paths

        server, spec = parse_data(self.server_data, key="server-data"), parse_data(self.data)
        if server.kind != "synthetic" and spec.kind != "synthetic" and server.path == spec.path:
            raise FedclError(
                "config key 'server-data' names the hospitals' own data folder: the "
                "server's tiles must be public tiles no hospital holds (another folder)"
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

    def section(self, cls: type[S]) -> S:
        """Return this run's section of class ``cls``; its defaults if the run has none."""
        for section in self.sections:
            if type(section) is cls:
                return section
        return cls()

    @property
    def section_types(self) -> tuple[type[Section], ...]:
        """The classes of :attr:`sections`, in order."""
        return tuple(type(s) for s in self.sections)

    def keys(self) -> tuple[Key, ...]:
        """Every key of this run: the core keys, then its sections' keys."""
        return keys(*self.section_types)

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, Any],
        *,
        sections: tuple[type[Section], ...] = (),
        source: str = "config",
        strict: bool = True,
        tolerate: Callable[[str], bool] | None = None,
    ) -> RunConfig:
        """Build a config from kebab-case keys (TOML, Flower run config, a message).

        Parameters
        ----------
        values : Mapping[str, Any]
            Key -> value; missing keys take their defaults.
        sections : tuple of Section subclasses
            The sections of the run's strategy and scenario (:mod:`fedcl.configure`).
        source : str
            Named in error messages (a file name, "run config").
        strict : bool
            Unknown keys are an error (with a did-you-mean) when True, ignored when
            False (a Flower message also carries ``server-round``).
        tolerate : callable, optional
            ``tolerate(key)``: whether an unknown key is ignored even when strict (other
            strategies' and scenarios' keys, which a Flower app's run config, a study's
            shared file and older run directories hold). Asked only about unknown keys.
        """
        known = {k.name: k for k in keys(*sections)}
        core: dict[str, Any] = {}
        own: dict[type, dict[str, Any]] = {section: {} for section in sections}
        for name, value in values.items():
            if name in known:
                key = known[name]
                (core if key.section_type is None else own[key.section_type])[key.attr] = value
            elif strict and not (tolerate and tolerate(name)):
                raise FedclError(f"{source}: {unknown_name('key', name, known)}")
        try:
            built = tuple(section(**own[section]) for section in sections)
            return cls(**core, sections=built)
        except FedclError as err:
            raise FedclError(f"{source}: {err}") from None

    def to_mapping(self) -> dict[str, Scalar]:
        """Return kebab-case key -> value (a valid Flower ``ConfigRecord``)."""
        return {k.name: k.value(self) for k in self.keys()}

    def with_keys(self, values: Mapping[str, Any], *, source: str = "settings") -> RunConfig:
        """Return a copy with kebab-case ``values`` applied (``{"dbc-tau": 2.0}``).

        The run's strategy and scenario stay (their sections are this config's); to
        change them, build a new config with :func:`fedcl.configure.load_config`.
        """
        for name in ("strategy", "scenario"):
            if name in values and values[name] != getattr(self, name):
                raise FedclError(
                    f"{source}: with_keys keeps the run's {name}; build a config for "
                    f"another {name} with fedcl.configure.load_config"
                )
        return RunConfig.from_mapping(
            self.to_mapping() | dict(values), sections=self.section_types, source=source
        )

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


def keys(*sections: type[Section]) -> tuple[Key, ...]:
    """Return the core keys of :class:`RunConfig`, then those of ``sections``.

    Core keys are ordered section by section in :data:`SECTIONS` order.
    """
    return _core_keys() + tuple(key for section in sections for key in _own_keys(section))


@cache
def _core_keys() -> tuple[Key, ...]:
    order = list(SECTIONS)
    return tuple(sorted(keys_of(RunConfig), key=lambda k: order.index(k.section)))


def _own_keys(section: type[Section]) -> tuple[Key, ...]:
    return tuple(keys_of(section, own=True))


def data_keys(config: RunConfig) -> tuple[str, ...]:
    """Return the keys of ``config`` that shape a hospital's tiles (``data=True``).

    With the hospital, its stage and whether it drifts, they fingerprint the tiles a
    hospital keeps between rounds: a change of any of them regenerates the tiles.
    """
    return tuple(k.name for k in config.keys() if k.shapes_data)


def parse_setting(
    text: str, *, sections: tuple[type[Section], ...] = (), source: str = "setting"
) -> tuple[str, Scalar]:
    """``KEY=VALUE`` (a config key, as on the command line) -> (key, typed value)."""
    key, sep, raw = text.partition("=")
    types: dict[str, type] = {k.name: type(k.default) for k in keys(*sections)}
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
