"""Replay DBC's evidence rule on finished runs with a floor under the typical peer score.

An offline approximation: it re-decides every round from the peer scores the runs logged
(``metrics.jsonl``), as if the decisions had not changed the later models. Usage::

    python docs/results/replay_evidence_floor.py RUNS_ROOT   # e.g. a fedcl compare --out
"""

import json
import math
import sys
from pathlib import Path

from fedcl.config import DBCSettings, RunConfig
from fedcl.continuity import (
    EVIDENCE_EPS,
    peer_evidence,
    persistent_outlier,
    typical_peer_score,
)
from fedcl.metrics import detection
from fedcl.strategies.dbc import ACCEPTED, OUTLIER

FLOORS = (0.0, 0.01, 0.03, 0.05)


def replay(records: list[dict], floor: float, settings: DBCSettings) -> list[dict]:
    """Return the records with DBC's decisions re-made with ``typical = max(typical, floor)``."""
    evidence: dict[int, list[float]] = {}
    out = []
    for record in records:
        report = record.get("aggregation") or {}
        peer = report.get("peer_scores")
        if not peer or None in peer:
            out.append(record)
            continue
        typical = typical_peer_score(peer)
        lift = math.log((max(typical, floor) + EVIDENCE_EPS) / (typical + EVIDENCE_EPS))
        shifted = [e - lift for e in peer_evidence(peer) or []]
        decisions = []
        for hospital, e in zip(report["hospitals"], shifted, strict=True):
            evidence.setdefault(hospital, []).append(e)
            out_ = persistent_outlier(evidence[hospital], settings.tau, settings.window)
            decisions.append(OUTLIER if out_ else ACCEPTED)
        out.append({**record, "aggregation": {**report, "decisions": decisions}})
    return out


def main(root: Path) -> None:
    """Print a Markdown table: one row per DBC run under ``root``, one column per floor."""
    print("| run | " + " | ".join(f"floor {f}: rejected (P / R)" for f in FLOORS) + " |")
    print("|---" * (len(FLOORS) + 1) + "|")
    for metrics in sorted(root.glob("*/dbc-s*/metrics.jsonl")):
        config = RunConfig.from_run_dir(metrics.parent)
        records = [json.loads(line) for line in metrics.open()]
        cells = []
        for floor in FLOORS:
            replayed = replay(records, floor, config.dbc)
            rejected = sum(
                d != ACCEPTED
                for r in replayed
                for d in (r.get("aggregation") or {}).get("decisions", [])
            )
            found = detection(config, replayed)
            cells.append(f"{rejected} ({_fmt(found['precision'])} / {_fmt(found['recall'])})")
        print(f"| {metrics.parent.parent.name} {metrics.parent.name} | " + " | ".join(cells) + " |")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main(Path(sys.argv[1]))
