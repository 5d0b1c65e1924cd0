"""The server's side of a run: the round loop, the hospitals' figures, checkpoints.

:func:`serve` runs a whole federated training on a Flower ``Grid`` (the ServerApp in
``server/app.py`` calls it): the strategy's own ``start`` loop, with the hospitals'
figures taken from their replies into the run's records (:mod:`fedcl.hospital` for the
other side), one evaluate message after the last round, and a checkpoint every round.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.grid.grid import NodeInfo
from flwr.supercore.run import Run
from torch import nn

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES, TileDataset
from fedcl.errors import FedclError
from fedcl.evaluation import (
    HospitalFigures,
    evaluate_hospital,
    evaluated_stages,
    own_tiles_round,
    round_evaluation,
)
from fedcl.hospital import EVALUATION_KEY
from fedcl.metrics import MESSAGE_PHASES, SECONDS_PREFIX
from fedcl.models import build_model
from fedcl.recorder import RoundCallback, RunRecorder, read_checkpoint, read_metrics
from fedcl.scenarios import scenario_of
from fedcl.strategies.catalog import build_strategy
from fedcl.strategies.contract import RoundReport, hospital_half_of
from fedcl.strategies.guard import GuardedStrategy
from fedcl.strategies.replies import partition_of
from fedcl.training import resolve_device
from fedcl.transport import pack_message, unpack_message

FLOWER_ROUND_TIMEOUT = 3600.0  # Strategy.start's own default: an hour per round


def figures_in(replies: Iterable[Message], server_round: int) -> dict[int, HospitalFigures]:
    """``{hospital: figures}`` the replies carry for the model after ``server_round``."""
    figures = {}
    for reply in replies:
        hospital = partition_of(reply)
        if hospital is None:
            continue
        record = reply.content.config_records.get(EVALUATION_KEY)
        if record is not None and record.get("server-round") == server_round:
            figures[hospital] = HospitalFigures.from_record(record)
    return figures


def final_evaluation(
    grid: Grid, config: RunConfig, arrays: ArrayRecord
) -> dict[int, HospitalFigures]:
    """Ask every hospital to score the run's final model (one evaluate message each)."""
    sent = config.to_mapping() | {"server-round": config.rounds}
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(dict(sent))})
    messages = [
        Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=node)
        for node in grid.get_node_ids()
    ]
    replies = grid.send_and_receive(messages, timeout=config.round_timeout or FLOWER_ROUND_TIMEOUT)
    return figures_in(replies, config.rounds)


