"""How a configuration key is declared, named, checked and read.

A key is one field of a section dataclass (:mod:`fedcl.config.sections`), declared with
:func:`opt`: its default, help text, section, whether it shapes the hospitals' tiles,
and the rule its values obey. Everything else derives from that declaration: the
``fedcl run`` flags, the TOML keys, the Flower run-config keys, the generated
``[tool.flwr.app.config]`` block and the options page (:mod:`fedcl.options`).

A strategy or a scenario declares its own keys the same way, in its own module: a
*section*, a frozen dataclass of :func:`opt` fields with a ``PREFIX`` for its keys
(``dbc-`` + ``tau`` = ``dbc-tau``) that checks itself (:func:`check_fields`), named by
the class's ``sections`` attribute. A run's configuration holds the sections of its
strategy and scenario (``config.section(DBCSettings).tau``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

from fedcl.errors import FedclError, unknown_name

Scalar = bool | int | float | str

# The sections a key belongs to, in the order the documentation and `--help` show them.
SECTIONS = {
    "run": "What runs: the strategy, the scenario, how many hospitals and rounds, the seed",
    "data": "The hospitals' tiles: synthetic or real, their size and number",
    "training": "Each hospital's local training and who scores the global model",
    "resources": "Where the hospitals run: Ray resources and the device",
    "scenario": "The knobs of the client-drift and staged (forgetting) scenarios",
    "strategy": "Settings of one baseline strategy each",
    "server": "What the server accepts from a hospital, and the server's own tiles",
    "dbc": "Dynamic Barlow Continuity (strategy dbc); see the DBC page",
    "dbc-variants": "DBC variants that were measured and not adopted (the one-round "
    "filter rule, other consolidation steps and representations), kept so that the "
    "results that compare them can be reproduced; the decision log says why each lost",
}


def opt(
    default: Scalar,
    help: str,  # noqa: A002 - the word argparse uses
    *,
    section: str,
    data: bool = False,
    rule: str = "",
    choices: Iterable[str] = (),
    key: str = "",
) -> Any:
    """Declare a key.

    Parameters
    ----------
    default : bool, int, float or str
        The default; its type is the key's type (an int is accepted for a float).
    help : str
        One line for ``--help`` and the options page.
    section : str
        One of :data:`SECTIONS`.
    data : bool
        Whether the key shapes a hospital's tiles (a change regenerates them).
    rule : str
        What a number must obey: ``">= 1"``, ``"> 0"``, ``"0..1"`` (closed) or
        ``"[0, 1)"`` (half-open); the error message repeats it.
    choices : iterable of str
        The allowed values of a string key (an error suggests the closest).
    key : str
        The key's name if not the field's (kebab-case, without the section prefix).
    """
    assert section in SECTIONS, section
    meta = {
        "help": help,
        "section": section,
        "data": data,
        "rule": rule,
        "choices": tuple(choices),
        "key": key,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Key:
    """One configuration key: its kebab-case name and where its value lives."""

    name: str  # "image-size", "dbc-tau"
    attr: str  # the field of its section: "image_size", "tau"
    spec: Field[Any]
    section_type: type | None = None  # a strategy's or scenario's own section; None: core

    @property
    def dest(self) -> str:
        """The key as a Python identifier (``dbc_tau``): argparse's destination."""
        return self.name.replace("-", "_")

    @property
    def default(self) -> Scalar:
        """The declared default."""
        return cast(Scalar, self.spec.default)

    @property
    def section(self) -> str:
        """The section the key is documented under."""
        return str(self.spec.metadata["section"])

    @property
    def help(self) -> str:
        """The help text."""
        return str(self.spec.metadata["help"])

    @property
    def shapes_data(self) -> bool:
        """Whether a change of this key regenerates a hospital's tiles."""
        return bool(self.spec.metadata["data"])

    def value(self, config: Any) -> Scalar:
        """Return this key's value in ``config`` (a RunConfig)."""
        holder = config if self.section_type is None else config.section(self.section_type)
        return cast(Scalar, getattr(holder, self.attr))


