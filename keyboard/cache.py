"""A user's own word cache, mixed into the global model's suggestions: personalization that
needs no training step.

Keyboards have long kept a per-user dictionary of what their owner types; in language modelling
this is the cache model (Kuhn and De Mori 1990) and, over a neural model, the unigram/bigram
cache of Grave et al. 2017 ("Improving Neural Language Models with a Continuous Cache"). The
phone counts the words its owner typed (every word is known as soon as it is typed, so the cache
learns online, strictly from the past), and each suggestion is drawn from

    p(w | context) = (1 - lam_u) * p_global(w | context) + lam_u * p_cache(w | previous word)

    p_cache(w | prev) = (c(prev, w) + kappa * c(w) / N) / (c(prev) + kappa)

where c(prev, w) counts the user's bigrams, c(w) their words, N = sum c(w) and c(prev) =
sum_w c(prev, w): the bigram estimate with the user's unigram distribution as its prior, weight
kappa. The mixing weight grows with the evidence, lam_u = lam * N / (N + n0): a user with a
handful of words keeps the global model. Nothing leaves the phone, and no weights change: the
cache is a count table the size of the words the user typed.

`lam`, `kappa` and `n0` are chosen on users that are neither trained on nor scored (the proxy
split: `benchmarks/personalization.py --tune-split proxy`), never on the held-out users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.special_ids import PAD_ID, UNK_ID


@dataclass(frozen=True)
class CacheParams:
    """The cache's three numbers (module docstring)."""

    lam: float = 0.2      # the most the cache can weigh
    kappa: float = 0.5    # weight of the unigram prior inside the bigram estimate
    n0: float = 50.0      # words of evidence at which the cache reaches half of lam

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam < 1.0:
            raise ValueError(f"lam must be in [0, 1), got {self.lam}")
        if self.kappa <= 0.0:
            raise ValueError(f"kappa must be > 0, got {self.kappa}")
        if self.n0 < 0.0:
            raise ValueError(f"n0 must be >= 0, got {self.n0}")


class WordCache:
    """Unigram and bigram counts of one user's typed words over a vocabulary of `vocab_size` ids.

    PAD (not a word) and UNK (an out-of-vocabulary word the strip cannot show) are never counted.
    """

    def __init__(self, vocab_size: int, params: CacheParams = CacheParams()) -> None:
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.params = params
        self.unigram = np.zeros(self.vocab_size, np.float64)
        self.bigram: dict[int, dict[int, int]] = {}
        self.total = 0

    def add(self, previous: int, word: int) -> None:
        """Count `word` typed after `previous`."""
        word, previous = int(word), int(previous)
        if word in (PAD_ID, UNK_ID):
            return
        if not 0 <= word < self.vocab_size or not 0 <= previous < self.vocab_size:
            raise ValueError(f"ids must be in [0, {self.vocab_size}), got previous={previous}, word={word}")
        self.unigram[word] += 1.0
        self.total += 1
        row = self.bigram.setdefault(previous, {})
        row[word] = row.get(word, 0) + 1

    def add_windows(self, x: np.ndarray, y: np.ndarray) -> None:
        """Count every (input, target) pair of windows `x`, `y` [N, T], in order."""
        for xi, yi in zip(np.asarray(x), np.asarray(y)):
            for a, b in zip(xi, yi):
                self.add(a, b)

    def weight(self) -> float:
        """lam_u: the cache's mixing weight at the evidence counted so far."""
        p = self.params
        return 0.0 if self.total == 0 else p.lam * self.total / (self.total + p.n0)

    def probabilities(self, previous: int) -> np.ndarray:
        """p_cache(. | previous) [V]; all zeros while the cache is empty."""
        if self.total == 0:
            return np.zeros(self.vocab_size)
        kappa = self.params.kappa
        p = kappa * self.unigram / self.total
        row = self.bigram.get(int(previous), {})
        for word, count in row.items():
            p[word] += count
        return p / (sum(row.values()) + kappa)

    def mix(self, p_global: np.ndarray, previous: int) -> np.ndarray:
        """(1 - lam_u) p_global + lam_u p_cache for one position."""
        lam = self.weight()
        if lam == 0.0:
            return np.asarray(p_global, np.float64)
        return (1.0 - lam) * np.asarray(p_global, np.float64) + lam * self.probabilities(previous)


def cached_log_probs(p_global: np.ndarray, x: np.ndarray, y: np.ndarray, cache: WordCache,
                     learn: bool = True) -> np.ndarray:
    """log of the mixed distribution at every position of windows `x`, `y` [N, T] (p_global [N, T, V]).

    Positions are visited in order; with `learn`, each position's target is counted after that
    position is scored, as a phone counts a word once it is typed (the score of a position
    never sees its own target or a later one). PAD positions keep the global distribution.
    """
    p_global = np.asarray(p_global)
    x, y = np.asarray(x), np.asarray(y)
    if p_global.shape[:-1] != x.shape or x.shape != y.shape:
        raise ValueError(f"shapes do not match: p_global {p_global.shape}, x {x.shape}, y {y.shape}")
    out = np.array(p_global, np.float64)
    for i in range(x.shape[0]):
        for t in range(x.shape[1]):
            if y[i, t] == PAD_ID:
                continue
            out[i, t] = cache.mix(p_global[i, t], x[i, t])
            if learn:
                cache.add(x[i, t], y[i, t])
    with np.errstate(divide="ignore"):
        return np.log(out)