class RoundEnd:
    """What the server does after every round (and before the first): checkpoint, evaluate.

    Called by ``Strategy.start`` as its ``evaluate_fn``. With ``evaluation = "server"``
    it scores the global model on every hospital's test tiles itself (synthetic data:
    it regenerates them) and completes the round's record; with ``"hospitals"`` the
    record is completed when the hospitals' figures arrive (:func:`serve`). Either way
    it writes the checkpoint and remembers the latest global model.
    """

    def __init__(
        self,
        config: RunConfig,
        recorder: RunRecorder,
        strategy: GuardedStrategy,
        done: int = 0,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.strategy = strategy
        self.done = done  # rounds a resumed run had completed: Flower counts from 1 again
        self.arrays: ArrayRecord | None = None
        self._model: nn.Module | None = None
        self._test_sets: dict[tuple[int, int], TileDataset] = {}
        self._own_tiles: dict[int, tuple[tuple[int, bool], TileDataset]] = {}

    def server_figures(self, server_round: int, arrays: ArrayRecord) -> dict[int, HospitalFigures]:
        """Every hospital's figures, computed here from regenerated test tiles."""
        if self._model is None:
            self._model = build_model(self.config.model, NUM_CLASSES)
            self._model.to(resolve_device(self.config.device))
        self._model.load_state_dict(arrays.to_torch_state_dict())
        figures, scenario = {}, scenario_of(self.config)
        own_round = own_tiles_round(server_round)
        for h in range(self.config.clients):
            tests = {}
            for stage in evaluated_stages(self.config, server_round):
                if (h, stage) not in self._test_sets:
                    self._test_sets[h, stage] = scenario.test_dataset(h, stage)
                tests[stage] = self._test_sets[h, stage]
            # what a hospital holds: its tiles of the stage (and drift status) of the round
            which = (scenario.stage_of(own_round), scenario.is_drifted(h, own_round))
            if self._own_tiles.get(h, (None, None))[0] != which:
                self._own_tiles[h] = (which, scenario.train_dataset(h, own_round))
            own = self._own_tiles[h][1]
            figures[h] = evaluate_hospital(
                self._model, tests, own, batch_size=self.config.batch_size
            )
        return figures

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Handle the global model after ``server_round``."""
        self.arrays = arrays
        if self.done and server_round == 0:  # resumed: this is the checkpoint's model
            return None
        server_round += self.done
        if self.config.evaluation == "server":
            figures = self.server_figures(server_round, arrays)
            self.recorder.round_evaluated(
                server_round, round_evaluation(self.config, server_round, figures)
            )
        self.recorder.checkpoint(
            {
                "round": server_round,
                "model": arrays.to_torch_state_dict(),
                # cross-round strategy state (DBC: anchor, history); {} for stateless ones
                "strategy": self.strategy.state_dict(),
                # fedcl's own randomness is seeded per use (fedcl.seeds); these cover
                # anything else drawing from the global generators (Flower's sampling).
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            }
        )
        return None


class PromptGrid(Grid):
    """A :class:`Grid` that polls for replies every ``interval`` seconds, arrays packed.

    Flower's deployment grid (``HttpGrid``) sleeps 3 s between pulls, so every round
    waited on average 1.5 s after the last reply had arrived; the simulation's grid
    polls every 0.1 s. Messages travel with every ArrayRecord packed into one Array
    (:mod:`fedcl.transport`). Everything else is delegated to the wrapped grid.
    """

    def __init__(self, grid: Grid, interval: float = 0.1) -> None:
        self.grid = grid
        self.interval = interval
        # per reply of the last send_and_receive: seconds from its making at the
        # hospital to its pull here (give or take the interval)
        self.replied: list[float] = []

    def set_run(self, run: Run) -> None:
        """Delegate to the wrapped grid."""
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        """Delegate to the wrapped grid."""
        return self.grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        """Delegate to the wrapped grid."""
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """Delegate to the wrapped grid."""
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        """Delegate to the wrapped grid."""
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push ``messages`` with each ArrayRecord packed into one Array (fedcl.transport)."""
        # a list: Flower's deployment grid goes over the messages twice
        return self.grid.push_messages([pack_message(m) for m in messages])

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull replies, their packed ArrayRecords unpacked (fedcl.transport)."""
        return [unpack_message(m) for m in self.grid.pull_messages(message_ids)]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``; pull replies every ``interval`` s until all are in or timeout."""
        pending = set(self.push_messages(messages))
        end = time.monotonic() + (timeout or 0.0)
        replies: list[Message] = []
        self.replied = []
        while timeout is None or time.monotonic() < end:
            pulled = list(self.pull_messages(pending))
            now = time.time()
            self.replied += [now - m.metadata.created_at for m in pulled]
            replies += pulled
            pending -= {m.metadata.reply_to_message_id for m in pulled}
            if not pending:
                break
            time.sleep(self.interval)
        return replies


def serve(
    grid: Grid,
    config: RunConfig,
    callbacks: Sequence[RoundCallback] = (),
    resume: bool = False,
) -> dict:
    """Run the whole federated training of ``config`` on ``grid``; return the summary.

    ``resume``: continue the run in ``config.out`` from its ``checkpoint.pt`` (the
    rounds after the checkpoint's are run again; the result equals an uninterrupted
    run's on CPU).
    """
    config = config.with_run_dir()
    grid = PromptGrid(grid)
    done, records, checkpoint = 0, [], None
    if resume:
        checkpoint = read_checkpoint(config.out)
        done = int(checkpoint["round"])
        # A kill between the metrics line and the checkpoint leaves one round more.
        records = [r for r in read_metrics(config.out, complete_only=True) if r["round"] <= done]
    recorder = RunRecorder(config, callbacks, records)
    if checkpoint is not None:
        recorder.restore(checkpoint)

    def on_train(
        server_round: int,
        replies: list[Message],
        metrics: MetricRecord | None,
        report: RoundReport | None,
    ) -> None:
        numbers = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        if grid.replied:
            numbers[f"{SECONDS_PREFIX}{MESSAGE_PHASES[2]}"] = statistics.fmean(grid.replied)
        recorder.train_aggregated(server_round, numbers, report)
        if config.evaluation == "hospitals":
            # the replies carry the hospitals' scores of the model they received
            record_figures(server_round - 1, figures_in(replies, server_round - 1))

    def record_figures(server_round: int, figures: dict[int, HospitalFigures]) -> None:
        if not recorder.has_record(server_round):  # a resumed run may have it already
            recorder.round_evaluated(server_round, round_evaluation(config, server_round, figures))

    strategy = build_strategy(config, on_train, round_offset=done)
    if hospital_half_of(type(strategy.inner)).keeps_weights and config.evaluation == "server":
        raise FedclError(
            f"strategy {config.strategy!r} has the hospitals keep weights of their own "
            "(normalisation layers): only they can evaluate the model; use evaluation = "
            "'hospitals'"
        )
    round_end = RoundEnd(config, recorder, strategy, done)
    round_end.arrays = _starting_point(config, strategy, checkpoint)
    if done < config.rounds:
        strategy.start(
            grid=grid,
            initial_arrays=round_end.arrays,
            num_rounds=config.rounds - done,
            timeout=config.round_timeout or FLOWER_ROUND_TIMEOUT,
            # the whole configuration: a hospital rebuilds its data and model from it; a
            # strategy adds its own settings for its hospital half (configure_train)
            train_config=ConfigRecord(dict(config.to_mapping())),
            evaluate_fn=round_end,
        )
    if config.evaluation == "hospitals" and not recorder.has_record(config.rounds):
        record_figures(config.rounds, final_evaluation(grid, config, round_end.arrays))
    return recorder.finish()


def _starting_point(
    config: RunConfig, strategy: GuardedStrategy, checkpoint: dict[str, Any] | None
) -> ArrayRecord:
    """Return the model to start from: a fresh one seeded from the config, or a checkpoint's.

    From a checkpoint, the strategy's state and the random generators come back too.
    """
    if checkpoint is None:
        with torch.random.fork_rng():  # seed the initial model without leaking global state
            torch.manual_seed(config.seed)
            return ArrayRecord(build_model(config.model, NUM_CLASSES).state_dict())
    strategy.load_state_dict(checkpoint["strategy"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    random.setstate(checkpoint["rng"]["python"])
    return ArrayRecord(checkpoint["model"])
