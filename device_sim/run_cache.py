"""Shared work between in-process simulation runs (device_sim/simulation.py) that start alike.

A grid of poisoning runs repeats itself: runs with 1%, 5% and 10% attackers draw the same
cohorts, and while no round has seen an attacker that one run has and another lacks, the two
runs are the same computation; and every run's first round trains its honest clients from the
same starting weights. `RunCache` keeps both, so a grid pays for each distinct computation once:

    snapshots   (tag, history up to round r) -> (server algorithm, its state, weights, round
                records) before round r, where the history is the tuple of each earlier
                round's attackers in the cohort; a run resumes from its longest cached prefix
    deltas      (digest of the round's weights, user, round, attack or None) -> the client's
                update; a bounded table (first in, first out)

Both are exact: a resumed run computes what it would have computed from the start, because a
round depends only on the weights, the server algorithm's state (deep-copied: rules such as
`screened` and `norm_bound` carry state across rounds), the cohort and per-round seeded
randomness. `tag` names everything else a run depends on (defence, attack, hyperparameters,
starting weights); runs with different tags never share a snapshot. Deltas are keyed by the
weights themselves, so they are shared across tags.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

import numpy as np

from fedcore.algorithm import ServerAlgorithm
from fedmath.types import Weights

History = tuple[tuple[str, ...], ...]  # per round so far, the sorted attackers in its cohort


@dataclass
class Snapshot:
    """A run's position before a round (every field a private copy)."""

    algorithm: ServerAlgorithm
    state: dict
    weights: list[np.ndarray]
    rounds: list[dict]


def weights_digest(weights: Weights) -> str:
    """A SHA-256 over the tensors' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for w in weights:
        a = np.ascontiguousarray(w)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class RunCache:
    """Snapshots and client deltas shared by runs (module docstring).

    Args:
        max_deltas: how many client updates the delta table keeps (the oldest go first).
    """

    def __init__(self, max_deltas: int = 256) -> None:
        if max_deltas < 0:
            raise ValueError(f"max_deltas must be >= 0, got {max_deltas}")
        self.max_deltas = max_deltas
        self.snapshots: dict[tuple[Hashable, History], Snapshot] = {}
        self.deltas: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
        self.hits = {"rounds": 0, "deltas": 0}  # rounds resumed and client deltas reused

    def save(self, tag: Hashable, history: History, algorithm: ServerAlgorithm, state: dict,
             weights: Weights, rounds: Sequence[dict]) -> None:
        """Keep a copy of a run's position before the round after `history`."""
        self.snapshots[(tag, history)] = Snapshot(copy.deepcopy(algorithm), copy.deepcopy(state),
                                                  [np.array(w) for w in weights], [dict(r) for r in rounds])

    def resume(self, tag: Hashable, histories: Sequence[History]) -> tuple[int, Optional[Snapshot]]:
        """The longest cached prefix of a run: (its length in rounds, a private copy of its
        snapshot), or (0, None). `histories[r]` is the run's history before round r."""
        for r in range(len(histories) - 1, 0, -1):
            snap = self.snapshots.get((tag, histories[r]))
            if snap is not None:
                self.hits["rounds"] += r
                return r, Snapshot(copy.deepcopy(snap.algorithm), copy.deepcopy(snap.state),
                                   [np.array(w) for w in snap.weights], [dict(x) for x in snap.rounds])
        return 0, None

    def delta(self, key: tuple) -> Optional[list[np.ndarray]]:
        """A cached client update (a copy), or None."""
        found = self.deltas.get(key)
        if found is None:
            return None
        self.hits["deltas"] += 1
        return [np.array(d) for d in found]

    def keep_delta(self, key: tuple, delta: Weights) -> None:
        if self.max_deltas == 0:
            return
        self.deltas[key] = [np.array(d) for d in delta]
        while len(self.deltas) > self.max_deltas:
            self.deltas.popitem(last=False)

    def clear_snapshots(self) -> None:
        """Drop every snapshot (they hold whole server states); the delta table stays."""
        self.snapshots.clear()
