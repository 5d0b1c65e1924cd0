"""Every random stream of a run derives from its one ``seed`` and a domain tag.

``stream(seed, domain, *keys)`` is ``SeedSequence(seed, spawn_key=(domain, *keys))``:
streams with different tags or keys are independent, so no two data sets share tiles
and adding a hospital does not change the others' data.
"""

from __future__ import annotations

import numpy as np

TILES = 1  # hospital tiles: (hospital, split, stage)
SITE_STAIN = 2  # a hospital's own stain: (hospital,)
BATCH_ORDER = 3  # local training batch order: (hospital, round)
REFERENCE = 4  # the server's public reference set: (tile,)
ROOT = 5  # FLTrust's labelled root set: (tile,)
DRIFT = 6  # which hospitals drift, and how: () / (hospital,)
STAGE = 7  # a forgetting stage's stain and class mix: (stage,)
PUBLIC_ORDER = 8  # the public tiles' order in a hospital's teacher term: (hospital, round)
SERVER_DISTIL = 9  # the public tiles' order in DBC's distillation at the server: (round,)
PUBLIC_APART = 10  # public tiles the server never scores on (DBC's teacher term): (tile,)


def stream(seed: int, domain: int, *keys: int) -> np.random.SeedSequence:
    """Return the seed sequence of one random stream."""
    return np.random.SeedSequence(seed, spawn_key=(domain, *keys))


def rng(seed: int, domain: int, *keys: int) -> np.random.Generator:
    """Return a numpy generator on one random stream."""
    return np.random.default_rng(stream(seed, domain, *keys))