def keys_of(cls: type, *, own: bool = False) -> Iterator[Key]:
    """Every key declared by dataclass ``cls`` (fields without ``opt`` metadata are skipped).

    ``own``: ``cls`` is a strategy's or a scenario's section (keys ``cls.PREFIX`` +
    field key; values in ``config.section(cls)``), not one of the core sections.
    """
    prefix = getattr(cls, "PREFIX", "") if own else ""
    for f in fields(cls):
        if "section" in f.metadata:
            name = prefix + key_of(f.metadata.get("key") or f.name)
            yield Key(name, f.name, f, cls if own else None)


def check_fields(section: Any, prefix: str = "") -> None:
    """Check every field of ``section`` against its declaration.

    An int given for a float becomes a float; any other type is an error, as is a
    number outside its ``rule`` or a string outside its ``choices``. Fields that are
    not keys (no :func:`opt` declaration) are left alone.
    """
    assert is_dataclass(section)
    for f in fields(section):
        if "section" not in f.metadata:
            continue
        key = prefix + key_of(f.metadata.get("key") or f.name)
        value = getattr(section, f.name)
        expected = type(f.default)
        if expected is float and type(value) is int:
            value = float(value)
            object.__setattr__(section, f.name, value)
        elif type(value) is not expected:
            raise FedclError(
                f"config key {key!r} must be {expected.__name__}, "
                f"got {value!r} ({type(value).__name__})"
            )
        rule, choices = f.metadata["rule"], f.metadata["choices"]
        if rule and not obeys(value, rule):
            raise FedclError(f"config key {key!r} must be {_said(rule)}, got {value!r}")
        if choices and value not in choices:
            raise unknown_name(key, value, choices)


def obeys(value: float, rule: str) -> bool:
    """Whether ``value`` obeys ``rule`` (see :func:`opt`); NaN obeys none."""
    if rule.startswith(">="):
        return value >= float(rule[2:])
    if rule.startswith(">"):
        return value > float(rule[1:])
    if rule.startswith("["):
        low, high = (float(x) for x in rule[1:-1].split(","))
        return low <= value < high
    low, high = (float(x) for x in rule.split(".."))
    return low <= value <= high


def _said(rule: str) -> str:
    return rule if rule[0] in "><" else f"in {rule}"


def key_of(name: str) -> str:
    """Field name -> config key (``image_size`` -> ``image-size``)."""
    return name.replace("_", "-")


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case) -> bool."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing or malformed file into a FedclError."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise FedclError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise FedclError(f"config file {str(path)!r} is not valid TOML: {err}") from None


@dataclass(frozen=True, kw_only=True)
class Section:
    """A strategy's or a scenario's own keys.

    Subclass it as a frozen, keyword-only dataclass of :func:`opt` fields, with the
    ``PREFIX`` its keys share (``"dbc-"``), and name it in the owner's ``sections``
    tuple: its keys then become flags, TOML and Flower keys of the runs that use the
    owner, and are checked when the section is built.
    """

    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self, self.PREFIX)

    def unread(self) -> tuple[str, ...]:
        """Return this section's keys that the run, as these values set it, does not read."""
        return ()


def sections_of(*owners: type) -> tuple[type[Section], ...]:
    """Return the sections ``owners`` (strategy, scenario classes) declare, each once.

    An owner declares them as the class attribute ``sections`` (a tuple of
    :class:`Section` subclasses; none: no keys of its own).
    """
    found: list[type[Section]] = []
    for owner in owners:
        declared = getattr(owner, "sections", ())  # the one place it is looked up
        for section in declared:
            if not (isinstance(section, type) and issubclass(section, Section)):
                raise FedclError(
                    f"{owner.__name__}.sections must hold fedcl.config.Section subclasses, "
                    f"got {section!r}"
                )
            if section not in found:
                found.append(section)
    return tuple(found)
