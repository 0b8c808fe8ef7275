"""Seeding a training process: every run command calls `seed_everything` before it builds anything random."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, rank: int) -> None:
    """Seed Python, NumPy and torch; ranks differ so per-rank randomness (e.g. dropout) is independent.

    What must be the same on every rank (a freshly initialised model before sharding) seeds itself from `seed` alone.
    """
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)
