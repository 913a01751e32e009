"""Tree-aggregation noise for DP-FTRL, as a wrapper around a linear rule.

DP-FTRL (Kairouz et al. 2021, "Practical and Private (Deep) Learning without Sampling or
Shuffling"; Gboard's production mechanism, Xu et al. 2023) adds noise to the *cumulative* sum
of the rounds' clipped sums rather than to each round's sum: a binary tree over the rounds holds
one Gaussian N(0, sigma^2) per node (a dyadic interval of rounds), and the noised prefix sum
after round t carries the noise of the nodes of t's binary decomposition, popcount(t) of them
(Dwork et al. 2010, Chan et al. 2011). One user's record enters at most ceil(log2(T + 1))
nodes, so the whole tree costs ceil(log2(T + 1)) / (2 z^2) zCDP
(`fedmath.accounting.ftrl_rho`) while the model, a prefix sum when the server step is plain
SGD, carries O(log T) noise variances instead of DP-FedAvg's T.

`TreeNoise` draws the nodes and hands out each round's *residual*, the noised prefix sum minus
the previous one, which is what TFF's `TreeResidualSumQuery` releases: adding the residuals to the
rounds' sums makes their running total carry exactly the tree's prefix noise. `restart_every`
starts a fresh tree every that many rounds (TFF's `RestartQuery` with a periodic indicator), so
each tree spans one pass over the population and one user enters each tree at most once.

`TreeGaussian(inner, clip_norm, noise_multiplier, max_weight, restart_every)` wraps a linear
rule as `fedcore.dp.CentralGaussian` does, with sigma = z * C * w_max; its tree lives in the
object, one step per `result` call.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedcore.aggregator import Aggregator
from fedcore.dp import CentralGaussian
from fedcore.messages import Aggregate
from fedmath.aggregate import RunningSum
from fedmath.types import Weights


class TreeNoise:
    """The binary-tree noise of one stream of rounds, restarted every `restart_every` rounds.

    The stack holds the nodes of the current prefix's binary decomposition, highest first, as
    (level, noise): a node of level k covers 2^k rounds. Round t + 1 merges the trailing nodes
    of equal level into one new node, drawn fresh (each dyadic interval has its own noise).
    """

    def __init__(self, template: Weights, stddev: float, restart_every: int = 0,
                 rng: Optional[np.random.Generator] = None) -> None:
        if stddev < 0 or restart_every < 0:
            raise ValueError(f"TreeNoise needs stddev >= 0 and restart_every >= 0 (0 = never), got "
                             f"{stddev!r}, {restart_every!r}")
        self.shapes = [np.shape(t) for t in template]
        self.stddev, self.restart_every = float(stddev), int(restart_every)
        self.rng = rng or np.random.default_rng()
        self.step = 0  # rounds in the current tree
        self.rounds = 0  # rounds over all trees
        self._stack: list[tuple[int, list[np.ndarray]]] = []

    def _draw(self) -> list[np.ndarray]:
        return [self.rng.normal(0.0, self.stddev, size=s) for s in self.shapes]

    def prefix_noise(self) -> list[np.ndarray]:
        """The noise the current tree's prefix sum carries (zeros before its first round)."""
        total = [np.zeros(s) for s in self.shapes]
        for _, noise in self._stack:
            for acc, n in zip(total, noise):
                acc += n
        return total

    def next_residual(self) -> list[np.ndarray]:
        """Advance one round; the noise to add to that round's sum (new prefix minus old)."""
        if self.restart_every and self.step == self.restart_every:
            self._stack, self.step = [], 0  # the old tree's noise stays in the model already built
        old = self.prefix_noise()
        level = 0
        while self._stack and self._stack[-1][0] == level:
            self._stack.pop()
            level += 1
        self._stack.append((level, self._draw()))
        self.step += 1
        self.rounds += 1
        return [n - o for n, o in zip(self.prefix_noise(), old)]


class TreeGaussian(CentralGaussian):
    """DP-FTRL's tree-aggregation noise on the inner linear rule's sum, added at `result`: each
    node of the tree carries `CentralGaussian`'s noise_std (z * C * w_max)."""

    def __init__(self, inner: Aggregator, clip_norm: float, noise_multiplier: float, max_weight: float,
                 restart_every: int = 0, rng: Optional[np.random.Generator] = None) -> None:
        if restart_every < 0:
            raise ValueError(f"TreeGaussian needs restart_every >= 0, got {restart_every!r}")
        super().__init__(inner, clip_norm, noise_multiplier, max_weight, rng)
        self.restart_every = int(restart_every)
        self.tree: Optional[TreeNoise] = None
        self.name = f"tree_gaussian({inner.name})"  # type: ignore[misc]

    def result(self, state: RunningSum) -> Aggregate:
        if self.z == 0:
            return self.inner.result(state)
        if self.tree is None:
            self.tree = TreeNoise(state.sums, self.noise_std, self.restart_every, self.rng)
        residual = self.tree.next_residual()
        noised = RunningSum([s + r for s, r in zip(state.sums, residual)], state.total_weight, state.count)
        return self.inner.result(noised)

    def describe(self) -> dict:
        return {"name": "tree_gaussian", "noise_std": self.noise_std, "restart_every": self.restart_every,
                "inner": self.inner.describe()}
