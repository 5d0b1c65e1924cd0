"""Ctrl-C, as the ``fedcl`` executable sees it.

Flower's simulation can end a run quietly when the interrupt lands in its threads'
shutdown; the handler remembers the interrupt, so a run that ends while it is set
counts as cut short and the command stops as interrupted (:mod:`fedcl.cli.runs`).
"""

from __future__ import annotations

import threading

INTERRUPTED = threading.Event()


def on_interrupt(_signum: int, _frame: object) -> None:
    """SIGINT handler: remember the interrupt, then raise it as Python would."""
    INTERRUPTED.set()
    raise KeyboardInterrupt
