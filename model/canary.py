"""Canary audit of memorization: Carlini et al. 2019, "The Secret Sharer".

A canary is a random sequence of a fixed format, here a fixed prefix of three vocabulary words
followed by `slots` words each drawn from `choices` candidate words, so the format's space R
holds choices^slots sequences, small enough to score every one of them. Canaries are inserted
as messages at the front of chosen training users' histories (first in time order, so a capped
client trains on them), each `repetitions` times, in one user or spread over several, as
Thakkar et al. 2020 and Ramaswamy et al. 2020 audit federated language models.

After training, every sequence r of R gets its log-perplexity under the model, -sum log p of
its slot words given what precedes them; a canary's rank is its position among all of R
sorted by log-perplexity (1 = the most likely), and

    exposure = log2 |R| - log2 rank                       (rank-based, exact here)
    exposure_extrapolated = -log2 Phi((lp - mu) / sigma)  (the tail of a normal fitted to R's
                                                           log-perplexities, Carlini et al. 4.2,
                                                           for spaces too large to enumerate).

A sequence the model never saw has a uniform rank, so reference exposures have median 1 bit and
95th percentile log2(20) = 4.3 bits; a memorized canary sits far above them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from data.sequences import examples
from data.special_ids import BOS_ID, EOS_ID


@dataclass(frozen=True)
class CanaryFormat:
    """The format: prefix ids, then `slots` words each from `choices` (vocabulary ids)."""

    prefix: tuple[int, ...]
    choices: tuple[int, ...]
    slots: int = 3

    @property
    def size(self) -> int:
        return len(self.choices) ** self.slots

    def sequence(self, index: int) -> list[int]:
        """The index-th sequence of R (mixed radix), as BOS prefix slots EOS."""
        words = []
        for _ in range(self.slots):
            index, k = divmod(index, len(self.choices))
            words.append(self.choices[k])
        return [BOS_ID, *self.prefix, *words, EOS_ID]


def default_format(vocab_size: int, seed: int = 0, choices: int = 30, slots: int = 3) -> CanaryFormat:
    """Prefix and slot words drawn from the vocabulary's middle (neither rare nor the commonest)."""
    lo, hi = vocab_size // 8, vocab_size // 2
    if hi - lo < choices + 3:
        raise ValueError(f"vocabulary of {vocab_size} too small for {choices} canary choices")
    ids = np.random.default_rng(seed).choice(np.arange(lo, hi), size=choices + 3, replace=False)
    return CanaryFormat(tuple(int(i) for i in ids[:3]), tuple(int(i) for i in ids[3:]), slots)


@dataclass
class Canary:
    index: int  # position in the format's space R
    repetitions: int
    users: list[str]  # the users it was inserted into (repetitions spread evenly)


def plant(fmt: CanaryFormat, train_users: Sequence[str], plan: Sequence[tuple[int, int]], per_config: int,
          seed: int = 0) -> list[Canary]:
    """Canaries for each (repetitions, users) in `plan`, `per_config` of each, on distinct users."""
    rng = np.random.default_rng(seed)
    need = sum(u * per_config for _, u in plan)
    if need > len(train_users):
        raise ValueError(f"the plan needs {need} distinct users, the population has {len(train_users)}")
    users = [str(u) for u in rng.permutation(sorted(train_users))[:need]]
    indices = rng.choice(fmt.size, size=len(plan) * per_config, replace=False)
    out, k = [], 0
    for reps, n_users in plan:
        if reps % n_users:
            raise ValueError(f"{reps} repetitions do not spread evenly over {n_users} users")
        for _ in range(per_config):
            out.append(Canary(int(indices[len(out)]), reps, users[k:k + n_users]))
            k += n_users
    return out


@dataclass
class CanaryData:
    """A `data.dataset.FederatedData` whose chosen users hold the canaries first."""

    data: Any
    fmt: CanaryFormat
    canaries: list[Canary]
    _extra: dict[str, list[list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.canaries:
            for u in c.users:
                self._extra.setdefault(u, []).extend([self.fmt.sequence(c.index)] * (c.repetitions // len(c.users)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)

    def tokens(self, user_id: str) -> list[list[int]]:
        return self._extra.get(user_id, []) + self.data.tokens(user_id)

    def client_examples(self, user_id: str, seq_len: int, max_examples: int = 0):
        return examples(self.tokens(user_id), seq_len, max_examples)


def log_perplexities(model_cfg, vocab_size: int, weights: Sequence[np.ndarray], fmt: CanaryFormat,
                     batch: int = 2048) -> np.ndarray:
    """-sum log p(slot words | preceding words) for every sequence of R, in index order."""
    import tensorflow as tf

    from model.nwp import build_model

    width = 1 + len(fmt.prefix) + fmt.slots  # BOS, prefix, slots: the inputs through the last slot
    model = build_model(model_cfg, vocab_size, width, seed=0)
    model.set_weights(list(weights))
    seqs = np.array([fmt.sequence(i)[:width + 1] for i in range(fmt.size)], dtype=np.int32)
    first = len(fmt.prefix)  # logits at position first + j predict slot j
    out = np.empty(fmt.size)
    for s in range(0, fmt.size, batch):
        x, y = seqs[s:s + batch, :-1], seqs[s:s + batch, 1:]
        logp = tf.nn.log_softmax(model(x, training=False), axis=-1).numpy()
        picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
        out[s:s + batch] = -picked[:, first:first + fmt.slots].sum(axis=1)
    return out


def exposures(lp: np.ndarray, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(rank-based, extrapolated) exposure of the sequences at `indices` of R."""
    from scipy.stats import norm

    order = np.sort(lp)
    ranks = np.searchsorted(order, lp[np.asarray(indices)], side="left") + 1
    rank_based = math.log2(len(lp)) - np.log2(ranks)
    tail = norm.logcdf((lp[np.asarray(indices)] - lp.mean()) / lp.std())
    return rank_based, -tail / math.log(2)
