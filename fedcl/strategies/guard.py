"""The guard every strategy runs inside: what reaches its aggregation, and in what order.

:class:`GuardedStrategy` wraps a Flower strategy by delegation (as Flower's grid
wrappers do). It owns, for every strategy alike:

- the global model sent out each round (:class:`~fedcl.strategies.contract.SentModel`;
  the one place it is kept, DBC and FLTrust read it there),
- the reply order (by the ``partition-id`` each hospital reports: Flower's reply order
  and node ids are not stable, so sums happen in the same order and runs reproduce),
- screening (error replies, malformed or hostile updates are dropped and reported),
- the fewest replies a round aggregates, the integer dtypes of the aggregate,
- the hospitals that sent nothing, the round offset of a resumed run, and the hook
  that records each round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcl.strategies.contract import Reporting, RoundReport, SentModel, Stateful
from fedcl.strategies.replies import by_partition, partition_of, restore_dtypes, screen

# round, every reply sorted (dropped ones too), aggregated metrics, the round's report
# (the strategy's and the guard's; None if neither has one)
TrainHook = Callable[[int, list[Message], MetricRecord | None, RoundReport | None], None]


@dataclass(frozen=True)
class ReplyGuard:
    """What every strategy's replies must satisfy before they reach its aggregation.

    ``template``: the architecture's state (keys, shapes, dtypes; None: the global model
    sent out); ``min_replies``: fewer usable replies and the round keeps the global
    model; ``max_update_ratio``: the largest ``||w - global|| / ||global||`` accepted;
    ``hospitals``: how many there are (0: unknown).
    """

    template: ArrayRecord | None = None
    min_replies: int = 1
    max_update_ratio: float = float("inf")
    hospitals: int = 0  # > 0: report hospitals that sent nothing (timed out) as missing


class GuardedStrategy(Strategy):
    """A strategy that aggregates usable replies only, sorted by hospital.

    Parameters
    ----------
    inner : Strategy
        The strategy that aggregates (a built-in or a plug-in).
    guard : ReplyGuard
        The checks every reply must pass.
    sent : SentModel, optional
        Where the global model sent out is kept (shared with ``inner`` if it reads it).
    on_train : callable, optional
        ``on_train(round, replies, aggregated_metrics, round_report)`` after every
        aggregation, with every reply, sorted, the dropped ones too (what they carry
        besides the update, a hospital's evaluation, is still good).
    round_offset : int
        Added to Flower's round numbers (a resumed run: Flower counts from 1 again), so
        the hospitals and ``inner`` see the run's own round.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        guard: ReplyGuard | None = None,
        sent: SentModel | None = None,
        on_train: TrainHook | None = None,
        round_offset: int = 0,
    ) -> None:
        self.inner = inner
        self.guard = guard or ReplyGuard()
        self.sent = sent or SentModel()
        self.on_train = on_train
        self.round_offset = round_offset

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Keep the global model sent out, then let the strategy configure the round."""
        self.sent.arrays = arrays
        return self.inner.configure_train(server_round + self.round_offset, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen and sort the replies, aggregate the usable ones, record the round."""
        server_round += self.round_offset
        replies = by_partition(replies)
        template = self.guard.template
        reference = template if template is not None else self.sent.arrays
        usable, dropped = replies, list[dict[str, Any]]()
        if reference is not None:  # None: called without configure_train (unit tests)
            usable, dropped = screen(
                replies, reference, self.sent.arrays, self.guard.max_update_ratio
            )
        for item in dropped:
            hospital, reason = item["hospital"], item["reason"]
            log(logging.WARNING, "round %d: dropped %s: %s", server_round, hospital, reason)
        arrays, metrics, report = self._aggregate(server_round, usable)
        if arrays is not None and reference is not None:
            arrays = restore_dtypes(arrays, reference)
        if dropped:
            report = (report or RoundReport()) | RoundReport(dropped=dropped)
        missing = self._missing(replies, dropped)
        if missing:
            log(logging.WARNING, "round %d: no reply from hospitals %s", server_round, missing)
            report = (report or RoundReport()) | RoundReport(missing=missing)
        if self.on_train is not None:
            self.on_train(server_round, replies, metrics, report)
        return arrays, metrics

    def _aggregate(
        self, server_round: int, usable: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None, RoundReport | None]:
        if len(usable) < self.guard.min_replies:
            message = "round %d: %d usable replies < min-replies %d: global model kept"
            log(logging.WARNING, message, server_round, len(usable), self.guard.min_replies)
            return None, None, RoundReport(skipped=f"{len(usable)} usable replies < min-replies")
        arrays, metrics = self.inner.aggregate_train(server_round, usable)
        return arrays, metrics, self.round_report

    def _missing(self, replies: list[Message], dropped: list[dict[str, Any]]) -> list[int]:
        """Hospitals that sent nothing this round (unknown when an error is anonymous)."""
        if any(d["hospital"] is None for d in dropped):
            return []
        heard = {partition_of(m) for m in replies} | {d["hospital"] for d in dropped}
        return [h for h in range(self.guard.hospitals) if h not in heard]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Let the strategy configure Flower's evaluation round (the run's round number)."""
        return self.inner.configure_evaluate(server_round + self.round_offset, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Let the strategy aggregate Flower's evaluation replies."""
        return self.inner.aggregate_evaluate(server_round + self.round_offset, replies)

    @property
    def round_report(self) -> RoundReport | None:
        """The wrapped strategy's report of its last aggregation (None if it keeps none)."""
        return self.inner.round_report if isinstance(self.inner, Reporting) else None

    def state_dict(self) -> dict[str, Any]:
        """Return the wrapped strategy's state for a checkpoint (empty if it keeps none)."""
        return dict(self.inner.state_dict()) if isinstance(self.inner, Stateful) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the wrapped strategy's state from a checkpoint."""
        if isinstance(self.inner, Stateful):
            self.inner.load_state_dict(state)
