"""Next-word metrics as a keyboard team means them (docs/metrics.md has worked examples).

- top-k recall: over every word the user typed next, given everything typed before it in the
  message, whether it is among the k words the suggestion strip would show. The strip never
  shows PAD, UNK, BOS or EOS, so those ids are removed before taking the top k. Targets that
  are PAD or EOS are not words and are not counted; a target that is UNK (an out-of-vocabulary
  word) is counted and is always a miss, since a keyboard cannot suggest a word it lacks.
- perplexity per word: exp of the mean negative log-probability (full softmax) of the counted
  targets, UNK targets included as the model's probability of UNK.

One definition, used by every evaluation, baseline and benchmark in fedkeys.
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np

from data.special_ids import EOS_ID, PAD_ID, SPECIAL_IDS, UNK_ID

NEVER_SUGGESTED = SPECIAL_IDS  # the strip never shows a special id
NOT_TARGETS = (PAD_ID, EOS_ID)


def target_mask(y: np.ndarray) -> np.ndarray:
    """True where y is a word target (not PAD, not EOS)."""
    return ~np.isin(y, NOT_TARGETS)


def suggestions(scores: np.ndarray, k: int) -> np.ndarray:
    """The k highest-scoring suggestible ids along the last axis, best first.

    Args:
        scores: [..., V] logits or probabilities.
        k: strip size.
    Returns:
        int array [..., k].
    """
    if k < 1 or k > scores.shape[-1] - len(NEVER_SUGGESTED):
        raise ValueError(f"k must be in [1, {scores.shape[-1] - len(NEVER_SUGGESTED)}], got {k}")
    s = np.array(scores, dtype=np.float64, copy=True)
    s[..., list(NEVER_SUGGESTED)] = -np.inf
    part = np.argpartition(-s, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


class NextWordAccumulator:
    """Accumulates top-k recall and perplexity over batches of predictions.

    Example:
        acc = NextWordAccumulator(ks=(1, 3))
        acc.update_logits(logits, y)      # logits [B, T, V], y [B, T]
        acc.result()  # {"top1": .., "top3": .., "perplexity": .., "words": ..}
    """

    def __init__(self, ks: Sequence[int] = (1, 3)) -> None:
        if not ks or any(k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {ks!r}")
        self.ks = tuple(sorted(set(ks)))
        self.words = 0
        self.hits = {k: 0 for k in self.ks}
        self.neg_log_prob = 0.0
        self.has_log_prob = True

    def update_ranked(self, ranked: np.ndarray, y: np.ndarray) -> None:
        """Add predictions given as ranked suggestion ids [..., >= max(ks)] (no perplexity)."""
        mask = target_mask(y)
        yy = y[mask]
        rr = ranked[mask]
        self.words += int(yy.size)
        for k in self.ks:
            hit = np.any(rr[:, :k] == yy[:, None], axis=-1) & (yy != UNK_ID)
            self.hits[k] += int(np.sum(hit))
        self.has_log_prob = False

    def update_logits(self, logits: np.ndarray, y: np.ndarray) -> None:
        """Add a batch of logits [..., V] with targets [...]."""
        if logits.shape[:-1] != y.shape:
            raise ValueError(f"logits {logits.shape} do not match targets {y.shape}")
        mask = target_mask(y)
        lg = logits[mask]
        yy = y[mask]
        if yy.size == 0:
            return
        ranked = suggestions(lg, max(self.ks))
        self.words += int(yy.size)
        for k in self.ks:
            hit = np.any(ranked[:, :k] == yy[:, None], axis=-1) & (yy != UNK_ID)
            self.hits[k] += int(np.sum(hit))
        lp = np.take_along_axis(log_softmax(lg), yy[:, None], axis=-1)[:, 0]
        self.neg_log_prob -= float(np.sum(lp))

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {"words": float(self.words)}
        for k in self.ks:
            out[f"top{k}"] = self.hits[k] / self.words if self.words else 0.0
        if self.has_log_prob:
            out["perplexity"] = math.exp(self.neg_log_prob / self.words) if self.words else float("nan")
        return out


class KeystrokeSavings:
    """Keystroke savings rate with a suggestion strip of `slots` words.

    For each target word w of L letters, typed letter by letter: before each keystroke
    (having typed the prefix w[:j], j = 0 .. L-1) the strip shows the `slots` most probable
    suggestible vocabulary words that start with w[:j]. The first time w is in the strip the
    user taps it, having spent j + 1 keystrokes instead of L, so L - (j + 1) are saved. A word
    never offered (for example an OOV word, target UNK) costs its full L. The rate is
    saved keystrokes / letters typed without suggestions, over all counted targets (the same
    targets as top-k recall: PAD and EOS excluded). Letters of an UNK target are unknown, so
    UNK targets count 0 saved of `unk_letters` (default 5, about an average English word).
    """

    def __init__(self, words: Sequence[str], slots: int = 3, unk_letters: int = 5) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.words = list(words)
        self.slots = slots
        self.unk_letters = unk_letters
        self.saved = 0
        self.typed = 0
        by_word = sorted((w, i) for i, w in enumerate(self.words))
        self._sorted_words = [w for w, _ in by_word]
        self._sorted_ids = np.asarray([i for _, i in by_word], np.int64)

    def _prefix_range(self, prefix: str) -> np.ndarray:
        """Ids of the words starting with `prefix`, ascending (one bisect range of the sorted words)."""
        lo = bisect.bisect_left(self._sorted_words, prefix)
        hi = bisect.bisect_left(self._sorted_words, prefix + "\U0010ffff")
        return np.sort(self._sorted_ids[lo:hi])

    def _saved_for(self, row: np.ndarray, target: int) -> tuple[int, int]:
        word = self.words[target]
        length = len(word)
        for j in range(length):
            ids = self._prefix_range(word[:j])
            s = row[ids]
            ids, s = ids[np.isfinite(s)], s[np.isfinite(s)]
            # the strip: the best `slots` of them, ties to the lower id (a stable sort by score)
            strip = ids[np.argsort(-s, kind="stable")[:self.slots]]
            if target in strip:
                return length - (j + 1), length
        return 0, length

    def update_logits(self, logits: np.ndarray, y: np.ndarray) -> None:
        """Add a batch of logits [..., V] with targets [...]."""
        if logits.shape[:-1] != y.shape:
            raise ValueError(f"logits {logits.shape} do not match targets {y.shape}")
        if logits.shape[-1] != len(self.words):
            raise ValueError(f"logits have {logits.shape[-1]} ids but the vocabulary has {len(self.words)} words")
        mask = target_mask(y)
        scores = np.array(logits[mask], dtype=np.float64)
        scores[:, list(NEVER_SUGGESTED)] = -np.inf
        for row, target in zip(scores, y[mask]):
            if target == UNK_ID:
                self.typed += self.unk_letters
                continue
            saved, typed = self._saved_for(row, int(target))
            self.saved += saved
            self.typed += typed

    def result(self) -> dict[str, float]:
        return {"keystroke_savings": self.saved / self.typed if self.typed else 0.0,
                "letters": float(self.typed)}
