"""The run directory: resolved config, per-round metrics, summary, checkpoint, plots.

Layout of ``RUN_DIR``::

    config.toml        the resolved configuration (re-runnable with --config)
    metrics.jsonl      one JSON object per round (round 0 = the initial model)
    summary.json       final figures (see :func:`fedcl.metrics.summarize`)
    checkpoint.pt      round, global model state_dict, strategy state; atomic writes
    dice.png           Dice per round, per hospital and mean
    dice_matrix.png    (staged scenarios) the stage x stage Dice matrix R, each reading
    dbc.png            (dbc) peer scores per hospital per round, rejections marked
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
import torch

from fedcl.config import RunConfig
from fedcl.configure import unread_keys
from fedcl.errors import FedclError
from fedcl.machine import software
from fedcl.metrics import READING_NAMES, SECONDS_PREFIX, summarize
from fedcl.scenarios import scenario_of
from fedcl.strategies.dbc.settings import DBCSettings

RoundCallback = Callable[[dict[str, Any]], None]


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (anywhere in dicts/lists) by None: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class RunRecorder:
    """Writes a run directory as the server makes progress.

    Parameters
    ----------
    config : RunConfig
        The resolved configuration; ``config.out`` is the directory.
    callbacks : sequence of callables
        Each gets every round record (a dict) as soon as it is complete, e.g. a
        progress bar.
    """

    def __init__(
        self,
        config: RunConfig,
        callbacks: Sequence[RoundCallback] = (),
        records: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.config = config
        self.dir = Path(config.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.callbacks = list(callbacks)
        # A resumed run starts from the records of the rounds its checkpoint holds.
        self.records: list[dict[str, Any]] = list(records)
        self._train: dict[int, dict[str, float]] = {}
        self._reports: dict[int, dict[str, Any]] = {}
        self._last = time.perf_counter()
        # A summary is the mark of a finished run (fedcl compare keeps those): a run
        # starting or resuming here is not finished, whatever an earlier run left.
        (self.dir / "summary.json").unlink(missing_ok=True)
        _atomic_write(self.dir / "config.toml", lambda p: _write_bytes(p, _toml(config)))
        self.provenance = write_provenance(config, self.dir)
        # imported when needed: a run that does not use it does not load it
        from fedcl.tensorboard import TensorBoardLog

        # a resumed run's earlier rounds are in the event files its first process wrote
        self.tensorboard = TensorBoardLog(config, self.dir, hospital_names(config, self.dir))
        lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.records)
        _atomic_write(self.dir / "metrics.jsonl", lambda p: _write_text(p, lines))

    def train_aggregated(
        self,
        server_round: int,
        metrics: Mapping[str, float],
        report: Mapping[str, Any] | None = None,
    ) -> None:
        """Remember the round's aggregated training metrics and the strategy's report."""
        self._train[server_round] = dict(metrics)
        if report is not None:
            self._reports[server_round] = dict(report)

    def has_record(self, server_round: int) -> bool:
        """Whether the record of ``server_round`` (or a later one) is already written."""
        return bool(self.records) and self.records[-1]["round"] >= server_round

    def round_evaluated(self, server_round: int, evaluation: Mapping[str, Any]) -> dict[str, Any]:
        """Complete the record of ``server_round``: append it and notify the callbacks.

        ``evaluation`` holds the round's figures (``dice``, ``dice_per_hospital``,
        ``dice_per_stage``, ...; :func:`fedcl.evaluation.round_evaluation`).
        """
        now = time.perf_counter()
        train = self._train.pop(server_round, {})
        train_loss = train.get("train-loss")
        # the hospitals' mean seconds per phase of their train handler (fedcl.hospital)
        phases = {
            k.removeprefix(SECONDS_PREFIX): v
            for k, v in train.items()
            if k.startswith(SECONDS_PREFIX)
        }
        # null, not NaN, for a Dice that does not exist (no tile has the class)
        record: dict[str, Any] = json_safe(
            {
                "round": server_round,
                **evaluation,
                "train_loss": train_loss,
                # the received model's loss on the hospitals' first batches
                "first_loss": train.get("first-loss"),
                "wall_seconds": round(now - self._last, 4),
            }
        )
        if phases:
            record["hospital_seconds"] = {k: round(v, 4) for k, v in phases.items()}
        if server_round in self._reports:
            record["aggregation"] = self._reports.pop(server_round)
        self._last = now
        self.records.append(record)
        with (self.dir / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self.tensorboard(record)
        for callback in self.callbacks:
            callback(record)
        return record

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` (``round``, ``model`` state_dict, ``strategy`` state) atomically.

        The checkpoint also holds what this recorder keeps for rounds whose record is not
        complete yet (with evaluation at the hospitals, the last round's training figures
        and report wait for the next round's replies), so a resumed run loses none.
        """
        pending = {"train": self._train, "reports": self._reports}
        _atomic_write(
            self.dir / "checkpoint.pt", lambda p: torch.save(dict(state) | {"recorder": pending}, p)
        )

    def restore(self, checkpoint: Mapping[str, Any]) -> None:
        """Take back the pending figures a :meth:`checkpoint` saved (resume)."""
        pending = checkpoint.get("recorder", {})
        self._train |= pending.get("train", {})
        self._reports |= pending.get("reports", {})

    def finish(self) -> dict[str, Any]:
        """Write ``summary.json``, the plots and the TensorBoard hparams; return the summary."""
        summary = write_report(self.config, self.records, self.dir)
        self.tensorboard.finish(summary)
        return summary


