"""Flower log lines about choices fedcl makes on purpose, dropped where they would confuse.

Used by the simulation driver and by every hospital's ClientApp process (Ray actors).
"""

from __future__ import annotations

import logging

# Flower log lines about choices fedcl makes on purpose, which would only confuse:
# run_simulation is chosen on purpose (fedcl.simulation), federated evaluation is
# replaced by the hospitals' own scoring inside the training round, and every hospital
# actor logs a WARNING when the simulation stops it at the end of a run (Ray forwards it,
# with colour codes, to the run's output).
_INTENDED = ("run_simulation", "fraction_evaluate is set to 0.0", "Manually terminating")


class _DropIntended(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _INTENDED)


def drop_intended_flower_logs() -> None:
    """Drop Flower's log lines about what fedcl does on purpose (in this process)."""
    flwr_logger = logging.getLogger("flwr")
    if not any(isinstance(f, _DropIntended) for f in flwr_logger.filters):
        flwr_logger.addFilter(_DropIntended())
