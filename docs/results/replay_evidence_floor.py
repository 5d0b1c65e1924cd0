"""Replay DBC's evidence rule on finished runs with other floors and thresholds.

An offline approximation: it re-decides every round from the peer scores the runs
logged (``metrics.jsonl``), as if the decisions had not changed the later models (exact
where the decisions agree with the run's own). One row per scenario (and stage shift),
one column per (floor, tau): honest replies rejected, and the recall on drifted ones.
Usage::

    python docs/results/replay_evidence_floor.py RUN_DIR [RUN_DIR ...]   # DBC runs
    python docs/results/replay_evidence_floor.py --variants 0.02:1.25,0.01:1.0 RUN_DIR ...
    python docs/results/replay_evidence_floor.py --score max --variants ... RUN_DIR ...
    python docs/results/replay_evidence_floor.py --ranges 0.02 RUN_DIR ...  # per hospital

``--score`` says what each reply's evidence is made of: ``mean`` (the runs' own: the
peer score, the mean of the classes' shares), ``max`` (the largest class's share of it:
``peer_columns``, runs from 2026-12-06 on), ``classes`` (each class's share against the
typical share of that class, the largest of those evidences).
"""

import json
import statistics
import sys
from pathlib import Path

from fedcl.configure import from_run_dir
from fedcl.continuity import largest_shares, peer_evidence, persistent_outlier
from fedcl.scenarios import scenario_of
from fedcl.scenarios.sections import DriftSettings
from fedcl.strategies.dbc import DBCSettings

# (evidence floor, tau): the runs' own rule first, then the neighbourhood of the default
VARIANTS = [(0.0, 1.5), (0.01, 1.5), (0.015, 1.25), (0.02, 1.5), (0.02, 1.25), (0.02, 1.0),
            (0.03, 1.0)]  # fmt: skip


def evidence_of(report: dict, score: str, floor: float) -> list[float] | None:
    """Return each reply's evidence this round under ``score`` (None: none to compare)."""
    peer = report.get("peer_scores")
    if not peer or None in peer:
        return None
    if score == "mean":
        return peer_evidence(peer, floor)
    columns = report["peer_columns"]
    if score == "max":
        return peer_evidence(largest_shares(columns), floor)
    per_class = [
        peer_evidence([cols[i] for cols in columns], floor)
        for i in range(len(columns[0]))
        if None not in (cols[i] for cols in columns)
    ]
    if None in per_class:
        return None
    return [max(e[k] for e in per_class) for k in range(len(columns))]  # type: ignore[index]


def counts(run: Path, floor: float, tau: float, score: str = "mean") -> tuple[int, int, int, int]:
    """Return (honest replies rejected, honest replies, drifted rejected, drifted) of a run."""
    config = from_run_dir(run)
    evidence: dict[int, list[float]] = {}
    false_alarms = honest = caught = drifted = 0
    for line in (run / "metrics.jsonl").open():
        record = json.loads(line)
        report = record.get("aggregation") or {}
        scores = evidence_of(report, score, floor)
        if scores is None:
            continue
        for hospital, e in zip(report["hospitals"], scores, strict=True):
            evidence.setdefault(hospital, []).append(e)
            window = config.section(DBCSettings).window
            rejected = persistent_outlier(evidence[hospital], tau, window)
            if scenario_of(config).is_drifted(hospital, record["round"]):
                drifted, caught = drifted + 1, caught + rejected
            else:
                honest, false_alarms = honest + 1, false_alarms + rejected
    return false_alarms, honest, caught, drifted


def ranges(runs: list[Path], floor: float, first: int = 5) -> None:
    """Print each hospital's range of windowed mean evidence from round ``first`` on.

    The mean the evidence rule compares with tau, over the run's ``dbc-window``. One line
    per run, under each score (``*`` marks the scenario's drifted hospitals): where an
    honest hospital's range reaches a drifted one's, no tau separates them.
    """
    for run in runs:
        config = from_run_dir(run)
        drifted, window = scenario_of(config).is_drifted, config.section(DBCSettings).window
        cells = []
        for score in ("mean", "max"):
            evidence: dict[int, list[float]] = {}
            for line in (run / "metrics.jsonl").open():
                report = json.loads(line).get("aggregation") or {}
                scores = evidence_of(report, score, floor) if report.get("peer_columns") else None
                for hospital, e in zip(report.get("hospitals", []), scores or [], strict=False):
                    evidence.setdefault(hospital, []).append(e)
            for hospital, history in sorted(evidence.items()):
                means = [
                    statistics.fmean(history[max(0, i - window + 1) : i + 1])
                    for i in range(first - 1, len(history))
                ]
                mark = "*" if drifted(hospital, len(history)) else ""
                cells.append(f"{score} {mark}h{hospital} {min(means):.2f}..{max(means):.2f}")
        print(f"{run}: " + "; ".join(cells))


def main(runs: list[Path], variants: list[tuple[float, float]], score: str = "mean") -> None:
    """Print the Markdown table."""
    rows: dict[str, list[list[int]]] = {}
    for run in runs:
        config = from_run_dir(run)
        scenario = scenario_of(config)
        kind = config.section(DriftSettings).drift_kind if scenario.drifting else ""
        shift = ", ".join(x for x in (scenario.stage_shift, kind) if x)
        name = config.scenario + (f" ({shift})" if shift else "")
        totals = rows.setdefault(name, [[0, 0, 0, 0] for _ in variants])
        for total, (floor, tau) in zip(totals, variants, strict=True):
            for i, n in enumerate(counts(run, floor, tau, score)):
                total[i] += n
    print("| scenario | " + " | ".join(f"floor {f}, tau {t}" for f, t in variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for name, totals in sorted(rows.items()):
        cells = [
            f"{fa}/{honest} honest rejected"
            + (f", recall {caught / drifted:.2f}" if drifted else "")
            for fa, honest, caught, drifted in totals
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    args = sys.argv[1:]
    variants, score = VARIANTS, "mean"
    if args[:1] == ["--ranges"]:
        ranges([Path(p) for p in args[2:]], float(args[1]))
        sys.exit()
    if args[:1] == ["--score"]:
        score, args = args[1], args[2:]
    if args[:1] == ["--variants"]:
        pairs = (pair.split(":") for pair in args[1].split(","))
        variants = [(float(floor), float(tau)) for floor, tau in pairs]
        args = args[2:]
    main([Path(p) for p in args], variants, score)
