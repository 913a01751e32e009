"""Deterministic user-disjoint splits: train, heldout (evaluation) and proxy (vocabulary).

Users, not messages, are split, as in cross-device FL: a held-out user's text was never
trained on, and the proxy users who build the vocabulary are in neither other split, so the
vocabulary leaks nothing of the users being trained on (docs/privacy.md). The split is a
seeded permutation of the sorted user ids, so it depends only on the id set and the seed.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

SPLITS = ("train", "heldout", "proxy")
Splits = dict[str, list[str]]


def split_counts(n: int, heldout_fraction: float, proxy_fraction: float) -> tuple[int, int, int]:
    """`(train, heldout, proxy)` user counts for `n` users.

    Heldout and proxy get `round(fraction * n)` users, at least one each when the fraction is
    positive; train keeps the rest and must keep at least one.

    Raises:
        ValueError: on fractions outside [0, 1) or too few users for three splits.
    """
    for name, frac in (("heldout_fraction", heldout_fraction), ("proxy_fraction", proxy_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if heldout_fraction + proxy_fraction >= 1.0:
        raise ValueError(f"heldout_fraction + proxy_fraction must be < 1, got {heldout_fraction + proxy_fraction}")
    n_heldout = max(1, round(heldout_fraction * n)) if heldout_fraction > 0 else 0
    n_proxy = max(1, round(proxy_fraction * n)) if proxy_fraction > 0 else 0
    n_train = n - n_heldout - n_proxy
    if n_train < 1:
        raise ValueError(f"need at least {n_heldout + n_proxy + 1} users for the splits, got {n}")
    return n_train, n_heldout, n_proxy


def split_users(users: Sequence[str], seed: int, heldout_fraction: float, proxy_fraction: float) -> Splits:
    """Assign each user to exactly one of train, heldout, proxy.

    Args:
        users: distinct user ids (any order: they are sorted first).
        seed: permutation seed (DataConfig.seed).
        heldout_fraction: share of users kept for evaluation.
        proxy_fraction: share of users used only to train the vocabulary.

    Returns:
        `{"train": [...], "heldout": [...], "proxy": [...]}`, each list sorted.

    Raises:
        ValueError: on duplicate ids or bad fractions (see split_counts).
    """
    ordered = sorted(users)
    if len(set(ordered)) != len(ordered):
        raise ValueError(f"expected distinct user ids, got {len(ordered) - len(set(ordered))} duplicates")
    n_train, n_heldout, _ = split_counts(len(ordered), heldout_fraction, proxy_fraction)
    perm = np.random.default_rng([seed, 0x5B117]).permutation(len(ordered))
    picked = [ordered[i] for i in perm]
    return {
        "train": sorted(picked[:n_train]),
        "heldout": sorted(picked[n_train:n_train + n_heldout]),
        "proxy": sorted(picked[n_train + n_heldout:]),
    }


def check_disjoint(splits: Splits) -> None:
    """Raise ValueError if any user is in two splits or a split name is unknown."""
    if set(splits) != set(SPLITS):
        raise ValueError(f"expected splits {list(SPLITS)}, got {sorted(splits)}")
    seen: dict[str, str] = {}
    for name in SPLITS:
        for user in splits[name]:
            if user in seen:
                raise ValueError(f"user {user!r} is in both {seen[user]!r} and {name!r}")
            seen[user] = name


def write_splits(splits: Splits, path: str) -> None:
    """Write splits.json (checked disjoint first)."""
    check_disjoint(splits)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({name: splits[name] for name in SPLITS}, f, indent=1)
        f.write("\n")


def read_splits(path: str) -> Splits:
    """Read and check splits.json."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"splits file not found: {path}")
    with open(path, encoding="utf-8") as f:
        splits = json.load(f)
    check_disjoint(splits)
    return splits