def write_report(
    config: RunConfig, records: Sequence[dict[str, Any]], run_dir: Path
) -> dict[str, Any]:
    """(Re)write a run's ``summary.json`` and plots from its config and records."""
    from fedcl.plots import plot_dbc, plot_dice, plot_dice_matrix  # matplotlib: server only

    summary = summarize(config, records)
    _atomic_write(
        run_dir / "summary.json",
        lambda p: _write_text(p, json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n"),
    )
    title = _title(config)
    names = hospital_names(config, run_dir)
    plot_dice(records, run_dir / "dice.png", title=title, names=names)
    if len(summary["dice_matrix"]) > 1:  # one stage: a 1 x 1 "matrix" says nothing
        plot_dice_matrix(
            {name: summary[f"dice_matrix{r}"] for r, name in READING_NAMES.items()},
            run_dir / "dice_matrix.png",
            title=title,
        )
    if any("peer_scores" in (r.get("aggregation") or {}) for r in records):
        dbc = config.section(DBCSettings)
        tau = dbc.tau if dbc.filter_rule == "evidence" else None
        starts = scenario_of(config).stage_boundaries()
        plot_dbc(records, run_dir / "dbc.png", title=title, tau=tau, names=names, boundaries=starts)
    return summary


def _toml(config: RunConfig) -> bytes:
    unread = textwrap.fill(
        ", ".join(unread_keys(config)), width=86, initial_indent="# ", subsequent_indent="# "
    )
    header = f"# Keys this run did not read (kept so the file reloads as written):\n{unread}\n\n"
    return (header + tomli_w.dumps(config.to_mapping())).encode()


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """Load ``RUN_DIR/checkpoint.pt`` (round, model, strategy, rng) with clear errors."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FedclError(
            f"{str(path)!r} does not exist: nothing to resume (a run writes its first "
            "checkpoint after evaluating the initial model)"
        )
    try:
        # tensors come back on the CPU: a run checkpointed on a GPU resumes anywhere
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise FedclError(f"{str(path)!r} is not a readable checkpoint: {err}") from None
    missing = {"round", "model", "strategy"} - set(checkpoint)
    if missing:
        raise FedclError(f"{str(path)!r} lacks {sorted(missing)}: not a fedcl checkpoint")
    return checkpoint


def _title(config: RunConfig) -> str:
    data = "synthetic" if config.data == "synthetic" else config.data.split(":", 1)[0].upper()
    shift = scenario_of(config).stage_shift
    scenario = config.scenario + (f" ({shift})" if shift else "")
    return (
        f"{config.strategy} on {scenario}, {config.clients} hospitals, {data} data, "
        f"seed {config.seed}"
    )


def write_provenance(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Write ``provenance.json``: the data, each hospital's source, the server's tiles.

    A server that cannot see the hospitals' real data (a deployment) says so instead.
    ``software``: what wrote the file (:func:`fedcl.machine.software`; a resumed run
    says what resumed it).
    """
    # imported when needed: a run that does not use it does not load it
    from fedcl.scenarios.tiles import provenance

    try:
        found = provenance(config)
    except FedclError as err:
        found = provenance(config.replace(data="synthetic")) | {
            "data": config.data,
            "hospitals": f"not visible where the server runs ({err})",
        }
    found["software"] = software()
    _atomic_write(
        run_dir / "provenance.json", lambda p: _write_text(p, json.dumps(found, indent=2) + "\n")
    )
    return found


def hospital_names(config: RunConfig, run_dir: Path) -> list[str]:
    """Each hospital's label: ``hospital 0 (A1, B6)`` with its source from provenance.json."""
    try:
        sources = json.loads((run_dir / "provenance.json").read_text())["hospitals"]
    except (OSError, ValueError, KeyError):
        sources = {}
    if not isinstance(sources, dict):  # not visible where the server runs
        sources = {}
    names = []
    for h in range(config.clients):
        source = str(sources.get(str(h), ""))
        if config.data == "synthetic":  # the sites are generated: only drift is news
            source = "drifted" if source.endswith("drifted") else ""
        names.append(f"hospital {h} ({source})" if source else f"hospital {h}")
    return names


def read_metrics(run_dir: str | Path, complete_only: bool = False) -> list[dict[str, Any]]:
    """Read a run's ``metrics.jsonl`` back into a list of round records.

    ``complete_only``: skip a last line torn by a kill (no newline or invalid JSON).
    """
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    if complete_only:
        text = text[: text.rfind("\n") + 1]
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if not complete_only:
                raise
    return records
