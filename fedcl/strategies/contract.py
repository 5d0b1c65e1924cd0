"""What fedcl expects of a strategy's server half, and what it gives one.

Any Flower ``Strategy`` subclass runs in fedcl (inside the guard,
:class:`~fedcl.strategies.guard.GuardedStrategy`). What it may offer beyond Flower's
interface is declared here, each as a ``Protocol`` the guard and the catalog check with
``isinstance``/``issubclass``:

- :class:`Configurable`: built from the run's configuration (``from_config``); a strategy
  without it gets fedcl's sampling settings where its constructor takes them;
- :class:`Reporting`: a :class:`RoundReport` of its last aggregation, written into
  ``metrics.jsonl`` and read by the metrics, plots, progress line and TensorBoard;
- :class:`Stateful`: state that lives across rounds, kept in every checkpoint;
- a hospital half: the class attribute ``hospital``, a
  :class:`~fedcl.strategies.hospital_half.HospitalHalf` subclass (see
  :func:`hospital_half_of`).

What it gives one besides the run's configuration: :class:`SentModel` (the global model
each round started from) and :class:`SentOnce` (records each hospital must be sent once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

from flwr.app import ArrayRecord, Message, RecordDict

from fedcl.errors import FedclError
from fedcl.strategies.hospital_half import HospitalHalf

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy

    from fedcl.config import RunConfig


class SentModel:
    """The global model of the current round, as the server sent it out.

    The guard keeps the run's one instance up to date; a strategy built with
    ``from_config(config, sent)`` reads it there (calling it returns the model).
    """

    def __init__(self) -> None:
        self.arrays: ArrayRecord | None = None

    def __call__(self) -> ArrayRecord:
        """Return the global model this round's replies started from."""
        if self.arrays is None:
            raise RuntimeError(
                "no global model sent yet: aggregate_train before configure_train, or a "
                "strategy used outside fedcl.strategies.guard.GuardedStrategy"
            )
        return self.arrays


class SentOnce:
    """Records a server half sends each hospital once: a teacher, an importance estimate.

    :meth:`attach` adds them to a round's train message of every node that does not hold
    them yet; a node holds them once it has answered such a message (a node whose reply
    did not come back gets them again). New records (:meth:`set`) go to every node
    again; a strategy restored from a checkpoint sets its records again, since the
    hospitals' ``Context.state`` is gone.
    """

    def __init__(self) -> None:
        self.records: dict[str, ArrayRecord] = {}
        self.holding: set[int] = set()  # nodes that hold the current records
        self.sending: set[int] = set()  # nodes this round's messages carry them to

    def set(self, records: Mapping[str, ArrayRecord]) -> None:
        """Send ``records`` (message content keys to arrays) from the next round on."""
        self.records, self.holding = dict(records), set()

    def attach(self, messages: Iterable[Message]) -> list[Message]:
        """Return ``messages``, the records added to those of nodes that lack them."""
        messages, self.sending = list(messages), set()
        for message in messages if self.records else ():
            node = message.metadata.dst_node_id
            if node not in self.holding:
                # FedAvg's messages share one payload: this one gets its own
                message.content = RecordDict(dict(message.content) | self.records)
                self.sending.add(node)
        return messages

    def delivered(self, replies: Iterable[Message]) -> int:
        """Note who answered a message that carried the records; return the bytes sent."""
        sent = sum(r.count_bytes() for r in self.records.values()) * len(self.sending)
        self.holding |= self.sending & {msg.metadata.src_node_id for msg in replies}
        return sent


class RoundReport(TypedDict, total=False):
    """What a strategy (and the guard) reports of one aggregation, per round.

    Every key is optional and written into ``metrics.jsonl``; the first group is what
    fedcl itself reads (drift detection, plots, progress, TensorBoard), the rest are
    the built-in strategies' own. A plug-in may report keys of its own besides.
    """

    hospitals: list[int | None]
    """The hospitals the per-hospital lists below refer to, in order."""
    decisions: list[str]
    """Per hospital: ``"accepted"`` or why it was rejected (drift detection reads it)."""
    peer_scores: Sequence[float | None]
    """Per hospital: DBC's peer score (plots, TensorBoard)."""
    evidence: Sequence[float | None]
    """Per hospital: DBC's evidence (plots)."""
    threshold: float | None
    """The filter's threshold this round (plots)."""
    dropped: list[dict[str, Any]]
    """Replies the guard dropped: ``{"hospital": ..., "reason": ...}``."""
    missing: list[int]
    """Hospitals that sent nothing this round (the guard)."""
    skipped: str
    """Why the round kept the global model (the guard: too few usable replies)."""
    extra_bytes: int
    """Bytes the strategy's messages carried this round beside FedAvg's, both ways (a
    teacher sent, an estimate sent back)."""
    # DBC's own (docs/dbc.md, "What a round logs")
    anchor_scores: Sequence[float | None]
    # per reply, each class's share of its peer score (None: a class no model predicts)
    peer_columns: Sequence[Sequence[float | None]]
    # per reply, its outputs' mean on R, column by column (probs: each class's share of
    # the reference pixels): which way a reply differs, where the scores say how far
    output_means: Sequence[Sequence[float]]
    # per reply, L_BC(anchor, reply) before the anchor moves on: beside the last round's
    # consolidation loss_after, how much of it the next local training undid
    anchor_continuity: Sequence[float]
    all_rejected: bool
    movement: float | None
    shift_length: int
    shift_started: bool  # this round began a shift (the boundary detection reads it)
    first_loss: float | None  # the replies' mean loss of the received model, first batches
    loss_jumped: bool  # the first loss jumped (dbc-loss-jump): a shift began by it
    teacher_round: int  # the round of the hospitals' teacher (0: none)
    rewound: bool  # dbc-rewind: the new global model is the teacher, not the aggregate
    teacher_scale: float  # the factor of the teacher term's weight sent for the next round
    consolidation: dict[str, Any] | None
    seconds_scoring: float
    seconds_consolidation: float
    # FLTrust's own: each hospital's trust score
    trust: list[float]


@runtime_checkable
class Configurable(Protocol):
    """A strategy that builds itself from the run's configuration."""

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> Strategy:
        """Return the strategy for ``config``; ``sent`` holds each round's global model."""
        ...


@runtime_checkable
class Reporting(Protocol):
    """A strategy that reports its last aggregation."""

    round_report: RoundReport | None


@runtime_checkable
class Stateful(Protocol):
    """A strategy with state across rounds (restored from checkpoints on ``--resume``)."""

    def state_dict(self) -> dict[str, Any]:
        """Return the state (tensors, numbers, lists; what ``torch.save`` writes)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result."""
        ...


def hospital_half_of(strategy: type) -> type[HospitalHalf]:
    """Return the hospital half of a strategy class (:class:`HospitalHalf`: none).

    A strategy declares it as the class attribute ``hospital``.

    Raises
    ------
    FedclError
        If ``hospital`` is there but is not a :class:`HospitalHalf` subclass.
    """
    half = getattr(strategy, "hospital", HospitalHalf)  # the one place it is looked up
    if not (isinstance(half, type) and issubclass(half, HospitalHalf)):
        raise FedclError(
            f"strategy {strategy.__name__}: its 'hospital' attribute must be a subclass "
            f"of fedcl.strategies.hospital_half.HospitalHalf, got {half!r}"
        )
    return half
