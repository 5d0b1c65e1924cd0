"""Dynamic Barlow Continuity (``--strategy dbc``): its settings and its server half.

- :mod:`~fedcl.strategies.dbc.settings`: the ``dbc-*`` keys (:class:`DBCSettings`);
- :mod:`~fedcl.strategies.dbc.strategy`: the Flower strategy
  (:class:`DynamicBarlowContinuity`); the math is in :mod:`fedcl.continuity`.
"""

from fedcl.strategies.dbc.settings import DBCSettings
from fedcl.strategies.dbc.strategy import ACCEPTED, OUTLIER, DynamicBarlowContinuity

__all__ = ["ACCEPTED", "OUTLIER", "DBCSettings", "DynamicBarlowContinuity"]
