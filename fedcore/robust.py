"""Byzantine-robust rules: a coordinate-wise median, a coordinate-wise trimmed mean, Krum and
Multi-Krum. Each needs the round's individual updates until it closes (non-linear), so none can
run under secure aggregation or central DP noise (docs/privacy.md).

| name           | rule                                                                    | paper |
|----------------|-------------------------------------------------------------------------|-------|
| `median`       | per coordinate, the median of the n values                              | [1]   |
| `trimmed_mean` | per coordinate, drop floor(beta n) values at each end, average the rest | [1]   |
| `krum`         | the update whose n - f - 2 nearest neighbours are closest (squared L2)  | [2]   |
| `multi_krum`   | the mean of the m best Krum scores (m = n - f unless set)               | [2]   |

[1] Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates" (ICML).
[2] Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent" (NeurIPS).

Parameters come in through the registry's name syntax: "trimmed_mean:beta=0.2", "krum:f=2",
"multi_krum:f=2,m=5". Every update counts once (weight 1): a robustness bound is about how many
devices lie, and a device's declared num_examples is one more thing it can lie about.

The round's updates are kept as flat float32 rows (`UpdateRows`); each statistic works through the
columns a chunk at a time, so beyond the rows themselves it needs O(n * CHUNK) memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from fedcore.aggregator import Aggregator, register
from fedcore.messages import Aggregate
from fedmath.types import Weights

CHUNK = 1 << 16  # columns per step of a statistic over the rows


class UpdateRows:
    """A round's updates, copied as they are added, as flat float32 rows in arrival order."""

    def __init__(self, template: Weights) -> None:
        self.shapes = [tuple(np.shape(t)) for t in template]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.dim = sum(self.sizes)
        self.rows: list[np.ndarray] = []
        self.weights: list[float] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, update: Weights, weight: float) -> None:
        """Copy `update` in. Raises ValueError on a shape mismatch or a bad weight."""
        if not np.isfinite(weight) or weight <= 0:
            raise ValueError(f"update weight must be a positive finite number, got {weight!r}")
        if len(update) != len(self.shapes):
            raise ValueError(f"update has {len(update)} tensors, expected {len(self.shapes)}")
        row = np.empty(self.dim, np.float32)
        at = 0
        for i, (u, shape, size) in enumerate(zip(update, self.shapes, self.sizes)):
            if tuple(np.shape(u)) != shape:
                raise ValueError(f"tensor {i}: expected shape {shape}, got {np.shape(u)}")
            row[at:at + size] = np.asarray(u).reshape(-1)
            at += size
        self.rows.append(row)
        self.weights.append(float(weight))

    def columns(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, the n x (stop - start) float32 block of those columns), chunk by chunk."""
        for a in range(0, self.dim, CHUNK):
            b = min(a + CHUNK, self.dim)
            yield a, b, np.stack([r[a:b] for r in self.rows])

    def unflatten(self, flat: np.ndarray) -> Weights:
        """A flat vector of the model's size as float32 tensors of the model's shapes."""
        out, at = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(np.asarray(flat[at:at + size], np.float32).reshape(shape))
            at += size
        return out


class RowRule(Aggregator):
    """A non-linear rule over `UpdateRows`; subclasses implement `combine`."""

    linear = False

    def weight(self, num_examples: int) -> float:
        return 1.0

    def init(self, template: Weights) -> UpdateRows:
        return UpdateRows(template)

    def add(self, state: UpdateRows, update: Weights, weight: float) -> None:
        state.add(update, weight)

    def result(self, state: UpdateRows) -> Aggregate:
        if len(state) == 0:
            raise ValueError(f"{self.name}: no updates have been added")
        return Aggregate(state.unflatten(self.combine(state)), len(state), float(sum(state.weights)))

    def combine(self, state: UpdateRows) -> np.ndarray:
        """The aggregate as one flat float32 vector (at least one row)."""
        raise NotImplementedError


class Median(RowRule):
    """Coordinate-wise median (the mean of the two middle values when n is even)."""

    name = "median"

    def combine(self, state: UpdateRows) -> np.ndarray:
        out = np.empty(state.dim, np.float32)
        for a, b, block in state.columns():
            out[a:b] = np.median(block.astype(np.float64), axis=0)
        return out


class TrimmedMean(RowRule):
    """Coordinate-wise trimmed mean: per coordinate, the floor(beta * n) largest and as many
    smallest values are dropped and the rest averaged (beta = 0 is the plain mean).

    Args:
        beta: the fraction trimmed from each end, in [0, 0.5).
    """

    name = "trimmed_mean"

    def __init__(self, beta: float = 0.1) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 0.5:
            raise ValueError(f"trimmed_mean beta must be a number in [0, 0.5), got {beta!r}")
        self.beta = float(beta)

    def trimmed(self, n: int) -> int:
        """How many values are dropped from each end of n (the 1e-9 absorbs 0.29 * 100 = 28.99...)."""
        return math.floor(self.beta * n + 1e-9)

    def combine(self, state: UpdateRows) -> np.ndarray:
        n = len(state)
        k = self.trimmed(n)
        out = np.empty(state.dim, np.float32)
        for a, b, block in state.columns():
            kept = np.sort(block, axis=0)[k:n - k]
            out[a:b] = kept.mean(axis=0, dtype=np.float64)
        return out

    def describe(self) -> dict:
        return dict(super().describe(), beta=self.beta)


class Krum(RowRule):
    """Krum and Multi-Krum. Each update's score is the sum of its squared L2 distances to its
    n - f - 2 nearest other updates; the m best-scored updates (ties: earlier arrival first) are
    averaged. m = 1 is Krum; Blanchard et al.'s guarantee needs n > 2f + 2.

    Args:
        f: the number of Byzantine updates assumed, >= 0.
        m: how many updates to select and average; 0 means n - f (Multi-Krum's usual choice).
    """

    name = "krum"

    def __init__(self, f: int = 1, m: int = 1) -> None:
        for key, value in (("f", f), ("m", m)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{self.name} {key} must be an integer >= 0, got {value!r}")
        self.f, self.m = f, m

    def selected_count(self, n: int) -> int:
        return self.m if self.m > 0 else n - self.f

    def scores(self, state: UpdateRows) -> np.ndarray:
        """Each update's Krum score (float64, length n). Raises ValueError unless n > 2f + 2."""
        n = len(state)
        if n <= 2 * self.f + 2:
            raise ValueError(f"{self.name} with f={self.f} needs more than 2f + 2 = {2 * self.f + 2} updates, "
                             f"got {n}")
        gram = np.zeros((n, n), np.float64)
        for _, _, block in state.columns():
            x = block.astype(np.float64)
            gram += x @ x.T
        sq = np.diag(gram)
        dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
        np.fill_diagonal(dist, np.inf)  # an update is not its own neighbour
        nearest = np.sort(dist, axis=1)[:, : n - self.f - 2]
        return nearest.sum(axis=1)

    def selected(self, state: UpdateRows) -> np.ndarray:
        """Indices (arrival order) of the updates the rule averages, best score first."""
        scores = self.scores(state)
        n, m = len(state), self.selected_count(len(state))
        if not 1 <= m <= n:
            raise ValueError(f"{self.name} selects m={m} of {n} updates; expected 1 <= m <= n")
        return np.argsort(scores, kind="stable")[:m]

    def combine(self, state: UpdateRows) -> np.ndarray:
        chosen = self.selected(state)
        out = np.zeros(state.dim, np.float64)
        for i in chosen:
            out += state.rows[int(i)]
        return (out / len(chosen)).astype(np.float32)

    def describe(self) -> dict:
        return dict(super().describe(), f=self.f, m=self.m)


class MultiKrum(Krum):
    """Multi-Krum: `Krum` with m = n - f by default."""

    name = "multi_krum"

    def __init__(self, f: int = 1, m: int = 0) -> None:
        super().__init__(f, m)


for _rule in (Median, TrimmedMean, Krum, MultiKrum):
    register(_rule.name, _rule)
