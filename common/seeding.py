"""Every random stream of a run derives from the one --seed here: the global generators, and
the private generators of the split, the subset and each epoch's shuffle."""
from __future__ import annotations

import random

import numpy as np
import torch

# torch generators take a signed 64-bit seed: any --seed, however large, folds into that range
# (seeds below 2**63 / 100_003, i.e. every ordinary seed, keep their exact streams)
_SEED_RANGE = 2**63


def seed_everything(seed: int):
    """Python's, NumPy's and torch's global generators (initial weights, augmentation, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % _SEED_RANGE)


def generator(seed: int, offset: int = 0) -> torch.Generator:
    """A private CPU generator for one purpose (the split, the subset, the whitening sample),
    independent of the global ones; `offset` gives another purpose its own stream."""
    return torch.Generator().manual_seed((seed + offset) % _SEED_RANGE)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's shuffle: a function of (seed, epoch) alone, so a resumed
    run draws the same order."""
    return torch.Generator().manual_seed((seed * 100_003 + epoch) % _SEED_RANGE)
